"""`make quality` end to end on this machine: a request log written by the service's own code, labels arriving late
(some never), a second version whose outcomes stop following the model: the report is written with a chart per
metric, and the exit code says whether the loop would retrain."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitoring import inference, quality_job
from tests.monitoring.loglines import log_lines
from training import data

START = pd.Timestamp("2026-12-07T00:00:00Z")
WINDOWS = 4


def scenario(model, tmp_path, degrade: float) -> list[str]:
    """Four hours of requests of 50 records each (version 1 then 2); labels an hour later, 10 % never; from the second
    hour on, `degrade` of the outcomes no longer follow the model."""
    contract = model.contract
    negative, positive = contract.target.classes
    rng = np.random.default_rng(7)
    rows = data.example_table(model, WINDOWS * 6 * 50, seed=21)
    id_name, target = contract.ids[0], contract.target.name
    lines, labels = [], []
    for request in range(WINDOWS * 6):
        chunk = rows.iloc[request * 50:(request + 1) * 50]
        truth = chunk[target].to_numpy() == positive
        p = np.clip(np.where(truth, 0.7, 0.3) + rng.normal(0, 0.15, 50), 0.01, 0.99)  # a useful model
        at = START + pd.Timedelta(minutes=10 * request)
        for raw in log_lines(model, chunk, f"req-{request}", version="1" if request < 12 else "2",
                             probabilities=p).splitlines():
            entry = json.loads(raw)
            entry["ts"] = at.isoformat().replace("+00:00", "Z")
            lines.append(json.dumps(entry))
        hour = request // 6
        for id_value, outcome in zip(chunk[id_name], truth, strict=True):
            if rng.random() < 0.1:
                continue  # never labelled
            wrong = hour >= 1 and rng.random() < degrade
            labels.append({id_name: int(id_value), target: positive if outcome != wrong else negative,
                           inference.KNOWN_AT: (at + pd.Timedelta(hours=1)).isoformat()})
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    pd.DataFrame(labels).to_json(tmp_path / "labels.jsonl", orient="records", lines=True)
    return ["--model", model.module, "--log", str(tmp_path / "requests.jsonl"), "--labels",
            str(tmp_path / "labels.jsonl"), "--table", str(tmp_path / "inference.parquet"), "--out", str(tmp_path / "out"),
            "--window", "1h", "--as-of", "2026-12-08T00:00:00Z", "--windows", "2", "--min-labelled", "40",
            "--resamples", "30", "--tracking-uri", "", "--baseline", ""]


@pytest.mark.parametrize(("degrade", "code"), [(0.0, quality_job.EXIT_OK), (0.9, quality_job.EXIT_RETRAIN)])
def test_make_quality_writes_its_report_and_says_whether_to_retrain(model, tmp_path, capsys, degrade, code):
    args = scenario(model, tmp_path, degrade)
    assert quality_job.main(args) == code
    report = json.loads((tmp_path / "out" / "quality_report.json").read_text())
    assert report["predictions"] == WINDOWS * 6 * 50 and 0.85 < report["coverage"] < 0.95
    assert report["retrain"] is (code == quality_job.EXIT_RETRAIN)
    page = (tmp_path / "out" / "quality_report.html").read_text()
    metrics = {row["metric"] for row in report["table"] if row["value"] is not None}
    assert model.gate.name in metrics and page.count("<img") == len(metrics) + 1  # a chart each, and calibration
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["retrain"] is report["retrain"]
    # a re-run over the same log adds nothing to the table, and judges the same
    assert quality_job.main(args) == code
    assert json.loads((tmp_path / "out" / "quality_report.json").read_text())["added"] == 0


def test_labels_not_yet_known_are_not_used(model, tmp_path):
    args = scenario(model, tmp_path, 0.9)
    early = [*args[:args.index("--as-of")], "--as-of", "2026-12-07T00:30:00Z", *args[args.index("--as-of") + 2:]]
    assert quality_job.main(early) == quality_job.EXIT_OK  # no label known yet: nothing to judge
    assert json.loads((tmp_path / "out" / "quality_report.json").read_text())["labelled"] == 0


def test_bad_input_is_exit_2_naming_what_is_missing(model, tmp_path, capsys):
    args = scenario(model, tmp_path, 0.0)
    (tmp_path / "labels.jsonl").unlink()
    assert quality_job.main(args) == quality_job.EXIT_BAD_INPUT
    assert "labels.jsonl does not exist" in capsys.readouterr().err
    args[args.index("--window") + 1] = "soon"
    assert quality_job.main(args) == quality_job.EXIT_BAD_INPUT
