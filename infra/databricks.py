"""Databricks: the workspace (new or existing), the training code, the experiment, the registered
model, the train -> gate job that runs training/ unchanged, and the scheduled drift job that runs
monitoring/drift.py unchanged against the stack's Log Analytics workspace."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_azure_native.databricks as azure_databricks
import pulumi_databricks as databricks

from infra.settings import DatabricksSettings, DriftSettings, ModelSettings

ROOT = Path(__file__).resolve().parent.parent
TRAINING_DIR = ROOT / "training"
ENTRY_FILE = Path(__file__).resolve().parent / "databricks_entry.py"
# What the job installs on top of the ML runtime: the versions the code was tested with.
JOB_PACKAGES = ("mlflow", "scikit-learn", "skops")
# The drift job's: the ML runtime has numpy, scipy and matplotlib; reading Log Analytics needs these.
DRIFT_PACKAGES = ("mlflow", "azure-identity", "azure-monitor-query")
MONITORING_DIR = ROOT / "monitoring"
KQL_FILE = Path(__file__).resolve().parent / "kql.py"
# monitoring.drift imports `infra.kql` only. The real infra/__init__.py imports skops and the Pulumi
# program's packages, none of which the drift cluster has or needs: the upload gets this one instead.
DRIFT_INFRA_INIT = b'"""Only infra/kql.py, the KQL monitoring.drift reads Log Analytics with (see infra/databricks.py)."""\n'
DRIFT_TIMEOUT_SECONDS = 3600
# monitoring.drift bins with training.baseline (so windows and baseline share one binning).
BASELINE_MODULES = ("__init__.py", "schema.py", "baseline.py")


@dataclass(frozen=True)
class DatabricksArgs:
    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
    location: str
    workspace_name: str
    settings: DatabricksSettings
    model: ModelSettings
    environment: str
    tags: dict[str, str]
    drift: DriftJobArgs | None = None  # None: no drift job
    trains: bool = True  # False in a promotion target (prod): no training code, no training job
    protect: bool = False  # the workspace and the registered model (its versions) survive destroy and replacement


@dataclass(frozen=True)
class DriftJobArgs:
    """What the drift job reads (the stack's request log in Log Analytics) and where its results go."""
    settings: DriftSettings
    log_analytics_customer_id: pulumi.Input[str]
    app_insights_connection_string: pulumi.Input[str]  # the drift record becomes an AppTraces row the alert reads
    target: str  # containerapps|aks
    app_name: str  # Container App name, or the container name on AKS
    namespace: str
    notify: tuple[str, ...]  # e-mails told when a run fails: exit 3 (drift) fails the run on purpose
    registry_uri: str  # where the model versions named in the request log (and their baselines) are registered


def pinned_packages(requirements: Path = ROOT / "requirements.txt", names: tuple[str, ...] = JOB_PACKAGES) -> list[str]:
    pins = {line.split("==")[0].strip().lower(): line.strip() for line in requirements.read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    missing = [name for name in names if name not in pins]
    if missing:
        raise ValueError(f"{requirements} pins none of {missing}: the Databricks job installs exactly these")
    return [pins[name] for name in names]


def training_files() -> dict[str, Path]:
    """Workspace-relative path -> local file: the training package and the entry file."""
    files = {f"training/{path.name}": path for path in sorted(TRAINING_DIR.glob("*.py"))}
    files["run_module.py"] = ENTRY_FILE
    return files


def drift_files() -> dict[str, bytes]:
    """Workspace-relative path -> content: the monitoring package, the baseline format it reads
    (training/baseline.py and the data contract, no training code), infra/kql.py (with a minimal package
    __init__) and the entry file."""
    files = {f"monitoring/{path.name}": path.read_bytes() for path in sorted(MONITORING_DIR.glob("*.py"))}
    files.update({f"training/{module}": (TRAINING_DIR / module).read_bytes() for module in BASELINE_MODULES})
    files["infra/__init__.py"] = DRIFT_INFRA_INIT
    files["infra/kql.py"] = KQL_FILE.read_bytes()
    files["run_module.py"] = ENTRY_FILE.read_bytes()
    return files


def upload(name: str, root: str, files: dict[str, bytes], opts: pulumi.ResourceOptions) -> list[databricks.WorkspaceFile]:
    return [databricks.WorkspaceFile(f"{name}-file-{relative.replace('/', '-').removesuffix('.py')}",
                                     path=f"{root}/{relative}", content_base64=base64.b64encode(content).decode(), opts=opts)
            for relative, content in files.items()]


class Databricks(pulumi.ComponentResource):
    workspace_url: pulumi.Output[str]
    job_id: pulumi.Output[str]

    def __init__(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:Databricks", name, None, opts)
        s = args.settings
        host = self._workspace(name, args)
        self.provider = databricks.Provider(f"{name}-provider", host=host, azure_workspace_resource_id=self.workspace_resource_id,
                                            opts=pulumi.ResourceOptions(parent=self))
        on_workspace = pulumi.ResourceOptions(parent=self, provider=self.provider)
        code = {relative: local.read_bytes() for relative, local in training_files().items()} if args.trains else {}
        if args.drift:
            code.update(drift_files())
        self.files = upload(name, s.files_root, code, on_workspace)
        purpose = "training" if args.trains else "promotions"
        self.experiment = databricks.MlflowExperiment(f"{name}-experiment", name=s.experiment,
                                                      description=f"credit-default {purpose} ({args.environment})",
                                                      opts=on_workspace)
        self.registered_model = self._registered_model(name, args, on_workspace)
        self.job = self._job(name, args, on_workspace) if args.trains else None
        self.job_id = self.job.id if self.job else pulumi.Output.from_input("")
        self.drift_job = self._drift_job(name, args, on_workspace)
        self.drift_job_id = self.drift_job.id if self.drift_job else pulumi.Output.from_input("")
        self.register_outputs({"workspace_url": self.workspace_url, "job_id": self.job_id, "drift_job_id": self.drift_job_id})

    def _workspace(self, name: str, args: DatabricksArgs) -> pulumi.Output[str]:
        s = args.settings
        if s.existing_workspace_url:
            self.workspace = None
            self.workspace_resource_id = s.existing_workspace_resource_id
            self.workspace_url = pulumi.Output.from_input(s.existing_workspace_url)
            return self.workspace_url
        # Premium: Unity Catalog and cluster policies need it. The managed resource group sits beside ours.
        self.workspace = azure_databricks.Workspace(
            f"{name}-workspace", workspace_name=args.workspace_name, resource_group_name=args.resource_group_name,
            location=args.location, sku=azure_databricks.SkuArgs(name="premium"),
            managed_resource_group_id=pulumi.Output.from_input(args.resource_group_id).apply(lambda rg: f"{rg}-databricks"),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        self.workspace_resource_id = self.workspace.id
        self.workspace_url = self.workspace.workspace_url.apply(lambda url: url if url.startswith("https://") else f"https://{url}")
        return self.workspace_url

    def _registered_model(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
        s, model = args.settings, args.model
        # A renamed model (model.name) replaces this resource: retained, the old model and its versions stay in the
        # registry instead of being deleted with it. Protected stacks refuse the replacement outright.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True, protect=args.protect))
        if s.unity_catalog:
            return databricks.RegisteredModel(f"{name}-model", name=model.short_name, catalog_name=s.catalog,
                                              schema_name=s.schema, comment="credit-default scoring model", opts=opts)
        return databricks.MlflowModel(f"{name}-model", name=model.short_name, description="credit-default scoring model",
                                      tags=[databricks.MlflowModelTagArgs(key=k, value=v) for k, v in args.tags.items()],
                                      opts=opts)

    def _job(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> databricks.Job:
        s, job, model = args.settings, args.settings.job, args.model
        entry = f"{s.files_root}/run_module.py"
        tracking = ["--tracking-uri", "databricks", "--registry-uri", "databricks-uc" if s.unity_catalog else "databricks",
                    "--model-name", model.full_name]
        gate = ["--gate-floor", f"{job.gate_floor:g}", "--gate-tolerance", f"{job.gate_tolerance:g}"]
        libraries = [databricks.JobTaskLibraryArgs(pypi=databricks.JobTaskLibraryPypiArgs(package=p)) for p in pinned_packages()]
        train = databricks.JobTaskArgs(
            task_key="train", job_cluster_key="training", libraries=libraries, timeout_seconds=job.timeout_seconds,
            spark_python_task=databricks.JobTaskSparkPythonTaskArgs(
                python_file=entry, source="WORKSPACE",
                parameters=["training.train", "--data", job.data_table, *tracking, *gate, "--experiment", s.experiment,
                            "--environment", args.environment, "--skip-gate"]))
        # The gate judges exactly the version the train task registered (a task value it sets).
        gate_task = databricks.JobTaskArgs(
            task_key="gate", job_cluster_key="training", libraries=libraries, timeout_seconds=job.timeout_seconds,
            depends_ons=[databricks.JobTaskDependsOnArgs(task_key="train")],
            spark_python_task=databricks.JobTaskSparkPythonTaskArgs(
                python_file=entry, source="WORKSPACE",
                parameters=["training.gate", *tracking, *gate, "--version", "{{tasks.train.values.model_version}}"]))
        return databricks.Job(
            f"{name}-job", name=f"credit-default-train-{args.environment}", max_concurrent_runs=1,
            timeout_seconds=job.timeout_seconds, tags=args.tags, tasks=[train, gate_task],
            job_clusters=[databricks.JobJobClusterArgs(job_cluster_key="training", new_cluster=self._cluster(args))],
            schedule=(databricks.JobScheduleArgs(quartz_cron_expression=job.schedule, timezone_id=job.timezone)
                      if job.schedule else None),
            email_notifications=(databricks.JobEmailNotificationsArgs(on_failures=list(job.failure_emails))
                                 if job.failure_emails else None),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[*self.files, self.experiment])))

    def _drift_job(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> databricks.Job | None:
        """monitoring/drift.py on a schedule: exit 3 (drift) or 2 (no baseline, no log) fails the run, which
        e-mails `notify`; the drift record also goes to Application Insights, where the drift alert rule reads it."""
        if args.drift is None:
            return None
        s, d, drift = args.settings, args.drift, args.drift.settings
        # No --model-name: the request log names the model and version the image was built from (staging's,
        # in a promotion target), and that registered version holds the training baseline.
        parameters = [
            "monitoring.drift", "--workspace-id", d.log_analytics_customer_id, "--target", d.target,
            "--app-name", d.app_name, "--namespace", d.namespace, "--window-hours", f"{drift.window_hours:g}",
            "--tracking-uri", "databricks", "--registry-uri", d.registry_uri, "--experiment", f"{s.experiment}-drift",
            "--psi-threshold", f"{drift.psi_threshold:g}", "--p-value", f"{drift.p_value:g}",
            "--min-records", str(drift.min_records), "--out", "/tmp/drift"]
        env: dict[str, pulumi.Input[str]] = {"APPLICATIONINSIGHTS_CONNECTION_STRING": d.app_insights_connection_string}
        if drift.secret_scope:  # DefaultAzureCredential reads these: the service principal that reads Log Analytics
            env.update({f"AZURE_{key}": f"{{{{secrets/{drift.secret_scope}/azure-{key.lower().replace('_', '-')}}}}}"
                        for key in ("TENANT_ID", "CLIENT_ID", "CLIENT_SECRET")})
        libraries = [databricks.JobTaskLibraryArgs(pypi=databricks.JobTaskLibraryPypiArgs(package=p))
                     for p in pinned_packages(names=DRIFT_PACKAGES)]
        task = databricks.JobTaskArgs(
            task_key="drift", job_cluster_key="drift", libraries=libraries, timeout_seconds=DRIFT_TIMEOUT_SECONDS,
            spark_python_task=databricks.JobTaskSparkPythonTaskArgs(python_file=f"{s.files_root}/run_module.py",
                                                                    source="WORKSPACE", parameters=parameters))
        return databricks.Job(
            f"{name}-drift-job", name=f"credit-default-drift-{args.environment}", max_concurrent_runs=1,
            timeout_seconds=DRIFT_TIMEOUT_SECONDS, tags=args.tags, tasks=[task],
            job_clusters=[databricks.JobJobClusterArgs(job_cluster_key="drift",
                                                       new_cluster=self._cluster(args, workers=0, env=env))],
            schedule=databricks.JobScheduleArgs(quartz_cron_expression=drift.schedule, timezone_id=s.job.timezone,
                                                pause_status="PAUSED" if drift.paused else "UNPAUSED"),
            email_notifications=(databricks.JobEmailNotificationsArgs(on_failures=list(d.notify)) if d.notify else None),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[*self.files, self.experiment])))

    @staticmethod
    def _cluster(args: DatabricksArgs, workers: int | None = None,
                 env: dict[str, pulumi.Input[str]] | None = None) -> databricks.JobJobClusterNewClusterArgs:
        job = args.settings.job
        workers = job.workers if workers is None else workers
        single_node = workers == 0
        return databricks.JobJobClusterNewClusterArgs(
            spark_version=job.spark_version, node_type_id=job.node_type, num_workers=workers, policy_id=job.policy_id,
            # Unity Catalog needs an access mode; single-user is the one that runs arbitrary Python.
            data_security_mode="SINGLE_USER" if args.settings.unity_catalog else None,
            spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"} if single_node else None,
            spark_env_vars=env or None,
            custom_tags={**args.tags, **({"ResourceClass": "SingleNode"} if single_node else {})})
