"""Run the Databricks jobs a stack declares, here, under the conditions of a python_wheel_task.

What runs is taken from the program, not restated: the stack is evaluated under mocks
(testing.mockcloud), and each declared task's wheel entry point runs with its exact declared parameters,
in dependency order, each in a fresh process that imports only the declared wheel (installed into its
own folder; the repository is not on the path) and has no `dbutils`. Stand-ins for the workspace, and
nothing else:

  Databricks                          here
  the runtime's Python libraries      .venv-runtime (requirements-runtime.txt): the runtime's MLflow 3.8.1 and
                                      Spark 4.1.0, pandas 2 (not the repository's MLflow and pandas 3)
  the job cluster's Spark             local PySpark (`local[2]`, Debian's OpenJDK 17), Hive catalog in Derby
  Unity Catalog table c.s.t           Parquet table s.t in database `c_s` of Spark's local catalog (Delta's
                                      jars come from Maven, unreachable here); spark.mlops.catalogAsDatabase
                                      tells training.loader to read c.s.t there
  a table the stack declares          the same, created empty with the SqlTable's columns and types before a job
    (databricks.SqlTable: the           runs (a Parquet table enforces no NOT NULL: tests/databricks checks the
    inference table)                    rows instead)
  workspace MLflow (databricks,       an MLflow server on 127.0.0.1 run by the runtime's MLflow over sqlite: the
    databricks-uc)                    cluster's MLFLOW_* env values are replaced, the task parameters are not
  {{job.run_id}}                      a run id chosen here, resolved as Databricks resolves it
  {{secrets/...}} env values          left out (no secret store here; the drift record is not sent)
  Log Analytics (drift job)           a JSON-lines file (monitoring.drift's DRIFT_LOCAL_LOG_ANALYTICS)

    python -m scripts.databricks_local --stack dev                        # the training job: train -> gate
    python -m scripts.databricks_local --stack dev --task train           # one task
    python -m scripts.databricks_local --stack dev --job drift --log requests.jsonl
    python -m scripts.databricks_local --stack dev --job batch --rows 100000   # after --job train: scores the
                                                   # generated portfolio with the version the stack then serves

Why one module: the stand-ins above are one table of what Databricks is here, and each job's run uses all of them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from serving.localrun import stop_service

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
JOB = "databricks:index/job:Job"
JOB_RUN_ID = "{{job.run_id}}"
WORKSPACE_MLFLOW = {"databricks", "databricks-uc"}
JOBS = {"train": "databricks-job", "drift": "databricks-drift-job", "batch": "databricks-batch-job"}
SQL_TABLE = "databricks:index/sqlTable:SqlTable"
# Not the quality job (mlops-quality): its labels' MERGE needs Delta Lake, whose jars Spark fetches from Maven Central
# (delta-spark's configure_spark_with_delta_pip; the PyPI wheel holds only Python), which this machine cannot reach.
# Its logic runs in tests/monitoring/test_quality_delta.py (its append on a local Spark, its labels over a stand-in).

# Databricks imports the entry point named in the wheel's metadata and calls it with the task parameters as argv.
RUNNER = """
import sys
from importlib.metadata import distribution
dist, entry, *params = sys.argv[1:]
[point] = [e for e in distribution(dist).entry_points if e.name == entry]
sys.argv = [entry, *params]
function = point.load()
from importlib.metadata import version
libraries = ", ".join(f"{name} {version(name)}" for name in ("mlflow", "pyspark", "pandas"))
print(f"[local job] {entry} = {point.value} from {sys.modules[point.module].__file__} on {libraries}", flush=True)
function()
"""

# Several tables to one Spark process: each process starts a JVM and Spark (about 15 s on two cores).
READ_TABLES = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
pairs = sys.argv[1:]
for table, out in zip(pairs[::2], pairs[1::2]):
    spark.read.table(table).toPandas().to_parquet(out, index=False)
"""

DECLARE_TABLES = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
triples = sys.argv[1:]
for database, table, columns in zip(triples[::3], triples[1::3], triples[2::3]):
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {database}.{table} ({columns}) USING parquet")
"""

CREATE_TABLE = """
import sys
from pyspark.sql import SparkSession
parquet, database, table = sys.argv[1:]
spark = SparkSession.builder.getOrCreate()
spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
spark.read.parquet(parquet).write.format("parquet").mode("overwrite").saveAsTable(f"{database}.{table}")
print(f"[local job] table {database}.{table}: {spark.read.table(f'{database}.{table}').count()} rows", flush=True)
"""


@dataclass(frozen=True)
class Task:
    key: str
    entry_point: str
    parameters: tuple[str, ...]
    depends_on: tuple[str, ...]
    package: str


@dataclass(frozen=True)
class DeclaredJob:
    name: str
    tasks: tuple[Task, ...]  # in dependency order
    cluster_env: dict[str, str]
    libraries: tuple[str, ...]


@dataclass(frozen=True)
class Declared:
    jobs: dict[str, DeclaredJob]  # logical resource name -> job
    wheel_path: str  # where the program uploads it
    wheel: bytes  # exactly the declared content
    tables: dict[str, list[dict]] = field(default_factory=dict)  # catalog.schema.table -> its SqlTable's columns


def declared(stack: str, overrides: dict | None = None) -> Declared:
    """The jobs and the wheel the program declares for `stack` (under mocks)."""
    from testing import mockcloud

    evaluation = mockcloud.evaluate(stack, overrides or {}, env={})
    files = evaluation.of_type("databricks:index/file:File") + evaluation.of_type("databricks:index/workspaceFile:WorkspaceFile")
    [wheel] = [f for f in files if f.inputs["path"].endswith(".whl")]
    jobs = {job.name: _job(job.inputs) for job in evaluation.of_type(JOB)}
    tables = {".".join(t.inputs[k] for k in ("catalogName", "schemaName", "name")): list(t.inputs["columns"])
              for t in evaluation.of_type(SQL_TABLE)}
    return Declared(jobs, wheel.inputs["path"], base64.b64decode(wheel.inputs["contentBase64"]), tables)


def _job(inputs: dict) -> DeclaredJob:
    tasks = [Task(t["taskKey"], t["pythonWheelTask"]["entryPoint"], tuple(t["pythonWheelTask"]["parameters"]),
                  tuple(d["taskKey"] for d in t.get("dependsOns") or []), t["pythonWheelTask"]["packageName"])
             for t in inputs["tasks"]]
    clusters = inputs.get("jobClusters") or []
    env = dict((clusters[0]["newCluster"].get("sparkEnvVars") or {}) if clusters else {})
    libraries = tuple(lib["whl"] for t in inputs["tasks"] for lib in t.get("libraries") or [] if "whl" in lib)
    return DeclaredJob(inputs["name"], tuple(in_dependency_order(tasks)), env, libraries)


def in_dependency_order(tasks: list[Task]) -> list[Task]:
    """Each task after the tasks it depends on (Kahn's algorithm, stable); a cycle is an error, as in Databricks."""
    done: list[Task] = []
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if set(t.depends_on) <= {d.key for d in done}]
        if not ready:
            raise ValueError(f"tasks {[t.key for t in pending]} depend on each other or on an undeclared task")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


class MlflowServer:
    """The workspace's MLflow as a REST server on 127.0.0.1, run by the runtime's own MLflow (`python` of
    .venv-runtime): tasks log and register with the runtime's client, tests read with this repository's, and
    neither touches the other's database schema, just as a cluster and a laptop share Databricks' MLflow."""

    def __init__(self, root: Path, python: str) -> None:
        self.root, self.python = root, python
        self.process: subprocess.Popen | None = None
        self.uri = ""

    def __enter__(self) -> MlflowServer:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = (self.root / "mlflow-server.log").open("w")
        self.process = subprocess.Popen(
            [self.python, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            start_new_session=True)  # its own process group: `mlflow server` runs uvicorn as a child process
        self.uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MLflow server exited: {(self.root / 'mlflow-server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the MLflow server did not answer /health in 120 s (log: {self.root / 'mlflow-server.log'})")

    def __exit__(self, *exc) -> None:
        """Stop the whole group: terminating `mlflow server` alone leaves its uvicorn child serving."""
        if self.process:
            stop_service(self.process.pid, grace_s=20)
        self.log.close()


def runtime_python() -> str:
    """The stand-in for the job cluster's Python: .venv-runtime (make databricks-test builds it from
    requirements-runtime.txt, the runtime's MLflow and Spark), else this interpreter."""
    return str(RUNTIME_PYTHON) if RUNTIME_PYTHON.exists() else sys.executable


@dataclass
class LocalWorkspace:
    """A folder standing in for the workspace: the installed wheel, Spark's catalog, the MLflow store."""
    root: Path
    python: str = sys.executable  # the job cluster's Python
    tracking_uri: str = ""  # the workspace's MLflow; default: a sqlite store in root
    runs: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracking_uri = self.tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def site(self) -> Path:
        return self.root / "site"

    def install(self, wheel_name: str, wheel: bytes) -> None:
        """Install the declared wheel (its dependencies are this venv's, as the runtime's are on a cluster)."""
        path = self.root / "wheels" / Path(wheel_name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wheel)
        subprocess.run([self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--no-index", "--target", str(self.site), str(path)], check=True)
        self._spark_conf()

    def _spark_conf(self) -> None:
        conf = self.root / "spark-conf"
        conf.mkdir(parents=True, exist_ok=True)
        # Hive support keeps the catalog in Derby on disk, so a table outlives the process that created it.
        settings = {
            "spark.master": "local[2]",
            "spark.sql.catalogImplementation": "hive",
            "spark.sql.warehouse.dir": str(self.root / "warehouse"),
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={self.root / 'metastore_db'};create=true",
            # A job here is short: the JIT's first tier and the serial collector start a JVM sooner on two cores
            # (about a tenth of each Spark process), and change nothing a task computes.
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={self.root} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.mlops.catalogAsDatabase": "true",
        }
        (conf / "spark-defaults.conf").write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
        (conf / "log4j2.properties").write_text("rootLogger.level = error\nrootLogger.appenderRef.stdout.ref = console\n"
                                                "appender.console.type = Console\nappender.console.name = console\n"
                                                "appender.console.layout.type = PatternLayout\n")

    def env(self, cluster_env: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH", "SPARK_", "DATABRICKS_"))}
        for key, value in cluster_env.items():
            if value in WORKSPACE_MLFLOW:
                env[key] = self.tracking_uri  # the workspace's MLflow -> the local store
            elif not value.startswith("{{secrets/"):
                env[key] = value
        # One OpenMP thread: on two shared cores, scikit-learn's OpenMP threads spinning beside Spark's JVM
        # made one model fit take minutes instead of seconds.
        env.update({"PYTHONPATH": str(self.site), "SPARK_CONF_DIR": str(self.root / "spark-conf"),
                    "PYSPARK_PYTHON": self.python, "OMP_NUM_THREADS": "1", **(extra or {})})
        return env

    def create_table(self, table: str, parquet: Path) -> None:
        """The training table under its configured name (what a data pipeline would have written)."""
        from training.loader import spark_table_name

        database, name = spark_table_name("true", table).split(".")
        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([self.python, "-c", CREATE_TABLE, str(parquet), database, name], check=True, cwd=work,
                       env=self.env({}))

    def declare_tables(self, tables: dict[str, list[dict]]) -> None:
        """The tables the stack declares (the inference table), as `up` creates them: empty, with the declared columns
        and types, before any job writes into them; one that exists already (an earlier run here) is kept."""
        from training.loader import spark_table_name

        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        given: list[str] = []
        for table, columns in tables.items():
            ddl = ", ".join(f"`{c['name']}` {c['type']}{'' if c.get('nullable', True) else ' NOT NULL'}" for c in columns)
            given += [*spark_table_name("true", table).split("."), ddl]
        if given:
            subprocess.run([self.python, "-c", DECLARE_TABLES, *given], check=True, cwd=work, env=self.env({}))

    def read_table(self, table: str) -> pd.DataFrame:
        """A table of Spark's local catalog under its configured name (what a job wrote), read by the cluster's Spark."""
        return self.read_tables(table)[table]

    def read_tables(self, *tables: str) -> dict[str, pd.DataFrame]:
        """read_table of each, in one Spark process."""
        from training.loader import spark_table_name

        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        outs = {table: work / f"{table}.parquet" for table in tables}
        pairs = [value for table in tables for value in (spark_table_name("true", table), str(outs[table]))]
        subprocess.run([self.python, "-c", READ_TABLES, *pairs], check=True, cwd=work, env=self.env({}))
        return {table: pd.read_parquet(out) for table, out in outs.items()}

    def run_task(self, task: Task, job: DeclaredJob, job_run_id: str,
                 extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        parameters = [p.replace(JOB_RUN_ID, job_run_id) for p in task.parameters]
        unresolved = [p for p in parameters if "{{" in p]
        if unresolved:
            raise ValueError(f"task {task.key}: {unresolved} would reach the task unresolved (only {JOB_RUN_ID} is known here)")
        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([self.python, "-c", RUNNER, task.package, task.entry_point, *parameters], cwd=work,
                                env=self.env(job.cluster_env, extra_env), capture_output=True, text=True)
        self.runs.append({"task": task.key, "job_run_id": job_run_id, "returncode": result.returncode})
        return result

    def run_job(self, job: DeclaredJob, job_run_id: str, extra_env: dict[str, str] | None = None,
                say=print) -> list[subprocess.CompletedProcess]:
        """Every task in dependency order; a failed task stops the run, as it fails a Databricks job run."""
        results = []
        for task in job.tasks:
            say(f"[local job] {job.name} run {job_run_id}: task {task.key} ({task.entry_point})")
            result = self.run_task(task, job, job_run_id, extra_env)
            results.append(result)
            if result.returncode != 0:
                break
        return results


def model_of(stack: str) -> str:
    """The model module the stack's jobs train and score: its project name (`name` in the stack file)."""
    from infra import stack_files

    return stack_files.project(stack)


def training_table(module: str, rows: int, seed: int, path: Path) -> Path:
    """The training table as the data pipeline delivers it: the model module's example data."""
    from training import contract, data

    if not path.exists():
        data.write_table(data.example_table(contract.load(module), rows, seed), path)
    return path


def portfolio(module: str, rows: int, seed: int, path: Path) -> Path:
    """The batch job's input as a data pipeline might deliver it: the model module's example rows with their ids and
    no target, the contract's first number column stored as text (the job reads it as a number)."""
    from training import contract, data

    model = contract.load(module)
    frame = data.example_table(model, rows, seed).drop(columns=[model.contract.target.name])
    number = model.contract.numbers[0].name
    frame[number] = frame[number].map(lambda value: None if pd.isna(value) else f"{value:g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--job", choices=sorted(JOBS), default="train")
    parser.add_argument("--task", help="run only this task of the job")
    parser.add_argument("--job-run-id", default="1", help="what {{job.run_id}} resolves to")
    parser.add_argument("--root", type=Path, default=ROOT / ".local" / "databricks")
    parser.add_argument("--rows", type=int, default=4000, help="rows of the generated training table")
    parser.add_argument("--log", type=Path, help="drift job: the request log standing in for Log Analytics")
    args = parser.parse_args(argv)
    python = runtime_python()
    with MlflowServer(args.root / "mlflow", python) as server:
        return run_locally(args, parser, LocalWorkspace(args.root, python, server.uri))


def run_locally(args: argparse.Namespace, parser: argparse.ArgumentParser, workspace: LocalWorkspace) -> int:
    jobs = declared(args.stack, {"model.trackingUri": workspace.tracking_uri, "model.registryUri": workspace.tracking_uri,
                                 "image.wheelhouse": False, "image.contextDir": str(args.root / "context")})
    if JOBS[args.job] not in jobs.jobs:
        parser.error(f"the {args.stack} stack declares no {args.job} job here (the batch job needs a served version: "
                     f"run --job train first with the same --root)")
    job = jobs.jobs[JOBS[args.job]]
    workspace.install(jobs.wheel_path, jobs.wheel)
    module = model_of(args.stack)
    if args.job == "train":
        table = job.tasks[0].parameters[job.tasks[0].parameters.index("--data") + 1]
        workspace.create_table(table, training_table(module, args.rows, 11, args.root / "data" / "training.parquet"))
    workspace.declare_tables(jobs.tables)  # the batch job appends to the stack's inference table
    if args.job == "batch":
        task = job.tasks[0]
        table = task.parameters[task.parameters.index("--input-table") + 1]
        workspace.create_table(table, portfolio(module, args.rows, 12, args.root / "data" / f"portfolio-{args.rows}.parquet"))
    extra = {"DRIFT_LOCAL_LOG_ANALYTICS": str(args.log.resolve())} if args.log else None
    selected = [t for t in job.tasks if t.key == args.task] if args.task else list(job.tasks)
    if not selected:
        parser.error(f"{job.name} has no task {args.task}; tasks: {', '.join(t.key for t in job.tasks)}")
    for task in selected:
        result = workspace.run_task(task, job, args.job_run_id, extra)
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
        if result.returncode:
            return result.returncode
    print(json.dumps(workspace.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
