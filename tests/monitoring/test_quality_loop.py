"""The whole quality loop against the real service: traffic sends records with the contract's ids and writes their true
outcomes; the service logs the ids; `make quality`'s job joins them and judges the rule. Outcomes that follow the
model keep it; outcomes that stop following it start retraining."""

from __future__ import annotations

import json
import time

from monitoring import quality_job, traffic
from tests.monitoring.conftest import BATCH, REQUESTS


def loop(service, model, tmp_path, degrade: float, seed: int) -> tuple[int, dict, dict]:
    labels = traffic.Labels(tmp_path / "labels.jsonl", degrade=degrade, unlabelled=0.1)
    before = service["log"].stat().st_size
    summary = traffic.send(model, service["url"], REQUESTS, rate=0, batch=BATCH, seed=seed, labels=labels,
                           id_base=seed * 1_000_000, progress=lambda _: None)
    assert summary["statuses"] == {200: REQUESTS}
    assert 0.8 * REQUESTS * BATCH < summary["labels"]["written"] < REQUESTS * BATCH
    for _ in range(50):  # the service writes the last line just after answering
        data = service["log"].read_bytes()[before:]
        if data.count(b"\n") >= REQUESTS:
            break
        time.sleep(0.1)
    (tmp_path / "requests.jsonl").write_bytes(data)
    code = quality_job.main(["--model", model.module, "--log", str(tmp_path / "requests.jsonl"), "--labels",
                             str(tmp_path / "labels.jsonl"), "--table", str(tmp_path / "inference.parquet"),
                             "--out", str(tmp_path / "out"), "--windows", "3", "--min-labelled", "60",
                             "--resamples", "50", "--tracking-uri", "", "--baseline", ""])
    return code, json.loads((tmp_path / "out" / "quality_report.json").read_text()), summary


def test_outcomes_that_follow_the_model_keep_it(service, model, tmp_path):
    code, report, summary = loop(service, model, tmp_path, degrade=0.0, seed=41)
    assert code == quality_job.EXIT_OK, report["by_version"]
    assert report["predictions"] == REQUESTS * BATCH
    assert report["labelled"] == summary["labels"]["written"]  # every label found its prediction by the ids
    gate_rows = [r for r in report["table"] if r["metric"] == model.gate.name and r["slice"] == "all"]
    assert gate_rows and all(r["value"] >= model.gate.floor for r in gate_rows if r["value"] is not None)


def test_outcomes_that_stop_following_the_model_start_retraining(service, model, tmp_path):
    code, report, _ = loop(service, model, tmp_path, degrade=0.9, seed=42)
    assert code == quality_job.EXIT_RETRAIN
    assert any("below the floor" in reason for reason in report["reasons"])
