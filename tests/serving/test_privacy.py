"""The contract's personal columns in the request log: kept, dropped (the default) or pseudonymised with a keyed HMAC,
as REQUEST_LOG_PERSONAL says; scoring sees the values as sent whatever the mode. Columns come from the manifest."""

from __future__ import annotations

import hashlib
import hmac
import json

import orjson
import pytest
from fastapi.testclient import TestClient

from monitoring import logformat
from serving.scoring import privacy
from serving.scoring.app import create_app
from serving.scoring.model import Manifest
from serving.scoring.settings import Settings, SettingsError

KEY = "k" * 40


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture
def example(manifest) -> list[dict]:
    return [dict(record) for record in manifest.input_example]


def logged(context, env: dict[str, str], records: list[dict], capfd) -> tuple[dict, list[dict]]:
    """/predict's answer and the inputs of its request-log line, from the app run in-process with `env`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_DIR", str(context.path / "model"))
        for name, value in env.items():
            patch.setenv(name, value)
        app = create_app()
    with TestClient(app) as client:
        capfd.readouterr()
        answer = client.post("/predict", json={"records": records})
        assert answer.status_code == 200, answer.text
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    [line] = [entry for entry in lines if entry.get("log_type") == "prediction"]
    return answer.json(), logformat.records(line["inputs"], len(line["outputs"]))


def test_personal_columns_are_dropped_from_the_log_by_default(context, manifest, personal, example, capfd,
                                                              monkeypatch):
    monkeypatch.delenv("REQUEST_LOG_PERSONAL", raising=False)
    answer, inputs = logged(context, {}, example, capfd)
    rest = [name for name in manifest.input_names if name not in personal]
    assert inputs == [{name: record[name] for name in rest} for record in example]
    _, kept = logged(context, {"REQUEST_LOG_PERSONAL": "keep"}, example, capfd)
    assert kept == example
    assert logged(context, {"REQUEST_LOG_PERSONAL": "keep"}, example, capfd)[0]["predictions"] == answer["predictions"]


def test_pseudonymised_columns_are_a_keyed_hmac_under_their_own_name(context, manifest, personal, example, capfd):
    records = example[:2]
    records[1][personal[0]] = None  # missing stays missing
    answer, inputs = logged(context, {"REQUEST_LOG_PERSONAL": "pseudonymise", "REQUEST_LOG_PSEUDONYM_KEY": KEY},
                            records, capfd)
    for sent, got in zip(records, inputs, strict=True):
        assert not set(personal) & set(got)  # the value is nowhere under the column's own name
        for name in manifest.input_names:
            if name in personal:
                expected = None if sent[name] is None else hmac.new(
                    KEY.encode(), name.encode() + b"\x00" + orjson.dumps(sent[name]), hashlib.sha256).hexdigest()[:32]
                assert got[name + privacy.PSEUDONYM_SUFFIX] == expected
            else:
                assert got[name] == sent[name]
    # The same value gives the same pseudonym; another key, another one (no one without the key can test guesses).
    again = logged(context, {"REQUEST_LOG_PERSONAL": "pseudonymise", "REQUEST_LOG_PSEUDONYM_KEY": KEY}, records, capfd)
    other = logged(context, {"REQUEST_LOG_PERSONAL": "pseudonymise", "REQUEST_LOG_PSEUDONYM_KEY": "o" * 40},
                   records, capfd)
    column = personal[-1] + privacy.PSEUDONYM_SUFFIX
    assert again[1][0][column] == inputs[0][column] != other[1][0][column]
    assert again[0]["predictions"] == answer["predictions"]


def test_a_bad_mode_or_a_missing_key_stops_start_up_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("REQUEST_LOG_PERSONAL", "hide")
    with pytest.raises(SettingsError, match="REQUEST_LOG_PERSONAL must be one of keep, drop, pseudonymise; got 'hide'"):
        Settings.from_env()
    monkeypatch.setenv("REQUEST_LOG_PERSONAL", "pseudonymise")
    monkeypatch.delenv("REQUEST_LOG_PSEUDONYM_KEY", raising=False)
    with pytest.raises(SettingsError, match="REQUEST_LOG_PSEUDONYM_KEY must be a secret of at least 32 characters "
                                            "when REQUEST_LOG_PERSONAL is pseudonymise"):
        Settings.from_env()
    monkeypatch.setenv("REQUEST_LOG_PSEUDONYM_KEY", KEY)
    assert Settings.from_env().request_log_pseudonym_key == KEY.encode()
    assert KEY not in repr(Settings.from_env()), "the key is a secret: never in a repr (nor so in a log or a traceback)"
    monkeypatch.setenv("REQUEST_LOG_PERSONAL", "drop")
    assert Settings.from_env().request_log_pseudonym_key is None  # a key is read only when it is used


def test_a_model_without_personal_inputs_logs_its_records_unchanged(manifest):
    raw = {**manifest.raw, "contract": {**(manifest.contract or {}), "personal": []}}
    plain = Manifest.from_dict(raw)
    columns = {name: tuple(r[name] for r in manifest.input_example) for name in manifest.input_names}
    for mode in privacy.MODES:
        logged = privacy.for_log(mode, plain, KEY.encode())(columns)
        assert list(logged) == manifest.input_names and all(logged[name] is columns[name] for name in columns)
