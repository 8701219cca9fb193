"""The generated table follows the contract and looks like credit data; the loader rejects
tables that do not, naming the column."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from training import data, schema
from training.loader import SchemaError, load_table, spark_table_name, validate_frame


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return data.generate(5000, seed=3)


def test_generator_is_reproducible_by_seed(table):
    pd.testing.assert_frame_equal(table, data.generate(5000, seed=3))
    assert not table.equals(data.generate(5000, seed=4))


def test_generated_table_follows_the_contract(table):
    assert list(table.columns) == [*schema.FEATURES, schema.TARGET]
    validated = validate_frame(table)
    assert set(validated[schema.TARGET].unique()) == {0, 1}
    for column in ("sex", "education", "marriage"):
        allowed = {"sex": schema.SEX_VALUES, "education": schema.EDUCATION_VALUES, "marriage": schema.MARRIAGE_VALUES}[column]
        assert set(validated[column].dropna()) <= set(allowed)
    statuses = set(validated[[f"repayment_status_{m}" for m in schema.MONTHS]].stack())
    assert statuses <= set(schema.REPAYMENT_VALUES) and {"duly_paid", "no_delay", "delay_2_months"} <= statuses


def test_generated_values_are_plausible(table):
    assert table["age"].dropna().between(*schema.AGE_RANGE).all()
    assert (table["credit_limit"] > 0).all()
    assert 0.10 < table[schema.TARGET].mean() < 0.40
    assert (table[[f"payment_amount_{m}" for m in schema.MONTHS]].dropna() >= 0).all().all()
    # bill histories are correlated month to month, as real statements are
    assert table["bill_amount_1"].corr(table["bill_amount_2"]) > 0.8


def test_a_few_percent_of_values_are_missing(table):
    missing = table[list(data.COLUMNS_WITH_GAPS)].isna().mean()
    assert ((missing > 0.005) & (missing < 0.05)).all(), missing.to_dict()
    assert table[["sex", "credit_limit", schema.TARGET]].notna().all().all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_loader_reads_csv_and_parquet(tmp_path, table, suffix):
    path = tmp_path / f"credit{suffix}"
    data.write_table(table, path)
    loaded = load_table(str(path))
    assert len(loaded) == len(table)
    assert loaded["education"].isna().sum() == table["education"].isna().sum()
    assert loaded["education"].dropna().map(type).eq(str).all()
    assert loaded["age"].dtype == np.float64


def _broken(table: pd.DataFrame, change) -> pd.DataFrame:
    broken = table.copy()
    change(broken)
    return broken


def _set(column: str, row: int, value):
    """A change that puts `value` in one cell (the column becomes object-typed if it must)."""
    def change(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object).where(frame.index != row, value)
    return change


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["age", "bill_amount_3"], inplace=True), "missing column(s): age, bill_amount_3"),
    (_set("age", 5, "old"), "column 'age' must be numeric; found 'old' (row 5)"),
    (lambda f: f.__setitem__("credit_limit", f["credit_limit"] > 0), "column 'credit_limit' must be numeric; found booleans"),
    (_set("sex", 2, 1), "column 'sex' must hold strings; found int value 1 (row 2)"),
    (_set("age", 7, 130.0), "column 'age' must be between 18 and 100 years; found 130.0 (row 7)"),
    (_set(schema.TARGET, 4, 2), f"column '{schema.TARGET}' must be 0 or 1; found 2 (row 4)"),
    (lambda f: f.__setitem__(schema.TARGET, 0), f"column '{schema.TARGET}' holds a single class"),
])
def test_schema_errors_name_the_column(table, change, message):
    with pytest.raises(SchemaError) as error:
        validate_frame(_broken(table, change))
    assert message in str(error.value)


def test_empty_table_is_an_error(table):
    with pytest.raises(SchemaError, match="empty"):
        validate_frame(table.head(0))


def test_csv_with_a_non_numeric_cell_names_the_column(tmp_path, table):
    path = tmp_path / "bad.csv"
    table.head(20).assign(bill_amount_2=["twelve", *table["bill_amount_2"].head(19)]).to_csv(path, index=False)
    with pytest.raises(SchemaError, match="column 'bill_amount_2' must be numeric; found 'twelve' \\(row 0\\)"):
        load_table(str(path))


def test_table_name_without_spark_explains_itself(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as on a laptop without `make databricks-test`
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(SchemaError, match="pyspark is not installed"):
        load_table("main.credit.card_holders")


def test_three_part_names_map_to_a_local_database_only_when_configured():
    assert spark_table_name("true", "dev.credit.card_holders") == "dev_credit.card_holders"
    assert spark_table_name("false", "dev.credit.card_holders") == "dev.credit.card_holders"
    assert spark_table_name("true", "credit.card_holders") == "credit.card_holders"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        load_table(str(tmp_path / "nope.parquet"))
