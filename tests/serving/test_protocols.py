"""MLflow's scoring protocol and the Open Inference Protocol (V2), against a real uvicorn process, with the
real clients (MLflow's ScoringServerClient, tritonclient) and MLflow's own scoring server (in-process,
on the same registered version) as the truth for /invocations."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from pydantic import TypeAdapter, ValidationError
from tritonclient.utils import InferenceServerException

from monitoring import logformat
from serving.scoring.model import Manifest
from serving.scoring.schemas import value_type

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture(scope="module")
def numbers(manifest) -> list[str]:
    """The session model's numeric inputs (from its signature: the tests name no column of their own)."""
    return [f.name for f in manifest.inputs if not f.is_string]


@pytest.fixture(scope="module")
def texts(manifest) -> list[str]:
    return [f.name for f in manifest.inputs if f.is_string]


@pytest.fixture(scope="module")
def frame(manifest, numbers) -> pd.DataFrame:
    """The input example plus a row with missing numbers, in the signature's column order. (A missing
    string is not in it: MLflow's schema enforcement turns it into NaN, which the pipeline then refuses.)"""
    rows = [dict(r) for r in manifest.input_example]
    rows.append({**rows[0], numbers[0]: None, numbers[-1]: None})
    return pd.DataFrame(rows)[manifest.input_names]


@pytest.fixture(scope="module")
def pyfunc(registry, manifest):
    # the session's registry by name: a test file before this one in the same worker may have pointed MLflow elsewhere
    mlflow.set_tracking_uri(registry["tracking_uri"])
    mlflow.set_registry_uri(registry["tracking_uri"])
    return mlflow.pyfunc.load_model(f"models:/{manifest.model_name}/{manifest.model_version}")


@pytest.fixture(scope="module")
def mlflow_server(pyfunc):
    """`mlflow models serve`'s own app for the same registered version."""
    with TestClient(scoring_server.init(pyfunc)) as client:
        yield client


def records_of(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))  # NaN -> null, as a JSON client sends it


def bodies(frame: pd.DataFrame) -> dict[str, tuple[str, bytes]]:
    records = records_of(frame)
    columns = {name: [r[name] for r in records] for name in frame.columns}
    split = json.loads(frame.to_json(orient="split"))
    return {
        "dataframe_split": ("application/json", json.dumps({"dataframe_split": split}).encode()),
        "dataframe_records": ("application/json", json.dumps({"dataframe_records": records}).encode()),
        "instances": ("application/json", json.dumps({"instances": records}).encode()),
        "inputs": ("application/json", json.dumps({"inputs": columns}).encode()),
        "csv": ("text/csv; charset=utf-8", frame.to_csv(index=False).encode()),
    }


# ------------------------------------------------------------------ MLflow's protocol

def test_mlflow_scoring_client_works_unchanged(live, context, frame, pyfunc):
    client = ScoringServerClient("127.0.0.1", live.url.rsplit(":", 1)[1])
    client.wait_server_ready(timeout=10)
    assert client.get_version() == mlflow.pyfunc.Model.load(context.path / "model" / "mlflow").mlflow_version
    predictions = client.invoke(frame).get_predictions()
    expected = pyfunc.predict(frame)
    assert np.asarray(predictions).shape == expected.shape == (len(frame), 2)
    assert np.max(np.abs(np.asarray(predictions, dtype=float) - expected)) <= TOLERANCE


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"])
def test_invocations_answers_what_mlflow_answers(http, mlflow_server, frame, form):
    content_type, body = bodies(frame)[form]
    ours = http.post("/invocations", content=body, headers={"content-type": content_type})
    theirs = mlflow_server.post("/invocations", content=body, headers={"content-type": content_type})
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert ours.headers["content-type"] == "application/json"
    got, want = ours.json(), theirs.json()
    assert list(got) == list(want) == ["predictions"]
    assert np.asarray(got["predictions"]).shape == np.asarray(want["predictions"]).shape
    assert np.max(np.abs(np.asarray(got["predictions"]) - np.asarray(want["predictions"]))) <= TOLERANCE


def test_invocations_ignores_columns_and_keys_mlflow_ignores(http, mlflow_server, frame):
    records = [{**r, "nickname": "bob"} for r in records_of(frame)]
    body = {"dataframe_records": records, "params": None, "client": "legacy"}
    ours, theirs = http.post("/invocations", json=body), mlflow_server.post("/invocations", json=body)
    assert ours.status_code == theirs.status_code == 200
    assert np.max(np.abs(np.asarray(ours.json()["predictions"]) - np.asarray(theirs.json()["predictions"]))) <= TOLERANCE


def admits(field, value: object) -> bool:
    """The contract's rule for one value of the column (serving/scoring/schemas.py) holds."""
    try:
        TypeAdapter(value_type(field)).validate_python(value)
    except ValidationError:
        return False
    return True


def test_invocations_takes_numbers_for_text_and_booleans_for_numbers_as_mlflow_does(http, mlflow_server, frame,
                                                                                   manifest):
    """Within the contract: a number for a text column only where the column takes any text (none listed, or open:
    a closed category refuses it, test_contract_at_the_door.py), a boolean for a number whose bounds admit 1.0."""
    records = records_of(frame)
    free_text = [f.name for f in manifest.inputs if f.is_string and (f.values is None or f.open)]
    ones = [f.name for f in manifest.inputs if f.type in ("double", "float") and admits(f, 1.0)]
    lax = {**records[0], ones[0]: True, **({free_text[0]: 3} if free_text else {})}
    body = {"dataframe_records": [lax]}
    ours, theirs = http.post("/invocations", json=body), mlflow_server.post("/invocations", json=body)
    assert ours.status_code == theirs.status_code == 200
    assert np.max(np.abs(np.asarray(ours.json()["predictions"]) - np.asarray(theirs.json()["predictions"]))) <= TOLERANCE
    strict = http.post("/predict", json={"records": [lax]})
    assert strict.status_code == 422  # our own protocol stays strict


def _without(records: list[dict], column: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != column} for r in records]


def _split_with_text_last(rs: list[dict], number: str) -> dict:
    columns = [c for c in rs[0] if c != number] + [number]
    return {"dataframe_split": {"columns": columns, "data": [[*(rs[0][c] for c in columns[:-1]), "x"]]}}


@pytest.mark.parametrize(("name", "make", "named"), [
    ("missing column", lambda rs, n: {"dataframe_records": _without(rs, n)}, "<number>"),
    ("text for a number", lambda rs, n: {"dataframe_records": [{**rs[0], n: "lots"}]}, "<number>"),
    ("text for a number, split", _split_with_text_last, "<number>"),
    ("no format key", lambda rs, n: {"records": rs}, "dataframe_split"),
    ("two format keys", lambda rs, n: {"instances": rs, "inputs": rs}, "dataframe_records"),
])
def test_bad_invocations_get_mlflow_error_shape_naming_the_column(http, mlflow_server, frame, numbers, name, make,
                                                                  named):
    body = make(records_of(frame), numbers[-1])
    named = numbers[-1] if named == "<number>" else named
    ours, theirs = http.post("/invocations", json=body), mlflow_server.post("/invocations", json=body)
    assert ours.status_code == 400, ours.text
    assert 400 <= theirs.status_code < 500, f"MLflow itself accepts {name}"
    answer = ours.json()
    assert set(answer) == {"error_code", "message", "request_id", "problems"} and answer["error_code"] == "BAD_REQUEST"
    assert named in answer["message"] and any(named in p["problem"] or named == p["field"] for p in answer["problems"])


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("application/json", b"{not json", 400),
    ("application/json", b"[1, 2]", 400),
    ("text/csv", b"<text>,<number>\nsome,forty\n", 400),
    ("text/plain", b"hello", 415),
    ("application/json; charset=latin-1", b"{}", 415),
])
def test_malformed_invocations_are_4xx_as_in_mlflow(http, mlflow_server, numbers, texts, content_type, body, status):
    body = body.replace(b"<text>", texts[0].encode()).replace(b"<number>", numbers[0].encode())
    ours = http.post("/invocations", content=body, headers={"content-type": content_type})
    theirs = mlflow_server.post("/invocations", content=body, headers={"content-type": content_type})
    assert ours.status_code == status and 400 <= theirs.status_code < 500
    if status == 400:
        assert ours.json()["error_code"] == "BAD_REQUEST"
    assert http.get("/ping").status_code == 200  # and the process keeps serving


def test_ping_and_version_as_mlflow_has_them(http, mlflow_server, context):
    ping = http.get("/ping")
    assert (ping.status_code, ping.text) == (200, mlflow_server.get("/ping").text)
    version = http.get("/version")
    assert version.status_code == 200
    assert version.text == mlflow.pyfunc.Model.load(context.path / "model" / "mlflow").mlflow_version


# ------------------------------------------------------------------ Open Inference Protocol (V2)

def triton_inputs(frame: pd.DataFrame, manifest: Manifest) -> list:
    tensors = []
    for field in manifest.inputs:
        values = frame[field.name]
        if field.is_string:
            array = np.array([v if isinstance(v, str) else None for v in values], dtype=object)
            tensor = triton.InferInput(field.name, [len(frame)], "BYTES")
        else:
            array = values.to_numpy(dtype=np.float64)
            tensor = triton.InferInput(field.name, [len(frame)], "FP64")
        tensor.set_data_from_numpy(array, binary_data=False)
        tensors.append(tensor)
    return tensors


@pytest.fixture(scope="module")
def triton_client(live):
    client = triton.InferenceServerClient(live.url.removeprefix("http://"))
    yield client
    client.close()


def test_v2_health_and_metadata_through_tritonclient(triton_client, manifest):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready(manifest.model_name)
    assert triton_client.is_model_ready(manifest.model_name, manifest.model_version)
    assert not triton_client.is_model_ready("another-model")
    meta = triton_client.get_model_metadata(manifest.model_name, manifest.model_version)
    assert meta["name"] == manifest.model_name and meta["versions"] == [manifest.model_version]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        (f.name, "BYTES" if f.is_string else "FP64") for f in manifest.inputs]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("probability", "FP64"), ("label", "INT64")]
    assert meta["parameters"] == {"task": "binary", "classes": list(manifest.classes)}
    assert triton_client.get_server_metadata()["name"] == "mlops-scoring"


def test_v2_infer_through_tritonclient_matches_predict(triton_client, http, manifest, frame):
    # tritonclient sends a missing FP64 value as NaN, which is not JSON: missing values go by /predict's test.
    present = frame.iloc[:-1]
    result = triton_client.infer(manifest.model_name, triton_inputs(present, manifest), model_version=manifest.model_version,
                                 outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in ("probability", "label")],
                                 request_id="v2-1")
    answer = result.get_response()
    assert answer["id"] == "v2-1" and answer["model_version"] == manifest.model_version
    assert [(o["name"], o["datatype"], o["shape"]) for o in answer["outputs"]] == [
        ("probability", "FP64", [len(present)]), ("label", "INT64", [len(present)])]
    predicted = http.post("/predict", json={"records": records_of(present)}).json()["predictions"]
    assert result.as_numpy("probability").tolist() == [p["probability"] for p in predicted]
    assert result.as_numpy("label").tolist() == [p["label"] for p in predicted]


def _v2_body(frame: pd.DataFrame, manifest: Manifest) -> dict:
    records = records_of(frame)
    return {"inputs": [{"name": f.name, "datatype": "BYTES" if f.is_string else "FP64", "shape": [len(records)],
                        "data": [r[f.name] for r in records]} for f in manifest.inputs]}


def test_v2_null_is_a_missing_value_and_nested_n_by_1_data_is_accepted(http, manifest, frame):
    body = _v2_body(frame, manifest)
    for tensor in body["inputs"]:
        tensor["shape"], tensor["data"] = [len(frame), 1], [[v] for v in tensor["data"]]
    answer = http.post(f"/v2/models/{manifest.model_name}/infer", json=body)
    assert answer.status_code == 200, answer.text
    predicted = http.post("/predict", json={"records": records_of(frame)}).json()["predictions"]
    assert answer.json()["outputs"][0]["data"] == [p["probability"] for p in predicted]


def _mutate(body: dict, name: str, **changes) -> dict:
    body["inputs"] = [({**t, **changes} if t["name"] == name else t) for t in body["inputs"]]
    return body


@pytest.mark.parametrize(("case", "change", "named"), [
    ("wrong datatype", lambda b, n, t: _mutate(b, n[0], datatype="BYTES"), "n0"),
    ("wrong shape", lambda b, n, t: _mutate(b, n[1], shape=[1, 3]), "n1"),
    ("shape and data disagree", lambda b, n, t: _mutate(b, t[0], shape=[7]), "t0"),
    ("unknown input", lambda b, n, t: {"inputs": [*b["inputs"], {"name": "nickname", "datatype": "BYTES", "shape": [1],
                                                                "data": ["bob"]}]}, "nickname"),
    ("missing input", lambda b, n, t: {"inputs": [x for x in b["inputs"] if x["name"] != t[-1]]}, "t-1"),
    ("wrong value type", lambda b, n, t: _mutate(b, n[0], data=["forty"]), "n0"),
    ("unknown output", lambda b, n, t: {**b, "outputs": [{"name": "score"}]}, "outputs"),
    ("boolean in the shape", lambda b, n, t: _mutate(b, n[0], shape=[True]), "n0"),
    ("input given twice", lambda b, n, t: {"inputs": [*b["inputs"], next(x for x in b["inputs"] if x["name"] == t[0])]},
     "t0"),
])
def test_bad_v2_requests_are_400_naming_the_input(http, triton_client, manifest, frame, numbers, texts, case, change,
                                                  named):
    body = change(_v2_body(frame.iloc[:1], manifest), numbers, texts)
    named = {"n0": numbers[0], "n1": numbers[1], "t0": texts[0], "t-1": texts[-1]}.get(named, named)
    answer = http.post(f"/v2/models/{manifest.model_name}/versions/{manifest.model_version}/infer", json=body)
    assert answer.status_code == 400, f"{case}: {answer.text}"
    assert set(answer.json()) == {"error", "request_id", "problems"} and named in answer.json()["error"]
    assert named in [p["field"] for p in answer.json()["problems"]]
    assert triton_client.is_server_ready()  # the process keeps serving


def test_v2_wrong_datatype_through_tritonclient_names_the_input(triton_client, manifest, frame, numbers):
    tensors = triton_inputs(frame.iloc[:1], manifest)
    bad = triton.InferInput(numbers[0], [1], "INT64")
    bad.set_data_from_numpy(np.array([31], dtype=np.int64), binary_data=False)
    tensors = [bad if t.name() == numbers[0] else t for t in tensors]
    with pytest.raises(InferenceServerException, match=numbers[0]):
        triton_client.infer(manifest.model_name, tensors)


def test_v2_unknown_model_or_version_is_404(http, manifest, frame):
    body = _v2_body(frame.iloc[:1], manifest)
    assert http.post("/v2/models/another/infer", json=body).status_code == 404
    assert http.post(f"/v2/models/{manifest.model_name}/versions/999/infer", json=body).status_code == 404
    assert http.get(f"/v2/models/{manifest.model_name}/versions/999").status_code == 404


# ------------------------------------------------------------------ one path

def test_three_protocols_share_scores_log_format_and_metrics(live, http, manifest, frame):
    records = records_of(frame)
    metrics_before = http.get("/metrics").text
    since = live.log_offset()
    predicted = http.post("/predict", json={"records": records}, headers={"x-request-id": "one-path-predict"})
    invoked = http.post("/invocations", json={"dataframe_records": records}, headers={"x-request-id": "one-path-mlflow"})
    inferred = http.post(f"/v2/models/{manifest.model_name}/infer", json=_v2_body(frame, manifest),
                         headers={"x-request-id": "one-path-v2"})
    probabilities = [p["probability"] for p in predicted.json()["predictions"]]
    assert [pair[1] for pair in invoked.json()["predictions"]] == probabilities
    assert inferred.json()["outputs"][0]["data"] == probabilities
    lines = {line["request_id"]: line for line in live.log_entries(since, 3)}
    assert [lines[f"one-path-{p}"]["protocol"] for p in ("predict", "mlflow", "v2")] == ["predict", "mlflow", "v2"]
    shapes = {p: (sorted(lines[f"one-path-{p}"]), lines[f"one-path-{p}"]["inputs"], lines[f"one-path-{p}"]["outputs"])
              for p in ("predict", "mlflow", "v2")}
    assert shapes["predict"] == shapes["mlflow"] == shapes["v2"]
    after = http.get("/metrics").text
    for protocol in ("predict", "mlflow", "v2"):
        assert _counter(after, "scoring_records_total", protocol) == _counter(metrics_before, "scoring_records_total",
                                                                              protocol) + len(records)


def _counter(text: str, name: str, protocol: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'protocol="{protocol}"' in line)


def test_large_request_is_logged_in_parts_under_16_kib(live, http, manifest, frame):
    records = (records_of(frame) * 400)[:1000]
    since = live.log_offset()
    answer = http.post("/invocations", json={"dataframe_records": records}, headers={"x-request-id": "big-one"})
    assert answer.status_code == 200
    raw = [line for line in live.log_lines(since, 2) if b'"big-one"' in line]
    parts = [json.loads(line) for line in raw]
    assert len(parts) > 1 and max(len(line) for line in raw) <= 16 * 1024
    assert [p["part"] for p in parts] == list(range(1, len(parts) + 1)) and {p["parts"] for p in parts} == {len(parts)}
    assert all(p["n_records"] == 1000 and p["model_version"] == manifest.model_version for p in parts)
    assert [r for p in parts for r in logformat.records(p["inputs"], len(p["outputs"])) or []] == records
    assert [o["probability"] for p in parts for o in p["outputs"]] == [pair[1] for pair in answer.json()["predictions"]]
    assert [p["first_record"] for p in parts] == [sum(len(q["outputs"]) for q in parts[:i]) for i in range(len(parts))]


def test_every_route_is_documented_with_an_example(http):
    document = http.get("/openapi.json").json()
    missing = []
    for route, operations in document["paths"].items():
        for method, operation in operations.items():
            contents = [*operation.get("requestBody", {}).get("content", {}).values(),
                        *operation.get("responses", {}).get("200", {}).get("content", {}).values()]
            if not any("example" in c or "examples" in c or "$ref" in c.get("schema", {}) for c in contents):
                missing.append(f"{method.upper()} {route}")
    assert not missing, f"routes without an example: {missing}"
    metrics_doc = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics_doc) == [http.get("/metrics").headers["content-type"]]
    assert next(iter(metrics_doc)).startswith("text/plain")
