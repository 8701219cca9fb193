"""The Databricks jobs the program declares for a stack, run here for real (make databricks-test).

The job resources come from the program under mocks; each task's wheel entry point runs with its exact
declared parameters, in dependency order, each in a fresh process that imports only the declared wheel,
with a local SparkSession over the training table under its configured name, a local MLflow store in
place of the workspace's, and no dbutils (scripts/databricks_local.py lists every stand-in)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from scripts import databricks_local
from training import data
from training.gate import JOB_RUN_TAG
from training.loader import validate_frame

pytestmark = pytest.mark.databricks

STACK = "dev"
ROWS = 2500
LOG_RECORDS = 400


def parameter(task: databricks_local.Task, name: str) -> str:
    return task.parameters[task.parameters.index(name) + 1]


def succeeded(results) -> None:
    for result in results:
        assert result.returncode == 0, f"{result.args[3:5]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The cluster's Python is .venv-runtime (the runtime's MLflow 3.8.1 and Spark 4.1), the workspace's MLflow a
    server run by that MLflow; this process (the repository's newer MLflow) reads it over REST, as a laptop would."""
    python = databricks_local.runtime_python()
    assert python == str(databricks_local.RUNTIME_PYTHON), "run `make databricks-test`: it builds .venv-runtime"
    root = tmp_path_factory.mktemp("databricks")
    with databricks_local.MlflowServer(root / "mlflow", python) as server:
        local = databricks_local.LocalWorkspace(root, python, server.uri)
        declared = databricks_local.declared(STACK, {"model.trackingUri": local.tracking_uri,
                                                     "model.registryUri": local.tracking_uri, "image.wheelhouse": False,
                                                     "image.contextDir": str(root / "context")})
        local.install(declared.wheel_path, declared.wheel)
        train = declared.jobs["databricks-job"].tasks[0]
        parquet = root / "data" / "card_holders.parquet"
        data.write_table(data.generate(ROWS, seed=11), parquet)
        local.create_table(parameter(train, "--data"), parquet)  # dev.credit.card_holders, as the stack configures
        yield local, declared


@pytest.fixture(scope="module")
def first_run(workspace):
    local, declared = workspace
    job = declared.jobs["databricks-job"]
    results = local.run_job(job, "1001", say=lambda _: None)
    succeeded(results)
    return results


def test_declared_tasks_run_from_the_wheel_in_dependency_order(workspace, first_run):
    local, declared = workspace
    job = declared.jobs["databricks-job"]
    assert [t.key for t in job.tasks] == ["train", "gate"] and job.tasks[1].depends_on == ("train",)
    assert set(job.libraries) == {declared.wheel_path}
    for task, result in zip(job.tasks, first_run, strict=True):
        module = task.entry_point.removeprefix("credit-")
        assert f"from {local.site}/training/{module}.py" in result.stdout, "the task ran the installed wheel"
        assert "on mlflow 3.8.1, pyspark 4.1.0, pandas 2." in result.stdout, "the runtime's libraries, not ours"


def test_train_then_gate_moves_the_champion(workspace, first_run):
    local, declared = workspace
    model = parameter(declared.jobs["databricks-job"].tasks[0], "--model-name")
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.tags[JOB_RUN_TAG] == "1001" and champion.tags["gate.decision"] == "promoted"
    assert client.get_run(champion.run_id).data.tags[JOB_RUN_TAG] == "1001"
    assert "PROMOTED to @champion" in first_run[1].stdout


def test_a_second_run_gates_against_the_champion(workspace, first_run):
    local, declared = workspace
    job = declared.jobs["databricks-job"]
    model = parameter(job.tasks[0], "--model-name")
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    before = client.get_model_version_by_alias(model, "champion").version
    succeeded(local.run_job(job, "1002", say=lambda _: None))
    [second] = [v for v in client.search_model_versions(f"name = '{model}'") if v.tags.get(JOB_RUN_TAG) == "1002"]
    assert second.version != before
    run = client.get_run(second.run_id).data
    assert run.tags["gate.champion_version"] == str(before)  # judged against the champion, on the same holdout
    assert "gate_champion_roc_auc" in run.metrics and "gate_challenger_roc_auc" in run.metrics
    assert second.tags["gate.decision"] in ("promoted", "rejected")


def request_log(path, model: str, version: str, tracking_uri: str, *, seed: int, credit_limit_factor: float = 1.0) -> None:
    """Request-log lines (serving/scoring/requestlog.py's format) for generated holders scored by the version."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    scorer = mlflow.sklearn.load_model(f"models:/{model}/{version}")
    frame = validate_frame(data.generate(LOG_RECORDS, seed=seed), require_target=False)  # as the service reads it
    frame["credit_limit"] = frame["credit_limit"] * credit_limit_factor
    probabilities = scorer.predict_proba(frame)[:, 1]
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    now = datetime.now(UTC).isoformat()
    with path.open("w") as out:
        for start in range(0, LOG_RECORDS, 5):
            batch = slice(start, start + 5)
            out.write(json.dumps({
                "log_type": "prediction", "ts": now, "request_id": f"r{start}", "model_name": model,
                "model_version": version, "n_records": 5, "latency_ms": 1.0, "inputs": records[batch],
                "outputs": [{"probability": float(p), "label": int(p >= 0.5)} for p in probabilities[batch]]}) + "\n")


def test_drift_job_runs_against_a_local_log_source(workspace, first_run, tmp_path):
    local, declared = workspace
    job = declared.jobs["databricks-drift-job"]
    assert [t.entry_point for t in job.tasks] == ["credit-drift"]
    model = parameter(declared.jobs["databricks-job"].tasks[0], "--model-name")
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    version = str(client.get_model_version_by_alias(model, "champion").version)
    outcomes = {}
    for name, factor, seed in (("clean", 1.0, 101), ("shifted", 3.0, 102)):
        log = tmp_path / f"{name}.jsonl"
        request_log(log, model, version, local.tracking_uri, seed=seed, credit_limit_factor=factor)
        [result] = local.run_job(job, "2001", extra_env={"DRIFT_LOCAL_LOG_ANALYTICS": str(log)}, say=lambda _: None)
        records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"log_type": "drift"')]
        assert [r["model_version"] for r in records] == [version], result.stderr[-3000:]
        outcomes[name] = (result.returncode, records[0])
    assert outcomes["clean"][0] == 0 and outcomes["clean"][1]["status"] == "no drift"
    # exit 3 fails the task, and so the job run: that is what e-mails the stack's failure addresses
    assert outcomes["shifted"][0] == 3 and "credit_limit" in outcomes["shifted"][1]["drifted"]
    experiment = parameter(job.tasks[0], "--experiment")
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert {r.data.tags["drift_status"] for r in runs} == {"no drift", "drift"}  # logged in the local MLflow
