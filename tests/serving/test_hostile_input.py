"""Hostile and careless input, against a real uvicorn service with 2 workers (as staging and prod run): every bad
request is a 4xx whose body names the record and field (the same `problems` list and request id on every
protocol), the service keeps serving, and nothing is lost (a 5xx would leave an error line in the request log).
And one behaviour across the three protocols for Content-Type, NaN/Infinity and unknown fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from serving.localrun import stop_service
from serving.scoring import v2
from serving.scoring.model import Manifest
from tests.serving.conftest import LiveService, launch

DEEP = 3000  # deeper than any JSON parser here recurses (orjson stops at 1024, Python's json at its recursion limit)
PROTOCOLS = ("predict", "mlflow", "v2")
STATUS = {"predict": 422, "mlflow": 400, "v2": 400}


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture(scope="module")
def service(context, tmp_path_factory):
    live = launch(context.path, tmp_path_factory.mktemp("hostile") / "requests.jsonl", {"WEB_CONCURRENCY": "2"})
    yield live
    stop_service(live.process.pid)


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class Model:
    """What a test needs of the session's model: its columns (from the manifest), one valid record, its V2 path."""
    manifest: Manifest

    @property
    def number(self) -> str:
        return next(f.name for f in self.manifest.inputs if not f.is_string)

    @property
    def text(self) -> str:
        return next(f.name for f in self.manifest.inputs if f.is_string)

    @property
    def record(self) -> dict:
        return dict(self.manifest.input_example[0])

    @property
    def infer(self) -> str:
        return f"/v2/models/{self.manifest.model_name}/infer"

    def tensors(self, records: list[dict]) -> list[dict]:
        return [{"name": f.name, "datatype": v2.datatype(f.type), "shape": [len(records)],
                 "data": [r.get(f.name) for r in records]} for f in self.manifest.inputs]

    def request(self, protocol: str, records: list[dict]) -> tuple[str, dict]:
        """(path, JSON body) of a request scoring `records` by `protocol`."""
        if protocol == "predict":
            return "/predict", {"records": records}
        if protocol == "mlflow":
            return "/invocations", {"dataframe_records": records}
        return self.infer, {"inputs": self.tensors(records)}


@pytest.fixture(scope="module")
def served(manifest) -> Model:
    return Model(manifest)


def dumps(body: object) -> bytes:
    """Python's JSON writer: NaN and Infinity written as the bare words a careless client sends."""
    return json.dumps(body).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_refused(answer: httpx.Response, status: int, field: str | None = None, record: int | None = None,
                   says: str = "") -> None:
    """A refusal: the status, JSON with the request id and the problems list; `field` and `record` named by a
    problem when given; `says` in a problem's text."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["request_id"] == answer.headers["x-request-id"]
    problems = body["problems"]
    assert problems and all(set(p) == {"record", "field", "problem", "type"} and p["problem"] for p in problems)
    if field is not None:
        assert field in [p["field"] for p in problems], problems
    if record is not None:
        assert record in [p["record"] for p in problems if p["field"] == field or field is None], problems
    assert says.lower() in " ".join(p["problem"] for p in problems).lower(), problems


def assert_still_serving(service: LiveService, http: httpx.Client, model: Model, since: int) -> None:
    assert http.get("/ready").status_code == 200
    for protocol in PROTOCOLS:
        path, body = model.request(protocol, [model.record])
        assert http.post(path, json=body).status_code == 200, (protocol, path)
    errors = [line for line in service.log_lines(since, 0, timeout=0) if b'"log_type":"error"' in line]
    assert errors == [], "a request was answered 5xx (its error line is in the log)"


# Each case: (path, content type, body) from the model; the status; the field and record the answer names, if any;
# what a problem says.
Case = Callable[[Model], tuple[str, str, bytes]]
J, CSV = "application/json", "text/csv"
HOSTILE: dict[str, tuple[Case, int, str | None, int | None, str]] = {
    # the 500s the issue found
    "split column names that are lists": (
        lambda m: ("/invocations", J, dumps({"dataframe_split": {"columns": [[m.number]], "data": [[1]]}})),
        400, "dataframe_split", None, "column names must be strings"),
    "split column names that are objects": (
        lambda m: ("/invocations", J, dumps({"dataframe_split": {"columns": [{"a": 1}], "data": [[1]]}})),
        400, "dataframe_split", None, "column names must be strings"),
    "NaN and deep nesting": (
        lambda m: ("/invocations", J, f'{{"dataframe_records": [{{"{m.number}": NaN}}], "x": {nested(DEEP)}}}'.encode()),
        400, None, None, "nested too deeply"),
    "NaN and a lone surrogate": (
        lambda m: ("/invocations", J, dumps({"dataframe_records": [{**m.record, m.number: float("nan")}]})
                   .replace(b"}]}", f', "{m.text}": "\\ud800"}}]}}'.encode())),
        400, "<text>", 0, "surrogate"),
    "a CSV cell over 128 KiB": (
        lambda m: ("/invocations", CSV, (",".join(m.record) + "\n" + ",".join(
            "x" * 140_000 if k == m.text else str(v) for k, v in m.record.items()) + "\n").encode()),
        400, None, 0, "longer than"),
    "V2 output names that are lists": (
        lambda m: (m.infer, J, dumps({"inputs": m.tensors([m.record]), "outputs": [{"name": ["label"]}]})),
        400, "outputs", None, "outputs"),
    "V2 output names that are objects": (
        lambda m: (m.infer, J, dumps({"inputs": m.tensors([m.record]), "outputs": [{"name": {"a": 1}}]})),
        400, "outputs", None, "outputs"),
    # and their neighbours
    "V2 without inputs": (lambda m: (m.infer, J, dumps({"inputs": []})), 400, None, None, "missing"),
    "instances that are not records": (
        lambda m: ("/invocations", J, dumps({"instances": [[1, 2]]})), 400, None, 0, ""),
    "inputs columns of unknown names": (
        lambda m: ("/invocations", J, dumps({"inputs": {"1": [1], "2": [2]}})), 400, "<number>", 0, "required"),
    "inputs columns that are not lists": (
        lambda m: ("/invocations", J, dumps({"inputs": {m.number: [1], m.text: "x"}})), 400, "inputs", None, ""),
    "Infinity on /invocations": (
        lambda m: ("/invocations", J, dumps({"dataframe_records": [{**m.record, m.number: float("inf")}]})),
        400, "<number>", 0, "null"),
    "CSV not UTF-8": (lambda m: ("/invocations", CSV, b"a,b\n\xff\xfe,1\n"), 400, None, None, "UTF-8"),
    "CSV empty": (lambda m: ("/invocations", CSV, b""), 400, None, None, "header"),
}
for _route in ("/predict", "/invocations", "<v2>"):
    _status = 422 if _route == "/predict" else 400
    HOSTILE |= {
        f"deep nesting on {_route}": (
            lambda m, r=_route: (m.infer if r == "<v2>" else r, J, f'{{"records": {nested(DEEP)}}}'.encode()),
            _status, None, None, ""),
        f"NaN and deep nesting on {_route}": (
            lambda m, r=_route: (m.infer if r == "<v2>" else r, J, f'{{"x": NaN, "y": {nested(DEEP)}}}'.encode()),
            _status, None, None, ""),
        f"not UTF-8 on {_route}": (
            lambda m, r=_route: (m.infer if r == "<v2>" else r, J, b'{"records": ["\xff\xfe"]}'), _status, None, None, ""),
        f"not UTF-8 with NaN on {_route}": (
            lambda m, r=_route: (m.infer if r == "<v2>" else r, J, b'{"x": NaN, "y": "\xff"}'), _status, None, None, ""),
        f"an empty body on {_route}": (lambda m, r=_route: (m.infer if r == "<v2>" else r, J, b""), _status, None, None, ""),
        f"a JSON number for a body on {_route}": (
            lambda m, r=_route: (m.infer if r == "<v2>" else r, J, b"1"), _status, None, None, ""),
        f"a JSON string for a body on {_route}": (
            lambda m, r=_route: (m.infer if r == "<v2>" else r, J, b'"\\ud800"'), _status, None, None, ""),
        f"NaN for a body on {_route}": (lambda m, r=_route: (m.infer if r == "<v2>" else r, J, b"NaN"), _status, None,
                                        None, ""),
    }


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_a_4xx_naming_what_is_wrong_and_the_service_keeps_serving(service, http, served, case):
    make, status, field, record, says = HOSTILE[case]
    path, content_type, body = make(served)
    since = service.log_offset()
    answer = http.post(path, content=body, headers={"content-type": content_type})
    field = {"<number>": served.number, "<text>": served.text}.get(field or "", field)
    assert_refused(answer, status, field, record, says)
    assert_still_serving(service, http, served, since)


# ------------------------------------------------------------------ one behaviour across protocols

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "application/json; charset=latin-1", "application/json; version=2"])
def test_a_content_type_not_taken_is_415_naming_the_accepted_types(service, http, served, protocol, content_type):
    path, body = served.request(protocol, [served.record])
    since = service.log_offset()
    answer = http.post(path, content=dumps(body), headers={"content-type": content_type})
    assert_refused(answer, 415, "content-type", None, "application/json")
    assert_still_serving(service, http, served, since)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON; Charset=UTF-8"])
def test_json_with_or_without_charset_utf_8_is_taken(http, served, protocol, content_type):
    path, body = served.request(protocol, [served.record])
    assert http.post(path, content=dumps(body), headers={"content-type": content_type}).status_code == 200


@pytest.mark.parametrize("protocol", ["predict", "v2"])
def test_no_content_type_is_taken_as_json_where_clients_send_none(http, served, protocol):
    """tritonclient sends no Content-Type with a JSON inference request; /predict takes the same."""
    path, body = served.request(protocol, [served.record])
    assert http.post(path, content=dumps(body), headers={"content-type": ""}).status_code == 200


@pytest.mark.parametrize("protocol", ["predict", "v2"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_naming_record_and_field_and_saying_send_null(service, http, served, protocol,
                                                                                   value):
    records = [served.record, {**served.record, served.number: value}]
    path, body = served.request(protocol, records)
    since = service.log_offset()
    answer = http.post(path, content=dumps(body), headers={"content-type": "application/json"})
    assert_refused(answer, STATUS[protocol], served.number, 1, "send null")
    assert_still_serving(service, http, served, since)


def test_invocations_takes_nan_as_a_missing_value_as_mlflow_does(http, served):
    missing = http.post("/invocations", content=dumps({"dataframe_records": [{**served.record, served.number: float("nan")}]}),
                        headers={"content-type": "application/json"})
    null = http.post("/invocations", json={"dataframe_records": [{**served.record, served.number: None}]})
    assert missing.status_code == null.status_code == 200
    assert missing.json() == null.json()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unknown_field_is_refused_by_predict_and_v2_and_ignored_by_invocations(http, served, protocol):
    path, body = served.request(protocol, [{**served.record, "nickname": "bob"}])
    if protocol == "v2":
        nickname = {"name": "nickname", "datatype": "BYTES", "shape": [1], "data": ["bob"]}
        body["inputs"] = [*served.tensors([served.record]), nickname]
    answer = http.post(path, json=body)
    if protocol == "mlflow":  # as `mlflow models serve`: a column outside the signature is ignored
        assert answer.status_code == 200, answer.text
    else:
        assert_refused(answer, STATUS[protocol], "nickname", None, "unknown")


@pytest.mark.parametrize(("where", "change"), [
    ("request", lambda body: {**body, "nickname": "bob"}),
    ("tensor", lambda body: {"inputs": [{**body["inputs"][0], "nickname": "bob"}, *body["inputs"][1:]]}),
    ("requested output", lambda body: {**body, "outputs": [{"name": "label", "nickname": "bob"}]}),
])
def test_v2_refuses_a_key_outside_the_protocol_naming_it(http, served, where, change):
    answer = http.post(served.infer, json=change({"inputs": served.tensors([served.record])}))
    assert_refused(answer, 400, "nickname", None, "unknown")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_refuses_with_the_same_problems_and_request_id_plus_its_own_keys(http, served, protocol):
    path, body = served.request(protocol, [served.record, {**served.record, served.number: "forty"}])
    answer = http.post(path, json=body, headers={"x-request-id": "hostile-1"})
    assert_refused(answer, STATUS[protocol], served.number, 1)
    document = answer.json()
    assert document["request_id"] == "hostile-1"
    own = {"predict": {"error"}, "mlflow": {"error_code", "message"}, "v2": {"error"}}[protocol]
    assert set(document) == {"problems", "request_id", *own}
    if protocol == "mlflow":
        assert document["error_code"] == "BAD_REQUEST" and served.number in document["message"]
    if protocol == "v2":
        assert served.number in document["error"]


def test_v2_content_type_rule_leaves_the_binary_extension_to_its_own_handling(http, served):
    """The binary tensor extension sends its own content type with its header: not a 415 (its decoder answers)."""
    answer = http.post(served.infer, content=b"{}", headers={"inference-header-content-length": "2",
                                                             "content-type": "application/octet-stream"})
    assert answer.status_code != 415 and answer.status_code < 500
