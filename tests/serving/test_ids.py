"""The contract's ids (scoring/ids.py) on every protocol: taken per record beside the features, never scored, written
to the request log's `ids` aligned with the records (across parts too), a personal one kept, dropped or pseudonymised
as REQUEST_LOG_PERSONAL says, a wrong one refused naming the record and the id; and a model whose contract names no
ids served as before. The app runs in-process on the session's model; names come from its contract."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from monitoring import logformat
from serving.scoring import ids, privacy, requestlog, v2
from serving.scoring.app import create_app
from serving.scoring.model import Manifest

KEY = "k" * 40
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture(scope="module")
def id_name(manifest) -> str:
    names = ids.names(manifest)
    if not names:
        pytest.skip("the session model's contract names no ids")
    return names[0]


@contextmanager
def serving(model_dir: Path, env: dict[str, str]) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_DIR", str(model_dir))
        for name, value in env.items():
            patch.setenv(name, value)
        app = create_app()
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def client(context) -> Iterator[TestClient]:
    with serving(context.path / "model", {"REQUEST_LOG_PERSONAL": "keep"}) as client:
        yield client


def records(manifest: Manifest, count: int) -> list[dict]:
    example = manifest.input_example
    return [dict(example[index % len(example)]) for index in range(count)]


def with_ids(batch: list[dict], name: str, values: list) -> list[dict]:
    return [{**record, name: value} if value is not None else dict(record)
            for record, value in zip(batch, values, strict=True)]


def prediction_lines(capfd) -> list[dict]:
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("log_type") == "prediction"]


def logged_ids(capfd, names: list[str]) -> list[dict[str, list]]:
    """Each request's logged ids since the last read (parts joined in order), by id column."""
    requests: dict[str, list[dict]] = {}
    for line in prediction_lines(capfd):
        requests.setdefault(line["request_id"], []).append(line)
    joined = []
    for parts in requests.values():
        found: dict[str, list] = {name: [] for name in names}
        for part in sorted(parts, key=lambda line: line["part"]):
            part_ids = logformat.ids(part.get("ids"), len(part["outputs"]), names)
            assert part_ids is not None, part
            for name in names:
                found[name] += part_ids[name]
        joined.append(found)
    return joined


def v2_tensors(manifest: Manifest, batch: list[dict]) -> list[dict]:
    return [{"name": name, "datatype": datatype, "shape": [len(batch)], "data": [r[name] for r in batch]}
            for name, datatype in v2.input_types(manifest).items()]


def v2_binary_body(tensors: list[dict], name: str, texts: list[str]) -> tuple[bytes, dict]:
    """A V2 request whose id tensor `name` is binary BYTES (the binary tensor data extension), the others JSON."""
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = orjson.dumps({"inputs": [*tensors, {"name": name, "datatype": "BYTES", "shape": [len(texts)],
                                                 "parameters": {"binary_data_size": len(raw)}}]})
    return header + raw, {"inference-header-content-length": str(len(header)),
                          "content-type": "application/octet-stream"}


def test_every_protocol_takes_ids_scores_without_them_and_logs_them(client, manifest, id_name, capfd):
    batch = records(manifest, 3)
    sent = ["A-17", 42, None]
    plain_csv = ",".join(manifest.input_names) + "\n" + "\n".join(
        ",".join("" if r[n] is None else str(r[n]) for n in manifest.input_names) for r in batch) + "\n"
    id_csv = "\n".join([f"{id_name},{plain_csv.splitlines()[0]}",
                        *[f"{'' if v is None else v},{row}" for v, row in zip(sent, plain_csv.splitlines()[1:],
                                                                             strict=True)]]) + "\n"
    infer = f"/v2/models/{manifest.model_name}/infer"
    tensors = v2_tensors(manifest, batch)
    capfd.readouterr()
    pairs = {  # protocol form -> (the answer with ids, the answer without)
        "predict": [client.post("/predict", json={"records": body}) for body in (with_ids(batch, id_name, sent), batch)],
        "records": [client.post("/invocations", json={"dataframe_records": body})
                    for body in (with_ids(batch, id_name, sent), batch)],
        "split": [client.post("/invocations", json={"dataframe_split": {
            "columns": [id_name, *manifest.input_names], "data": [[v, *r.values()] for v, r in zip(
                sent, [{n: r[n] for n in manifest.input_names} for r in batch], strict=True)]}}),
            client.post("/invocations", json={"dataframe_records": batch})],
        "csv": [client.post("/invocations", content=body, headers={"content-type": "text/csv"})
                for body in (id_csv, plain_csv)],
        "v2 bytes": [client.post(infer, json={"inputs": [*tensors, {
            "name": id_name, "datatype": "BYTES", "shape": [3, 1], "data": [["A-17"], ["42"], [None]]}]}),
            client.post(infer, json={"inputs": tensors})],
        "v2 int64": [client.post(infer, json={"inputs": [*tensors, {
            "name": id_name, "datatype": "INT64", "shape": [3], "data": [17, 42, None]}]}),
            client.post(infer, json={"inputs": tensors})],
        "v2 binary": [client.post(infer, content=v2_binary_body(tensors, id_name, ["A-17", "42", ""])[0],
                                  headers=v2_binary_body(tensors, id_name, ["A-17", "42", ""])[1]),
                      client.post(infer, json={"inputs": tensors})],
    }
    for form, (identified, plain) in pairs.items():
        assert identified.status_code == plain.status_code == 200, (form, identified.text)
        assert identified.json().get("predictions", identified.json().get("outputs")) == \
            plain.json().get("predictions", plain.json().get("outputs")), form
    logged = [found[id_name] for found in logged_ids(capfd, [id_name])]
    expected = {"predict": sent, "records": sent, "split": sent, "csv": ["A-17", "42", None],
                "v2 bytes": ["A-17", "42", None], "v2 int64": [17, 42, None], "v2 binary": ["A-17", "42", ""]}
    assert logged == [value for form in pairs for value in (expected[form], [None] * 3)]


def test_ids_stay_aligned_with_their_records_across_parts(client, manifest, id_name, capfd):
    count = 400  # many parts
    batch = records(manifest, count)
    sent = [f"id-{i}" if i % 3 == 0 else i if i % 3 == 1 else None for i in range(count)]
    capfd.readouterr()
    answer = client.post("/predict", json={"records": with_ids(batch, id_name, sent)})
    assert answer.status_code == 200, answer.text
    lines = prediction_lines(capfd)
    assert len(lines) > 1 and all(len(orjson.dumps(line)) < requestlog.MAX_LINE_BYTES for line in lines)
    for line in lines:
        first, found = line["first_record"], logformat.ids(line["ids"], len(line["outputs"]), [id_name])
        assert found is not None and found[id_name] == sent[first:first + len(line["outputs"])]
        inputs = logformat.records(line["inputs"], len(line["outputs"]))
        assert inputs == [{n: r[n] for n in line["inputs"]} for r in batch[first:first + len(line["outputs"])]]
    assert sum(len(line["outputs"]) for line in lines) == count


@pytest.fixture(scope="module")
def personal_id(manifest) -> str:
    personal = privacy.personal_ids(manifest)
    if not personal:
        pytest.skip("the session model's contract marks no id personal")
    return personal[0]


@pytest.mark.parametrize("mode", privacy.MODES)
def test_a_personal_id_is_kept_dropped_or_pseudonymised_as_a_personal_input(context, manifest, personal_id, mode,
                                                                            capfd):
    sent = ["A-17-personal", 7_031_977_123_457, None]  # values no other field of the line could hold
    batch = with_ids(records(manifest, 3), personal_id, sent)
    env = {"REQUEST_LOG_PERSONAL": mode, "REQUEST_LOG_PSEUDONYM_KEY": KEY}
    with serving(context.path / "model", env) as client:
        capfd.readouterr()
        assert client.post("/predict", json={"records": batch}).status_code == 200
    [line] = prediction_lines(capfd)
    if mode == "keep":
        assert line["ids"][personal_id] == sent
    elif mode == "drop":
        assert personal_id not in line["ids"] and personal_id + privacy.PSEUDONYM_SUFFIX not in line["ids"]
    else:
        expected = [None if value is None else hmac.new(KEY.encode(), personal_id.encode() + b"\x00" + orjson.dumps(
            value), hashlib.sha256).hexdigest()[:32] for value in sent]
        assert personal_id not in line["ids"] and line["ids"][personal_id + privacy.PSEUDONYM_SUFFIX] == expected
    assert not any(str(value) in json.dumps(line) for value in sent[:2] if mode != "keep")


WRONG = {"a float": 1.5, "a boolean": True, "an object": {"id": 1}, "a string over 256 characters": "x" * 257,
         "an integer beyond 64 bits": 2 ** 64}


@pytest.mark.parametrize("kind", list(WRONG))
def test_a_wrong_id_is_refused_naming_the_record_and_the_id_on_every_protocol(client, manifest, id_name, kind):
    wrong, batch = WRONG[kind], records(manifest, 2)
    infer = f"/v2/models/{manifest.model_name}/infer"
    datatype = "BYTES" if isinstance(wrong, str | dict) else "INT64"
    answers = {
        "predict": (422, client.post("/predict", content=json.dumps(
            {"records": with_ids(batch, id_name, ["ok", wrong])}), headers=JSON)),
        "records": (400, client.post("/invocations", content=json.dumps(
            {"dataframe_records": with_ids(batch, id_name, ["ok", wrong])}), headers=JSON)),
        "split": (400, client.post("/invocations", content=json.dumps({"dataframe_split": {
            "columns": [*manifest.input_names, id_name],
            "data": [[*(r[n] for n in manifest.input_names), v] for r, v in zip(batch, ["ok", wrong], strict=True)]}}),
            headers=JSON)),
        "v2": (400, client.post(infer, content=json.dumps({"inputs": [*v2_tensors(manifest, batch), {
            "name": id_name, "datatype": datatype, "shape": [2], "data": [None, wrong]}]}), headers=JSON)),
    }
    if isinstance(wrong, str):
        body, headers = v2_binary_body(v2_tensors(manifest, batch), id_name, ["ok", wrong])
        answers["v2 binary"] = (400, client.post(infer, content=body, headers=headers))
    for protocol, (status, answer) in answers.items():
        assert answer.status_code == status, (protocol, answer.text)
        problems = answer.json()["problems"]
        assert [(p["record"], p["field"]) for p in problems] == [(1, id_name)], (protocol, problems)
        assert "an id must be" in problems[0]["problem"], (protocol, problems)


def test_the_v2_datatype_of_an_id_holds_its_values(client, manifest, id_name):
    infer, batch = f"/v2/models/{manifest.model_name}/infer", records(manifest, 1)
    for datatype, data in [("BYTES", [5]), ("INT64", ["5"]), ("FP64", [5.0])]:
        answer = client.post(infer, json={"inputs": [*v2_tensors(manifest, batch), {
            "name": id_name, "datatype": datatype, "shape": [1], "data": data}]})
        assert answer.status_code == 400 and answer.json()["problems"][0]["field"] == id_name, answer.text


@pytest.fixture(scope="module")
def without_ids(context, tmp_path_factory, manifest) -> Path:
    """The session's model, its contract naming no ids (as a model without any)."""
    model_dir = tmp_path_factory.mktemp("no-ids") / "model"
    shutil.copytree(context.path / "model", model_dir)
    contract = {**(manifest.contract or {}), "ids": []}
    contract["personal"] = [name for name in contract.get("personal", []) if name not in ids.names(manifest)]
    (model_dir / "manifest.json").write_text(json.dumps({**manifest.raw, "contract": contract}))
    return model_dir


def test_a_contract_without_ids_is_served_as_before(without_ids, manifest, id_name, capfd):
    batch = records(manifest, 2)
    with serving(without_ids, {"REQUEST_LOG_PERSONAL": "keep"}) as client:
        refused = client.post("/predict", json={"records": with_ids(batch, id_name, ["A", None])})
        assert refused.status_code == 422
        assert [(p["record"], p["field"], p["problem"]) for p in refused.json()["problems"]] == [
            (0, id_name, "unknown field")]
        capfd.readouterr()
        ignored = client.post("/invocations", json={"dataframe_records": with_ids(batch, id_name, ["A", 1.5])})
        plain = client.post("/predict", json={"records": batch})
        assert ignored.status_code == plain.status_code == 200, ignored.text  # MLflow ignores other columns
        assert all("ids" not in line for line in prediction_lines(capfd))
        unknown = client.post(f"/v2/models/{manifest.model_name}/infer", json={"inputs": [
            *v2_tensors(manifest, batch), {"name": id_name, "datatype": "BYTES", "shape": [2], "data": ["A", "B"]}]})
        assert unknown.status_code == 400 and unknown.json()["problems"][0]["field"] == id_name
        document = client.get("/openapi.json").json()
        assert id_name not in json.dumps(document["components"]["schemas"]["Record"])


def test_openapi_documents_the_ids_as_optional_and_not_scored(client, id_name):
    document = client.get("/openapi.json").json()
    record = document["components"]["schemas"]["Record"]
    assert id_name in record["properties"] and id_name not in record.get("required", [])
    schema = record["properties"][id_name]
    assert {a.get("type") for a in schema["anyOf"]} == {"string", "integer", "null"}
    assert "not scored: logged to join labels" in schema["description"]
    invocations = json.dumps(document["paths"]["/invocations"]["post"]["requestBody"])
    infer = json.dumps(document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"])
    assert id_name in invocations and f'"{id_name}"' in infer
