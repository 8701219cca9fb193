"""The batch job's vectorised encoding (serving/batch.py `encoded`, from Spark's Arrow batches) builds the very float
matrix the service's Encoding builds record by record: same matrix, so the same probabilities; and its output columns
hold the service's outputs for each task."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from serving.batch import encoded, output_arrays, output_columns
from serving.scoring.core import Outputs
from serving.scoring.model import Encoding, Manifest

ENCODING = Encoding([
    {"column": "height", "fill": 40.0},
    {"column": "colour", "categories": ["blue", "green", "missing", "red"], "missing": "missing"},
    {"column": "weight", "fill": 50000.0},
    {"column": "shape", "categories": ["round", "square"]},  # no imputer: a missing value sets no column
    {"column": "age", "fill": 30.0},  # never missing: read in one pass (integers and doubles rounding to float32)
])
COLUMNS = {  # missing numbers, missing text, a category the model never saw, repeats
    "height": [34.0, None, 51.0, 22.0, None],
    "colour": ["red", None, "purple", "blue", "red"],
    "weight": [20000.0, 150000.0, None, 1e6, 5.5],
    "shape": ["round", "square", None, "oval", "square"],
    "age": [18, 0.1, 1e6 + 0.3, 33.333333333, 2 ** 40 + 1],
}


def arrow_batch(columns: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({name: pa.array(values, type=pa.string() if isinstance(
        next(v for v in values if v is not None), str) else pa.float64()) for name, values in columns.items()})


def test_the_batch_encoding_is_the_services_matrix_bit_for_bit():
    service = ENCODING.matrix(COLUMNS)
    batch = encoded(ENCODING, arrow_batch(COLUMNS))
    assert batch.dtype == service.dtype == np.float32 and batch.shape == service.shape == (5, 9)
    assert np.array_equal(batch, service)
    assert np.array_equal(ENCODING.matrix({name: tuple(values) for name, values in COLUMNS.items()}), service), \
        "the columns as the fast path gives them (tuples)"
    assert batch[:, 8].tolist() == np.array(COLUMNS["age"], dtype=np.float32).tolist()
    assert batch[1, 1 + 2] == 1.0, "a missing colour takes the imputer's category"
    assert batch[2, 1:5].sum() == 0 and batch[3, 6:8].sum() == 0, "an unknown value sets no column"
    assert batch[2, 6:8].sum() == 0, "a missing value of a column without an imputer sets none either"


def test_one_row_and_every_row_alike():
    for row in range(5):
        one = {name: values[row:row + 1] for name, values in COLUMNS.items()}
        assert np.array_equal(encoded(ENCODING, arrow_batch(COLUMNS).slice(row, 1)), ENCODING.matrix(one))


def _manifest(task: str, classes: list | None, threshold: float | None = None) -> Manifest:
    return Manifest.from_dict({"model": {"name": "m", "version": "1"}, "runtime": "onnx", "task": task,
                               "classes": classes, "decision_threshold": threshold, "inputs": [], "input_example": []})


@pytest.mark.parametrize(("task", "classes", "threshold"), [
    ("binary", [0, 1], 0.3), ("binary", ["no", "yes"], None), ("multiclass", ["low", "mid", "high"], None),
    ("multiclass", [3, 5, 8], None), ("regression", None, None)])
def test_the_batch_outputs_are_the_services_by_task(task, classes, threshold):
    """serving/batch.py's output columns, vectorised, hold the service's outputs (scoring/core.py Outputs) for the
    same scores: the same labels by the same rule, each class's probability in its own column."""
    manifest = _manifest(task, classes, threshold)
    rng = np.random.default_rng(len(str(classes)))
    if task == "regression":
        array = rng.normal(100, 30, 7)
    else:
        array = rng.dirichlet(np.ones(len(classes)), 7)
        array[0] = [1 / len(classes)] * len(classes)  # a tie goes to the first class, as argmax
    _, _, service = Outputs(manifest).build(array)
    names = [name for name, _ in output_columns(manifest)]
    table = pa.Table.from_arrays(output_arrays(manifest, array), names=names).to_pylist()
    if task == "regression":
        assert names == ["prediction"] and table == service
    elif task == "binary":
        assert names == ["probability", "label"] and table == service
        assert dict(output_columns(manifest))["label"] == ("int" if isinstance(classes[0], int) else "string")
    else:
        assert names == ["label", *(f"probability_{c}" for c in classes)]
        assert [row["label"] for row in table] == [row["label"] for row in service]
        assert [[row[f"probability_{c}"] for c in classes] for row in table] == [
            list(row["probabilities"].values()) for row in service]


def test_the_batch_ids_are_the_versions_contracts_and_idcolumns_only_stands_in_for_a_missing_one(context):
    import dataclasses

    from serving.batch import BatchError, id_columns

    manifest = Manifest.read(context.path / "model")
    ids = manifest.contract["ids"]
    assert id_columns(manifest, None) == ids and id_columns(manifest, list(ids)) == ids
    with pytest.raises(BatchError, match=r"drop databricks\.batch\.idColumns"):
        id_columns(manifest, ["row_number"])
    elsewhere = dataclasses.replace(manifest, contract=None)  # a version trained outside this project
    assert id_columns(elsewhere, ["row_number"]) == ["row_number"]
    with pytest.raises(BatchError, match="no id columns"):
        id_columns(elsewhere, None)
