"""Load the training table from a CSV or Parquet path, or a Databricks table, and validate it against the model's
contract (training/contract.py).

Validation is strict because a silently mis-typed column trains a silently wrong model: a column missing, of the
wrong type, a number out of its bounds, a category the contract does not allow, a target that is not one of its
classes. Every problem is a `SchemaError` that names the column (and the first row at fault).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from training.contract import Category, Contract, Number, Target

FILE_SUFFIXES = {".csv", ".parquet", ".pq"}


class SchemaError(ValueError):
    """The table does not follow the data contract."""


def load_table(source: str, contract: Contract, require_target: bool = True) -> pd.DataFrame:
    """Read `source` (a .csv/.parquet path or a `catalog.schema.table` name) and validate it."""
    return validate_frame(_read(source), contract, require_target=require_target)


def _read(source: str) -> pd.DataFrame:
    path = Path(source)
    if is_file(source):
        if not path.exists():
            raise FileNotFoundError(f"data file not found: {source}")
        if path.suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    return _read_spark_table(source)


def _read_spark_table(table: str) -> pd.DataFrame:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SchemaError(f"'{table}' is not a .csv or .parquet path, and pyspark is not installed to read it as a "
                          "table (table names work in a Databricks job, or locally with `make databricks-test`)") from None
    # A wheel or script task has no `spark` global and no guaranteed active session: get or create it.
    spark = SparkSession.builder.getOrCreate()
    return spark.read.table(spark_table_name(spark.conf.get(CATALOG_AS_DATABASE, "false") or "false", table)).toPandas()


def is_file(source: str) -> bool:
    path = Path(source)
    return path.suffix in FILE_SUFFIXES or path.is_dir()


def table_version(table: str) -> int | None:
    """The Delta version of `table` as read now (Unity Catalog tables are Delta), or None where there is none to
    tell (Spark's local catalog in the tests, or no Spark session)."""
    try:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        return int(spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").collect()[0]["version"]) if spark else None
    except Exception:  # lineage is best effort: not a Delta table, no history rights
        return None


# Set only in a local Spark's spark-defaults.conf (tests/databricks), never on a cluster.
CATALOG_AS_DATABASE = "spark.mlops.catalogAsDatabase"


def spark_table_name(catalog_as_database: str, table: str) -> str:
    """The name to read `table` by. Unity Catalog names tables catalog.schema.table; Spark's local catalog has
    one catalog (spark_catalog) holding databases, so there, with `spark.mlops.catalogAsDatabase=true`, the
    table lives in the database `<catalog>_<schema>`. Everywhere else the name is used as given."""
    parts = table.split(".")
    if catalog_as_database == "true" and len(parts) == 3:
        return f"{parts[0]}_{parts[1]}.{parts[2]}"
    return table


def validate_frame(frame: pd.DataFrame, contract: Contract, require_target: bool = True) -> pd.DataFrame:
    """Check `frame` against the contract and return its features (and target) with normalised dtypes: text as
    Python strings with None for missing, numbers as float64 with NaN for missing."""
    wanted = [*contract.feature_names, contract.target.name] if require_target else contract.feature_names
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)}")
    if frame.empty:
        raise SchemaError("the table is empty: no rows to train on")

    out = pd.DataFrame(index=frame.index)
    for feature in contract.features:
        if isinstance(feature, Number):
            out[feature.name] = _within_bounds(_numeric(frame[feature.name], feature.name), feature)
        else:
            out[feature.name] = _categorical(frame[feature.name], feature)
    if require_target:
        out[contract.target.name] = _target(frame[contract.target.name], contract.target)
    return out.reset_index(drop=True)


def _categorical(values: pd.Series, category: Category) -> pd.Series:
    column, present = category.name, values.dropna()
    bad = present[[not isinstance(v, str) for v in present]]
    if len(bad):
        raise SchemaError(
            f"column '{column}' must hold strings; found {type(bad.iloc[0]).__name__} "
            f"value {_show(bad.iloc[0])} (row {bad.index[0]})"
        )
    if category.values is not None:
        unknown = present[~present.isin(category.values)]
        if len(unknown):
            raise SchemaError(f"column '{column}' holds {_show(unknown.iloc[0])} (row {unknown.index[0]}), which its "
                              f"contract does not allow; allowed: {', '.join(category.values)}")
    return values.astype(object).where(values.notna(), None)


def _numeric(values: pd.Series, column: str) -> pd.Series:
    if ptypes.is_bool_dtype(values) or not ptypes.is_numeric_dtype(values):
        if ptypes.is_bool_dtype(values):
            raise SchemaError(f"column '{column}' must be numeric; found booleans")
        coerced = pd.to_numeric(values, errors="coerce")
        bad = values[coerced.isna() & values.notna()]
        if len(bad):
            raise SchemaError(
                f"column '{column}' must be numeric; found {_show(bad.iloc[0])} (row {bad.index[0]})"
            )
        values = coerced
    return values.astype(np.float64)


def _within_bounds(values: pd.Series, number: Number) -> pd.Series:
    """`values` (float64, NaN for missing) unchanged when every present one is finite and within the bounds."""
    present = values.notna().to_numpy()
    array = values.to_numpy()
    broken = present & ~np.isfinite(array)
    for bound, outside in ((number.minimum, np.less), (number.maximum, np.greater),
                           (number.greater_than, np.less_equal), (number.less_than, np.greater_equal)):
        if bound is not None:
            broken |= present & outside(array, bound)
    if broken.any():
        row = int(np.flatnonzero(broken)[0])
        value = float(array[row])
        problem = number.problem(value) if np.isfinite(value) else "must be a finite number"
        raise SchemaError(f"column '{number.name}' {problem}; found {_show(value)} (row {row})")
    return values


def _show(value: object) -> str:
    """A cell as a person would write it (numpy scalars print as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _target(values: pd.Series, target: Target) -> pd.Series:
    column = target.name
    if values.isna().any():
        raise SchemaError(f"column '{column}' has {int(values.isna().sum())} missing value(s); every training row "
                          "needs its target")
    if target.task == "regression":
        numeric = _numeric(values, column)
        if not np.isfinite(numeric).all():
            raise SchemaError(f"column '{column}' must hold finite numbers")
        return numeric
    classes = list(target.classes or ())
    normalised = values.map(lambda v: _as_class(v, classes))
    bad = values[normalised.isna()]
    if len(bad):
        raise SchemaError(f"column '{column}' must be one of {', '.join(map(str, classes))}; found "
                          f"{_show(bad.iloc[0])} (row {bad.index[0]})")
    if normalised.nunique() < 2:
        raise SchemaError(f"column '{column}' holds a single class; training needs at least two of "
                          f"{', '.join(map(str, classes))}")
    kinds = {type(c) for c in classes}
    return normalised.astype(np.int64) if kinds <= {int} else normalised.astype(object)


def _as_class(value: object, classes: list) -> object:
    """`value` as the contract's class it equals (a 1.0 read from a CSV is the class 1), or None."""
    for known in classes:
        if value == known and isinstance(value, str) == isinstance(known, str):
            return known
    return None
