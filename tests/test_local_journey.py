"""`make local` end to end, twice, against a real uvicorn process on a free port."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from scripts import local_journey
from serving import smoke
from serving.localrun import free_port


@pytest.mark.slow
def test_the_whole_journey_twice(tmp_path, capsys):
    state, port = tmp_path / "state", free_port()
    args = ["--state", str(state), "--port", str(port), "--rows", "3000", "--mode", "process"]
    try:
        assert local_journey.main(args) == 0
        first = capsys.readouterr().out
        assert "gate: v1 PROMOTED" in first and f"at http://127.0.0.1:{port}" in first
        assert "smoke test" in first and "journey complete" in first

        # a second run registers a new version and gates it against the champion, then serves @champion
        assert local_journey.main(args) == 0
        second = capsys.readouterr().out
        assert "gate: v2" in second and "champion v1 ROC-AUC" in second
        client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
        champion = str(client.get_model_version_by_alias("credit-default", "champion").version)
        smoke.run(f"http://127.0.0.1:{port}", expect_version=champion, say=lambda _: None)

        lines = [json.loads(line) for line in (state / "logs/requests.jsonl").read_text().splitlines()]
        assert len(lines) >= 2 and {line["log_type"] for line in lines} == {"prediction"}
        assert json.loads((state / "example_request.json").read_text())["records"]
    finally:
        local_journey.main(["stop", "--state", str(state)])
    assert not (state / "service.json").exists()
