"""The drift job against request logs written by the real scoring service fed by the traffic generator."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
from mlflow import tracking
from mlflow.tracking import MlflowClient

from monitoring import drift, drift_stats, traffic
from testing.unity_catalog import searching_like_uc


def run(log, out, *extra) -> tuple[int, dict]:
    code = drift.main(["--log", str(log), "--out", str(out), *extra])
    report = json.loads((out / "drift_report.json").read_text())
    return code, report


def only_version(report: dict) -> dict:
    assert len(report["versions"]) == 1
    return report["versions"][0]


def psi_table(version: dict) -> dict:
    return {column: stat["psi"] for column, stat in version["features"].items()}


def test_training_distribution_is_not_flagged(window, context, model, tmp_path, capsys):
    code, report = run(window("clean"), tmp_path, "--context", str(context.path))
    version = only_version(report)
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print("PSI", json.dumps(psi_table(version)))  # shown with -s: the figures quoted in docs/monitoring.md
    assert code == drift.EXIT_OK
    assert version["status"] == "no drift" and version["drifted"] == []
    assert version["records"] == 1000 and version["model_version"] == context.model_version
    assert list(version["features"]) == [*model.contract.feature_names, "prediction"]
    assert version["target"]["name"] == model.contract.target.name  # read from the version's contract.json
    assert max(psi_table(version).values()) < 0.1
    assert report["lines"].get("malformed", 0) == 0 and report["lines"]["predictions"] == 200
    assert record["log_type"] == "drift" and record["status"] == "no drift" and record["drifted"] == []


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_shifted_feature_is_flagged_and_no_other(window, context, shifts, tmp_path, kind, capsys):
    shift, feature = shifts[kind]
    code, report = run(window(shift, shift), tmp_path, "--context", str(context.path))
    version = only_version(report)
    assert code == drift.EXIT_DRIFT and version["status"] == "drift"
    # Shifting an input shifts the model's outputs too: "prediction" may drift as well, so the
    # assertion is on the input features only.
    assert version["drifted_features"] == [feature]
    assert version["features"][feature]["psi"] > 0.5 and version["features"][feature]["p_value"] < 1e-6
    others = {c: s["psi"] for c, s in version["features"].items() if c not in (feature, "prediction")}
    assert max(others.values()) < 0.1, others
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print("PSI", shift, json.dumps(psi_table(version)))
    assert record["status"] == "drift" and feature in record["drifted"]
    # HTML: the summary table lists every column, and there is one chart per drifted column.
    page = (tmp_path / "drift_report.html").read_text()
    assert len(re.findall(r"<img ", page)) == len(version["drifted"])
    assert all(f"<td>{column}</td>" in page for column in version["features"])
    assert f"alt='{feature}' src='data:image/png;base64," in page


def test_too_few_records_is_not_enough_data(window, context, tmp_path):
    lines = window("clean").read_text().splitlines()[:30]  # 150 records < 200
    log = tmp_path / "few.jsonl"
    log.write_text("\n".join(lines) + "\n")
    code, report = run(log, tmp_path / "out", "--context", str(context.path))
    version = only_version(report)
    assert code == drift.EXIT_OK
    assert version["status"] == "not enough data" and version["records"] == 150 and version["drifted"] == []
    assert report["status"] == "not enough data"
    assert "<img " not in (tmp_path / "out" / "drift_report.html").read_text()
    # The threshold is configurable.
    code, report = run(log, tmp_path / "out", "--context", str(context.path), "--min-records", "100")
    assert only_version(report)["status"] == "no drift"


def test_empty_log_is_not_enough_data(tmp_path, context):
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    code, report = run(log, tmp_path / "out", "--context", str(context.path))
    assert code == drift.EXIT_OK and report["status"] == "not enough data"


def test_malformed_lines_are_counted_and_skipped(window, context, tmp_path):
    clean = window("clean").read_text().splitlines()
    good = json.loads(clean[0])
    bad = ["{not json", "[1, 2]", json.dumps({"log_type": "startup", "msg": "hello"}),
           json.dumps({k: v for k, v in good.items() if k != "inputs"}),
           json.dumps({**good, "ts": "yesterday"}),
           json.dumps({**good, "outputs": []}),
           json.dumps({**good, "inputs": {**good["inputs"], "extra": [1] * (len(good["outputs"]) + 1)}}),
           json.dumps({**good, "inputs": {name: 3 for name in good["inputs"]}}),
           "INFO:     127.0.0.1:5555 - \"POST /predict HTTP/1.1\" 200 OK",
           json.dumps({"log_type": "error", "ts": good["ts"], "status": 503, "error": "not ready"})]
    log = tmp_path / "messy.jsonl"
    log.write_text("\n".join(clean[:100] + bad + clean[100:]) + "\n")
    code, report = run(log, tmp_path / "out", "--context", str(context.path))
    assert code == drift.EXIT_OK and only_version(report)["records"] == 1000
    assert report["lines"]["malformed"] == 8 and report["lines"]["other_log_type"] == 1
    assert report["lines"]["error_lines"] == 1 and report["lines"]["predictions"] == 200


def test_a_window_spanning_the_log_format_change_reads_both_versions(window, context, shifts, tmp_path):
    """Lines written before the log's columns (schema version 1: a list of records) and after (version 2: by column)
    in one window give the report the same lines give in either version alone."""
    shift, _ = shifts["categorical"]
    lines = [json.loads(line) for line in window(shift, shift).read_text().splitlines()]
    assert {line["schema_version"] for line in lines} == {2} and all(isinstance(line["inputs"], dict) for line in lines)

    def as_version_1(line: dict) -> dict:
        rows = [dict(zip(line["inputs"], values, strict=True)) for values in zip(*line["inputs"].values(), strict=True)]
        return {**line, "schema_version": 1, "inputs": rows}

    mixed = [as_version_1(line) if index % 2 else line for index, line in enumerate(lines)]
    reports = {}
    for name, written in (("v2", lines), ("mixed", mixed), ("v1", [as_version_1(line) for line in lines])):
        log = tmp_path / f"{name}.jsonl"
        log.write_text("".join(json.dumps(line) + "\n" for line in written))
        code, reports[name] = run(log, tmp_path / name, "--context", str(context.path))
        assert code == drift.EXIT_DRIFT and "malformed" not in reports[name]["lines"]
    assert only_version(reports["mixed"])["records"] == only_version(reports["v2"])["records"] == 1000
    assert psi_table(only_version(reports["mixed"])) == psi_table(only_version(reports["v2"])) == psi_table(
        only_version(reports["v1"]))


def test_thresholds_and_version_filter(window, context, shifts, tmp_path):
    shift, _ = shifts["categorical"]
    log = window(shift, shift)
    code, report = run(log, tmp_path, "--context", str(context.path), "--psi-threshold", "50")
    assert code == drift.EXIT_OK and only_version(report)["status"] == "no drift"
    code, report = run(log, tmp_path, "--context", str(context.path), "--model-version", "999")
    assert only_version(report)["status"] == "not enough data" and code == drift.EXIT_OK


def test_baseline_from_mlflow_and_metrics_logged(window, registry, model, shifts, tmp_path):
    shift, feature = shifts["numeric"]
    code, report = run(window(shift, shift), tmp_path, "--tracking-uri", registry["tracking_uri"],
                       "--experiment", "drift-monitoring-test")
    assert code == drift.EXIT_DRIFT
    client = MlflowClient(tracking_uri=registry["tracking_uri"])
    experiment = client.get_experiment_by_name("drift-monitoring-test")
    [run_] = client.search_runs([experiment.experiment_id])
    assert run_.data.tags["model_name"] == registry["model_name"]
    assert run_.data.tags["model_version"] == str(registry["version"]) and run_.data.tags["drift_status"] == "drift"
    assert run_.data.metrics["drifted_features"] == 1
    assert run_.data.metrics[f"psi_{feature}"] == pytest.approx(only_version(report)["features"][feature]["psi"])
    assert {f"psi_{c}" for c in model.contract.feature_names} <= set(run_.data.metrics)
    assert {a.path for a in client.list_artifacts(run_.info.run_id, "drift_report")} == {
        "drift_report/drift_report.json", "drift_report/drift_report.html"}


def test_missing_baseline_or_log_is_exit_2(window, tmp_path, capsys):
    assert drift.main(["--log", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path), "--context", str(tmp_path)]) \
        == drift.EXIT_ERROR
    assert drift.main(["--log", str(window("clean")), "--out", str(tmp_path), "--context", str(tmp_path)]) \
        == drift.EXIT_ERROR
    assert "no drift_baseline.json" in capsys.readouterr().err


def test_psi_and_chi_square_units():
    import numpy as np

    same = np.array([0.25, 0.25, 0.5])
    assert drift_stats.psi(same, same) == 0
    assert drift_stats.psi(same, np.array([0.5, 0.25, 0.25])) == pytest.approx(2 * 0.25 * np.log(2))
    assert drift_stats.chi_square(same, np.array([250.0, 250, 500])) == pytest.approx(1.0)
    assert drift_stats.chi_square(same, np.array([500.0, 250, 250])) < 1e-10
    labels, expected, counts = drift_stats.categorical_buckets(
        {"frequencies": {"a": 0.5, "b": 0.5}, "missing_fraction": 0.0}, ["a", "c", None, "b"])
    assert labels == ["a", "b", "unseen", "missing"] and list(counts) == [1, 1, 1, 1]
    labels, expected, counts = drift_stats.numeric_buckets(
        {"edges": [1.0, 2.0], "fractions": [0.2, 0.3, 0.5], "missing_fraction": 0.1}, [0.5, 1.0, 2.5, None, "x"])
    assert list(counts) == [1, 1, 1, 2] and expected == pytest.approx([0.18, 0.27, 0.45, 0.1])


@pytest.fixture(scope="module")
def large_requests(service, model, tmp_path_factory) -> list[bytes]:
    """The log lines of two 1000-record requests through the real service: each logged in parts."""
    before = service["log"].stat().st_size
    summary = traffic.send(model, service["url"], 2, rate=0, batch=1000, seed=303, progress=lambda _: None)
    assert summary["statuses"] == {200: 2}
    for _ in range(50):  # the service writes the last line just after answering
        lines = service["log"].read_bytes()[before:].splitlines(keepends=True)
        parts = [json.loads(line) for line in lines if line.startswith(b"{")]
        if parts and sum(p["part"] == p["parts"] for p in parts) == 2:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"the parts of two large requests never reached {service['log']}")


def test_large_requests_are_logged_in_parts_and_reassembled(large_requests, context, tmp_path):
    assert max(len(line) for line in large_requests) <= 16 * 1024
    parts = [json.loads(line) for line in large_requests]
    assert len(parts) > 2 and {p["n_records"] for p in parts} == {1000}
    log = tmp_path / "large.jsonl"
    log.write_bytes(b"".join(large_requests))
    code, report = run(log, tmp_path / "out", "--context", str(context.path))
    assert code == drift.EXIT_OK and only_version(report)["records"] == 2000
    assert report["lines"]["predictions"] == 2 and report["lines"]["part_lines"] == len(parts)
    assert "malformed" not in report["lines"] and "incomplete" not in report["lines"]


def test_a_request_with_a_lost_part_is_incomplete_not_malformed(large_requests, context, tmp_path):
    lines = list(large_requests)
    first_request = json.loads(lines[0])["request_id"]
    lost = next(i for i, line in enumerate(lines) if json.loads(line)["request_id"] == first_request
                and json.loads(line)["part"] == 2)
    kept = lines[:lost] + lines[lost + 1:]
    random.Random(5).shuffle(kept)  # parts may reach Log Analytics in any order
    log = tmp_path / "lossy.jsonl"
    log.write_bytes(b"".join(kept))
    code, report = run(log, tmp_path / "out", "--context", str(context.path), "--min-records", "100")
    assert code == drift.EXIT_OK and only_version(report)["records"] == 1000
    assert report["lines"]["incomplete"] == 1 and report["lines"]["predictions"] == 1
    assert "malformed" not in report["lines"]


def test_a_promotion_target_reads_the_baseline_of_its_own_copy(window, registry, promoted_copy, tmp_path, monkeypatch):
    """Prod serves staging's image, so its request log names staging's model and version; prod's jobs read prod's
    registry only. With --model-name, the baseline comes from prod's copy of the logged version (its source_model and
    source_version tags), found with Unity Catalog's search results (no tags), and never from staging's model."""
    prod, copy = promoted_copy
    assert copy.version != str(registry["version"])
    local = tracking.MlflowClient
    monkeypatch.setattr(tracking, "MlflowClient", lambda *a, **k: searching_like_uc(local(*a, **k)))

    code, report = run(window("clean"), tmp_path / "out", "--tracking-uri", prod.tracking_uri,
                       "--registry-uri", prod.tracking_uri, "--model-name", "prod-model", "--experiment", "drift")
    version = only_version(report)
    assert code == drift.EXIT_OK and version["status"] == "no drift"
    # the record names what was served (the log's version, as the request-log queries do), read from the copy
    assert (version["model_name"], version["model_version"]) == (registry["model_name"], str(registry["version"]))


def test_a_version_with_no_copy_in_the_named_model_is_exit_2(window, tmp_path, capsys):
    prod = f"sqlite:///{tmp_path / 'empty.db'}"
    assert drift.main(["--log", str(window("clean")), "--out", str(tmp_path), "--tracking-uri", prod,
                       "--model-name", "prod-model"]) == drift.EXIT_ERROR
    assert "holds no copy of" in capsys.readouterr().err
