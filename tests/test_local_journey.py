"""`make local` end to end, twice, against a real uvicorn process on a free port; and the second example through the
same journey by its one switch (`--model`, `make local MODEL=...`)."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
from mlflow.tracking import MlflowClient

from scripts import local_journey
from serving import smoke
from serving.localrun import free_port


@pytest.mark.slow
def test_the_whole_journey_twice(tmp_path, capsys, model):
    state, port = tmp_path / "state", free_port()
    args = ["--state", str(state), "--port", str(port), "--rows", "3000", "--mode", "process", "--model", model.module]
    try:
        assert local_journey.main(args) == 0
        first = capsys.readouterr().out
        assert "gate: v1 PROMOTED" in first and f"at http://127.0.0.1:{port}" in first
        assert "smoke-test the candidate" in first and "journey complete" in first
        assert f"switch http://127.0.0.1:{port} to the candidate v1" in first

        # a second run registers a new version and gates it against the champion, then serves @champion
        assert local_journey.main(args) == 0
        second = capsys.readouterr().out
        assert "gate: v2" in second and f"champion v1 {model.gate.name}" in second
        assert "beside the champion" in second and not (state / "candidate").exists()
        client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
        name = model.module.split(".")[-1].replace("_", "-")
        champion = str(client.get_model_version_by_alias(name, "champion").version)
        smoke.run(f"http://127.0.0.1:{port}", expect_version=champion, say=lambda _: None)

        lines = [json.loads(line) for line in (state / "logs/requests.jsonl").read_text().splitlines()]
        assert len(lines) >= 2 and {line["log_type"] for line in lines} == {"prediction"}
        assert json.loads((state / "example_request.json").read_text())["records"]
    finally:
        local_journey.main(["stop", "--state", str(state)])
    assert not (state / "service.json").exists()


@pytest.mark.slow
def test_a_candidate_that_fails_its_smoke_test_leaves_the_champion_serving(tmp_path, capsys, monkeypatch):
    state, port = tmp_path / "state", free_port()
    args = ["--state", str(state), "--port", str(port), "--rows", "3000", "--mode", "process", "--model", "house-prices"]
    try:
        assert local_journey.main(args) == 0
        champion = json.loads((state / "service.json").read_text())
        real_run = smoke.run

        def failing(url, *a, **kw):
            if url != f"http://127.0.0.1:{port}":  # the candidate's own port
                raise smoke.SmokeFailure("candidate answered 500")
            return real_run(url, *a, **kw)
        monkeypatch.setattr(local_journey.smoke, "run", failing)
        assert local_journey.main(args) == 1
        err = capsys.readouterr().err
        assert "candidate answered 500" in err and f"the champion keeps serving http://127.0.0.1:{port}" in err
        assert json.loads((state / "service.json").read_text()) == champion  # untouched
        smoke.run(f"http://127.0.0.1:{port}", expect_version="1", say=lambda _: None)  # v1 still answers
    finally:
        local_journey.main(["stop", "--state", str(state)])


@pytest.mark.slow
def test_the_regression_example_runs_the_same_journey(tmp_path, capsys):
    """models/house_prices.py, a regressor gated on a metric where lower is better, by the one switch."""
    state, port = tmp_path / "state", free_port()
    try:
        assert local_journey.main(["--state", str(state), "--port", str(port), "--rows", "3000", "--mode", "process",
                                   "--model", "house-prices"]) == 0
        out = capsys.readouterr().out
        assert "gate: v1 PROMOTED" in out and "test mape" in out and "journey complete" in out
        assert json.loads((state / "service.json").read_text())["model"] == "models.house_prices"
        request = json.loads((state / "example_request.json").read_text())
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=request).json()
        assert [set(p) for p in answer["predictions"]] == [{"prediction"}] and answer["predictions"][0]["prediction"] > 0
    finally:
        local_journey.main(["stop", "--state", str(state)])


def test_a_first_version_the_gate_rejects_leaves_nothing_to_serve_and_says_why(tmp_path, capsys, monkeypatch):
    """No champion yet and the gate rejects the first version: the journey stops before packaging, naming the gate's
    reason and what to change, instead of failing to resolve @champion."""
    from training import contract
    from training.contract import Gate

    real = contract.load
    strict = lambda name: dataclasses.replace(real(name), gate=Gate(real(name).gate.measure, floor=0.0))  # noqa: E731
    monkeypatch.setattr(contract, "load", strict)
    state = tmp_path / "state"
    assert local_journey.main(["--state", str(state), "--port", str(free_port()), "--rows", "1000", "--mode", "process",
                               "--model", "house-prices"]) == 1
    err = capsys.readouterr().err
    assert "no champion to serve: the gate rejected house-prices v1 (mape" in err and "above the ceiling" in err
    assert "models.house_prices" in err and not (state / "service.json").exists()
