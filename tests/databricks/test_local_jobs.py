"""The Databricks jobs the program declares for a stack, run here for real (make databricks-test).

The job resources come from the program under mocks; each task's wheel entry point runs with its exact
declared parameters, in dependency order, each in a fresh process that imports only the declared wheel,
with a local SparkSession over the training table under its configured name, a local MLflow store in
place of the workspace's, and no dbutils (scripts/databricks_local.py lists every stand-in)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from scripts import databricks_local
from serving import smoke
from serving.localrun import free_port, start_service, stop_service
from training import contract, data, search
from training.contract import ModelModule
from training.gate import JOB_RUN_TAG
from training.loader import load_table, validate_frame

pytestmark = pytest.mark.databricks

STACK = "dev"
ROWS = 2500
LOG_RECORDS = 400


@pytest.fixture(scope="module")
def model() -> ModelModule:
    """The model module the stack's jobs train (its `name`): every column below comes from its contract."""
    return contract.load(databricks_local.model_of(STACK))


def parameter(task: databricks_local.Task, name: str) -> str:
    return task.parameters[task.parameters.index(name) + 1]


def succeeded(results) -> None:
    for result in results:
        assert result.returncode == 0, f"{result.args[3:5]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def overrides(local: databricks_local.LocalWorkspace) -> dict:
    """The stack as the local workspace sees it: its MLflow, and the image's build context in the workspace folder."""
    return {"model.trackingUri": local.tracking_uri, "model.registryUri": local.tracking_uri, "image.wheelhouse": False,
            "image.contextDir": str(local.root / "context")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The cluster's Python is .venv-runtime (the runtime's MLflow 3.8.1 and Spark 4.1), the workspace's MLflow a
    server run by that MLflow; this process (the repository's newer MLflow) reads it over REST, as a laptop would."""
    python = databricks_local.runtime_python()
    assert python == str(databricks_local.RUNTIME_PYTHON), "run `make databricks-test`: it builds .venv-runtime"
    root = tmp_path_factory.mktemp("databricks")
    with databricks_local.MlflowServer(root / "mlflow", python) as server:
        local = databricks_local.LocalWorkspace(root, python, server.uri)
        declared = databricks_local.declared(STACK, overrides(local))
        local.install(declared.wheel_path, declared.wheel)
        train = declared.jobs["databricks-job"].tasks[0]
        parquet = databricks_local.training_table(databricks_local.model_of(STACK), ROWS, 11,
                                                  root / "data" / "training.parquet")
        local.create_table(parameter(train, "--data"), parquet)  # the table the stack configures
        yield local, declared


@pytest.fixture(scope="module")
def first_run(workspace):
    local, declared = workspace
    job = declared.jobs["databricks-job"]
    results = local.run_job(job, "1001", say=lambda _: None)
    succeeded(results)
    return results


def test_declared_tasks_run_from_the_wheel_in_dependency_order(workspace, first_run, model):
    local, declared = workspace
    job = declared.jobs["databricks-job"]
    assert [t.key for t in job.tasks] == ["train", "gate"] and job.tasks[1].depends_on == ("train",)
    assert {parameter(t, "--model-module") for t in job.tasks} == {model.module}  # from the wheel, not the repository
    assert (local.site / (model.module.replace(".", "/") + ".py")).exists()  # the wheel carries the model module
    assert f"({model.module}: {len(model.contract.features)} features" in first_run[0].stdout
    assert set(job.libraries) == {declared.wheel_path}
    for task, result in zip(job.tasks, first_run, strict=True):
        module = task.entry_point.removeprefix("mlops-")
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


def test_a_second_run_gates_against_the_champion(workspace, first_run, model):
    local, declared = workspace
    job = declared.jobs["databricks-job"]
    name = parameter(job.tasks[0], "--model-name")
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    before = client.get_model_version_by_alias(name, "champion").version
    succeeded(local.run_job(job, "1002", say=lambda _: None))
    versions = [client.get_model_version(name, v.version) for v in client.search_model_versions(f"name = '{name}'")]
    [second] = [v for v in versions if v.tags.get(JOB_RUN_TAG) == "1002"]  # Unity Catalog's search returns no tags
    assert second.version != before
    run = client.get_run(second.run_id).data
    assert run.tags["gate.champion_version"] == str(before)  # judged against the champion, on the same holdout
    metric = model.gate.name
    assert f"gate_champion_{metric}" in run.metrics and f"gate_challenger_{metric}" in run.metrics
    assert second.tags["gate.decision"] in ("promoted", "rejected")


def request_log(path, name: str, version: str, tracking_uri: str, model: ModelModule, *, seed: int,
                factor: float = 1.0) -> None:
    """Request-log lines (serving/scoring/requestlog.py's format) for example rows scored by the version, the contract's
    first number multiplied by `factor`; the output the version's baseline profiled (its `prediction.output`)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    scorer = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    c = model.contract
    frame = validate_frame(data.example_table(model, LOG_RECORDS, seed=seed), c, require_target=False)
    number = c.numbers[0].name
    frame[number] = frame[number] * factor
    outputs = ([{"probability": float(p)} for p in scorer.predict_proba(frame)[:, 1]] if c.task == "binary"
               else [{"label": v} for v in scorer.predict(frame).tolist()] if c.task == "multiclass"
               else [{"prediction": float(v)} for v in scorer.predict(frame)])
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    now = datetime.now(UTC).isoformat()
    with path.open("w") as out:
        for start in range(0, LOG_RECORDS, 5):
            batch = slice(start, start + 5)
            out.write(json.dumps({
                "log_type": "prediction", "ts": now, "request_id": f"r{start}", "model_name": name,
                "model_version": version, "n_records": 5, "latency_ms": 1.0, "inputs": records[batch],
                "outputs": outputs[batch]}) + "\n")


def test_drift_job_runs_against_a_local_log_source(workspace, first_run, model, tmp_path):
    local, declared = workspace
    job = declared.jobs["databricks-drift-job"]
    assert [t.entry_point for t in job.tasks] == ["mlops-drift"]
    name = parameter(declared.jobs["databricks-job"].tasks[0], "--model-name")
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    version = str(client.get_model_version_by_alias(name, "champion").version)
    outcomes = {}
    for window, factor, seed in (("clean", 1.0, 101), ("shifted", 3.0, 102)):
        log = tmp_path / f"{window}.jsonl"
        request_log(log, name, version, local.tracking_uri, model, seed=seed, factor=factor)
        [result] = local.run_job(job, "2001", extra_env={"DRIFT_LOCAL_LOG_ANALYTICS": str(log)}, say=lambda _: None)
        records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"log_type": "drift"')]
        assert [r["model_version"] for r in records] == [version], result.stderr[-3000:]
        outcomes[window] = (result.returncode, records[0])
    assert outcomes["clean"][0] == 0 and outcomes["clean"][1]["status"] == "no drift"
    # exit 3 fails the task, and so the job run: that is what e-mails the stack's failure addresses
    assert outcomes["shifted"][0] == 3 and model.contract.numbers[0].name in outcomes["shifted"][1]["drifted"]
    experiment = parameter(job.tasks[0], "--experiment")
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert {r.data.tags["drift_status"] for r in runs} == {"no drift", "drift"}  # logged in the local MLflow


# ---- the batch scoring job and the search on Spark ----

BATCH_ROWS = 3000
BAD_ROWS = 4  # no id, text that is no number, Infinity, a number outside the contract (batch_run)
SAMPLE = 300


@pytest.fixture(scope="module")
def batch_run(workspace, first_run, model):
    """The stack evaluated again now that it serves the champion (the program declares the batch job with that
    version and assembles the image's build context for it), the tables it declares (the inference table), a
    portfolio table with three bad rows, the job run."""
    local, declared = workspace
    serving_now = databricks_local.declared(STACK, overrides(local))
    assert serving_now.wheel == declared.wheel  # the wheel installed in the workspace
    local.declare_tables(serving_now.tables)
    job = serving_now.jobs["databricks-batch-job"]
    assert "--key" not in job.tasks[0].parameters  # the ids are the version's contract's
    parquet = databricks_local.portfolio(model.module, BATCH_ROWS, 12, local.root / "data" / "portfolio.parquet")
    frame = pd.read_parquet(parquet)
    c = model.contract
    key, as_text, other = c.ids[0], c.numbers[0].name, c.numbers[1].name
    frame[key] = frame[key].astype("Int64")
    frame.loc[10, key] = pd.NA  # no id
    frame.loc[11, as_text] = "forty"  # text that is no number, in the number column stored as text
    frame.loc[12, other] = float("inf")  # JSON could not even carry it; the service refuses it too
    frame.loc[13, other] = c.numbers[1].minimum - 1  # outside the contract: the service refuses it too
    frame.to_parquet(parquet, index=False)
    local.create_table(parameter(job.tasks[0], "--input-table"), parquet)
    [result] = local.run_job(job, "3001", say=lambda _: None)
    succeeded([result])
    written = local.read_tables(*(parameter(job.tasks[0], flag) for flag in WRITTEN))  # one Spark process for the three
    return job, result, frame, serving_now.tables, written


WRITTEN = ("--output-table", "--rejects-table", "--inference-table")  # what the batch job writes


def written_by(batch_run, flag: str) -> pd.DataFrame:
    """A table as run 3001 left it: its output, rejects or inference table."""
    job, _, _, _, written = batch_run
    return written[parameter(job.tasks[0], flag)]


OUTPUTS = {"binary": ["probability", "label"], "regression": ["prediction"]}


def test_the_batch_job_scores_with_the_served_version_and_agrees_with_the_service(workspace, batch_run, model):
    local, _ = workspace
    job, result, frame, _, _ = batch_run
    task, c = job.tasks[0], model.contract
    model_uri = parameter(task, "--model-uri")
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    name, version = model_uri.removeprefix("models:/").rsplit("/", 1)
    assert version == client.get_model_version_by_alias(name, "champion").version  # what dev serves
    assert f"from {local.site}/serving/batch.py" in result.stdout
    assert "runtime onnx" in result.stdout  # the image's runtime and equivalence check, on the cluster
    predictions = written_by(batch_run, "--output-table")
    assert len(predictions) == BATCH_ROWS - BAD_ROWS
    outputs = OUTPUTS[c.task]
    assert list(predictions.columns) == [*c.ids, *outputs, "model_name", "model_version", "source_version", "scored_at",
                                         "scoring_run_id"]
    assert set(predictions["model_name"]) == {name} and set(predictions["model_version"]) == {version}
    assert set(predictions["source_version"]) == {version}  # not a promoted copy: the version the service logs
    assert set(predictions["scoring_run_id"]) == {"3001"}
    key = c.ids[0]
    sample = frame.dropna(subset=[key]).drop(index=[11, 12, 13]).sample(SAMPLE, random_state=5)
    served = service_answers(local.root / "context", sample, c)
    assert served["model"] == {"name": name, "version": version}
    batch = predictions.set_index(key).loc[sample[key].astype(int)]
    number = outputs[0]  # probability, or prediction: compared with a tolerance, the labels exactly
    answers = np.array([p[number] for p in served["predictions"]])
    assert np.max(np.abs(batch[number].to_numpy() - answers) / np.maximum(1.0, np.abs(answers))) <= 1e-6
    if "label" in outputs:
        assert batch["label"].tolist() == [p["label"] for p in served["predictions"]]


def service_answers(context: Path, sample: pd.DataFrame, c: contract.Contract) -> dict:
    """/predict of the scoring service, run from the build context the program assembled for the served version."""
    as_text = c.numbers[0].name
    records = sample[c.feature_names].assign(**{as_text: pd.to_numeric(sample[as_text])})
    records = json.loads(records.to_json(orient="records"))  # NaN -> null, as a client sends a missing value
    port = free_port()
    process = start_service(context, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        smoke.wait_for(f"http://127.0.0.1:{port}", "/ready", 120)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": records}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()
    finally:
        stop_service(process.pid)


def test_bad_rows_go_to_the_rejects_table_with_reasons_and_the_run_goes_on(batch_run, model):
    _, result, frame, _, _ = batch_run
    c = model.contract
    key, as_text, other = c.ids[0], c.numbers[0].name, c.numbers[1].name
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"log_type": "batch"')))
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (BATCH_ROWS, BATCH_ROWS - BAD_ROWS, BAD_ROWS)
    assert f"rejected {BAD_ROWS} of 3000 rows" in result.stdout
    rejects = written_by(batch_run, "--rejects-table")
    keys = [None if pd.isna(k) else int(k) for k in rejects[key]]
    assert dict(zip(keys, rejects["reject_reason"], strict=True)) == {
        None: f"column '{key}': the key is missing",
        int(frame.loc[11, key]): f"column '{as_text}': 'forty' is not a number",
        int(frame.loc[12, key]): f"column '{other}': Infinity is not a finite number",
        int(frame.loc[13, key]): f"column '{other}': must be at least {c.numbers[1].minimum:g} "
                                 f"(got {float(c.numbers[1].minimum - 1)})"}
    first = c.categories[0]
    assert json.loads(rejects["record"].iloc[0])[first.name] in (*(first.values or ()), None)  # the whole row
    assert set(rejects["scoring_run_id"]) == {"3001"}


PANDAS_KINDS = {"string": "O", "bigint": "i", "double": "f", "timestamp": "M"}  # a declared type as pandas reads it



def test_the_batch_runs_scored_rows_are_in_the_inference_table_once_as_it_declares_them(batch_run, model):
    """Issue 22: the batch run's scored rows (not its rejects) in the stack's inference table, once, in the columns and
    types the SqlTable declares, each with its own inputs and outputs; the personal columns left out (--personal drop,
    the dev stack's)."""
    job, _, frame, tables, _ = batch_run
    c, task = model.contract, job.tasks[0]
    assert parameter(task, "--personal") == "drop"
    held, declared = written_by(batch_run, "--inference-table"), tables[parameter(task, "--inference-table")]
    assert list(held.columns) == [column["name"] for column in declared]
    assert {n: held[n].dtype.kind for n in held.columns} == {d["name"]: PANDAS_KINDS[d["type"]] for d in declared}
    assert len(held) == BATCH_ROWS - BAD_ROWS and not held.duplicated(["request_id", "record"]).any()
    assert held[["request_id", "record", "model_name", "model_version", "source", "scored_at"]].notna().all().all()
    predictions = written_by(batch_run, "--output-table")
    assert set(held["request_id"]) == {"batch-3001"} and set(held["source"]) == {"batch"}
    assert set(held["model_version"]) == set(predictions["source_version"])  # the version the service logs
    assert set(held["model_name"]) == set(predictions["model_name"])
    assert not set(c.personal) & set(held.columns) and not any(n.endswith("_hmac") for n in held.columns)
    # each row: the inputs it was scored with and its outputs (matched through its id in the input and the output)
    kept = [n for n in c.feature_names if n not in c.personal]
    key = c.ids[0]
    scored = frame.dropna(subset=[key]).drop(index=[11, 12, 13]).assign(**{key: lambda f: f[key].astype(int)})
    expected = scored.merge(predictions.assign(**{key: predictions[key].astype(int)}), on=key)
    numbers = [n for n in kept if n in {f.name for f in c.numbers}]  # one stored as text: held as the number scored
    assert row_values(held, kept, numbers, OUTPUTS[c.task]) == row_values(expected, kept, numbers, OUTPUTS[c.task])


def row_values(frame: pd.DataFrame, inputs: list[str], numbers: list[str], outputs: list[str]) -> list[tuple]:
    """Each row's inputs and outputs as comparable values (numbers as floats, the rest as text, missing as None),
    sorted: the rows of two tables, whatever their order and column types."""
    def value(column: str, v: object) -> object:
        if pd.isna(v):
            return None
        return float(v) if column in numbers or column in ("probability", "prediction") else str(v)
    columns = [*inputs, *outputs]
    return sorted((tuple(value(n, v) for n, v in zip(columns, row, strict=True))
                   for row in frame[columns].itertuples(index=False)), key=repr)


def test_a_repaired_batch_run_replaces_its_own_rows_and_keeps_no_rejects_of_its_failed_attempt(workspace, batch_run):
    """A retry or a repair keeps the run id: the run's partitions are replaced, not appended to, and another run adds
    its own. Repaired once its input is fixed, run 3001 keeps no rejects of its failed attempt (none of its rows both
    scored and rejected) and every row is scored. One repair shows both (a job run here is a Spark job: each costs CI
    time). (Runs after the tests above, which read run 3001's first attempt.)"""
    local, _ = workspace
    job, _, frame, _, _ = batch_run
    task = job.tasks[0]
    succeeded(local.run_job(job, "3002", say=lambda _: None))  # another run, with the bad rows
    fixed = local.root / "data" / "portfolio-fixed.parquet"
    frame.drop(index=[10, 11, 12, 13]).to_parquet(fixed, index=False)  # batch_run's bad rows left out
    local.create_table(parameter(task, "--input-table"), fixed)
    succeeded(local.run_job(job, "3001", say=lambda _: None))  # the repair of run 3001
    output, rejects_table, inference_table = (parameter(task, flag) for flag in WRITTEN)
    now = local.read_tables(output, rejects_table, inference_table)
    rejects = now[rejects_table].groupby("scoring_run_id").size().to_dict()
    assert rejects == {"3002": BAD_ROWS}  # 3001's are gone, another run's stay
    predictions = now[output].groupby("scoring_run_id").size().to_dict()
    assert predictions == {"3001": BATCH_ROWS - BAD_ROWS, "3002": BATCH_ROWS - BAD_ROWS}  # replaced, not appended
    # The inference table is appended to, once: the repair of 3001 scored the same ids, and adds none of them again.
    held = now[inference_table]
    assert held.groupby("request_id").size().to_dict() == {"batch-3001": BATCH_ROWS - BAD_ROWS,
                                                           "batch-3002": BATCH_ROWS - BAD_ROWS}
    assert not held.duplicated(["request_id", "record"]).any()


def test_the_search_ran_as_spark_tasks_each_candidate_a_child_run(workspace, first_run, model):
    local, declared = workspace
    train = declared.jobs["databricks-job"].tasks[0]
    assert parameter(train, "--search") == "spark"
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    version = client.get_model_version_by_alias(parameter(train, "--model-name"), "champion")
    parent = client.get_run(version.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(model.grid())
    assert all("spark_stage_id" in c.data.tags and "spark_task_attempt_id" in c.data.tags for c in children)
    # Spark's status tracker, read by the task: the stages that fitted the candidates completed one task each
    assert parent.data.metrics["search_spark_tasks"] == len(model.grid())
    assert [c.data.tags["chosen"] for c in children].count("true") == 1


def test_the_parallel_search_chooses_what_the_sequential_one_does(workspace, first_run, model):
    """The same table and seed, searched here one candidate after another: the same winner, the same scores."""
    local, declared = workspace
    train = declared.jobs["databricks-job"].tasks[0]
    client = MlflowClient(tracking_uri=local.tracking_uri, registry_uri=local.tracking_uri)
    run = client.get_run(client.get_model_version_by_alias(parameter(train, "--model-name"), "champion").run_id)
    table = load_table(str(local.root / "data" / "training.parquet"), model.contract)
    sequential = search.search(model, search.split(table, model.contract), int(run.data.params["seed"]),
                               progress=lambda _: None)
    assert {k: run.data.params[k] for k in sequential.params} == {k: str(v) for k, v in sequential.params.items()}
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    score = search.valid_key(model)
    on_spark = {tuple(c.data.params[k] for k in model.search): c.data.metrics[score] for c in children}
    for candidate in sequential.candidates:
        assert on_spark[tuple(str(candidate[k]) for k in model.search)] == pytest.approx(candidate[score], abs=1e-12)


PSEUDONYM_KEY = "batch-pseudonym-key-" + "5" * 24  # what `pulumi config set --secret mlops:requestLogPseudonymKey` holds


def test_a_pseudonymising_stack_holds_the_services_pseudonyms_so_labels_join(workspace, batch_run, model):
    """With observability.requestLogPersonal pseudonymise the batch job holds each personal column as `<column>_hmac`,
    the service's pseudonym under the stack's key (the cluster's secret, given here as the env value it resolves to):
    the quality job's labels, pseudonymised with the same key, meet the batch rows. (A table, output and rejects of
    their own: the stack's other tables keep the runs above.)"""
    from monitoring import inference, quality_delta

    local, _ = workspace
    _, _, frame, _, _ = batch_run
    c = model.contract
    pseudonymising = databricks_local.declared(STACK, {
        **overrides(local), "observability.requestLogPersonal": "pseudonymise", "requestLogPseudonymKey": PSEUDONYM_KEY,
        "quality.inferenceTable": "inference_pseudonymised", "databricks.batch.outputTable": "dev.credit.predictions_p",
        "databricks.batch.rejectsTable": "dev.credit.prediction_rejects_p"})
    local.declare_tables(pseudonymising.tables)
    job = pseudonymising.jobs["databricks-batch-job"]
    assert parameter(job.tasks[0], "--personal") == "pseudonymise"
    assert job.cluster_env["REQUEST_LOG_PSEUDONYM_KEY"].startswith("{{secrets/")  # resolved by the cluster
    succeeded(local.run_job(job, "3101", extra_env={"REQUEST_LOG_PSEUDONYM_KEY": PSEUDONYM_KEY}, say=lambda _: None))
    inference_table = parameter(job.tasks[0], "--inference-table")
    held, declared = local.read_table(inference_table), pseudonymising.tables[inference_table]
    assert list(held.columns) == [column["name"] for column in declared] and len(held) == BATCH_ROWS - BAD_ROWS
    key, secret = c.ids[0], PSEUDONYM_KEY.encode()
    assert key in c.personal and key not in held.columns and f"{key}_hmac" in held.columns
    scored = frame.dropna(subset=[key]).drop(index=[11, 12, 13])
    assert sorted(held[f"{key}_hmac"]) == sorted(inference.pseudonym(secret, key, int(v)) for v in scored[key])
    for name in set(c.personal) & set(c.feature_names):  # held pseudonymised, never as sent
        assert name not in held.columns and held[f"{name}_hmac"].notna().any()
    labels = pd.DataFrame({key: [int(v) for v in scored[key]], c.target.name: c.target.classes[0],
                           inference.KNOWN_AT: datetime.now(UTC).isoformat()})
    joined = quality_delta.label_rows(labels, c, "pseudonymise", pd.Timestamp.now(tz=UTC), secret)
    assert set(held[f"{key}_hmac"]) <= set(joined[f"{key}_hmac"])  # every batch row meets its label
