"""Batch scoring: a whole table, on the job cluster's Spark, with the model the stack serves.

The batch entry point of the job wheel (infra/databricks.py declares the scheduled job and its name):

    <entry point> --input-table prod.sales.rows --output-table prod.sales.predictions \
        --rejects-table prod.sales.prediction_rejects --model-uri models:/prod.sales.my_model/3 --job-run-id 123

The model is prepared by serving/context.py's `prepare_model`, the function that prepares the scoring
image's model, with the same runtime (onnx, sklearn or pyfunc) after the same equivalence check. Executors score
with serving.scoring.model's scorer, the image's, in `mapInArrow` (one scorer per Python worker; the compiled
model's float matrix built from the Arrow columns): batch and online answers agree.

Output columns: the row's ids, then the model's outputs by task (as /predict's, scoring/core.py Outputs), then
model_name, model_version, source_version, scored_at, scoring_run_id:
  binary      probability (double: of the positive class), label (the classes' type: int, or string, ...)
  multiclass  label, and one column per class, `probability_<class>` (double; a character outside letters, digits
              and _ in the class becomes _): flat columns that SQL and a BI tool read as they are, unlike a map
  regression  prediction (double)
The ids are the version's contract's (`ids` of extra_files/contract.json); `--key` (repeatable,
databricks.batch.idColumns) names them for a version without a contract. `source_version` is the version the online
request log names: a promotion target's copy (prod) scores with its own version number, and its image logs the source
(staging) version it was copied from, the copy's `source_version` tag; elsewhere the version itself.

Both tables are partitioned by scoring_run_id, and a run replaces its own partition (INSERT OVERWRITE ... PARTITION):
a retried or repaired run with the same id writes its rows once, whatever an earlier attempt left. The statement is
the same for Unity Catalog's Delta tables and the local stand-in's Parquet ones (tests/databricks runs it).

With --inference-table (the stack's quality loop, docs/model-quality.md), the scored rows (not the rejects) are also
appended to the stack's inference table, after the output partition is written: request_id `batch-<run id>`, record a
number the row's ids determine (record_of), source `batch`, the ids and inputs --personal lets the table hold
(`<column>_hmac`: the service's pseudonym with REQUEST_LOG_PSEUDONYM_KEY) and the outputs, in the table's own columns
and types. Only the rows whose (request_id, record) the table lacks are added (serving/inference_table.py): a retried
or repaired run adds what an earlier attempt did not. A failed append fails the run; its re-run rewrites the output
partition and appends what is missing.

Rows are checked with the scoring service's rules before scoring: a value must have its column's type
(text for a text column, a finite number for a number column; a number column stored as text is read
as a number where the text is one) and be within the contract (a number within its column's bounds, a text value
among a closed category's values), any feature may be null (the pipeline imputes it), a key may not.
A row that breaks a rule goes to the rejects table with every reason, and the run goes on; a run in
which no row could be scored fails (exit 4), so its failure e-mail is sent. A column the model needs
missing from the table is a failure of the whole run before anything is written (exit 2).

Why one module: it is one Spark job read top to bottom (the model, the row rules, the scoring and its output columns,
the tables written), and it is shipped to the cluster's executors as the one module their functions live in.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving import inference_table
from serving.scoring.model import (
    FEATURES_INPUT,
    ONNX_FILE,
    Columns,
    Encoding,
    InputField,
    Manifest,
    OnnxScorer,
    PyfuncScorer,
    Scorer,
    SklearnScorer,
    rule_text,
)

if TYPE_CHECKING:  # an executor's worker imports neither for the compiled model's path
    import pandas as pd
    import pyarrow as pa

REASON = "reject_reason"
RECORD = "record"
PROBABILITY, LABEL, PREDICTION = "probability", "label", "prediction"
PROVENANCE = ("model_name", "model_version", "source_version", "scored_at", "scoring_run_id")
RUN_COLUMN = "scoring_run_id"  # the partition a run replaces
RUN_VIEW = "mlops_batch_run_rows"  # the session's temporary view of the rows one run writes
INFERENCE_VIEW = "mlops_batch_inference_rows"  # ... and of the rows it appends to the inference table
INFERENCE_SOURCE = "batch"  # the inference table's `source` (a protocol for the request log's rows)
PERSONAL_MODES = ("keep", "drop", "pseudonymise")  # the stack's observability.requestLogPersonal
NUMERIC_TYPES = ("byte", "short", "int", "bigint", "long", "integer", "float", "double", "decimal")
NOTHING_SCORED = 4
MISSING_COLUMN = 2
# The job's own session settings (main() sets them; bench/spark.py sets them for both methods it compares). With a
# byte limit per Arrow batch (Spark's default: 64 MB), Spark measures the batch it is filling after every row it
# adds: a fifth of the JVM's work in mapInArrow. Int.MaxValue switches the measure off; a batch stays bounded by
# spark.sql.execution.arrow.maxRecordsPerBatch (10,000 rows of keys and the model's features).
SESSION_CONF = {"spark.sql.execution.arrow.maxBytesPerBatch": str(2**31 - 1)}


class BatchError(RuntimeError):
    """The table cannot be scored at all (a column the model needs is missing, no ids): the run fails, naming it."""


@dataclass(frozen=True)
class BatchModel:
    """What the executors need to score: the manifest, and the compiled graph (onnx runtime), the estimator the
    image's sklearn runtime loads, or the MLflow model directory's files (pyfunc runtime, loaded on each worker)."""
    manifest_raw: dict
    onnx_bytes: bytes | None
    pipeline: object | None = None
    pyfunc_files: tuple[tuple[str, bytes], ...] | None = None  # (path under the model directory, content)
    source_version: str | None = None  # the version the request log names (a promoted copy's source); None: its own
    source_model: str | None = None  # the model the request log names (a promoted copy's source); None: its own

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_dict(self.manifest_raw)

    def scorer(self) -> Scorer:
        if self.onnx_bytes is not None:
            return OnnxScorer(self.onnx_bytes, self.manifest)
        if self.pyfunc_files is not None:
            model_dir = Path(tempfile.mkdtemp(prefix="batch-model-"))  # the worker's, for the life of the worker
            for relative, content in self.pyfunc_files:
                (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                (model_dir / relative).write_bytes(content)
            return PyfuncScorer.load(model_dir, self.manifest)
        return SklearnScorer(self.pipeline, self.manifest)


def load_model(model_uri: str, progress: Callable[[str], None] = print) -> BatchModel:
    """The registered version, prepared exactly as the scoring image's model is (serving/context.py)."""
    from mlflow.tracking import MlflowClient

    from serving.context import prepare_model, resolve_model

    client = MlflowClient()
    resolved = resolve_model(model_uri, client)
    tags = (client.get_model_version(resolved.name, resolved.version).tags or {}) if resolved.registered else {}
    source = {"source_version": tags.get("source_version"), "source_model": tags.get("source_model")}  # lineage
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        manifest = prepare_model(resolved, model_dir, client, progress)
        if manifest["runtime"] == "onnx":
            return BatchModel(manifest, (model_dir / ONNX_FILE).read_bytes(), source_version=source["source_version"],
                              source_model=source["source_model"])
        if manifest["runtime"] == "pyfunc":
            files = tuple((path.relative_to(model_dir).as_posix(), path.read_bytes())
                          for path in sorted(model_dir.rglob("*")) if path.is_file())
            return BatchModel(manifest, None, pyfunc_files=files, source_version=source["source_version"],
                              source_model=source["source_model"])
        parsed = Manifest.from_dict(manifest)
        return BatchModel(manifest, None, SklearnScorer.load(model_dir, parsed).model,
                          source_version=source["source_version"], source_model=source["source_model"])


def id_columns(manifest: Manifest, keys: list[str] | None) -> list[str]:
    """The columns that identify a row: the version's contract's ids; `--key` for a version without a contract (one
    trained elsewhere). Both, and different, is a mistake said as such, not a choice made silently."""
    ids, given = list((manifest.contract or {}).get("ids") or []), list(keys or [])
    if ids and given and set(given) != set(ids):
        raise BatchError(f"--key names {given}, but the version's contract names its ids {ids}: drop "
                         "databricks.batch.idColumns (it is for versions without a contract)")
    if not (ids or given):
        raise BatchError("no id columns: the version carries no contract.json with ids; name them with --key "
                         "(databricks.batch.idColumns)")
    return ids or given


# ---- the rules a row must meet (the scoring service's, serving/scoring/schemas.py) ----

def problems(source, fields: tuple[InputField, ...], keys: list[str]) -> list:
    """One Spark expression per possible problem: a sentence naming the column, or null."""
    from pyspark.sql import functions as fn

    types = dict(source.dtypes)
    missing = [name for name in [*keys, *(f.name for f in fields)] if name not in types]
    if missing:
        raise BatchError(f"the input table has no column(s) {', '.join(missing)}; the model needs "
                         f"{', '.join(f.name for f in fields)} and the keys {', '.join(keys)}")
    found = [fn.when(fn.col(k).isNull(), fn.lit(f"column '{k}': the key is missing")) for k in keys]
    for field in fields:
        found.append(_field_problem(field, types[field.name]))
        found.extend(_contract_problems(field, types[field.name]))
    return [p for p in found if p is not None]


def _contract_problems(field: InputField, spark_type: str) -> list:
    """The service's contract rules (InputField's bounds() and closed_values, in rule_text's words): a finite number
    outside a bound, a text value a closed category does not list. A value of the wrong type has its own problem."""
    from pyspark.sql import functions as fn

    column, name, bounds = fn.col(field.name), field.name, field.bounds()
    if field.closed_values is not None and spark_type == "string":
        allowed = rule_text("in", ", ".join(repr(v) for v in field.closed_values))
        return [fn.when(column.isNotNull() & ~column.isin(list(field.closed_values)),
                        fn.concat(fn.lit(f"column '{name}': must be {allowed} (got '"), column, fn.lit("')")))]
    if not bounds or not (spark_type.split("(")[0] in NUMERIC_TYPES or spark_type == "string"):
        return []
    value = as_number(name, spark_type)
    finite = value.isNotNull() & ~fn.isnan(value) & (fn.abs(value) != float("inf"))
    # getattr(operator, "ge") is >=, and so on: the bounds' keys are the operators' names.
    return [fn.when(finite & ~getattr(operator, op)(value, bound),
                    fn.concat(fn.lit(f"column '{name}': must be {rule_text(op, bound)} (got "), value.cast("string"),
                              fn.lit(")")))
            for op, bound in bounds.items()]


def _field_problem(field: InputField, spark_type: str):
    from pyspark.sql import functions as fn

    column, name = fn.col(field.name), field.name
    numeric = spark_type.split("(")[0] in NUMERIC_TYPES
    if field.is_string:
        if spark_type == "string":
            return None
        return fn.when(column.isNotNull(), fn.format_string(f"column '{name}': %s is a {spark_type}, text expected",
                                                          column.cast("string")))
    if numeric:
        value = column.cast("double")
        return fn.when(fn.isnan(value) | (fn.abs(value) == float("inf")),
                      fn.format_string(f"column '{name}': %s is not a finite number", value.cast("string")))
    if spark_type == "string":
        value = as_number(field.name, spark_type)
        return fn.when(column.isNotNull() & (value.isNull() | fn.isnan(value) | (fn.abs(value) == float("inf"))),
                      fn.format_string(f"column '{name}': '%s' is not a number", column))
    return fn.when(column.isNotNull(), fn.format_string(f"column '{name}': %s is a {spark_type}, a number expected",
                                                      column.cast("string")))


def as_number(name: str, spark_type: str):
    """A number column as double; stored as text, its text read as a number (null where it is none)."""
    from pyspark.sql import functions as fn

    if spark_type == "string":  # try_cast: with ANSI mode (Spark 4's default) a plain cast fails the query
        return fn.expr(f"try_cast(`{name}` AS DOUBLE)")
    return fn.col(name).cast("double")


def checked(source, fields: tuple[InputField, ...], keys: list[str]):
    """The input with a reject_reason column: every problem of the row, '; '-separated, or null."""
    from pyspark.sql import functions as fn

    found = problems(source, fields, keys)
    joined = fn.concat_ws("; ", *found) if found else fn.lit("")
    return source.withColumn(REASON, fn.when(joined == "", fn.lit(None).cast("string")).otherwise(joined))


# ---- scoring ----

def score_partition(model, manifest: Manifest,
                    keys: list[str]) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function mapInArrow runs on each executor: the worker's scorer, one call per Arrow batch.
    `model` is a Spark broadcast of a BatchModel (or a BatchModel)."""
    fields, names = manifest.inputs, [name for name, _ in output_columns(manifest)]

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        scorer = worker_scorer(model.value if hasattr(model, "value") else model)
        for batch in batches:
            if not batch.num_rows:
                continue
            outputs = output_arrays(manifest, scores(scorer, batch, fields))
            yield pa.RecordBatch.from_arrays([*(batch.column(k) for k in keys), *outputs], names=[*keys, *names])
    return score


def output_columns(manifest: Manifest) -> list[tuple[str, str]]:
    """(column, Spark SQL type) of the model's outputs by task (see the module's docstring)."""
    if manifest.task == "regression":
        return [(PREDICTION, "double")]
    label = (LABEL, _label_type(manifest.classes or ()))
    if manifest.task == "binary":
        return [(PROBABILITY, "double"), label]
    return [label, *((probability_column(c), "double") for c in manifest.classes or ())]


def probability_column(value: Any) -> str:
    return "probability_" + re.sub(r"[^A-Za-z0-9_]", "_", str(value))


def _label_type(classes: tuple) -> str:
    if all(isinstance(c, bool) for c in classes):
        return "boolean"
    if all(isinstance(c, int) for c in classes):
        return "int" if all(-2**31 <= c < 2**31 for c in classes) else "bigint"
    return "double" if all(isinstance(c, int | float) for c in classes) else "string"


ARROW_TYPES = {"double": "float64", "int": "int32", "bigint": "int64", "boolean": "bool_", "string": "string"}


def output_arrays(manifest: Manifest, array: np.ndarray) -> list:
    """The Arrow columns of output_columns() from a scorer's array, vectorised: labels by the service's rule (a
    binary model's decision threshold, else the likelier class; a multiclass model's likeliest class)."""
    import pyarrow as pa

    if manifest.task == "regression":
        return [pa.array(array, type=pa.float64())]
    classes = list(manifest.classes or ())
    kind = getattr(pa, ARROW_TYPES[_label_type(tuple(classes))])()
    values = np.asarray(classes, dtype=object)
    if manifest.task == "binary":
        probability, threshold = array[:, 1], manifest.decision_threshold
        positive = probability >= threshold if threshold is not None else probability > array[:, 0]
        return [pa.array(probability, type=pa.float64()), pa.array(values[positive.astype(np.intp)].tolist(), type=kind)]
    labels = pa.array(values[array.argmax(axis=1)].tolist(), type=kind)
    return [labels, *(pa.array(np.ascontiguousarray(array[:, i]), type=pa.float64()) for i in range(len(classes)))]


_scorer: tuple[BatchModel, Scorer] | None = None  # the Python worker's: Spark reuses a worker for task after task


def worker_scorer(model: BatchModel) -> Scorer:
    """One scorer per Python worker and model, not one per partition: an ONNX session of 200 trees takes 40 ms to
    build, as long as scoring a whole 10,000-row batch."""
    global _scorer
    if _scorer is None or _scorer[0] != model:
        _scorer = (model, model.scorer())
    return _scorer[1]


def scores(scorer: Scorer, batch: pa.RecordBatch, fields: tuple[InputField, ...]) -> np.ndarray:
    """The scorer's array for the rows of an Arrow batch (a classifier's probabilities, a regressor's values). A
    compiled model with an Encoding gets its float matrix straight from the Arrow columns; any other scorer gets the
    service's column-major input."""
    if isinstance(scorer, OnnxScorer) and scorer.encoding is not None:
        return scorer.run({FEATURES_INPUT: encoded(scorer.encoding, batch)})
    return scorer.predict(columns_of(batch.to_pandas(), fields))


def encoded(encoding: Encoding, batch: pa.RecordBatch) -> np.ndarray:
    """Encoding.matrix of a whole batch, vectorised (the same float32 matrix, so the same probabilities): numbers
    with their missing values filled; a text column dictionary-encoded by Arrow, so the Encoding's lookup runs once
    per distinct value, not once per row (per-value Python over 10,000 rows was a fifth of a batch's time); the
    one-hot 1.0s set in one assignment, an unknown value setting none, as Encoding's does."""
    import pyarrow.compute as pc

    n, width = batch.num_rows, encoding.width
    matrix = np.zeros((n, width), dtype=np.float32)
    for name, position, fill in encoding.numbers:
        values = batch.column(name).to_numpy(zero_copy_only=False)  # double; null -> NaN
        matrix[:, position] = np.where(np.isnan(values), fill, values)
    row_starts, hot = np.arange(n, dtype=np.intp) * width, []
    for name, lookup in encoding.one_hot:
        coded = pc.dictionary_encode(batch.column(name))
        distinct = coded.dictionary.to_pylist()
        slots = np.array([lookup.get(value, -1) for value in [*distinct, None]], dtype=np.intp)  # last: null
        slot = slots[coded.indices.fill_null(len(distinct)).to_numpy()]
        hot.append((row_starts + slot)[slot >= 0])
    if hot:
        matrix.ravel()[np.concatenate(hot)] = 1.0
    return matrix


def columns_of(batch: pd.DataFrame, fields: tuple[InputField, ...]) -> Columns:
    """The scorer's column-major input, as the service builds it: text with None for missing, numbers as float64
    with NaN for missing."""
    columns: dict[str, Any] = {}
    for field in fields:
        values = batch[field.name]
        if field.is_string:
            columns[field.name] = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
        else:
            columns[field.name] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return columns


def predictions(valid, model, manifest: Manifest, keys: list[str], run_id: str, scored_at: datetime,
                partition: Callable[..., Any] | None = None, source_version: str | None = None,
                inputs: bool = False):
    """Valid rows -> keys, the model's inputs as scored (with `inputs`: numbers as double), the model's outputs
    (output_columns), then PROVENANCE. `partition` stands in for score_partition (bench/spark.py times
    the same query with a model that takes no time)."""
    from pyspark.sql import functions as fn
    from pyspark.sql import types

    fields, types_of = manifest.inputs, dict(valid.dtypes)
    typed = valid.select(*keys, *(fn.col(f.name) if f.is_string else as_number(f.name, types_of[f.name])
                                  .alias(f.name) for f in fields))
    passed = [*keys, *(f.name for f in fields if inputs)]  # what each Arrow batch passes through, as it came
    spark_types = {"double": types.DoubleType(), "int": types.IntegerType(), "bigint": types.LongType(),
                   "boolean": types.BooleanType(), "string": types.StringType()}
    schema = types.StructType([*(typed.schema[k] for k in passed), *(types.StructField(name, spark_types[kind], False)
                                                                     for name, kind in output_columns(manifest))])
    scored = typed.mapInArrow((partition or score_partition)(model, manifest, passed), schema)
    return with_provenance(scored, manifest, run_id, scored_at, source_version)


def with_provenance(frame, manifest: Manifest, run_id: str, scored_at: datetime, source_version: str | None = None):
    """The PROVENANCE columns, the run's id (the partition) last."""
    from pyspark.sql import functions as fn

    return (frame.withColumn("model_name", fn.lit(manifest.model_name))
            .withColumn("model_version", fn.lit(manifest.model_version))
            .withColumn("source_version", fn.lit(source_version or manifest.model_version))
            .withColumn("scored_at", fn.lit(scored_at).cast("timestamp"))
            .withColumn(RUN_COLUMN, fn.lit(run_id)))


def rejects(frame, keys: list[str], manifest: Manifest, run_id: str, scored_at: datetime,
            source_version: str | None = None):
    """Rejected rows: keys, every reason, the whole input row as JSON (to fix it and score it again), provenance."""
    from pyspark.sql import functions as fn

    columns = [c for c in frame.columns if c != REASON]
    bad = frame.where(fn.col(REASON).isNotNull())
    return with_provenance(bad.select(*keys, REASON, fn.to_json(fn.struct(*columns)).alias(RECORD)), manifest, run_id,
                           scored_at, source_version)


@dataclass(frozen=True)
class Outcome:
    rows: int
    scored: int
    rejected: int
    seconds: float

    def summary(self, manifest: Manifest, run_id: str) -> dict:
        return {"log_type": "batch", "rows": self.rows, "scored": self.scored, "rejected": self.rejected,
                "model_name": manifest.model_name, "model_version": manifest.model_version, "scoring_run_id": run_id,
                "seconds": round(self.seconds, 1)}


def run(spark, model: BatchModel, input_table: str, output_table: str, rejects_table: str, keys: list[str] | None,
        run_id: str, inference: InferenceTable | None = None) -> Outcome:
    """Score `input_table` into `output_table`, its bad rows into `rejects_table`, each in the run's own partition
    (replace_run; the rejects' with no rows when none is rejected), then, with `inference`, append the scored rows to the
    stack's inference table (append_inference). The rows and rejects are counted while the predictions are written (a
    Spark Observation), not in a pass of their own: the table is read once on a night without bad rows, twice with
    some. With an inference table the scored rows are kept (persist) for both writes: the model scores each row once."""
    from pyspark import StorageLevel
    from pyspark.sql import Observation
    from pyspark.sql import functions as fn

    started = time.perf_counter()
    name = lambda table: table_name(spark, table)  # noqa: E731
    manifest, scored_at = model.manifest, datetime.now(UTC)
    keys = id_columns(manifest, keys)
    frame = checked(spark.read.table(name(input_table)), manifest.inputs, keys)
    observed = Observation("batch_counts")
    counted = frame.observe(observed, fn.count(fn.lit(1)).alias("rows"), fn.count(REASON).alias("rejected"))
    shared = spark.sparkContext.broadcast(model)
    valid = counted.where(fn.col(REASON).isNull()).drop(REASON)
    scored = predictions(valid, shared, manifest, keys, run_id, scored_at, source_version=model.source_version,
                         inputs=inference is not None)
    if inference is not None:
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        replace_run(spark, scored.select(*keys, *(c for c, _ in output_columns(manifest)), *PROVENANCE),
                    name(output_table), run_id)
        counts = observed.get
        if counts["rejected"] or spark.catalog.tableExists(name(rejects_table)):
            bad = rejects(frame, keys, manifest, run_id, scored_at, model.source_version)
            # None rejected: the partition replaced by no rows (limit 0 reads nothing), so a repaired run keeps no
            # rejects of its failed attempt.
            replace_run(spark, bad if counts["rejected"] else bad.limit(0), name(rejects_table), run_id)
        if inference is not None:
            append_inference(spark, scored, name(inference.table), model, keys, run_id, inference)
    finally:
        if inference is not None:
            scored.unpersist()
    return Outcome(counts["rows"], counts["rows"] - counts["rejected"], counts["rejected"], time.perf_counter() - started)


# ---- the stack's inference table (issue 22: every prediction, online and batch, in one table) ----

@dataclass(frozen=True)
class InferenceTable:
    """Where the run's scored rows go besides its output (--inference-table), which columns the contract marks personal
    it holds (--personal: the stack's observability.requestLogPersonal, as the request log's rows) and the request log's
    pseudonym key (REQUEST_LOG_PSEUDONYM_KEY, with pseudonymise)."""
    table: str
    personal: str = "drop"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.personal not in PERSONAL_MODES:
            raise BatchError(f"--personal {self.personal!r}: one of {', '.join(PERSONAL_MODES)}")
        if self.personal == "pseudonymise" and not self.key:
            raise BatchError("--personal pseudonymise needs the request log's pseudonym key in REQUEST_LOG_PSEUDONYM_KEY "
                             "(the stack's requestLogPseudonymKey): without it no pseudonym would join a label")


def append_inference(spark, scored, table: str, model: BatchModel, keys: list[str], run_id: str,
                     inference: InferenceTable) -> None:
    """Append the run's scored rows to the inference table the stack declares, the rows whose (request_id, record) it
    lacks (serving/inference_table.py append_new, the quality job's statement): a retried or repaired run with the same
    id adds what its earlier attempt did not. Its columns are the table's own, in its types: what the run offers
    (inference_values) by the table's names, text where the table holds text (as the quality job writes the log's
    values), null where the run has nothing (the label, until it is known). A failure fails the run."""
    from pyspark.sql import functions as fn

    offered = inference_values(scored, model, keys, run_id, inference)
    held = spark.table(table).schema
    missing = [k for k in inference_table.KEY if k not in held.fieldNames()]
    if missing:
        raise BatchError(f"the inference table {table} has no column(s) {', '.join(missing)}: is it the stack's?")
    columns = []
    for field in held.fields:
        kind = field.dataType.simpleString()
        value, spark_type = offered.get(field.name, (fn.lit(None), "void"))
        columns.append((as_text(value, spark_type) if kind == "string" else value.cast(kind)).alias(field.name))
    scored.select(*columns).createOrReplaceTempView(INFERENCE_VIEW)
    target = ".".join(quoted(part) for part in table.split("."))
    try:
        spark.sql(inference_table.append_new(target, INFERENCE_VIEW, held.fieldNames()))
    finally:
        spark.catalog.dropTempView(INFERENCE_VIEW)


def inference_values(scored, model: BatchModel, keys: list[str], run_id: str,
                     inference: InferenceTable) -> dict[str, tuple[Any, str]]:
    """What the run offers the inference table, by the table's names: (Spark column, its type). As the request log's
    rows hold a prediction: its request (the run: `batch-<run id>`) and record (the row's, record_of), the model's
    name and version as the online log names them (a promoted copy's source), `source` batch, when it was scored, the
    ids and inputs the contract lets it keep (a personal one kept, left out, or `<column>_hmac`: the service's
    pseudonym, so labels join), and the outputs (a multiclass model's probabilities as one JSON object, as the
    log's)."""
    from pyspark.sql import functions as fn

    manifest, types_of = model.manifest, dict(scored.dtypes)
    found: dict[str, tuple[Any, str]] = {
        "request_id": (fn.lit(f"batch-{run_id}"), "string"), "record": (record_of(keys), "bigint"),
        "model_name": (fn.lit(model.source_model or manifest.model_name), "string"),
        "model_version": (fn.lit(model.source_version or manifest.model_version), "string"),
        "source": (fn.lit(INFERENCE_SOURCE), "string"), "scored_at": (fn.col("scored_at"), "timestamp")}
    personal = set((manifest.contract or {}).get("personal") or ())
    whole = {*keys, *(f.name for f in manifest.inputs if f.type in ("long", "integer"))}  # sent as integers
    for column in [*keys, *(f.name for f in manifest.inputs)]:
        if column not in personal or inference.personal == "keep":
            found[column] = (fn.col(column), types_of[column])
        elif inference.personal == "pseudonymise":
            assert inference.key is not None  # InferenceTable says so
            found[column + inference_table.HMAC_SUFFIX] = (pseudonymised(column, inference.key, column in whole),
                                                           "string")
    for column, _ in output_columns(manifest):
        if not column.startswith("probability_"):
            found[column] = (fn.col(column), types_of[column])
    if manifest.task == "multiclass":
        classes = manifest.classes or ()
        pairs = [part for c in classes for part in (fn.lit(str(c)), fn.col(probability_column(c)))]
        found["probabilities"] = (fn.to_json(fn.create_map(*pairs)), "string")
    return found


def record_of(keys: list[str]):
    """A row's record in its run: a number its ids determine (Spark's xxhash64 of them, seeded, the same on every
    Spark), computed where the row is, with no sort of the whole run. A row number would do only while the input stays
    the same: a repair that drops or fixes a row would give a held record to another row (kept out by the anti-join)
    and a new one to a row already held (added twice). By its ids, a retried or repaired run adds exactly the rows it
    did not hold. Rows that share their ids in one run (or, one chance in 2**64 a pair, their hash) share a record:
    their first append adds each of them, a re-run none."""
    from pyspark.sql import functions as fn

    return fn.xxhash64(*(fn.col(k) for k in keys))


def pseudonymised(column: str, key: bytes, whole: bool):
    """The service's pseudonym of each value (serving/scoring/privacy.py), of the value as the service received it: an
    id or an integer input as an integer (a whole number stored as double is that integer, scoring/ids.py's rule),
    another number as a float, text as text; null stays null."""
    from pyspark.sql import functions as fn

    def of(value: Any) -> str | None:
        if isinstance(value, float) and math.isnan(value):  # a missing number (the service's null)
            return None
        if isinstance(value, float) and whole and value.is_integer():
            value = int(value)
        return inference_table.pseudonym(key, column, value)

    # Rows as Python values, not Arrow's pandas batches: an integer column with a null would arrive as floats.
    return fn.udf(of, "string", useArrow=False)(fn.col(column))


def as_text(value, spark_type: str):
    """A value as the inference table holds text (monitoring/quality_delta.py's rule for the log's values): a whole
    number without a fraction (123.0 and 123 are one id), a boolean as Python writes it."""
    from pyspark.sql import functions as fn

    if spark_type in ("double", "float"):
        whole = value.isNotNull() & (fn.abs(value) < 2.0**53) & (value == fn.floor(value))
        return fn.when(whole, value.cast("bigint").cast("string")).otherwise(value.cast("string"))
    if spark_type == "boolean":
        return fn.when(value, fn.lit("True")).when(~value, fn.lit("False"))
    return value.cast("string")


def replace_run(spark, frame, table: str, run_id: str) -> None:
    """Write `frame` (one run's rows) as the run's partition of `table`, replacing what an earlier attempt of the same
    run wrote there: INSERT OVERWRITE with a static partition truncates that partition only (Delta and Parquet alike:
    docs.databricks.com/sql/language-manual/sql-ref-syntax-dml-insert-into). The table is created empty, partitioned
    by the run, on the first run (from the schema alone: running `frame` here would spend its Observation)."""
    if not spark.catalog.tableExists(table):
        spark.createDataFrame([], frame.schema).write.partitionBy(RUN_COLUMN).saveAsTable(table)
    columns = ", ".join(quoted(column) for column in frame.columns if column != RUN_COLUMN)
    target = ".".join(quoted(part) for part in table.split("."))
    frame.createOrReplaceTempView(RUN_VIEW)
    try:
        spark.sql(f"INSERT OVERWRITE TABLE {target} PARTITION ({RUN_COLUMN} = '{run_id}') ({columns}) "
                  f"SELECT {columns} FROM {RUN_VIEW}")
    finally:
        spark.catalog.dropTempView(RUN_VIEW)


def quoted(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def run_id_arg(value: str) -> str:
    """The run id names the partition in a SQL statement: letters, digits, '_', '.' and '-' only."""
    if not re.fullmatch(r"[\w.-]+", value):
        raise argparse.ArgumentTypeError(f"a scoring run id is letters, digits, '_', '.' or '-', got {value!r}")
    return value


CATALOG_AS_DATABASE = "spark.mlops.catalogAsDatabase"  # set only in a local Spark's spark-defaults.conf


def table_name(spark, table: str) -> str:
    """The name Spark knows `table` by. On Databricks, the Unity Catalog name as given; on a local Spark that sets
    spark.mlops.catalogAsDatabase (scripts/databricks_local.py), catalog.schema.table lives in the database
    catalog_schema, its one-level catalog (training/loader.py reads the training table the same way: serving may
    not import training, so the rule is written twice, and tests/databricks runs both)."""
    parts = table.split(".")
    if spark.conf.get(CATALOG_AS_DATABASE, "false") == "true" and len(parts) == 3:
        return f"{parts[0]}_{parts[1]}.{parts[2]}"
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-table", required=True, help="the table to score (catalog.schema.table)")
    parser.add_argument("--output-table", required=True, help="predictions go here (the run's partition)")
    parser.add_argument("--rejects-table", required=True, help="rows that cannot be scored go here, with why")
    parser.add_argument("--key", action="append", help="an id column, copied to both outputs (repeat); default: the "
                                                       "version's contract's ids")
    parser.add_argument("--model-uri", required=True, help="models:/<name>/<version> (the version the stack serves)")
    parser.add_argument("--job-run-id", required=True, type=run_id_arg,
                        help="the scoring run id written with every row (the partition the run replaces)")
    parser.add_argument("--inference-table", help="the stack's inference table (catalog.schema.table): the scored rows "
                                                  "are appended to it too, once (omit: not)")
    parser.add_argument("--personal", choices=PERSONAL_MODES, default="drop",
                        help="observability.requestLogPersonal: the contract's personal columns in the inference table "
                             "kept, left out or pseudonymised (key: env REQUEST_LOG_PSEUDONYM_KEY)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pyspark.sql import SparkSession

    try:
        inference = (InferenceTable(args.inference_table, args.personal, pseudonym_key())
                     if args.inference_table else None)
    except BatchError as error:  # before the model is loaded: a run that could not append scores nothing
        print(f"batch scoring failed: {error}", file=sys.stderr)
        return MISSING_COLUMN
    model = load_model(args.model_uri)
    spark = SparkSession.builder.getOrCreate()  # a wheel task has no `spark` global
    for key, value in SESSION_CONF.items():
        spark.conf.set(key, value)
    try:
        outcome = run(spark, model, args.input_table, args.output_table, args.rejects_table, args.key, args.job_run_id,
                      inference)
    except BatchError as error:
        print(f"batch scoring failed: {error}", file=sys.stderr)
        return MISSING_COLUMN
    print(json.dumps(outcome.summary(model.manifest, args.job_run_id)), flush=True)
    if outcome.rejected:
        print(f"batch: rejected {outcome.rejected} of {outcome.rows} rows (reasons in {args.rejects_table})", flush=True)
    if outcome.rows and not outcome.scored:
        print("batch scoring failed: every row was rejected", file=sys.stderr)
        return NOTHING_SCORED
    return 0


def pseudonym_key() -> bytes | None:
    """The request log's pseudonym key: the stack's secret, which the job's cluster sets from its secret scope."""
    return os.environ.get("REQUEST_LOG_PSEUDONYM_KEY", "").encode() or None


def cli() -> None:
    """The job wheel's batch entry point (a python_wheel_task calls it with no arguments; argv holds the parameters)."""
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
