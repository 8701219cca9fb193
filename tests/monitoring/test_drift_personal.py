"""Drift on a request log whose personal columns the service dropped or pseudonymised (REQUEST_LOG_PERSONAL): those
columns are not compared (listed as not logged, never called drifted or missing), and drift is still found on the
rest. The lines are the real service's, rewritten by the service's own privacy.for_log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitoring import drift
from serving.scoring import privacy
from serving.scoring.model import Manifest

KEY = b"k" * 40


def rewritten(log: Path, out: Path, mode: str, manifest: Manifest) -> Path:
    """The log as the service writes it in `mode`."""
    loggable = privacy.for_log(mode, manifest, KEY)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    out.write_text("".join(json.dumps({**line, "inputs": loggable(line["inputs"])}) + "\n" for line in lines))
    return out


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.mark.parametrize("mode", ["drop", "pseudonymise"])
def test_personal_columns_are_left_out_and_the_rest_compared(window, context, manifest, personal, model, tmp_path,
                                                            mode):
    log = rewritten(window("clean"), tmp_path / "clean.jsonl", mode, manifest)
    code = drift.main(["--log", str(log), "--out", str(tmp_path / "out"), "--context", str(context.path)])
    [version] = json.loads((tmp_path / "out" / "drift_report.json").read_text())["versions"]
    assert code == drift.EXIT_OK and version["status"] == "no drift", version["drifted"]
    assert version["not_logged"] == personal
    rest = [name for name in model.contract.feature_names if name not in personal]
    assert list(version["features"]) == [*rest, "prediction"]
    assert "not compared: " + ", ".join(personal) in (tmp_path / "out" / "drift_report.html").read_text()


@pytest.mark.parametrize("mode", ["drop", "pseudonymise"])
def test_a_shift_of_a_column_that_is_logged_is_still_found(window, context, manifest, personal, shifts, tmp_path,
                                                          mode):
    shift, feature = shifts["numeric"]
    if feature in personal:
        pytest.skip("the shifted column is personal")
    log = rewritten(window(shift, shift), tmp_path / "shifted.jsonl", mode, manifest)
    code = drift.main(["--log", str(log), "--out", str(tmp_path / "out"), "--context", str(context.path)])
    [version] = json.loads((tmp_path / "out" / "drift_report.json").read_text())["versions"]
    assert code == drift.EXIT_DRIFT and version["drifted_features"] == [feature]
    assert version["not_logged"] == personal


def test_a_window_logged_partly_before_the_change_compares_the_records_that_carry_the_column(
        window, context, manifest, personal, tmp_path):
    """Lines from before a switch to drop and after it: each column is compared on the records that carry it."""
    clean = window("clean")
    kept = clean.read_text().splitlines()
    dropped = rewritten(clean, tmp_path / "dropped.jsonl", "drop", manifest).read_text().splitlines()
    log = tmp_path / "mixed.jsonl"
    log.write_text("\n".join(kept[:100] + dropped[100:]) + "\n")  # 500 records with the column, 500 without
    drift.main(["--log", str(log), "--out", str(tmp_path / "out"), "--context", str(context.path)])
    [version] = json.loads((tmp_path / "out" / "drift_report.json").read_text())["versions"]
    assert version["status"] == "no drift" and version["not_logged"] == []
    assert all(version["features"][name]["missing_fraction_window"] < 0.2 for name in personal)


def test_the_mlflow_run_says_which_columns_were_not_logged(window, registry, manifest, personal, tmp_path):
    """A dropped personal column has no psi_<column> metric: the run's `not_logged` tag says why the series stops."""
    from mlflow.tracking import MlflowClient

    log = rewritten(window("clean"), tmp_path / "dropped.jsonl", "drop", manifest)
    drift.main(["--log", str(log), "--out", str(tmp_path / "out"), "--tracking-uri", registry["tracking_uri"],
                "--experiment", "drift-not-logged-test"])
    client = MlflowClient(tracking_uri=registry["tracking_uri"])
    [run] = client.search_runs([client.get_experiment_by_name("drift-not-logged-test").experiment_id])
    assert run.data.tags["not_logged"] == ", ".join(personal)
    assert not {f"psi_{name}" for name in personal} & set(run.data.metrics)
    kept = rewritten(window("clean"), tmp_path / "kept.jsonl", "keep", manifest)
    drift.main(["--log", str(kept), "--out", str(tmp_path / "out-kept"), "--tracking-uri", registry["tracking_uri"],
                "--experiment", "drift-all-logged-test"])
    [run] = client.search_runs([client.get_experiment_by_name("drift-all-logged-test").experiment_id])
    assert "not_logged" not in run.data.tags, "every column logged: no empty tag on every run"
