"""The model's data contract enforced by every protocol: a number outside its column's bounds and a value outside a
closed category's values are a 4xx naming the record, the column and what is allowed; an open column accepts a value
it never saw; a valid request answers as before. The app runs in-process on a copy of the session's model whose
manifest opens one of its closed categories (the variant a team gets with Category(open=True)). Columns and bounds
come from the manifest, never from the example model's names."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.scoring.app import create_app
from serving.scoring.model import InputField, Manifest
from serving.scoring.schemas import record_type

UNSEEN = "a_value_no_one_listed"


@pytest.fixture(scope="module")
def variant(context, tmp_path_factory) -> Path:
    """A copy of the session model whose manifest has its first closed category made open (the rest stay closed)."""
    copy = tmp_path_factory.mktemp("contract") / "model"
    shutil.copytree(context.path / "model", copy)
    raw = json.loads((copy / "manifest.json").read_text())
    closed = [f for f in raw["inputs"] if f["type"] == "string" and f.get("values") and not f.get("open")]
    assert len(closed) >= 2, "the session model needs two closed categories: one to open, one to stay closed"
    closed[0]["open"] = True
    (copy / "manifest.json").write_text(json.dumps(raw))
    return copy


@pytest.fixture(scope="module")
def manifest(variant) -> Manifest:
    return Manifest.read(variant)


@pytest.fixture(scope="module")
def client(variant) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODEL_DIR", str(variant))
        env.setenv("REQUEST_LOG", "false")
        app = create_app()
    with TestClient(app) as test_client:
        yield test_client


def first(manifest: Manifest, holds: Callable[[InputField], bool]) -> InputField:
    found = [f for f in manifest.inputs if holds(f)]
    if not found:
        pytest.skip("the session model's contract has no such column")
    return found[0]


def example(manifest: Manifest) -> list[dict]:
    return [dict(record) for record in manifest.input_example]


# Each protocol: (post the records, the status of a refusal, the refusal's text).
def predict(client: TestClient, manifest: Manifest, records: list[dict]):
    return client.post("/predict", json={"records": records})


def invocations(client: TestClient, manifest: Manifest, records: list[dict]):
    return client.post("/invocations", json={"dataframe_records": records})


def invocations_csv(client: TestClient, manifest: Manifest, records: list[dict]):
    """CSV: every cell is text, so a number for a text column reaches the lenient (mlflow_lax) rules."""
    names = manifest.input_names
    rows = [",".join(names)] + [",".join("" if r[n] is None else str(r[n]) for n in names) for r in records]
    return client.post("/invocations", content="\n".join(rows) + "\n", headers={"Content-Type": "text/csv"})


def v2(client: TestClient, manifest: Manifest, records: list[dict]):
    types = {"string": "BYTES", "long": "INT64", "integer": "INT64", "boolean": "BOOL"}
    inputs = [{"name": f.name, "datatype": types.get(f.type, "FP64"), "shape": [len(records)],
               "data": [r[f.name] for r in records]} for f in manifest.inputs]
    return client.post(f"/v2/models/{manifest.model_name}/infer", json={"inputs": inputs})


PROTOCOLS = {"predict": (predict, 422), "invocations": (invocations, 400), "invocations_csv": (invocations_csv, 400),
             "v2": (v2, 400)}


@pytest.fixture(params=list(PROTOCOLS))
def protocol(request):
    return PROTOCOLS[request.param]


def refused(protocol, client, manifest, field: InputField, value: object, allowed: str) -> None:
    """A record (the second) with `value` in `field` is refused, naming the record, the column, what is allowed and
    what was sent."""
    send, status = protocol
    records = example(manifest)[:2]
    records[1][field.name] = value
    answer = send(client, manifest, records)
    assert answer.status_code == status, answer.text
    if "problems" in answer.json():  # /predict: each problem as an object
        [problem] = answer.json()["problems"]
        assert (problem["record"], problem["field"]) == (1, field.name)
        sentence = problem["problem"]
    else:  # MLflow's and V2's bodies: the problems as one message
        sentence = answer.text.split(f"column '{field.name}', record 1: ", 1)[-1]
    sent = {repr(value), repr(float(value))} if isinstance(value, int | float) else {repr(value)}  # CSV: 17 -> 17.0
    assert sentence.startswith(allowed) and any(f"(got {v})" in sentence for v in sent), answer.text


def bound(value: float) -> str:
    return f"{value:g}"


def test_a_number_under_its_minimum_is_refused(protocol, client, manifest):
    field = first(manifest, lambda f: f.minimum is not None)
    refused(protocol, client, manifest, field, field.minimum - 1, f"must be at least {bound(field.minimum)}")


def test_a_number_over_its_maximum_is_refused(protocol, client, manifest):
    field = first(manifest, lambda f: f.maximum is not None)
    refused(protocol, client, manifest, field, field.maximum + 1, f"must be at most {bound(field.maximum)}")


def test_a_number_at_its_exclusive_bound_is_refused(protocol, client, manifest):
    field = first(manifest, lambda f: f.greater_than is not None or f.less_than is not None)
    if field.greater_than is not None:
        refused(protocol, client, manifest, field, field.greater_than, f"must be greater than {bound(field.greater_than)}")
    else:
        refused(protocol, client, manifest, field, field.less_than, f"must be less than {bound(field.less_than)}")


def test_an_unknown_category_of_a_closed_column_is_refused_naming_the_values(protocol, client, manifest):
    field = first(manifest, lambda f: f.is_string and f.values is not None and not f.open)
    allowed = "must be one of " + ", ".join(repr(v) for v in field.values[:-1])
    refused(protocol, client, manifest, field, UNSEEN, allowed)


def test_a_number_sent_for_a_closed_category_is_refused_by_mlflows_lenient_rules(client, manifest):
    """MLflow takes a number for a text column as its text; that text is then held to the column's values."""
    field = first(manifest, lambda f: f.is_string and f.values is not None and not f.open
                  and not any(v.lstrip("-").isdigit() for v in f.values))
    records = example(manifest)[:1]
    records[0][field.name] = 7
    answer = invocations(client, manifest, records)
    assert answer.status_code == 400 and f"'{field.name}'" in answer.text and "must be one of" in answer.text


def test_an_open_column_accepts_a_value_it_never_saw(protocol, client, manifest):
    send, _ = protocol
    field = first(manifest, lambda f: f.open)
    records = example(manifest)[:2]
    records[1][field.name] = UNSEEN
    answer = send(client, manifest, records)
    assert answer.status_code == 200, answer.text


def test_values_at_the_inclusive_bounds_and_null_are_scored(protocol, client, manifest):
    """The edges of the contract are in it, and null stays allowed (missing: the pipeline imputes it)."""
    send, _ = protocol
    records = example(manifest)[:2]
    for field in manifest.inputs:
        if field.minimum is not None:
            records[0][field.name] = field.minimum
        if field.maximum is not None:
            records[1][field.name] = field.maximum
    nullable = first(manifest, lambda f: not f.is_string)
    records[1][nullable.name] = None
    answer = send(client, manifest, records)
    assert answer.status_code == 200, answer.text


def test_every_refusal_in_one_request_is_named(client, manifest):
    """Several out-of-contract values in several records: each is its own problem (record, field)."""
    low = first(manifest, lambda f: f.minimum is not None)
    closed = first(manifest, lambda f: f.is_string and f.values is not None and not f.open)
    records = example(manifest)[:2]
    records[0][low.name], records[1][closed.name] = low.minimum - 1, UNSEEN
    answer = predict(client, manifest, records)
    assert answer.status_code == 422
    found = {(p["record"], p["field"], p["type"]) for p in answer.json()["problems"]}
    assert found == {(0, low.name, "greater_than_equal"), (1, closed.name, "literal_error")}


def test_the_openapi_record_schema_shows_the_bounds_and_the_values(client, manifest):
    record = client.get("/openapi.json").json()["components"]["schemas"]["Record"]["properties"]
    low = first(manifest, lambda f: f.minimum is not None)
    closed = first(manifest, lambda f: f.is_string and f.values is not None and not f.open)
    opened = first(manifest, lambda f: f.open)
    assert record[low.name]["anyOf"][0]["minimum"] == low.minimum
    assert record[closed.name]["anyOf"][0]["enum"] == list(closed.values)
    assert "enum" not in record[opened.name]["anyOf"][0]
    assert "refused" in record[low.name]["description"]


def test_the_contract_admits_the_example_the_model_was_registered_with(manifest):
    """The input example (what /docs shows and the smoke test sends) is inside the contract."""
    from pydantic import TypeAdapter

    TypeAdapter(list[record_type(manifest)]).validate_python(example(manifest))


def test_integer_columns_get_the_integer_bounds_that_admit_the_same_integers(manifest):
    from pydantic import TypeAdapter, ValidationError

    from serving.scoring.schemas import value_type

    field = InputField("count", "long", minimum=0.5, maximum=9.5, greater_than=-0.5, less_than=9.9)
    adapter = TypeAdapter(value_type(field))
    assert [adapter.validate_python(v) for v in (1, 9)] == [1, 9]
    for value in (0, 10):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)
