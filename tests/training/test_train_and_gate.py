"""The training entry point against a real sqlite MLflow registry: what a run records, what a
version carries, and the gate deciding both ways."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training import data, gate, schema
from training import train as training
from training.gate import GatePolicy, decide
from training.loader import validate_frame
from training.pipeline import features_of


def test_held_out_roc_auc_shows_real_signal(registry):
    metrics = registry["summary"]["metrics"]
    assert 0.70 <= metrics["roc_auc"] <= 0.95
    assert 0 < metrics["log_loss"] < 0.69  # better than a coin
    assert 0 < metrics["f1"] <= 1 and 0.05 <= metrics["threshold"] <= 0.95


def test_run_records_params_metrics_and_lineage_tags(registry):
    client = MlflowClient()
    run = client.get_run(registry["summary"]["run_id"])
    for key in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_f1", "valid_roc_auc"):
        assert key in run.data.metrics
    assert {"learning_rate", "max_leaf_nodes", "seed", "decision_threshold"} <= set(run.data.params)
    tags = run.data.tags
    assert tags["environment"] == "test"
    assert len(tags["data_fingerprint"]) == 16 and tags["git_sha"]
    expected = training.data_fingerprint(validate_frame(pd.read_parquet(registry["data"])))
    assert tags["data_fingerprint"] == expected


def test_registered_version_has_signature_example_and_explicit_requirements(registry):
    uri = f"models:/{registry['model_name']}/{registry['version']}"
    info = mlflow.models.get_model_info(uri)
    columns = {spec.name: spec.type.name for spec in info.signature.inputs.inputs}
    assert columns == {**{c: "string" for c in schema.CATEGORICAL}, **{c: "double" for c in schema.NUMERIC}}
    requirements = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt")).read_text().splitlines()
    names = {line.split("==")[0] for line in requirements if line and not line.startswith("#")}
    assert {"scikit-learn", "numpy", "pandas", "skops"} <= names
    assert not names & {"pytest", "ruff", "httpx", "pulumi", "fastapi"}
    assert all("==" in line for line in requirements if line and not line.startswith("#"))
    example = json.loads(Path(mlflow.artifacts.download_artifacts(f"{uri}/input_example.json")).read_text())
    assert example["columns"] == list(schema.FEATURES)


def test_a_version_carries_no_row_of_a_real_person(registry):
    """Only aggregates and records drawn from them: the table's rows stay behind its grants, and promotion copies
    nothing personal into prod's registry."""
    uri = f"models:/{registry['model_name']}/{registry['version']}"
    root = Path(mlflow.artifacts.download_artifacts(uri))
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {p for p in files if p.endswith((".parquet", ".csv"))} == {"extra_files/equivalence_records.parquet"}
    table = features_of(validate_frame(pd.read_parquet(registry["data"])))
    people = set(map(tuple, table.astype(str).to_numpy()))
    example = json.loads((root / "input_example.json").read_text())
    drawn = [pd.DataFrame(example["data"], columns=example["columns"]),
             pd.read_parquet(root / "extra_files/equivalence_records.parquet")]
    for frame in drawn:
        rows = set(map(tuple, validate_frame(frame, require_target=False)[list(schema.FEATURES)].astype(str).to_numpy()))
        assert not rows & people
    assert len(drawn[1]) > 1000  # random draws plus the edge, category and missing-value probes


def test_the_run_names_its_training_data_as_an_mlflow_dataset(registry):
    """Lineage through mlflow.log_input: the file (or table) and MLflow's digest of the rows, on the run's inputs."""
    run = MlflowClient().get_run(registry["summary"]["run_id"])
    [used] = [d for d in run.inputs.dataset_inputs if {(t.key, t.value) for t in d.tags} >= {("mlflow.data.context", "training")}]
    assert json.loads(used.dataset.source) == {"uri": str(registry["data"])}
    frame = validate_frame(pd.read_parquet(registry["data"]))
    assert used.dataset.digest == training.training_dataset(frame, str(registry["data"])).digest
    table = training.training_dataset(frame, "staging.credit.card_holders")  # a Unity Catalog table, by name
    assert json.loads(table.source.to_json())["delta_table_name"] == "staging.credit.card_holders"
    assert table.digest == used.dataset.digest, "the same rows, the same digest, wherever they were read from"


def test_the_fingerprint_tells_apart_tables_that_mlflows_digest_calls_the_same():
    """Why the fingerprint tag stays beside mlflow.log_input: a change past row 10,000, or in a text column with a
    missing value somewhere (education has some), leaves MLflow's digest as it was."""
    frame = validate_frame(data.generate(12_000, seed=1))
    later_row = frame.copy()
    later_row.loc[11_000, "age"] += 1
    education = frame.copy()
    assert education["education"].isna().any()
    education.loc[0, "education"] = "graduate_school" if frame.loc[0, "education"] != "graduate_school" else "university"
    for changed in (later_row, education):
        assert training.training_dataset(changed, "t.csv").digest == training.training_dataset(frame, "t.csv").digest
        assert training.data_fingerprint(changed) != training.data_fingerprint(frame)


def test_the_gate_reads_its_held_out_rows_from_the_table_not_from_the_version(registry):
    """The held-out split is a function of each row, so the gate re-derives exactly training's test rows."""
    client = MlflowClient()
    assert gate.data_of(client, registry["model_name"], registry["version"]) == str(registry["data"])
    holdout = gate.load_holdout(str(registry["data"]))
    roc_auc = gate.holdout_auc(f"models:/{registry['model_name']}/{registry['version']}", holdout)
    assert roc_auc == pytest.approx(registry["summary"]["metrics"]["roc_auc"])  # training scored these very rows


def test_drift_baseline_is_an_artifact_of_the_version(registry):
    uri = f"models:/{registry['model_name']}/{registry['version']}/extra_files/drift_baseline.json"
    baseline = json.loads(Path(mlflow.artifacts.download_artifacts(uri)).read_text())
    assert set(baseline["features"]) == set(schema.FEATURES)
    age = baseline["features"]["age"]
    assert age["type"] == "numeric" and len(age["fractions"]) == len(age["edges"]) + 1
    assert sum(age["fractions"]) == pytest.approx(1.0) and 0 < age["missing_fraction"] < 0.1
    sex = baseline["features"]["sex"]
    assert set(sex["frequencies"]) == {"female", "male"} and sum(sex["frequencies"].values()) == pytest.approx(1.0)
    assert baseline["prediction"]["type"] == "numeric" and baseline["prediction"]["edges"]


def test_version_tags_carry_threshold_and_metrics(registry):
    tags = MlflowClient().get_model_version(registry["model_name"], registry["version"]).tags
    assert float(tags["decision_threshold"]) == pytest.approx(registry["summary"]["metrics"]["threshold"])
    assert float(tags["roc_auc"]) == pytest.approx(registry["summary"]["metrics"]["roc_auc"])


@pytest.mark.parametrize(("challenger", "champion", "promoted", "words"), [
    (0.65, None, False, "below the floor"),
    (0.80, None, True, "first model"),
    (0.80, 0.805, True, "within tolerance"),
    (0.80, 0.85, False, "worse than the champion"),
    (0.90, 0.85, True, "within tolerance"),
])
def test_decide(challenger, champion, promoted, words):
    decided, reason = decide(challenger, champion, GatePolicy(floor=0.7, tolerance=0.01))
    assert decided is promoted and words in reason


def test_gate_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="floor"):
        GatePolicy(floor=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        GatePolicy(tolerance=-0.1)


@pytest.fixture(scope="module")
def gated_registry(tmp_path_factory) -> dict:
    """A registry of its own: these tests move aliases."""
    root = tmp_path_factory.mktemp("gated")
    good = root / "good.parquet"
    data.write_table(data.generate(3000, seed=5), good)
    noise = data.generate(3000, seed=6)
    noise[schema.TARGET] = noise[schema.TARGET].sample(frac=1.0, random_state=1).to_numpy()  # no signal left
    noisy = root / "noise.parquet"
    data.write_table(noise, noisy)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return {"uri": uri, "good": good, "noise": noisy, "artifacts": (root / "artifacts").as_uri()}


def _train(reg: dict, data_path: Path, *extra: str) -> dict:
    mlflow.set_tracking_uri(reg["uri"])
    return training.main(["--data", str(data_path), "--tracking-uri", reg["uri"], "--model-name", "gated",
                          "--artifact-root", reg["artifacts"], *extra])


def test_gate_both_ways_on_a_real_registry(gated_registry, capsys):
    client = MlflowClient(tracking_uri=gated_registry["uri"])
    below_floor = _train(gated_registry, gated_registry["good"], "--gate-floor", "0.99")
    assert below_floor["gate"]["promoted"] is False
    assert gate.current_champion(client, "gated") is None  # a rejected model never becomes champion

    first = _train(gated_registry, gated_registry["good"])
    assert first["gate"]["promoted"] is True and first["gate"]["champion_version"] is None
    assert gate.current_champion(client, "gated") == first["version"]

    worse = _train(gated_registry, gated_registry["noise"], "--gate-floor", "0.5")
    decision = worse["gate"]
    assert decision["promoted"] is False and decision["champion_version"] == first["version"]
    assert decision["challenger_roc_auc"] < decision["champion_roc_auc"] - 0.01
    assert gate.current_champion(client, "gated") == first["version"]
    assert str(client.get_model_version_by_alias("gated", "challenger").version) == worse["version"]

    run = client.get_run(worse["run_id"])
    assert run.data.tags["gate.decision"] == "rejected"
    assert run.data.metrics["gate_champion_roc_auc"] == pytest.approx(decision["champion_roc_auc"])
    assert run.data.metrics["gate_challenger_roc_auc"] == pytest.approx(decision["challenger_roc_auc"])
    assert client.get_model_version("gated", worse["version"]).tags["gate.decision"] == "rejected"
    assert "REJECTED" in capsys.readouterr().out


def test_gate_cli_regates_a_version_from_its_own_holdout(gated_registry, capsys):
    client = MlflowClient(tracking_uri=gated_registry["uri"])
    newest = max(int(v.version) for v in client.search_model_versions("name='gated'"))
    champion_before = gate.current_champion(client, "gated")
    assert gate.main(["--tracking-uri", gated_registry["uri"], "--model-name", "gated", "--version", str(newest),
                      "--gate-floor", "0.5"]) == 0
    out = capsys.readouterr().out
    assert f"gate: v{newest}" in out
    assert gate.current_champion(client, "gated") == champion_before


def _job_run_version(client: MlflowClient, experiment_id: str, job_run: str, source_version: str) -> str:
    """What a train task of job run `job_run` leaves: a tagged MLflow run and a version registered from it."""
    run = client.create_run(experiment_id, tags={gate.JOB_RUN_TAG: job_run})
    client.set_terminated(run.info.run_id)
    source = client.get_model_version("gated", source_version)
    return str(client.create_model_version("handover", source.source, run_id=run.info.run_id).version)


def test_gate_judges_the_version_of_its_own_job_run(gated_registry, capsys):
    """Two job runs registered versions before either gate ran (a manual run during a scheduled one): each gate
    finds its own run's version by the job run id, not the newest version and not a task value."""
    client = MlflowClient(tracking_uri=gated_registry["uri"])
    good = gate.current_champion(client, "gated")
    noisy = str(client.get_model_version_by_alias("gated", "challenger").version)
    experiment = client.create_experiment("handover", artifact_location=gated_registry["artifacts"])
    client.create_registered_model("handover")
    first = _job_run_version(client, experiment, "111", good)
    second = _job_run_version(client, experiment, "222", noisy)
    args = ["--tracking-uri", gated_registry["uri"], "--model-name", "handover", "--experiment", "handover",
            "--gate-floor", "0.5", "--data", str(gated_registry["good"])]

    assert gate.main([*args, "--job-run-id", "111"]) == 0  # the older version, although "222" registered the newest
    assert f"gate: v{first} PROMOTED" in capsys.readouterr().out
    assert gate.current_champion(client, "handover") == first
    assert "gate.decision" not in client.get_model_version("handover", second).tags  # not judged by run 111's gate

    assert gate.main([*args, "--job-run-id", "222"]) == 0
    assert f"gate: v{second} REJECTED" in capsys.readouterr().out
    assert gate.current_champion(client, "handover") == first

    with pytest.raises(gate.VersionNotFound, match="job run 333 registered 0 version"):
        gate.main([*args, "--job-run-id", "333"])
    with pytest.raises(SystemExit):  # a reference Databricks did not resolve is refused, not looked up
        gate.main([*args, "--job-run-id", "{{tasks.train.values.model_version}}"])
    assert "unresolved dynamic value reference" in capsys.readouterr().err
