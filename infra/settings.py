"""The one place that reads and validates stack configuration.

Every per-environment difference is a value in Pulumi.<stack>.yaml, read here into frozen, typed
dataclasses; no other module reads `pulumi.Config` or compares the stack name. A missing or bad
value raises `ConfigError` naming the full key (`<project>:<key>.<nested.path>`) and what is allowed.
Unknown nested keys are errors too, so a typo cannot silently fall back to a default.

Config keys (namespace `mlops-credit-default:`). `KEYS` below is the same table as data (README).

Why one module: no other module reads config, so every key and rule is here; most of its length is a
hand-written reader that issue 13 replaces with pydantic models.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pulumi.errors import RunError

from infra import runtime

REQUIRED = object()  # sentinel: no default, the key must be set

# key -> (meaning, default). Nested keys are written with dots, as `pulumi config set --path` takes them.
KEYS: dict[str, tuple[str, str]] = {
    "environment": ("environment name, used in tags and resource names (dev|staging|prod|...)", "required"),
    "location": ("Azure region of the stack's resource group and resources", "required"),
    "costCentre": ("cost-centre tag on every taggable resource", "required"),
    "tags": ("extra tags (map) added to every taggable resource", "{}"),
    "protect": ("protect the stateful resources (resource group, registry, Log Analytics and Databricks workspaces, "
                "registered model): `pulumi destroy` or a replacing change stops instead of deleting them", "false"),
    "observability.retentionDays": ("Log Analytics retention, 30..730 days", "30"),
    "observability.dailyCapGb": ("Log Analytics daily ingestion cap in GB (omit for none)", "none"),
    "observability.alertEmails": ("e-mail addresses the action group notifies", "[]"),
    "observability.alertWebhooks": ("webhook URLs the action group calls", "[]"),
    "observability.errorRatePercent": ("alert when the 5xx share of requests exceeds this, 0..100", "5"),
    "observability.p95LatencyMs": ("alert when the p95 scoring latency (ms, from the request log) exceeds this", "250"),
    "observability.restartThreshold": ("alert when containers restart at least this often in the window", "3"),
    "observability.windowMinutes": ("alert evaluation window in minutes, 5..1440", "15"),
    "observability.noTrafficMinutes": ("alert when no request is logged for this many minutes; 0 = no alert", "0"),
    "observability.alertSeverity": ("severity of the alert rules, 0 (critical) .. 4 (verbose)", "2"),
    "registry.name": ("globally unique ACR name, 5..50 lowercase letters and digits", "required"),
    "registry.sku": ("ACR SKU: Basic|Standard|Premium", "Basic"),
    "registry.zoneRedundancy": ("zone-redundant registry (Premium only)", "false"),
    "databricks.existingWorkspaceUrl": ("use this workspace (https://adb-...) instead of creating one", "none"),
    "databricks.existingWorkspaceResourceId": ("ARM id of the existing workspace (for Azure auth)", "none"),
    "databricks.modelRegistry": ("where models are registered: unityCatalog|workspace", "unityCatalog"),
    "databricks.catalog": ("Unity Catalog catalog of the registered model (unityCatalog only)", "required for unityCatalog"),
    "databricks.schema": ("Unity Catalog schema of the registered model (unityCatalog only)", "required for unityCatalog"),
    "databricks.createCatalog": ("declare the catalog (isolated, bound to this stack's workspace) and the schema; false: use "
                                 "existing ones by name (unityCatalog only)", "false"),
    "databricks.codeVolume": ("Unity Catalog volume in catalog.schema that holds the jobs' wheel (unityCatalog only)",
                              "job_code"),
    "databricks.jobPrincipal": ("application id of an existing service principal the jobs run as (omit: the stack "
                                "declares credit-default-jobs-<environment>)", "none"),
    "databricks.deployer": ("application id of the service principal that runs `pulumi up` (CI): it may read the "
                            "model and manage the jobs; omit when a person deploys", "none"),
    "databricks.accountId": ("Azure Databricks account id (account console): names the rule set that lets the deployer "
                             "run jobs as the jobs' principal (Service Principal User)", "required unless jobPrincipal"),
    "databricks.promotionReaders": ("application ids of the deployers of stacks that promote this stack's model versions "
                                    "(prod's CI): each may read the registered model, nothing else", "[]"),
    "databricks.experiment": ("MLflow experiment path", "/Shared/credit-default-<environment>"),
    "databricks.filesRoot": ("workspace folder of the jobs' wheel (workspace registry only)", "/Shared/mlops/<environment>"),
    "databricks.dataTable": ("training table (catalog.schema.table) or a path", "required"),
    "databricks.nodeType": ("job cluster node type", "Standard_DS3_v2"),
    "databricks.sparkVersion": ("job cluster Databricks Runtime ML, one whose bundled libraries infra/runtime.py records",
                                "18.0.x-cpu-ml-scala2.13"),
    "databricks.workers": ("job cluster workers, 0 (single node) .. 100", "0"),
    "databricks.policyId": ("cluster policy id for the job cluster", "none"),
    "databricks.schedule": ("Quartz cron for scheduled training (omit for manual runs)", "none"),
    "databricks.timezone": ("time zone of the schedule", "UTC"),
    "databricks.failureEmails": ("e-mail addresses notified when the job fails", "[]"),
    "databricks.timeoutSeconds": ("job timeout in seconds, 300..86400", "7200"),
    "databricks.gateFloor": ("minimum held-out ROC-AUC for the gate, 0.5..1", "0.70"),
    "databricks.gateTolerance": ("how much worse than the champion a challenger may be, 0..0.2", "0.005"),
    "drift.schedule": ("Quartz cron of the stack's Databricks drift job", "0 0 0/6 * * ? (every 6 hours)"),
    "drift.paused": ("declare the drift job with its schedule paused (runs only when started by hand)", "false"),
    "drift.windowHours": ("the drift job compares the requests of the last N hours with the training baseline, 1..720",
                          "24"),
    "drift.psiThreshold": ("a column drifts when its PSI exceeds this, 0.01..10", "0.2"),
    "drift.pValue": ("... and its chi-square p-value is below this, 0.0001..0.5", "0.01"),
    "drift.minRecords": ("fewer records of a model version in the window = not enough data, 1..1000000", "200"),
    "drift.secretScope": ("Databricks secret scope the stack declares for the drift job's Application Insights "
                          "connection string (only the jobs' principal may read it)", "credit-default-<environment>"),
    "model.name": ("registered model name (unityCatalog: <name> inside catalog.schema)", "credit_default"),
    "model.alias": ("alias the stack serves", "champion"),
    "model.trackingUri": ("MLflow tracking URI the program resolves the alias with; `databricks` is always the stack's own "
                          "workspace (never $DATABRICKS_HOST)", "databricks"),
    "model.registryUri": ("MLflow registry URI", "databricks-uc for unityCatalog, else the tracking URI"),
    "model.allowBootstrap": ("with no version yet, deploy without image and workload instead of failing", "true"),
    "image.repository": ("repository inside the registry", "credit-default-scoring"),
    "image.baseImage": ("BASE_IMAGE build argument of serving/Dockerfile, pinned by digest (name@sha256:...)",
                        "serving/Dockerfile's default, python:3.11-slim@sha256:90744cff..."),
    "image.wheelhouse": ("ship every wheel in the build context (hermetic build)", "true"),
    "image.contextDir": ("where the build context is assembled", ".local/pulumi/<stack>/context"),
    "serving.target": ("serving platform: containerapps|aks", "containerapps"),
    "serving.webConcurrency": ("uvicorn workers per container, 1..16", "1"),
    "serving.maxRecords": ("largest /predict batch, 1..10000", "1000"),
    "serving.auth.mode": ("who may call the scoring endpoint. containerapps: entra (Container Apps built-in "
                          "authentication: only a token of a listed client application for the API's app registration), "
                          "internal (the environment has no public endpoint: a VNet-internal load balancer in "
                          "containerApp.infrastructureSubnetId) or anonymous (needs anonymousReason); aks: internal only "
                          "(an internal load balancer or ClusterIP, never a public one)",
                          "entra on containerapps, internal on aks"),
    "serving.auth.tenantId": ("Entra tenant (directory) id that issues the tokens (entra)", "required for entra"),
    "serving.auth.clientId": ("application (client) id of the API's app registration, created outside the stack "
                              "(entra)", "required for entra"),
    "serving.auth.audience": ("token audience the API accepts (its Application ID URI)", "api://<clientId>"),
    "serving.auth.allowedClientApplications": ("application (client) ids whose tokens are accepted, CI's smoke-test "
                                               "identity included; nobody else gets in (entra)", "required for entra"),
    "serving.auth.anonymousReason": ("why this stack serves without authentication (anonymous only; the policy pack "
                                     "still refuses an anonymous public endpoint)", "none"),
    "serving.containerApp.cpu": ("vCPU per replica, 0.25..4 in steps of 0.25", "0.5"),
    "serving.containerApp.memoryGi": ("memory per replica in Gi, 2 x cpu", "1.0"),
    "serving.containerApp.minReplicas": ("minimum replicas, 0..30", "1"),
    "serving.containerApp.maxReplicas": ("maximum replicas, minReplicas..300", "3"),
    "serving.containerApp.concurrency": ("concurrent requests per replica before scaling out", "20"),
    "serving.containerApp.zoneRedundant": ("zone-redundant managed environment (needs infrastructureSubnetId)", "false"),
    "serving.containerApp.infrastructureSubnetId": ("subnet (ARM id, /23 or larger) of the managed environment", "none"),
    "serving.containerApp.latestWeight": ("traffic % to the newest revision", "100"),
    "serving.containerApp.pinnedRevisions": ("[{revision, weight}] older revisions keeping traffic; weights sum to 100", "[]"),
    "serving.containerApp.stableRevision": ("a release in progress (set by scripts/release.py from serving_revision): "
                                            "this revision, labelled stable, keeps 100 - latestWeight %; the new one is "
                                            "labelled candidate (URL: candidate_url)", "none"),
    "serving.containerApp.releaseSteps": ("traffic % the candidate takes in turn after its smoke test passed, each "
                                          "step smoke-tested before the next, then 100 (scripts/release.py); "
                                          "[] moves all traffic at once", "[]"),
    "serving.aks.nodeVmSize": ("node pool VM size", "Standard_D2s_v5"),
    "serving.aks.nodeCount": ("node pool size (minimum with autoscaling), 1..100", "1"),
    "serving.aks.maxNodeCount": ("autoscaler maximum; equal to nodeCount = no autoscaling", "nodeCount"),
    "serving.aks.zones": ("availability zones of the node pool", "[]"),
    "serving.aks.skuTier": ("AKS control plane tier: Free|Standard", "Free"),
    "serving.aks.kubernetesVersion": ("Kubernetes version (omit for the region default)", "none"),
    "serving.aks.namespace": ("namespace of the scoring service", "scoring"),
    "serving.aks.serviceType": ("LoadBalancer|ClusterIP", "LoadBalancer"),
    "serving.aks.replicas": ("Deployment replicas (HPA minimum), 1..50", "1"),
    "serving.aks.maxReplicas": ("HPA maximum, replicas..100", "3"),
    "serving.aks.cpuRequest": ("container CPU request", "250m"),
    "serving.aks.cpuLimit": ("container CPU limit", "1"),
    "serving.aks.memoryRequest": ("container memory request", "512Mi"),
    "serving.aks.memoryLimit": ("container memory limit", "1Gi"),
    "serving.aks.targetCpuPercent": ("HPA target CPU utilisation, 10..95", "70"),
    "promotion.sourceStack": ("name of the stack of this project (e.g. staging; the organization and project are this "
                              "stack's own) whose tested image digest and model version this stack deploys; "
                              "set = this stack never builds or trains", "none"),
    "promotion.sourceTrackingUri": ("MLflow tracking URI the source model version is read from", "model.trackingUri"),
    "promotion.sourceRegistryUri": ("MLflow registry URI the source model version is read from", "model.registryUri"),
    "promotion.pinnedDigest": ("rollback: deploy this digest (sha256:...) from this stack's registry instead of the "
                               "source's current image", "none"),
    "promotion.testedDigest": ("the image digest (sha256:...) the same workflow run's staging job deployed and "
                               "smoke-tested; the program refuses when staging now serves another (set by CI)", "none"),
    "promotion.testedModelVersion": ("the model version staging tested with testedDigest (set with it, by CI)", "none"),
    "promotion.pinnedModelVersion": ("rollback: the source model version the pinned digest serves (set with pinnedDigest)",
                                     "none"),
}

TARGETS = ("containerapps", "aks")
ACR_SKUS = ("Basic", "Standard", "Premium")
MODEL_REGISTRIES = ("unityCatalog", "workspace")
SERVICE_TYPES = ("LoadBalancer", "ClusterIP")
AUTH_MODES = {"containerapps": ("entra", "internal", "anonymous"), "aks": ("internal",)}
AKS_TIERS = ("Free", "Standard")
CONTAINER_PORT = 8000  # serving/Dockerfile: PORT=8000
CONTAINER_UID = 10001  # serving/Dockerfile: USER 10001


class ConfigError(RunError, ValueError):
    """A stack config value is missing or invalid; the message names the full key. A RunError: the engine
    prints the message without a traceback."""


class _Reader:
    """Reads one config object, remembering its path so errors can name `<project>:<key>.<path>`."""

    def __init__(self, values: Mapping[str, Any] | None, path: str) -> None:
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"{path}: expected an object, got {values!r}")
        self.values, self.path, self.seen = dict(values or {}), path, set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if ":" in self.path and not self.path.endswith(":") else f"{self.path}{key}"

    def raw(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        value = self.values.get(key)
        if value is None:
            if default is REQUIRED:
                raise ConfigError(f"{self._key(key)} is required (set it in Pulumi.<stack>.yaml or with "
                                  f"`pulumi config set --path {self._key(key).split(':', 1)[1]} <value>`)")
            return default
        return value

    def string(self, key: str, default: Any = REQUIRED, *, choices: tuple[str, ...] = (), pattern: str = "",
               hint: str = "") -> str | None:
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self._key(key)} must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(f"{self._key(key)} is {value!r}; allowed values: {', '.join(choices)}")
        if pattern and not re.fullmatch(pattern, value):
            raise ConfigError(f"{self._key(key)} is {value!r}; it must be {hint or 'match ' + pattern}")
        return value

    def number(self, key: str, default: Any = REQUIRED, *, low: float, high: float, integer: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, str):  # `pulumi config set` stores scalars as strings
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{self._key(key)} must be a number in {low}..{high}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ConfigError(f"{self._key(key)} must be a number in {low}..{high}, got {value!r}")
        if integer:
            if value != int(value):
                raise ConfigError(f"{self._key(key)} must be a whole number in {low}..{high}, got {value!r}")
            return int(value)
        return float(value)

    def integer(self, key: str, default: Any = REQUIRED, *, low: int, high: int) -> Any:
        return self.number(key, default, low=low, high=high, integer=True)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{self._key(key)} must be true or false, got {value!r}")
        return value

    def strings(self, key: str, *, pattern: str = "", hint: str = "") -> tuple[str, ...]:
        value = self.raw(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self._key(key)} must be a list of strings, got {value!r}")
        for item in value:
            if pattern and not re.fullmatch(pattern, item):
                raise ConfigError(f"{self._key(key)} holds {item!r}; each item must be {hint or 'match ' + pattern}")
        return tuple(value)

    def child(self, key: str) -> _Reader:
        return _Reader(self.raw(key, {}), self._key(key))

    def done(self) -> None:
        """Unknown keys are typos: name them and the known ones."""
        unknown = sorted(set(self.values) - self.seen)
        if unknown:
            raise ConfigError(f"{self.path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(self.seen))}")


EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
HTTPS_URL = r"https://[^\s]+"
QUARTZ = r"\S+( \S+){5,6}"
REVISION = r"[a-z0-9][a-z0-9-]{0,62}"  # a Container Apps revision name
UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass(frozen=True)
class Tagging:
    project: str
    environment: str
    cost_centre: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def tags(self) -> dict[str, str]:
        return {**dict(self.extra), "environment": self.environment, "project": self.project, "cost-centre": self.cost_centre}


@dataclass(frozen=True)
class ObservabilitySettings:
    retention_days: int
    daily_cap_gb: float | None
    alert_emails: tuple[str, ...]
    alert_webhooks: tuple[str, ...]
    error_rate_percent: float
    p95_latency_ms: float
    restart_threshold: int
    window_minutes: int
    no_traffic_minutes: int  # 0 = no alert
    alert_severity: int


@dataclass(frozen=True)
class RegistrySettings:
    name: str
    sku: str
    zone_redundancy: bool


@dataclass(frozen=True)
class JobSettings:
    data_table: str
    node_type: str
    spark_version: str
    workers: int
    policy_id: str | None
    schedule: str | None
    timezone: str
    failure_emails: tuple[str, ...]
    timeout_seconds: int
    gate_floor: float
    gate_tolerance: float


@dataclass(frozen=True)
class DatabricksSettings:
    existing_workspace_url: str | None
    existing_workspace_resource_id: str | None
    model_registry: str
    catalog: str | None
    schema: str | None
    experiment: str
    files_root: str
    job: JobSettings
    create_catalog: bool = False
    code_volume: str = "job_code"
    job_principal: str | None = None  # None: the stack declares the service principal
    deployer: str | None = None
    account_id: str | None = None  # required when the stack declares the jobs' principal
    promotion_readers: tuple[str, ...] = ()

    @property
    def unity_catalog(self) -> bool:
        return self.model_registry == "unityCatalog"


@dataclass(frozen=True)
class DriftSettings:
    """The scheduled drift job (monitoring/drift.py on Databricks) of every stack."""
    schedule: str
    paused: bool
    window_hours: float
    psi_threshold: float
    p_value: float
    min_records: int
    secret_scope: str  # declared by the stack; holds the connection string the drift record is written with


@dataclass(frozen=True)
class ModelSettings:
    short_name: str
    full_name: str  # the name MLflow knows: catalog.schema.name with Unity Catalog
    alias: str
    tracking_uri: str
    registry_uri: str | None
    allow_bootstrap: bool

    @property
    def uri(self) -> str:
        return f"models:/{self.full_name}@{self.alias}"

    @property
    def in_stack_workspace(self) -> bool:
        """`databricks` URIs: the registry of the stack's own workspace (located by infra.model_source)."""
        return self.tracking_uri == "databricks"


@dataclass(frozen=True)
class ImageSettings:
    repository: str
    base_image: str
    wheelhouse: bool
    context_dir: str


@dataclass(frozen=True)
class RevisionWeight:
    revision: str
    weight: int


@dataclass(frozen=True)
class ContainerAppSettings:
    cpu: float
    memory_gi: float
    min_replicas: int
    max_replicas: int
    concurrency: int
    zone_redundant: bool
    infrastructure_subnet_id: str | None
    latest_weight: int
    pinned_revisions: tuple[RevisionWeight, ...]
    stable_revision: str | None = None  # a release in progress: this revision keeps 100 - latestWeight %
    release_steps: tuple[int, ...] = ()  # the candidate's traffic % in turn before 100 (read by scripts/release.py)


@dataclass(frozen=True)
class AksSettings:
    node_vm_size: str
    node_count: int
    max_node_count: int
    zones: tuple[str, ...]
    sku_tier: str
    kubernetes_version: str | None
    namespace: str
    service_type: str
    replicas: int
    max_replicas: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    target_cpu_percent: int


@dataclass(frozen=True)
class AuthSettings:
    """Who may call the scoring endpoint. The API's app registration lives outside the stack (pulumi-azuread is not a
    dependency): its ids come from config."""
    mode: str  # entra | internal | anonymous
    tenant_id: str | None = None
    client_id: str | None = None
    audience: str | None = None
    allowed_client_applications: tuple[str, ...] = ()
    anonymous_reason: str | None = None

    @property
    def entra(self) -> bool:
        return self.mode == "entra"

    @property
    def issuer(self) -> str:
        return f"https://login.microsoftonline.com/{self.tenant_id}/v2.0"


@dataclass(frozen=True)
class ServingSettings:
    target: str
    port: int
    web_concurrency: int
    max_records: int
    container_app: ContainerAppSettings
    aks: AksSettings
    auth: AuthSettings = AuthSettings("entra")


@dataclass(frozen=True)
class PromotionSettings:
    """Where a promotion target (prod) takes its artifact from; `source_stack` None = this stack builds itself."""
    source_stack: str | None
    source_tracking_uri: str | None
    source_registry_uri: str | None
    pinned_digest: str | None
    pinned_model_version: str | None
    tested_digest: str | None = None  # what the same workflow run's staging job deployed and smoke-tested
    tested_model_version: str | None = None

    @property
    def enabled(self) -> bool:
        return self.source_stack is not None

    def qualified_source(self, organization: str, project: str) -> str:
        """<organization>/<project>/<stack>, the form a StackReference takes on every backend."""
        return f"{organization}/{project}/{self.source_stack}"

    @property
    def pinned(self) -> bool:
        return self.pinned_digest is not None


@dataclass(frozen=True)
class StackSettings:
    project: str
    stack: str
    location: str
    tagging: Tagging
    observability: ObservabilitySettings
    registry: RegistrySettings
    databricks: DatabricksSettings
    model: ModelSettings
    image: ImageSettings
    serving: ServingSettings
    promotion: PromotionSettings
    drift: DriftSettings
    protect: bool = False

    @property
    def tags(self) -> dict[str, str]:
        return self.tagging.tags

    @property
    def environment(self) -> str:
        return self.tagging.environment

    def name(self, kind: str) -> str:
        """A readable resource name: <kind>-<project short>-<environment>."""
        return f"{kind}-credit-{self.environment}"


TOP_LEVEL_OBJECTS = ("observability", "registry", "databricks", "model", "image", "serving", "promotion", "drift")
TOP_LEVEL_SCALARS = ("environment", "location", "costCentre", "tags", "protect")
QUANTITY = r"\d+(\.\d+)?(m|Mi|Gi|Ki)?"


def load(env: Mapping[str, str] | None = None) -> StackSettings:
    """Read the current stack's pulumi.Config (inside a Pulumi program or under mocks)."""
    import os

    import pulumi

    config = pulumi.Config()
    values = {key: config.get_object(key) if key in (*TOP_LEVEL_OBJECTS, "tags") else config.get(key)
              for key in (*TOP_LEVEL_SCALARS, *TOP_LEVEL_OBJECTS)}
    return from_values(pulumi.get_project(), pulumi.get_stack(), values, os.environ if env is None else env)


def from_values(project: str, stack: str, values: Mapping[str, Any], env: Mapping[str, str]) -> StackSettings:
    """Validate already-parsed config values (top-level key -> scalar or object) into settings. `env` is the
    deployer's environment, which on purpose no longer steers what a stack deploys (see model.trackingUri)."""
    top = _Reader(values, f"{project}:")
    environment = top.string("environment", pattern=r"[a-z][a-z0-9]{1,11}", hint="2..12 lowercase letters/digits")
    extra = top.raw("tags", {})
    if not isinstance(extra, Mapping) or not all(isinstance(v, str) for v in extra.values()):
        raise ConfigError(f"{project}:tags must be a map of strings, got {extra!r}")
    tagging = Tagging(project, environment, top.string("costCentre"), tuple(sorted(extra.items())))
    databricks = _databricks(top.child("databricks"), environment)
    model = _model(top.child("model"), databricks)
    settings = StackSettings(
        project=project, stack=stack,
        location=top.string("location", pattern=r"[a-z0-9]+", hint="an Azure region name such as westeurope"),
        tagging=tagging,
        observability=_observability(top.child("observability")),
        registry=_registry(top.child("registry")),
        databricks=databricks,
        model=model,
        image=_image(top.child("image"), stack),
        serving=_serving(top.child("serving")),
        promotion=_promotion(top.child("promotion"), model),
        drift=_drift(top.child("drift"), environment),
        protect=top.boolean("protect", False),
    )
    return settings


def _observability(r: _Reader) -> ObservabilitySettings:
    result = ObservabilitySettings(
        retention_days=r.integer("retentionDays", 30, low=30, high=730),
        daily_cap_gb=r.number("dailyCapGb", None, low=0.023, high=10000),
        alert_emails=r.strings("alertEmails", pattern=EMAIL, hint="an e-mail address"),
        alert_webhooks=r.strings("alertWebhooks", pattern=HTTPS_URL, hint="an https:// URL"),
        error_rate_percent=r.number("errorRatePercent", 5, low=0.1, high=100),
        p95_latency_ms=r.number("p95LatencyMs", 250, low=1, high=60000),
        restart_threshold=r.integer("restartThreshold", 3, low=1, high=1000),
        window_minutes=r.integer("windowMinutes", 15, low=5, high=1440),
        no_traffic_minutes=r.integer("noTrafficMinutes", 0, low=0, high=1440),
        alert_severity=r.integer("alertSeverity", 2, low=0, high=4),
    )
    if 0 < result.no_traffic_minutes < 5:
        raise ConfigError(f"{r._key('noTrafficMinutes')} must be 0 (no alert) or 5..1440, got {result.no_traffic_minutes}")
    r.done()
    return result


def _registry(r: _Reader) -> RegistrySettings:
    result = RegistrySettings(
        name=r.string("name", pattern=r"[a-z0-9]{5,50}", hint="5..50 lowercase letters and digits (globally unique)"),
        sku=r.string("sku", "Basic", choices=ACR_SKUS),
        zone_redundancy=r.boolean("zoneRedundancy", False),
    )
    if result.zone_redundancy and result.sku != "Premium":
        raise ConfigError(f"{r._key('zoneRedundancy')} needs {r._key('sku')} Premium, got {result.sku}")
    r.done()
    return result


def _databricks(r: _Reader, environment: str) -> DatabricksSettings:
    registry = r.string("modelRegistry", "unityCatalog", choices=MODEL_REGISTRIES)
    uc = registry == "unityCatalog"
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    result = DatabricksSettings(
        existing_workspace_url=r.string("existingWorkspaceUrl", None, pattern=r"https://[a-z0-9.-]+",
                                        hint="https://<host> of the workspace"),
        existing_workspace_resource_id=r.string("existingWorkspaceResourceId", None, pattern=r"/subscriptions/.+",
                                                hint="an ARM resource id"),
        model_registry=registry,
        catalog=r.string("catalog", REQUIRED if uc else None, pattern=ident, hint="a catalog identifier"),
        schema=r.string("schema", REQUIRED if uc else None, pattern=ident, hint="a schema identifier"),
        experiment=r.string("experiment", f"/Shared/credit-default-{environment}", pattern=r"/.+", hint="a workspace path"),
        files_root=r.string("filesRoot", f"/Shared/mlops/{environment}", pattern=r"/[^\s]+", hint="a workspace path"),
        job=JobSettings(
            data_table=r.string("dataTable"),
            node_type=r.string("nodeType", "Standard_DS3_v2"),
            spark_version=r.string("sparkVersion", runtime.DEFAULT, choices=tuple(runtime.BUNDLED)),
            workers=r.integer("workers", 0, low=0, high=100),
            policy_id=r.string("policyId", None),
            schedule=r.string("schedule", None, pattern=QUARTZ, hint="a Quartz cron expression (6-7 fields)"),
            timezone=r.string("timezone", "UTC"),
            failure_emails=r.strings("failureEmails", pattern=EMAIL, hint="an e-mail address"),
            timeout_seconds=r.integer("timeoutSeconds", 7200, low=300, high=86400),
            gate_floor=r.number("gateFloor", 0.70, low=0.5, high=1.0),
            gate_tolerance=r.number("gateTolerance", 0.005, low=0.0, high=0.2),
        ),
        create_catalog=r.boolean("createCatalog", False),
        code_volume=r.string("codeVolume", "job_code", pattern=ident, hint="a volume identifier"),
        job_principal=r.string("jobPrincipal", None, pattern=UUID, hint="a service principal's application id (a UUID)"),
        deployer=r.string("deployer", None, pattern=UUID, hint="a service principal's application id (a UUID)"),
        account_id=r.string("accountId", None, pattern=UUID, hint="an account id (a UUID)"),
        promotion_readers=r.strings("promotionReaders", pattern=UUID, hint="a service principal's application id (a UUID)"),
    )
    if not result.job_principal and not result.account_id:
        raise ConfigError(f"{r._key('accountId')} is required when the stack declares the jobs' service principal (no "
                          f"{r._key('jobPrincipal')}): the deployer's Service Principal User role on it lives in the account")
    if result.promotion_readers and not uc:
        raise ConfigError(f"{r._key('promotionReaders')} needs {r._key('modelRegistry')} unityCatalog, got {registry}")
    if result.existing_workspace_resource_id and not result.existing_workspace_url:
        raise ConfigError(f"{r._key('existingWorkspaceResourceId')} needs {r._key('existingWorkspaceUrl')} too")
    if result.create_catalog and not uc:
        raise ConfigError(f"{r._key('createCatalog')} needs {r._key('modelRegistry')} unityCatalog, got {registry}")
    r.done()
    return result


def _drift(r: _Reader, environment: str) -> DriftSettings:
    result = DriftSettings(
        schedule=r.string("schedule", "0 0 0/6 * * ?", pattern=QUARTZ, hint="a Quartz cron expression (6-7 fields)"),
        paused=r.boolean("paused", False),
        window_hours=r.number("windowHours", 24, low=1, high=720),
        psi_threshold=r.number("psiThreshold", 0.2, low=0.01, high=10),
        p_value=r.number("pValue", 0.01, low=0.0001, high=0.5),
        min_records=r.integer("minRecords", 200, low=1, high=1_000_000),
        secret_scope=r.string("secretScope", f"credit-default-{environment}", pattern=r"[A-Za-z0-9_.@-]{1,128}",
                              hint="a Databricks secret scope name"),
    )
    r.done()
    return result


def _model(r: _Reader, databricks: DatabricksSettings) -> ModelSettings:
    short = r.string("name", "credit_default", pattern=r"[A-Za-z0-9_][A-Za-z0-9_-]*",
                     hint="letters, digits, '_' or '-' (no dots: the catalog and schema come from databricks.*)")
    uc = databricks.unity_catalog
    full = f"{databricks.catalog}.{databricks.schema}.{short}" if uc else short
    # No fallback to $MLFLOW_TRACKING_URI: what a stack deploys must not depend on the deployer's shell.
    tracking = r.string("trackingUri", "databricks")
    result = ModelSettings(
        short_name=short, full_name=full,
        alias=r.string("alias", "champion", pattern=r"[A-Za-z0-9_-]+", hint="an MLflow alias (letters, digits, _ -)"),
        tracking_uri=tracking,
        registry_uri=r.string("registryUri", "databricks-uc" if uc and tracking == "databricks" else None),
        allow_bootstrap=r.boolean("allowBootstrap", True),
    )
    r.done()
    return result


def _promotion(r: _Reader, model: ModelSettings) -> PromotionSettings:
    for key in ("pinnedModelVersion", "testedModelVersion"):
        version = r.values.get(key)
        if isinstance(version, int) and not isinstance(version, bool):  # YAML `3` is as good as "3"
            r.values[key] = str(version)
    result = PromotionSettings(
        # Only the name: the organization is the engine's (pulumi.get_organization(), the one the stack was selected
        # with), so no placeholder organization can reach a StackReference that would only work on one backend.
        source_stack=r.string("sourceStack", None, pattern=r"[A-Za-z0-9_.-]+",
                              hint="the source stack's name only, such as staging (the organization and project are "
                                   "this stack's own)"),
        # One Unity Catalog metastore usually holds both stacks' models: read the source where this stack registers.
        source_tracking_uri=r.string("sourceTrackingUri", model.tracking_uri),
        source_registry_uri=r.string("sourceRegistryUri", model.registry_uri),
        pinned_digest=r.string("pinnedDigest", None, pattern=r"sha256:[0-9a-f]{64}", hint="sha256:<64 hex digits>"),
        pinned_model_version=r.string("pinnedModelVersion", None, pattern=r"[1-9][0-9]*", hint="a model version number"),
        tested_digest=r.string("testedDigest", None, pattern=r"sha256:[0-9a-f]{64}", hint="sha256:<64 hex digits>"),
        tested_model_version=r.string("testedModelVersion", None, pattern=r"[1-9][0-9]*", hint="a model version number"),
    )
    if (result.tested_digest is None) != (result.tested_model_version is None):
        raise ConfigError(f"{r._key('testedDigest')} and {r._key('testedModelVersion')} go together: staging tested "
                          "one image serving one model version")
    if result.tested_digest and result.pinned:
        raise ConfigError(f"{r._key('testedDigest')} and {r._key('pinnedDigest')} exclude each other: a rollback "
                          "deploys what this stack already served, not what staging tested")
    if (result.pinned_digest is None) != (result.pinned_model_version is None):
        raise ConfigError(f"{r._key('pinnedDigest')} and {r._key('pinnedModelVersion')} go together: a rollback names "
                          "the image and the model version it serves")
    if result.pinned and not result.enabled:
        raise ConfigError(f"{r._key('pinnedDigest')} needs {r._key('sourceStack')}: only a promotion target can pin")
    r.done()
    return result


# serving/Dockerfile's BASE_IMAGE default (tests/test_supply_chain.py keeps the two equal).
DEFAULT_BASE_IMAGE = "python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff"


def _image(r: _Reader, stack: str) -> ImageSettings:
    result = ImageSettings(
        repository=r.string("repository", "credit-default-scoring", pattern=r"[a-z0-9]+([._/-][a-z0-9]+)*",
                            hint="a lowercase repository path"),
        base_image=r.string("baseImage", DEFAULT_BASE_IMAGE, pattern=r"[^\s@]+@sha256:[0-9a-f]{64}",
                            hint="pinned by digest, name@sha256:<64 hex> (a tag can be moved)"),
        wheelhouse=r.boolean("wheelhouse", True),
        context_dir=r.string("contextDir", f".local/pulumi/{stack}/context"),
    )
    r.done()
    return result


def _serving(r: _Reader) -> ServingSettings:
    target = r.string("target", "containerapps", choices=TARGETS)
    container_app = _container_app(r.child("containerApp"))
    result = ServingSettings(
        target=target,
        port=CONTAINER_PORT,
        web_concurrency=r.integer("webConcurrency", 1, low=1, high=16),
        max_records=r.integer("maxRecords", 1000, low=1, high=10000),
        container_app=container_app,
        aks=_aks(r.child("aks")),
        auth=_auth(r.child("auth"), target, container_app),
    )
    r.done()
    return result


def _auth(r: _Reader, target: str, container_app: ContainerAppSettings) -> AuthSettings:
    """Never anonymous by default: entra on Container Apps, an internal load balancer on AKS (which has no built-in
    token check). The ids of an app registration are read whatever the mode, so one stack file serves both targets."""
    mode = r.string("mode", AUTH_MODES[target][0], choices=AUTH_MODES[target])
    entra = mode == "entra"
    required = REQUIRED if entra else None
    client_id = r.string("clientId", required, pattern=UUID, hint="the API app registration's application id (a UUID)")
    result = AuthSettings(
        mode=mode,
        tenant_id=r.string("tenantId", required, pattern=UUID, hint="an Entra tenant id (a UUID)"),
        client_id=client_id,
        audience=r.string("audience", f"api://{client_id}" if client_id else None, pattern=r"(api|https)://\S+",
                          hint="an Application ID URI such as api://<clientId>"),
        allowed_client_applications=r.strings("allowedClientApplications", pattern=UUID,
                                              hint="a client application's application (client) id (a UUID)"),
        anonymous_reason=r.string("anonymousReason", None),
    )
    if entra and not result.allowed_client_applications:
        raise ConfigError(f"{r._key('allowedClientApplications')} must list at least one client application id with "
                          f"{r._key('mode')} entra (CI's smoke-test identity at least): an empty list would let any "
                          "application of the tenant in")
    if mode == "anonymous" and not result.anonymous_reason:
        raise ConfigError(f"{r._key('mode')} anonymous needs {r._key('anonymousReason')}: say why this endpoint may "
                          "serve credit decisions to anyone")
    if result.anonymous_reason and mode != "anonymous":
        raise ConfigError(f"{r._key('anonymousReason')} is only for {r._key('mode')} anonymous, got {mode}")
    if mode == "internal" and target == "containerapps" and not container_app.infrastructure_subnet_id:
        raise ConfigError(f"{r._key('mode')} internal needs serving.containerApp.infrastructureSubnetId: an internal "
                          "environment lives in a VNet subnet (Azure refuses it without one)")
    r.done()
    return result


def _container_app(r: _Reader) -> ContainerAppSettings:
    cpu = r.number("cpu", 0.5, low=0.25, high=4)
    if cpu * 4 != int(cpu * 4):
        raise ConfigError(f"{r._key('cpu')} must be a multiple of 0.25 in 0.25..4, got {cpu}")
    memory = r.number("memoryGi", cpu * 2, low=0.5, high=8)
    if memory != cpu * 2:  # Consumption profile: fixed 1 vCPU : 2 Gi combinations
        raise ConfigError(f"{r._key('memoryGi')} must be 2 x cpu ({cpu * 2}) on the Consumption profile, got {memory}")
    min_replicas = r.integer("minReplicas", 1, low=0, high=30)
    result = ContainerAppSettings(
        cpu=cpu, memory_gi=memory, min_replicas=min_replicas,
        max_replicas=r.integer("maxReplicas", max(3, min_replicas), low=max(1, min_replicas), high=300),
        concurrency=r.integer("concurrency", 20, low=1, high=1000),
        zone_redundant=r.boolean("zoneRedundant", False),
        infrastructure_subnet_id=r.string("infrastructureSubnetId", None, pattern=r"/subscriptions/.+/subnets/[^/]+",
                                          hint="a subnet ARM id"),
        latest_weight=r.integer("latestWeight", 100, low=0, high=100),
        pinned_revisions=_pinned(r),
        stable_revision=r.string("stableRevision", None, pattern=REVISION, hint="a revision name"),
        release_steps=_release_steps(r),
    )
    if result.stable_revision:
        if result.pinned_revisions:
            raise ConfigError(f"{r._key('stableRevision')} and {r._key('pinnedRevisions')} exclude each other: a release "
                              "keeps one stable revision beside the candidate")
        result = dataclasses.replace(result, pinned_revisions=(
            RevisionWeight(result.stable_revision, 100 - result.latest_weight),))
    if result.zone_redundant and not result.infrastructure_subnet_id:
        raise ConfigError(f"{r._key('zoneRedundant')} needs {r._key('infrastructureSubnetId')} (Azure requires a VNet)")
    total = result.latest_weight + sum(p.weight for p in result.pinned_revisions)
    if total != 100:
        raise ConfigError(f"{r._key('latestWeight')} + {r._key('pinnedRevisions')} weights must sum to 100, got {total}")
    r.done()
    return result


def _release_steps(r: _Reader) -> tuple[int, ...]:
    value, key = r.raw("releaseSteps", []), r._key("releaseSteps")
    if (not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 100 for v in value)
            or sorted(set(value)) != value):
        raise ConfigError(f"{key} must be increasing traffic percentages between 1 and 99 (e.g. [10, 50]; 100 comes "
                          f"last by itself), got {value!r}")
    return tuple(value)


def _pinned(r: _Reader) -> tuple[RevisionWeight, ...]:
    value = r.raw("pinnedRevisions", [])
    key = r._key("pinnedRevisions")
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of {{revision, weight}}, got {value!r}")
    pinned = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) != {"revision", "weight"}:
            raise ConfigError(f"{key}[{index}] must be {{revision: <revision name>, weight: 0..100}}, got {item!r}")
        entry = _Reader(item, f"{key}[{index}]")
        pinned.append(RevisionWeight(entry.string("revision", pattern=REVISION, hint="a revision name"),
                                     entry.integer("weight", low=0, high=100)))
    return tuple(pinned)


def _aks(r: _Reader) -> AksSettings:
    node_count = r.integer("nodeCount", 1, low=1, high=100)
    replicas = r.integer("replicas", 1, low=1, high=50)
    result = AksSettings(
        node_vm_size=r.string("nodeVmSize", "Standard_D2s_v5"),
        node_count=node_count,
        max_node_count=r.integer("maxNodeCount", node_count, low=node_count, high=1000),
        zones=r.strings("zones", pattern=r"[1-3]", hint="an availability zone 1, 2 or 3"),
        sku_tier=r.string("skuTier", "Free", choices=AKS_TIERS),
        kubernetes_version=r.string("kubernetesVersion", None, pattern=r"\d+\.\d+(\.\d+)?", hint="like 1.33"),
        namespace=r.string("namespace", "scoring", pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", hint="a DNS label"),
        service_type=r.string("serviceType", "LoadBalancer", choices=SERVICE_TYPES),
        replicas=replicas,
        max_replicas=r.integer("maxReplicas", max(3, replicas), low=replicas, high=100),
        cpu_request=r.string("cpuRequest", "250m", pattern=QUANTITY, hint="a Kubernetes quantity"),
        cpu_limit=r.string("cpuLimit", "1", pattern=QUANTITY, hint="a Kubernetes quantity"),
        memory_request=r.string("memoryRequest", "512Mi", pattern=QUANTITY, hint="a Kubernetes quantity"),
        memory_limit=r.string("memoryLimit", "1Gi", pattern=QUANTITY, hint="a Kubernetes quantity"),
        target_cpu_percent=r.integer("targetCpuPercent", 70, low=10, high=95),
    )
    r.done()
    return result
