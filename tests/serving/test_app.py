"""The scoring app's /predict protocol and service routes, against a real uvicorn process serving a real
packaged model (MAX_RECORDS=5)."""

from __future__ import annotations

import json
import shutil

import httpx
import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from monitoring import logformat
from serving.compile import frame_to_columns
from serving.localrun import stop_service
from serving.scoring.app import create_app
from serving.scoring.model import InputField, Manifest
from serving.scoring.settings import Settings, SettingsError
from tests.serving.conftest import launch


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture(scope="module")
def service(context, tmp_path_factory):
    live = launch(context.path, tmp_path_factory.mktemp("app") / "requests.jsonl", {"MAX_RECORDS": "5"})
    yield live
    stop_service(live.process.pid)


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=30) as http_client:
        yield http_client


@pytest.fixture
def example(manifest) -> list[dict]:
    return [dict(record) for record in manifest.input_example]


@pytest.fixture(scope="module")
def number(manifest) -> str:
    """A numeric input of the session's model (its contract names them; the tests do not)."""
    return next(f.name for f in manifest.inputs if not f.is_string)


@pytest.fixture(scope="module")
def text(manifest) -> str:
    return next(f.name for f in manifest.inputs if f.is_string)


def problems(response) -> list[tuple]:
    return [(p["record"], p["field"], p["type"]) for p in response.json()["problems"]]


def test_health_and_ready(client, manifest):
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model"] == {"name": manifest.model_name, "version": manifest.model_version}
    assert ready.json()["runtime"] == "onnx"
    assert ready.json()["task"] == manifest.task and ready.json()["classes"] == list(manifest.classes)
    assert ready.json()["outputs"] == ["probability", "label"]


def test_predict_matches_the_registered_pipeline(client, manifest, registry, example):
    response = client.post("/predict", json={"records": example})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": manifest.model_name, "version": manifest.model_version}
    assert len(body["request_id"]) == 32 and response.headers["x-request-id"] == body["request_id"]
    pipeline = mlflow.sklearn.load_model(f"models:/{manifest.model_name}/{manifest.model_version}")
    expected = pipeline.predict_proba(pd.DataFrame(example)[list(manifest.input_names)])[:, 1]
    got = np.array([p["probability"] for p in body["predictions"]])
    assert np.max(np.abs(got - expected)) <= 1e-5
    negative, positive = manifest.classes
    assert [p["label"] for p in body["predictions"]] == [positive if p >= manifest.decision_threshold else negative
                                                         for p in got]


def test_missing_values_are_accepted_as_null(client, example, manifest):
    numbers = [f.name for f in manifest.inputs if not f.is_string]
    text = next(f.name for f in manifest.inputs if f.is_string)
    record = {**example[0], text: None, numbers[0]: None, numbers[-1]: None}
    response = client.post("/predict", json={"records": [record]})
    assert response.status_code == 200 and 0 <= response.json()["predictions"][0]["probability"] <= 1


def test_request_id_header_is_echoed(client, example):
    response = client.post("/predict", json={"records": example[:1]}, headers={"x-request-id": "abc-123"})
    assert response.json()["request_id"] == "abc-123" and response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r, n, t: r.pop(n), (1, "<number>", "missing")),
    (lambda r, n, t: r.update({n: "forty"}), (1, "<number>", "float_type")),
    (lambda r, n, t: r.update({t: 1}), (1, "<text>", "<text's type error>")),
    (lambda r, n, t: r.update({n: True}), (1, "<number>", "float_type")),
    (lambda r, n, t: r.update(nickname="bob"), (1, "nickname", "extra_forbidden")),
])
def test_bad_record_names_index_and_field(client, manifest, example, number, text, mutate, expected):
    bad = dict(example[0])
    mutate(bad, number, text)
    response = client.post("/predict", json={"records": [example[0], bad]})
    assert response.status_code == 422
    closed = next(f for f in manifest.inputs if f.name == text).values is not None  # a Literal: not in its values
    named = {"<number>": number, "<text>": text, "<text's type error>": "literal_error" if closed else "string_type"}
    assert (expected[0], named.get(expected[1], expected[1]), named.get(expected[2], expected[2])) in problems(response)
    assert all(p["problem"] for p in response.json()["problems"])


def test_every_problem_in_a_record_is_reported(client, example, number, text):
    bad = {k: v for k, v in example[0].items() if k != text} | {number: "x", "extra": 1}
    response = client.post("/predict", json={"records": [bad]})
    assert {(0, text, "missing"), (0, number, "float_type"), (0, "extra", "extra_forbidden")} <= set(problems(response))


@pytest.mark.parametrize(("body", "expected"), [
    ({"records": []}, (None, "records", "too_short")),
    ({}, (None, "records", "missing")),
    ([1, 2], (None, None, "dict_type")),
    ({"records": [1]}, (0, None, "dict_type")),
    ({"records": [{}], "extra": 1}, (None, "extra", "extra_forbidden")),
])
def test_bad_request_shapes(client, body, expected):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert expected in problems(response)


def test_too_many_records_names_the_limit(client, example):
    response = client.post("/predict", json={"records": example * 6})
    assert response.status_code == 413 and (None, "records", "too_long") in problems(response)
    assert "at most 5" in response.json()["problems"][0]["problem"]


@pytest.mark.parametrize("raw", [b"{not json", b'{"records": [{"x": NaN}]}', b""])
def test_malformed_json_is_a_4xx_not_a_500(client, raw):
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["error"] == "invalid request"


def test_non_finite_numbers_are_rejected(client, example, number):
    raw = json.dumps({"records": [{**example[0], number: float("inf")}]}).encode()  # Python writes Infinity
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and (0, number, "finite_number") in problems(response)


def test_service_keeps_serving_after_bad_input(client, example, number):
    for _ in range(3):
        client.post("/predict", content=b"garbage", headers={"content-type": "application/json"})
        client.post("/predict", json={"records": [{number: "x"}]})
    assert client.post("/predict", json={"records": example}).status_code == 200


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_move_with_traffic(client, manifest, example):
    before = client.get("/metrics").text
    client.post("/predict", json={"records": example})
    client.post("/predict", json={"records": []})
    after = client.get("/metrics").text
    ok = {"route": "/predict", "method": "POST", "status": "200"}
    bad = {"route": "/predict", "method": "POST", "status": "422"}
    assert _metric(after, "scoring_http_requests_total", **ok) == _metric(before, "scoring_http_requests_total", **ok) + 1
    assert _metric(after, "scoring_http_requests_total", **bad) == _metric(before, "scoring_http_requests_total", **bad) + 1
    version = {"model_version": manifest.model_version}
    assert (_metric(after, "scoring_predicted_probability_count", **version)
            == _metric(before, "scoring_predicted_probability_count", **version) + len(example))
    assert _metric(after, "scoring_http_request_duration_seconds_count", route="/predict") > 0
    assert _metric(after, "scoring_model_info", model_version=manifest.model_version, runtime="onnx") == 1.0


def test_unknown_paths_share_one_metrics_label(client):
    client.get("/wp-admin/setup.php")
    assert 'route="other"' in client.get("/metrics").text
    assert "wp-admin" not in client.get("/metrics").text


def test_one_json_log_line_per_scored_request(client, service, manifest, example):
    since = service.log_offset()
    client.post("/predict", json={"records": []})  # rejected: not a scored request
    client.post("/predict", json={"records": example}, headers={"x-request-id": "log-me"})
    lines = service.log_entries(since, 1)
    assert len(lines) == 1
    line = lines[0]
    assert line["log_type"] == "prediction" and line["schema_version"] == 2
    assert line["request_id"] == "log-me"
    assert (line["model_name"], line["model_version"]) == (manifest.model_name, manifest.model_version)
    assert logformat.records(line["inputs"], len(line["outputs"])) == example and len(line["outputs"]) == len(example)
    assert line["latency_ms"] > 0 and line["ts"].endswith("Z") and line["n_records"] == len(example)
    assert (line["protocol"], line["part"], line["parts"], line["first_record"]) == ("predict", 1, 1, 0)


@pytest.mark.parametrize("count", [1, 300])
def test_predict_answers_the_same_bytes_with_the_request_log_on_or_off(context, example, count, capfd):
    """With the log on, /predict answers the outputs as the log's lines encoded them (one line, or several parts
    for 300 records): the bytes must be those it answers without the log, and orjson's of the parsed answer."""
    records = [example[index % len(example)] for index in range(count)]
    answers = {}
    for request_log in ("true", "false"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODEL_DIR", str(context.path / "model"))
            patch.setenv("REQUEST_LOG", request_log)
            app = create_app()
        with TestClient(app) as in_process:
            capfd.readouterr()
            answer = in_process.post("/predict", json={"records": records}, headers={"x-request-id": "same-id"})
            assert answer.status_code == 200, answer.text
            answers[request_log] = answer.content
        lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
        parts = [line for line in lines if line.get("log_type") == "prediction"]
        if request_log == "true":
            assert len(parts) == parts[0]["parts"] and (len(parts) > 1) == (count > 1)  # one line, or several
        else:
            assert not parts
    assert answers["true"] == answers["false"] == orjson.dumps(json.loads(answers["true"]))
    assert len(json.loads(answers["true"])["predictions"]) == count


def test_docs_carry_the_generated_schema_and_example(client, manifest, model):
    assert client.get("/docs").status_code == 200
    document = client.get("/openapi.json").json()
    schema = document["components"]["schemas"]
    # The signature's inputs, required; the contract's ids beside them, optional (never scored: scoring/ids.py).
    assert set(schema["Record"]["properties"]) == {*manifest.input_names, *model.contract.ids}
    assert set(schema["Record"]["required"]) == set(manifest.input_names)
    assert schema["Record"]["additionalProperties"] is False
    assert schema["PredictRequest"]["examples"][0]["records"] == manifest.input_example
    # Described from the model: its contract's words, its target's meaning, its task's outputs.
    contract = model.contract
    for feature in contract.features:
        assert schema["Record"]["properties"][feature.name]["description"].startswith(feature.description)
    assert contract.target.description in document["info"]["description"]
    assert contract.description in document["info"]["description"]
    prediction = schema["Prediction"]["properties"]
    assert list(prediction) == ["probability", "label"]
    assert contract.target.description in prediction["probability"]["description"]
    assert prediction["label"]["enum"] == list(contract.target.classes)


def test_a_model_that_fails_warm_up_is_not_ready_but_alive(context, tmp_path, example):
    broken = tmp_path / "model"
    shutil.copytree(context.path / "model", broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    service = launch(context.path, tmp_path / "requests.jsonl", {"MODEL_DIR": str(broken)}, ready=False)
    try:
        with httpx.Client(base_url=service.url, timeout=30) as broken_client:
            ready = broken_client.get("/ready")
            assert ready.status_code == 503 and "warm-up failed" in ready.json()["problem"]
            since = service.log_offset()
            refused = {route: broken_client.post(route, json=body, headers={"x-request-id": f"r-{index}"}).status_code
                       for index, (route, body) in enumerate([("/predict", {"records": example}),
                                                              ("/invocations", {"dataframe_records": example})])}
            assert refused == {"/predict": 503, "/invocations": 503}
            assert broken_client.get("/ping").status_code == 404  # as `mlflow models serve` without a model
            assert broken_client.get("/v2/health/ready").status_code == 503
            assert broken_client.get("/v2/health/live").status_code == 200
            errors = service.log_entries(since, 2)
    finally:
        stop_service(service.process.pid)
    assert [(e["log_type"], e["status"], e["route"], e["request_id"]) for e in errors] == [
        ("error", 503, "/predict", "r-0"), ("error", 503, "/invocations", "r-1")]
    assert errors[0]["error"].startswith("not ready: warm-up failed")


def test_settings_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("MAX_RECORDS", "lots")
    with pytest.raises(SettingsError, match="MAX_RECORDS must be an integer between 1 and 100000, got 'lots'"):
        Settings.from_env()
    monkeypatch.setenv("MAX_RECORDS", "10")
    monkeypatch.setenv("REQUEST_LOG", "maybe")
    with pytest.raises(SettingsError, match="REQUEST_LOG must be one of true, false"):
        Settings.from_env()


def test_frame_to_columns_turns_missing_into_none():
    frame = pd.DataFrame({"a": [1.0, np.nan], "s": ["x", None]})
    assert frame_to_columns(frame, (InputField("a", "double"), InputField("s", "string"))) == {"a": [1.0, None], "s": ["x", None]}
