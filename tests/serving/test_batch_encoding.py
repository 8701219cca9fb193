"""The batch job's vectorised encoding (serving/batch.py `encoded`, from Spark's Arrow batches) builds the very float
matrix the service's Encoding builds record by record: same matrix, so the same probabilities."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serving.batch import encoded
from serving.scoring.model import Encoding

ENCODING = Encoding([
    {"column": "height", "fill": 40.0},
    {"column": "colour", "categories": ["blue", "green", "missing", "red"], "missing": "missing"},
    {"column": "weight", "fill": 50000.0},
    {"column": "shape", "categories": ["round", "square"]},  # no imputer: a missing value sets no column
])
COLUMNS = {  # missing numbers, missing text, a category the model never saw, repeats
    "height": [34.0, None, 51.0, 22.0, None],
    "colour": ["red", None, "purple", "blue", "red"],
    "weight": [20000.0, 150000.0, None, 1e6, 5.5],
    "shape": ["round", "square", None, "oval", "square"],
}


def arrow_batch(columns: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({name: pa.array(values, type=pa.string() if isinstance(
        next(v for v in values if v is not None), str) else pa.float64()) for name, values in columns.items()})


def test_the_batch_encoding_is_the_services_matrix_bit_for_bit():
    service = ENCODING.matrix(COLUMNS)
    batch = encoded(ENCODING, arrow_batch(COLUMNS))
    assert batch.dtype == service.dtype == np.float32 and batch.shape == service.shape == (5, 8)
    assert np.array_equal(batch, service)
    assert batch[1, 1 + 2] == 1.0, "a missing colour takes the imputer's category"
    assert batch[2, 1:5].sum() == 0 and batch[3, 6:8].sum() == 0, "an unknown value sets no column"
    assert batch[2, 6:8].sum() == 0, "a missing value of a column without an imputer sets none either"


def test_one_row_and_every_row_alike():
    for row in range(5):
        one = {name: values[row:row + 1] for name, values in COLUMNS.items()}
        assert np.array_equal(encoded(ENCODING, arrow_batch(COLUMNS).slice(row, 1)), ENCODING.matrix(one))
