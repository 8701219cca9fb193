"""Load the training table from a CSV or Parquet path, or a Databricks table, and validate it.

Validation is strict because a silently mis-typed column trains a silently wrong model: every
problem is a `SchemaError` that names the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from training import schema

FILE_SUFFIXES = {".csv", ".parquet", ".pq"}


class SchemaError(ValueError):
    """The table does not follow the data contract."""


def load_table(source: str, require_target: bool = True) -> pd.DataFrame:
    """Read `source` (a .csv/.parquet path or a `catalog.schema.table` name) and validate it."""
    return validate_frame(_read(source), require_target=require_target)


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


def validate_frame(frame: pd.DataFrame, require_target: bool = True) -> pd.DataFrame:
    """Check the contract and return the contract's columns with normalised dtypes."""
    wanted = [*schema.FEATURES, schema.TARGET] if require_target else list(schema.FEATURES)
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)}")
    if frame.empty:
        raise SchemaError("the table is empty: no rows to train on")

    out = pd.DataFrame(index=frame.index)
    for column in schema.CATEGORICAL:
        out[column] = _categorical(frame[column], column)
    for column in schema.NUMERIC:
        out[column] = _numeric(frame[column], column)
    _check_ranges(out)
    if require_target:
        out[schema.TARGET] = _target(frame[schema.TARGET])
    return out.reset_index(drop=True)


def _categorical(values: pd.Series, column: str) -> pd.Series:
    present = values.dropna()
    bad = present[[not isinstance(v, str) for v in present]]
    if len(bad):
        raise SchemaError(
            f"column '{column}' must hold strings; found {type(bad.iloc[0]).__name__} "
            f"value {_show(bad.iloc[0])} (row {bad.index[0]})"
        )
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


def _check_ranges(frame: pd.DataFrame) -> None:
    low, high = schema.AGE_RANGE
    out_of_range = frame["age"].notna() & ~frame["age"].between(low, high)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise SchemaError(
            f"column 'age' must be between {low} and {high} years; found {_show(frame['age'].iloc[row])} (row {row})"
        )
    if (frame["credit_limit"] <= 0).any():
        row = int(np.flatnonzero(frame["credit_limit"] <= 0)[0])
        raise SchemaError(f"column 'credit_limit' must be positive; found {_show(frame['credit_limit'].iloc[row])} (row {row})")


def _show(value: object) -> str:
    """A cell as a person would write it (numpy scalars print as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _target(values: pd.Series) -> pd.Series:
    column = schema.TARGET
    if values.isna().any():
        raise SchemaError(f"column '{column}' has {int(values.isna().sum())} missing value(s); the target must be 0 or 1")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[~numeric.isin([0, 1])]
    if len(bad):
        raise SchemaError(f"column '{column}' must be 0 or 1; found {_show(bad.iloc[0])} (row {bad.index[0]})")
    if numeric.nunique() < 2:
        raise SchemaError(f"column '{column}' holds a single class; training needs both 0 and 1")
    return numeric.astype(np.int64)
