"""Every model module's example data follows its own contract, and the loader refuses a table that does not,
naming the column. The cases are built from each contract (its first number with bounds, its first category with
values, its target), so a new model module is checked the same way without a line here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training import contract, data
from training.contract import Category, Number
from training.loader import SchemaError, load_table, spark_table_name, validate_frame

MODULES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "models").glob("*.py") if p.stem != "__init__")
# The modules that make example data (a team's own module may have none: it trains on its own table).
WITH_EXAMPLES = [name for name in MODULES if contract.load(f"models.{name}").example_data is not None]


@pytest.fixture(scope="module", params=WITH_EXAMPLES)
def example(request) -> tuple[contract.ModelModule, pd.DataFrame]:
    model = contract.load(f"models.{request.param}")
    return model, data.example_table(model, 3000, seed=3)


def test_every_model_module_in_models_loads_and_both_examples_ship_data():
    assert {"credit_default", "house_prices"} <= set(WITH_EXAMPLES)
    for name in MODULES:
        assert contract.load(f"models.{name}").contract.features


def test_example_data_is_reproducible_by_seed(example):
    model, table = example
    pd.testing.assert_frame_equal(table, data.example_table(model, 3000, seed=3))
    assert not table.equals(data.example_table(model, 3000, seed=4))


def test_example_data_follows_the_contract(example):
    model, table = example
    c = model.contract
    assert list(table.columns) == [*c.ids, *c.feature_names, c.target.name]
    validated = validate_frame(table, c)
    assert list(validated.columns) == [*c.feature_names, c.target.name]  # the ids are not features
    for category in c.categories:
        assert set(validated[category.name].dropna()) <= set(category.values or ())
    if c.target.classes:
        assert set(validated[c.target.name]) == set(c.target.classes)
    assert table[list(c.ids)].notna().all().all() and not table[list(c.ids)].duplicated().any()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_loader_reads_csv_and_parquet(tmp_path, example, suffix):
    model, table = example
    path = tmp_path / f"table{suffix}"
    data.write_table(table, path)
    loaded = load_table(str(path), model.contract)
    assert len(loaded) == len(table)
    for category in model.contract.categories:
        assert loaded[category.name].isna().sum() == table[category.name].isna().sum()
        assert loaded[category.name].dropna().map(type).eq(str).all()
    for number in model.contract.numbers:
        assert loaded[number.name].dtype == np.float64


def _set(column: str, row: int, value):
    def change(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object).where(frame.index != row, value)
    return change


def broken_tables(model: contract.ModelModule):
    """(change, the message the loader must give): one case per rule, on this contract's own columns (a rule the
    contract gives no column for, such as bounds on a contract with none, has no case)."""
    c = model.contract
    first, second, target = *c.feature_names[:2], c.target.name
    yield (lambda f: f.drop(columns=[first], inplace=True)), f"missing column(s): {first}"
    if second:
        yield (lambda f: f.drop(columns=[second, first], inplace=True)), f"missing column(s): {first}, {second}"
    for number in c.numbers[:1]:
        yield _set(number.name, 5, "many"), f"column '{number.name}' must be numeric; found 'many' (row 5)"
        yield ((lambda f, name=number.name: f.__setitem__(name, f[name] > 0)),
               f"column '{number.name}' must be numeric; found booleans")
        yield _set(number.name, 8, float("inf")), f"column '{number.name}' must be a finite number; found inf (row 8)"
    for number in [f for f in c.numbers if f.maximum is not None or f.minimum is not None][:1]:
        outside = float(number.maximum + 1 if number.maximum is not None else number.minimum - 1)
        yield (_set(number.name, 7, outside), f"column '{number.name}' {number.problem(outside)}; found {outside!r} (row 7)")
    for category in c.categories[:1]:
        yield _set(category.name, 2, 1), f"column '{category.name}' must hold strings; found int value 1 (row 2)"
    for category in [f for f in c.categories if f.values][:1]:
        yield (_set(category.name, 3, "__typo__"),
               f"column '{category.name}' holds '__typo__' (row 3), which its contract does not allow")
    yield (lambda f: f.__setitem__(target, None)), f"column '{target}' has 3000 missing value(s)"
    if c.target.classes:
        yield _set(target, 4, "__unknown__"), f"column '{target}' must be one of"
        yield (lambda f: f.__setitem__(target, c.target.classes[0])), f"column '{target}' holds a single class"
    else:
        yield _set(target, 4, "a lot"), f"column '{target}' must be numeric; found 'a lot' (row 4)"


def test_schema_errors_name_the_column(example):
    model, table = example
    for change, message in broken_tables(model):
        broken = table.copy()
        change(broken)
        with pytest.raises(SchemaError) as error:
            validate_frame(broken, model.contract)
        assert message in str(error.value)


def test_empty_table_is_an_error(example):
    model, table = example
    with pytest.raises(SchemaError, match="empty"):
        validate_frame(table.head(0), model.contract)


def test_csv_with_a_non_numeric_cell_names_the_column(tmp_path, example):
    model, table = example
    number = model.contract.numbers[0].name
    path = tmp_path / "bad.csv"
    table.head(20).assign(**{number: ["twelve", *table[number].head(19)]}).to_csv(path, index=False)
    with pytest.raises(SchemaError, match=f"column '{number}' must be numeric; found 'twelve' \\(row 0\\)"):
        load_table(str(path), model.contract)


def test_contract_rules_are_checked_when_the_module_is_written():
    target = contract.Target("y", "binary", (0, 1))
    with pytest.raises(contract.ContractError, match="more than once"):
        contract.Contract((Number("a"), Category("a")), target)
    with pytest.raises(contract.ContractError, match="the batch job and the request log write"):
        contract.Contract((Number("probability"),), target)
    with pytest.raises(contract.ContractError, match="binary target names its two classes"):
        contract.Contract((Number("a"),), contract.Target("y", "binary"))
    with pytest.raises(contract.ContractError, match="admit no value"):
        contract.Contract((Number("a", minimum=5, less_than=5),), target)
    with pytest.raises(contract.ContractError, match="personal names b"):
        contract.Contract((Number("a"),), target, personal=("b",))


def test_a_contract_survives_its_json_form(example):
    model, _ = example
    assert contract.Contract.from_dict(model.contract.to_dict(model.gate)) == model.contract


def test_table_name_without_spark_explains_itself(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as on a laptop without `make databricks-test`
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(SchemaError, match="pyspark is not installed"):
        load_table("main.sales.table", model.contract)


def test_three_part_names_map_to_a_local_database_only_when_configured():
    assert spark_table_name("true", "dev.sales.rows") == "dev_sales.rows"
    assert spark_table_name("false", "dev.sales.rows") == "dev.sales.rows"
    assert spark_table_name("true", "sales.rows") == "sales.rows"


def test_missing_file_is_named(tmp_path, model):
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        load_table(str(tmp_path / "nope.parquet"), model.contract)
