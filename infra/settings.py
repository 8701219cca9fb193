"""The one place that reads and validates stack configuration.

Every per-environment difference is a value in Pulumi.<stack>.yaml, read here into frozen pydantic models, one per
config section, with the stack files' camelCase names; no other module reads `pulumi.Config` or compares the stack
name. A field's description is its row of the config-key table (`readme_table`; tests/infra/test_readme.py
keeps the two equal), so adding a key is adding one field. A missing, unknown or bad value raises `ConfigError`
naming the full key (`mlops:<key>.<nested.path>`) and what is allowed: a rule that relates two keys is a model
validator whose message names them as `@key`. Defaults that depend on another section are filled in `from_values`.

The keys live in the `mlops` namespace, whatever Pulumi.yaml names the Pulumi project (infra/stack_files.py says
why). Every name the stack gives something derives from the key `name` (infra/naming.py): `from_values` checks
`name`, `environment` and `location` first, then every name they make against its service's rule, and only then
the rest, so an error about a derived name always names `name` and the rule it broke.

Why one module: no other module reads config, so every key and rule is here; each key's description is its row
in docs/reference/config.md, and those ~110 documented keys are most of its length.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pulumi.errors import RunError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from infra import naming, runtime, stack_files
from infra.stack_files import NAMESPACE, ROOT
from monitoring.granularity import GRANULARITIES
from serving.scoring.settings import BODY_TIMEOUT_S, MAX_BODY_BYTES, MAX_IN_FLIGHT, MIN_PSEUDONYM_KEY_CHARS

CONTAINER_PORT = 8000  # serving/Dockerfile: PORT=8000
CONTAINER_UID = 10001  # serving/Dockerfile: USER 10001
AUTH_MODES = {"containerapps": ("entra", "internal", "anonymous"), "aks": ("internal",)}
# serving/Dockerfile's BASE_IMAGE default (tests/test_supply_chain.py keeps the two equal).
DEFAULT_BASE_IMAGE = "python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff"
if TYPE_CHECKING:
    SparkVersion = str
else:  # the runtimes infra/runtime.py records, as choices (built at run time, so the type checker sees a str)
    SparkVersion = Literal[tuple(runtime.BUNDLED)]


PSEUDONYM_KEY = "requestLogPseudonymKey"  # the one secret key: read by `load` only with `pulumi config set --secret`
# What the scripts that read Pulumi.<stack>.yaml itself (release, plan, job report) see of it: `{secure: v1:...}`,
# ciphertext only the engine decrypts. Set and secret, so its rules hold; `load` reads the real value.
ENCRYPTED = "<encrypted in Pulumi.<stack>.yaml: only the Pulumi engine reads it>"


class ConfigError(RunError, ValueError):
    """A stack config value is missing or invalid; the message names the full key. A RunError: the engine
    prints the message without a traceback."""


def matching(pattern: str, hint: str) -> AfterValidator:
    """A string must match `pattern` in full; `hint` says in words what matches, for the error message."""
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise PydanticCustomError("config", "must be {hint}", {"hint": hint})
        return value
    return AfterValidator(check)


Cron = Annotated[str, matching(r"\S+( \S+){5,6}", "a Quartz cron expression (6-7 fields)")]
Email = Annotated[str, matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an e-mail address")]
UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
AppId = Annotated[str, matching(UUID, "a service principal's application id (a UUID)")]
Deployer = Annotated[str, matching(rf"{UUID}|[^@\s]+@[^@\s]+\.[^@\s]+",
                                   "a service principal's application id (a UUID) or a user name (an e-mail address)")]
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
Table = Annotated[str, matching(rf"{IDENT}\.{IDENT}\.{IDENT}",
                                "catalog.schema.table (Unity Catalog names tables in three parts)")]
Revision = Annotated[str, matching(r"[a-z0-9][a-z0-9-]{0,62}", "a revision name")]  # a Container Apps revision
Quantity = Annotated[str, matching(r"\d+(\.\d+)?(m|Mi|Gi|Ki)?", "a Kubernetes quantity")]
Digest = Annotated[str, matching(r"sha256:[0-9a-f]{64}", "sha256:<64 hex digits>")]
ModelVersion = Annotated[str, Field(coerce_numbers_to_str=True),  # YAML `3` is as good as "3"
                         matching(r"[1-9][0-9]*", "a model version number")]
WorkspacePath = Annotated[str, matching(r"/[^\s]+", "a workspace path")]
WorkspaceUrl = Annotated[str, matching(r"https://[a-z0-9.-]+", "https://<host> of the workspace")]
SubnetId = Annotated[str, matching(r"/subscriptions/.+/subnets/[^/]+", "a subnet ARM id")]
ApplicationIdUri = Annotated[str, matching(r"(api|https)://\S+", "an Application ID URI such as api://<clientId>")]


def key(doc: str, default: Any = ..., *, shown: str | None = None, factory: Any = None, **checks: Any) -> Any:
    """One config key: its README row (`doc`, and the default as `shown` where it is computed) and its checks.
    `factory(fields validated so far)` computes a default from the keys declared above it."""
    shown = shown if shown is not None else ("required" if default is ... else "none" if default is None else
                                             str(default).lower() if isinstance(default, bool) else
                                             "[]" if default == () else str(default))
    given = {"default_factory": factory, "validate_default": True} if factory else {"default": default}
    return Field(**given, description=doc, json_schema_extra={"shown": shown}, **checks)


def rule(holds: bool, message: str) -> None:
    """A rule relating keys of one section; `message` names them as @key."""
    if not holds:
        raise ValueError(message)


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              str_min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Any:
        self.rules()
        return self

    def rules(self) -> None:
        """The section's rules that relate its keys, each a `rule(...)`; checked once its keys are valid."""


# An omitted section is an empty one: its keys' defaults (or "is required"), validated with the stack's context.
SECTION: Any = Field(default_factory=dict, validate_default=True)


class ObservabilitySettings(Section):
    retention_days: int = key("Log Analytics retention, 30..730 days", 30, ge=30, le=730)
    daily_cap_gb: float | None = key("Log Analytics daily ingestion cap in GB (omit for none)", None, ge=0.023, le=10000)
    alert_emails: tuple[Email, ...] = key("e-mail addresses the action group notifies", ())
    alert_webhooks: tuple[Annotated[str, matching(r"https://[^\s]+", "an https:// URL")], ...] = key(
        "webhook URLs the action group calls", ())
    error_rate_percent: float = key("alert when the 5xx share of requests exceeds this, 0.1..100: the app's 5xx and, on "
                                    "Container Apps, those the ingress returned itself; on AKS also the threshold of the "
                                    "Prometheus 5xx-share alert", 5, ge=0.1, le=100)
    p95_latency_ms: float = key("alert when the p95 scoring latency (ms, from the request log) exceeds this", 250,
                                ge=1, le=60000)
    restart_threshold: int = key("alert when containers restart at least this often in the window", 3, ge=1, le=1000)
    window_minutes: int = key("alert evaluation window in minutes, 5..1440", 15, ge=5, le=1440)
    no_traffic_minutes: int = key("alert when no request is logged for this many minutes; 0 = no alert", 0, ge=0,
                                  le=1440)
    alert_severity: int = key("severity of the alert rules, 0 (critical) .. 4 (verbose)", 2, ge=0, le=4)
    # The safe default in every environment: a team that wants personal values in its log (and governs who reads
    # it for how long) says so. The modes are serving/scoring/privacy.py's MODES (tests/infra/test_settings.py).
    request_log_personal: Literal["drop", "keep", "pseudonymise"] = key(
        "the request log's copy of the columns the model's contract marks personal: drop (left out), keep (logged "
        "as sent: the log then holds personal data) or pseudonymise (a keyed HMAC under requestLogPseudonymKey); "
        "docs/reference/request-log.md, Personal data", "drop")

    def rules(self) -> None:
        rule(not 0 < self.no_traffic_minutes < 5,
             f"@noTrafficMinutes must be 0 (no alert) or 5..1440, got {self.no_traffic_minutes}")


class RegistrySettings(Section):
    name: Annotated[str, matching(r"[a-z0-9]{5,50}", "5..50 lowercase letters and digits (globally unique)")] = key(
        "globally unique ACR name, 5..50 lowercase letters and digits (set it when the default is taken)",
        shown="cr<name without '-'><environment>")
    sku: Literal["Basic", "Standard", "Premium"] = key("ACR SKU: Basic|Standard|Premium", "Basic")
    zone_redundancy: bool = key("zone-redundant registry (Premium only)", False)

    def rules(self) -> None:
        rule(not self.zone_redundancy or self.sku == "Premium", f"@zoneRedundancy needs @sku Premium, got {self.sku}")


class JobSettings(Section):
    """The training job's cluster and schedule: keys of the `databricks` section (`DatabricksSettings.job`)."""
    data_table: str = key("training table (catalog.schema.table) or a path")
    node_type: str = key("job cluster node type", "Standard_DS3_v2")
    spark_version: SparkVersion = key("job cluster Databricks Runtime ML, one whose bundled libraries infra/runtime.py "
                                      "records", runtime.DEFAULT)
    workers: int = key("job cluster workers, 0 (single node) .. 100", 0, ge=0, le=100)
    max_dbu_per_hour: float = key("the jobs' cluster policies cap a cluster at this many DBU per hour, 0.5..500", 10,
                                  ge=0.5, le=500)
    schedule: Cron | None = key("Quartz cron for scheduled training (omit for manual runs)", None)
    timezone: str = key("time zone of the schedule", "UTC")
    failure_emails: tuple[Email, ...] = key("e-mail addresses notified when the job fails", ())
    timeout_seconds: int = key("job timeout in seconds, 300..86400", 7200, ge=300, le=86400)


class BatchSettings(Section):
    """The scheduled batch scoring job (serving/batch.py on the job cluster): `databricks.batch`."""
    input_table: Table = key("the batch scoring job's input: scored with the model version this stack serves (omit "
                             "databricks.batch for no batch job)")
    output_table: Table = key("where the job writes predictions, each run's rows as its partition: the row's ids "
                              "(those of the contract the model version carries), the prediction, model name and version, "
                              "source version, scored_at, scoring run id (the job creates it and owns it)")
    rejects_table: Table = key("where the job writes rows it could not score, with every reason and the row as JSON")
    # idColumns: any name with "key" in it (keys, keyColumns) reads as a credential to secret scanners.
    id_columns: tuple[Annotated[str, matching(IDENT, "a column name")], ...] = key(
        "only for a model version that carries no contract (one trained elsewhere): the input's id column(s); a "
        "version trained here names its own (its contract's ids)", ())
    schedule: Cron = key("Quartz cron of the batch job", "0 0 2 * * ?", shown="0 0 2 * * ? (02:00 every day)")
    timezone: str = key("Java/IANA time zone of the schedule", "UTC")
    paused: bool = key("declare the batch job with its schedule paused", False)
    timeout_seconds: int = key("batch job timeout in seconds, 300..86400", 7200, ge=300, le=86400)

    def rules(self) -> None:
        rule(len({t.lower() for t in self.tables}) == 3, "@inputTable, @outputTable and @rejectsTable must be three "
             f"different tables, got {', '.join(self.tables)}")
        zones = zoneinfo.available_timezones()
        rule(not zones or self.timezone in zones,
             f"@timezone is {self.timezone!r}; it must be an IANA time zone such as UTC or Europe/Amsterdam")

    @property
    def tables(self) -> tuple[str, str, str]:
        return self.input_table, self.output_table, self.rejects_table


class DatabricksSettings(JobSettings):
    existing_workspace_url: WorkspaceUrl | None = key("use this workspace (https://adb-...) instead of creating one", None)
    existing_workspace_resource_id: Annotated[str, matching(r"/subscriptions/.+", "an ARM resource id")] | None = key(
        "ARM id of the existing workspace (for Azure auth)", None)
    model_registry: Literal["unityCatalog", "workspace"] = key("where models are registered: unityCatalog|workspace",
                                                               "unityCatalog")
    catalog: Annotated[str, matching(IDENT, "a catalog identifier")] | None = key(
        "Unity Catalog catalog of the registered model (unityCatalog only)", None, shown="required for unityCatalog")
    schema_: Annotated[str, matching(IDENT, "a schema identifier")] | None = key(
        "Unity Catalog schema of the registered model (unityCatalog only)", None, alias="schema",
        shown="required for unityCatalog")
    create_catalog: bool = key("declare the catalog (isolated, bound to this stack's workspace) and the schema; false: "
                               "use existing ones by name (unityCatalog only)", False)
    code_volume: Annotated[str, matching(IDENT, "a volume identifier")] = key(
        "Unity Catalog volume in catalog.schema that holds the jobs' wheel (unityCatalog only)",
        shown="<name with '_' for '-'>_job_code")
    job_principal: AppId | None = key("application id of an existing service principal the jobs run as (omit: the "
                                      "stack declares <name>-jobs-<environment>)", None)
    deployer: Deployer = key("who runs `pulumi up` for this stack, as Databricks knows it: a service principal's "
                             "application id (CI's DATABRICKS_CLIENT_ID) or a user name (e-mail). It alone manages the "
                             "jobs' principal and the stack's folder, reads the model, and owns it where a promotion "
                             "writes it; named, not looked up, so a second identity running `up` (a preview) changes "
                             "nothing")
    preview_reader: AppId | None = key("application id of CI's pull-request preview identity: a member of this workspace "
                                       "that reads the model version a preview packages (EXECUTE on the model)", None)
    account_id: Annotated[str, matching(UUID, "an account id (a UUID)")] | None = key(
        "Azure Databricks account id (account console): names the rule set that lets the deployer run jobs as the "
        "jobs' principal (Service Principal User)", None, shown="required unless jobPrincipal")
    promotion_readers: tuple[AppId, ...] = key(
        "application ids of the deployers of stacks that promote this stack's model versions (prod's CI): each may "
        "read the registered model, nothing else", ())
    storage_root: Annotated[str, matching(r"abfss://[^@\s]+@[^/\s]+\.dfs\.core\.windows\.net(/\S*)?",
                                          "abfss://<container>@<account>.dfs.core.windows.net/<path>")] | None = key(
        "managed storage of the catalog the stack creates (createCatalog): a path inside an external location an admin "
        "created, on which the deployer holds CREATE MANAGED STORAGE", None, shown="required with createCatalog")
    folder: WorkspacePath = key("the stack's workspace folder (the jobs' principal manages it, workspace users read it): "
                                "it holds the experiments and, with the workspace registry, the wheel; never under "
                                "/Shared, where every user may manage everything", shown="/<name>/<environment>")
    experiment: Annotated[str, matching(r"/.+", "a workspace path")] = key(
        "MLflow experiment path, inside folder (the drift job's runs go to <experiment>-drift)",
        shown="<folder>/<name>-<environment>")
    files_root: WorkspacePath = key("workspace folder of the jobs' wheel, inside folder (workspace registry only)",
                                    shown="<folder>/code")
    batch: BatchSettings | None = None  # the batch scoring job's keys (databricks.batch.*); None: no batch job

    def rules(self) -> None:
        rule(not self.unity_catalog or None not in (self.catalog, self.schema_),
             f"@{'catalog' if self.catalog is None else 'schema'} is required with @modelRegistry unityCatalog (the "
             "registered model's catalog and schema)")
        rule(bool(self.job_principal or self.account_id), "@accountId is required when the stack declares the jobs' "
             "service principal (no @jobPrincipal): the deployer's Service Principal User role on it lives in the account")
        for name, value in (("promotionReaders", self.promotion_readers), ("createCatalog", self.create_catalog)):
            rule(not value or self.unity_catalog, f"@{name} needs @modelRegistry unityCatalog, got {self.model_registry}")
        rule(not self.existing_workspace_resource_id or bool(self.existing_workspace_url),
             "@existingWorkspaceResourceId needs @existingWorkspaceUrl too")
        rule(not self.create_catalog or bool(self.storage_root), "@createCatalog needs @storageRoot: a catalog the stack "
             "creates needs managed storage (a metastore created with Unity Catalog's automatic enablement has none)")
        rule(not (self.folder + "/").startswith("/Shared/"), f"@folder is {self.folder!r}; it must not be under /Shared "
             "(every workspace user may manage what is there)")
        for name, path in (("experiment", self.experiment), ("filesRoot", self.files_root)):
            rule(path.startswith(self.folder.rstrip("/") + "/"), f"@{name} is {path!r}; it must be inside @folder "
                 f"({self.folder}), whose permissions the stack declares")

    @property
    def schema(self) -> str | None:  # type: ignore[override]  # BaseModel.schema is pydantic v1's, deprecated
        return self.schema_

    @property
    def unity_catalog(self) -> bool:
        return self.model_registry == "unityCatalog"

    @property
    def job(self) -> JobSettings:
        """The training job's keys (these settings extend them)."""
        return self


class DriftSettings(Section):
    """The scheduled drift job (monitoring/drift.py on Databricks) of every stack."""
    schedule: Cron = key("Quartz cron of the stack's Databricks drift job", "0 0 0/6 * * ?",
                         shown="0 0 0/6 * * ? (every 6 hours)")
    paused: bool = key("declare the drift job with its schedule paused (runs only when started by hand)", False)
    node_type: str = key("node type of the drift job's single-node cluster: a KQL query and a PSI over at most a "
                         "window of requests, not training (databricks.nodeType)", "Standard_F4s")
    window_hours: float = key("the drift job compares the requests of the last N hours with the training baseline, "
                              "1..720", 24, ge=1, le=720)
    psi_threshold: float = key("a column drifts when its PSI exceeds this, 0.01..10", 0.2, ge=0.01, le=10)
    p_value: float = key("... and its chi-square p-value is below this, 0.0001..0.5", 0.01, ge=0.0001, le=0.5)
    min_records: int = key("fewer records of a model version in the window = not enough data, 1..1000000", 200, ge=1,
                           le=1_000_000)
    secret_scope: Annotated[str, matching(r"[A-Za-z0-9_.@-]{1,128}", "a Databricks secret scope name")] = key(
        "Databricks secret scope the stack declares for the drift job's Application Insights connection string (only "
        "the jobs' principal may read it)", shown="<name>-<environment>")


if TYPE_CHECKING:
    from training.contract import Contract

    Granularity = str
else:  # the granularities, as choices (an error names them)
    Granularity = Literal[tuple(GRANULARITIES)]


class QualitySettings(Section):
    """The quality loop on Databricks (docs/model-quality.md): the inference table, its monitor and the quality job."""
    labels_table: Table | None = key(
        "the labels table (catalog.schema.table): the contract's ids, the target and known_at, written when outcomes "
        "become known; it exists before `up` (the stack grants the jobs SELECT on it). Omit it and the quality job "
        "fills the inference table and says each run that it has no labels (nothing is scored on quality)", None)
    inference_table: Annotated[str, matching(IDENT, "a table identifier")] = key(
        "the inference table's name in databricks.catalog.schema (the stack declares it: one row per prediction, "
        "Change Data Feed on)", "inference_log")
    window: Granularity = key(
        f"a window of time the quality is judged by, and the monitor's granularity: {' or '.join(GRANULARITIES)}",
        "1 day")
    label_horizon_days: int | None = key(
        "a label applies to the predictions of its ids scored within this many days before its outcome was known, "
        "1..3650 (omit: every one scored before; set it where the same ids are scored again and again, as a "
        "portfolio scored nightly)", None, ge=1, le=3650)
    windows: int = key("labelled windows in a row below the rule to retrain, 1..100", 3, ge=1, le=100)
    margin: float | None = key("retrain also when a version is worse than at its approval by more than this, "
                               "0..1 (omit: the gate's floor only)", None, ge=0, le=1)
    min_labelled: int = key("labels a window needs to be judged, 1..1000000", 50, ge=1, le=1_000_000)
    drift_windows: int = key("windows in a row with drift to retrain, 1..100", 3, ge=1, le=100)
    readers: tuple[Annotated[str, matching(r"[^\s,][^,]*", "a principal: a group, a user name or an application id")], ...] = key(
        "principals (account groups, users, application ids) who read what the loop computes: SELECT on the inference "
        "table and the monitor's metric tables, USE_CATALOG and USE_SCHEMA on the stack's schema", ())
    retention_days: int = key("days a prediction stays in the inference table (the job deletes older ones: it holds "
                              "the request log's columns, pseudonymised ids included, longer than the log), 30..3650",
                              730, ge=30, le=3650)
    schedule: Cron = key("Quartz cron of the quality job", "0 0 7 * * ?", shown="0 0 7 * * ? (07:00 every day)")
    monitor: bool = key("declare the Lakehouse monitor (its refreshes need serverless compute in the workspace's "
                        "region: false where there is none; the table, the job and the alert stay)", True)
    monitor_schedule: Cron = key("Quartz cron of the monitor's refresh: after the quality job's run, so it sees that "
                                 "run's rows and labels", "0 0 9 * * ?", shown="0 0 9 * * ? (09:00 every day)")
    paused: bool = key("declare the quality job paused and the monitor without a schedule (refreshed when asked)",
                       False)
    warehouse_id: Annotated[str, matching(r"[0-9a-f]{16}", "a SQL warehouse id (16 hex digits)")] | None = key(
        "SQL warehouse that runs the inference table's DDL and the monitor's dashboard (omit: the stack declares a "
        "2X-Small serverless one that stops after 10 idle minutes)", None)


class ModelSettings(Section):
    short_name: Annotated[str, matching(r"[A-Za-z0-9_][A-Za-z0-9_-]*", "letters, digits, '_' or '-' (no dots: the "
                                        "catalog and schema come from databricks.*)")] = key(
        "registered model name (unityCatalog: <name> inside catalog.schema)", alias="name",
        shown="<name> with '_' for '-'")
    module: Annotated[str, matching(naming.MODULE.pattern, "models.<module> (a module of the models package)")] = key(
        "the model's module, imported by the jobs (--model-module): its contract, how it is built and its gate",
        shown="models.<name with '_' for '-'>")
    alias: Annotated[str, matching(r"[A-Za-z0-9_-]+", "an MLflow alias (letters, digits, _ -)")] = key(
        "alias the stack serves", "champion")
    # No fallback to $MLFLOW_TRACKING_URI: what a stack deploys must not depend on the deployer's shell.
    tracking_uri: str = key("MLflow tracking URI the program resolves the alias with; `databricks` is always the "
                            "stack's own workspace (never $DATABRICKS_HOST)", "databricks")
    registry_uri: str | None = key("MLflow registry URI", None,
                                   shown="databricks-uc for unityCatalog, else the tracking URI")
    allow_bootstrap: bool = key("with no version yet, deploy without image and workload instead of failing", True)
    version: ModelVersion | None = key("the registered version to serve instead of the one @alias names (set by "
                                       "scripts/release.py, which resolves the alias once per release)", None)
    _full_name: str = PrivateAttr("")

    def model_post_init(self, context: Any) -> None:
        catalog_schema = context.get("catalog_schema") if context else None
        self._full_name = f"{catalog_schema}.{self.short_name}" if catalog_schema else self.short_name

    def rules(self) -> None:
        rule(module_path(self.module) is not None, f"@module is {self.module!r}: no such module in this repository "
             f"({'/'.join(self.module.split('.'))}.py); a model module declares the contract, build and gate "
             "(training/contract.py)")

    @property
    def full_name(self) -> str:
        """The name MLflow knows: catalog.schema.name with Unity Catalog."""
        return self._full_name

    @property
    def uri(self) -> str:
        """What the stack serves: the pinned version, else the version the alias names."""
        return f"models:/{self.full_name}/{self.version}" if self.version else f"models:/{self.full_name}@{self.alias}"

    @property
    def in_stack_workspace(self) -> bool:
        """`databricks` URIs: the registry of the stack's own workspace (located by infra.model_source)."""
        return self.tracking_uri == "databricks"


class ImageSettings(Section):
    repository: Annotated[str, matching(r"[a-z0-9]+([._/-][a-z0-9]+)*", "a lowercase repository path")] = key(
        "repository inside the registry", shown="<name>-scoring")
    base_image: Annotated[str, matching(r"[^\s@]+@sha256:[0-9a-f]{64}", "pinned by digest, name@sha256:<64 hex> (a "
                                        "tag can be moved)")] = key(
        "BASE_IMAGE build argument of serving/Dockerfile, pinned by digest (name@sha256:...)", DEFAULT_BASE_IMAGE,
        shown="serving/Dockerfile's default, python:3.11-slim@sha256:90744cff...")
    wheelhouse: bool = key("ship every wheel in the build context (hermetic build)", True)
    context_dir: str = key("where the build context is assembled", shown=".local/pulumi/<stack>/context")


class RevisionWeight(Section):
    revision: Revision = key("revision name")
    weight: int = key("% of the app's traffic", ge=0, le=100)


class ContainerAppSettings(Section):
    cpu: float = key("vCPU per replica, 0.25..4 in steps of 0.25", 0.5, ge=0.25, le=4)
    memory_gi: float = key("memory per replica in Gi, 2 x cpu", shown="1.0", ge=0.5, le=8,
                           factory=lambda above: above.get("cpu", 0.5) * 2)
    min_replicas: int = key("minimum replicas, 0..30", 1, ge=0, le=30)
    max_replicas: int = key("maximum replicas, minReplicas..300", shown="3", ge=1, le=300,
                            factory=lambda above: max(3, above.get("min_replicas", 1)))
    concurrency: int = key("concurrent requests per replica before scaling out", 20, ge=1, le=1000)
    zone_redundant: bool = key("zone-redundant managed environment (needs infrastructureSubnetId)", False)
    infrastructure_subnet_id: SubnetId | None = key("subnet (ARM id, /23 or larger) of the managed environment", None)
    latest_weight: int = key("traffic % to the newest revision", 100, ge=0, le=100)
    pinned_revisions: tuple[RevisionWeight, ...] = key("[{revision, weight}] older revisions keeping traffic; weights "
                                                       "sum to 100", ())
    stable_revision: Revision | None = key(
        "a release in progress (set by scripts/release.py from serving_revision): this revision, labelled stable, keeps "
        "100 - latestWeight %; the new one is labelled candidate (URL: candidate_url)", None)
    stable_model_version: ModelVersion | None = key(
        "with stableRevision (set by scripts/release.py from batch_model_version): the registered version the stable "
        "revision serves; the batch job keeps it, and a promotion target's registry alias stays on it, until the "
        "release completes", None)
    release_steps: tuple[int, ...] = key("traffic % the candidate takes in turn after its smoke test passed, each step "
                                         "smoke-tested before the next, then 100 (scripts/release.py); [] moves all "
                                         "traffic at once", ())

    @model_validator(mode="before")
    @classmethod
    def _release(cls, data: Any) -> Any:
        """During a release the stable revision keeps what the candidate does not take."""
        if not isinstance(data, Mapping) or not data.get("stableRevision"):
            return data
        rule(not data.get("pinnedRevisions"), "@stableRevision and @pinnedRevisions exclude each other: a release "
             "keeps one stable revision beside the candidate")
        latest = data.get("latestWeight", 100)
        if not isinstance(latest, int | float) or isinstance(latest, bool):
            return data  # the latestWeight error says what is wrong
        return {**data, "pinnedRevisions": [{"revision": data["stableRevision"], "weight": int(100 - latest)}]}

    def rules(self) -> None:
        rule(self.cpu * 4 == int(self.cpu * 4), f"@cpu must be a multiple of 0.25 in 0.25..4, got {self.cpu}")
        rule(self.memory_gi == self.cpu * 2,  # Consumption profile: fixed 1 vCPU : 2 Gi combinations
             f"@memoryGi must be 2 x cpu ({self.cpu * 2}) on the Consumption profile, got {self.memory_gi}")
        rule(self.max_replicas >= max(1, self.min_replicas),
             f"@maxReplicas must be a number in {max(1, self.min_replicas)}..300, got {self.max_replicas}")
        rule(not self.zone_redundant or bool(self.infrastructure_subnet_id),
             "@zoneRedundant needs @infrastructureSubnetId (Azure requires a VNet)")
        total = self.latest_weight + sum(p.weight for p in self.pinned_revisions)
        rule(total == 100, f"@latestWeight + @pinnedRevisions weights must sum to 100, got {total}")
        rule(self.stable_model_version is None or self.stable_revision is not None,
             "@stableModelVersion goes with @stableRevision: it is what the stable revision serves during a release")
        steps = list(self.release_steps)
        rule(all(0 < step < 100 for step in steps) and sorted(set(steps)) == steps, "@releaseSteps must be increasing "
             f"traffic percentages between 1 and 99 (e.g. [10, 50]; 100 comes last by itself), got {steps}")


class AksSettings(Section):
    node_vm_size: str = key("node pool VM size", "Standard_D2s_v5")
    node_count: int = key("node pool size (minimum with autoscaling), 1..100", 1, ge=1, le=100)
    max_node_count: int = key("autoscaler maximum; equal to nodeCount = no autoscaling", shown="nodeCount", ge=1, le=1000,
                              factory=lambda above: above.get("node_count", 1))
    zones: tuple[Annotated[str, matching(r"[1-3]", "an availability zone 1, 2 or 3")], ...] = key(
        "availability zones of the node pool", ())
    sku_tier: Literal["Free", "Standard"] = key("AKS control plane tier: Free|Standard", "Free")
    kubernetes_version: Annotated[str, matching(r"\d+\.\d+(\.\d+)?", "like 1.33")] | None = key(
        "Kubernetes version (omit for the region default)", None)
    namespace: Annotated[str, matching(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", "a DNS label")] = key(
        "namespace of the scoring service", "scoring")
    service_type: Literal["LoadBalancer", "ClusterIP"] = key("LoadBalancer|ClusterIP", "LoadBalancer")
    replicas: int = key("Deployment replicas (HPA minimum), 1..50", 1, ge=1, le=50)
    max_replicas: int = key("HPA maximum, replicas..100", shown="3", ge=1, le=100,
                            factory=lambda above: max(3, above.get("replicas", 1)))
    cpu_request: Quantity = key("container CPU request", "250m")
    cpu_limit: Quantity = key("container CPU limit", "1")
    memory_request: Quantity = key("container memory request", "512Mi")
    memory_limit: Quantity = key("container memory limit", "1Gi")
    target_cpu_percent: int = key("HPA target CPU utilisation, 10..95", 70, ge=10, le=95)

    def rules(self) -> None:
        for name, value, low, high in (("maxNodeCount", self.max_node_count, self.node_count, 1000),
                                       ("maxReplicas", self.max_replicas, self.replicas, 100)):
            rule(value >= low, f"@{name} must be a number in {low}..{high}, got {value}")


class AuthSettings(Section):
    """Who may call the scoring endpoint. The API's app registration lives outside the stack (pulumi-azuread is not a
    dependency): its ids come from config."""
    mode: Literal["entra", "internal", "anonymous"] = key(
        "who may call the scoring endpoint. containerapps: entra (Container Apps built-in authentication: only a token "
        "of a listed client application for the API's app registration), internal (the environment has no public "
        "endpoint: a VNet-internal load balancer in containerApp.infrastructureSubnetId) or anonymous (needs "
        "anonymousReason); aks: internal only (an internal load balancer or ClusterIP, never a public one)", "entra",
        shown="entra on containerapps, internal on aks")
    tenant_id: Annotated[str, matching(UUID, "an Entra tenant id (a UUID)")] | None = key(
        "Entra tenant (directory) id that issues the tokens (entra)", None, shown="required for entra")
    client_id: Annotated[str, matching(UUID, "the API app registration's application id (a UUID)")] | None = key(
        "application (client) id of the API's app registration, created outside the stack (entra)", None,
        shown="required for entra")
    audience: ApplicationIdUri | None = key("token audience the API accepts (its Application ID URI)",
                                            shown="api://<clientId>",
                                            factory=lambda above: f"api://{above['client_id']}" if above.get("client_id")
                                            else None)
    allowed_client_applications: tuple[Annotated[str, matching(UUID, "a client application's application (client) id "
                                                                     "(a UUID)")], ...] = key(
        "application (client) ids whose tokens are accepted, CI's smoke-test identity included; nobody else gets in "
        "(entra)", (), shown="required for entra")
    anonymous_reason: str | None = key("why this stack serves without authentication (anonymous only; the policy pack "
                                       "still refuses an anonymous public endpoint)", None)

    def rules(self) -> None:
        if self.entra:
            for name, value in (("tenantId", self.tenant_id), ("clientId", self.client_id)):
                rule(value is not None, f"@{name} is required with @mode entra (set it in Pulumi.<stack>.yaml)")
            rule(bool(self.allowed_client_applications), "@allowedClientApplications must list at least one client "
                 "application id with @mode entra (CI's smoke-test identity at least): an empty list would let any "
                 "application of the tenant in")
        rule(self.mode != "anonymous" or bool(self.anonymous_reason), "@mode anonymous needs @anonymousReason: say why "
             "this endpoint may serve the model's predictions to anyone")
        rule(not self.anonymous_reason or self.mode == "anonymous",
             f"@anonymousReason is only for @mode anonymous, got {self.mode}")

    @property
    def entra(self) -> bool:
        return self.mode == "entra"

    @property
    def issuer(self) -> str:
        return f"https://login.microsoftonline.com/{self.tenant_id}/v2.0"


MIB = 1024 * 1024
# What a container holds, in MiB, measured as RSS with the example model (issue 21's audit; again 2026-12-06, uvicorn
# at rest): with several workers the supervisor (40: it imports numpy, msgspec and orjson through scoring.settings)
# and multiprocessing's resource tracker (12); one worker runs in the supervisor's process. A worker at rest per
# runtime (the app, its runtime's libraries and the model): onnx 97; sklearn 224 with pandas, scikit-learn and skops;
# pyfunc at least that. A request body is held whole while it arrives, and its parse holds about 50 times the body as
# Python objects (serving/scoring/settings.py: 4 MiB of `{},` took 210 MiB). infra/program.py checks again with the
# runtime the image's manifest names; the settings check the smallest, which every model needs.
SUPERVISOR_MIB = 52
Runtime = Literal["onnx", "sklearn", "pyfunc"]  # what a model version's image runs it on (serving/compile.py)
WORKER_MIB = {"onnx": 97, "sklearn": 224, "pyfunc": 224}
PARSE_FACTOR = 50
SMALLEST_RUNTIME = "onnx"
POD_TMPFS_MIB = 64  # AKS: the pod's /tmp (infra/k8s_manifests.py, emptyDir in memory) counts against its limit
# The example model's largest valid record, twice over (serving/scoring/settings.py sizes MAX_BODY_BYTES for 1000).
BODY_BYTES_PER_RECORD = MAX_BODY_BYTES // 1000
_QUANTITY_MIB = {"": 1 / MIB, "m": 1 / MIB / 1000, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024}


def quantity_mib(quantity: str) -> float:
    """A Kubernetes memory quantity (the Quantity pattern's suffixes) in MiB."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Mi|Gi|Ki)?", quantity).groups()  # type: ignore[union-attr]
    return float(number) * _QUANTITY_MIB[unit or ""]


class ServingSettings(Section):
    target: Literal["containerapps", "aks"] = key("serving platform: containerapps|aks", "containerapps")
    web_concurrency: int = key("uvicorn workers per container, 1..16", 1, ge=1, le=16)
    max_records: int = key("largest /predict batch, 1..10000", 1000, ge=1, le=10000)
    max_body_bytes: int = key(
        "largest request body in bytes, 1024..67108864: a longer one is answered 413 before it is read. Size it for "
        "maxRecords of your model's records: their compact JSON with every value at its longest, twice over (indented "
        "JSON; the example model: 0.8 MB per 1000 records). The default does that for the example's records",
        shown=f"{BODY_BYTES_PER_RECORD} x maxRecords, at least {MAX_BODY_BYTES}", ge=1024, le=64 * MIB,
        factory=lambda above: max(MAX_BODY_BYTES, BODY_BYTES_PER_RECORD * above.get("max_records", 1000)))
    max_in_flight: int = key("scoring requests a worker takes at once, 1..10000 (more are answered 503 with "
                             "Retry-After): each may hold a body of maxBodyBytes, so the container's memory bounds it: "
                             f"webConcurrency x (worker + (maxInFlight + {PARSE_FACTOR}) x maxBodyBytes) + supervisor "
                             "must fit", MAX_IN_FLIGHT, ge=1, le=10_000)
    body_timeout_seconds: int = key("seconds a request body may take to arrive whole, 1..600: then it is answered 408",
                                    BODY_TIMEOUT_S, ge=1, le=600)
    container_app: ContainerAppSettings = SECTION
    aks: AksSettings = SECTION
    auth: AuthSettings = SECTION

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Never anonymous by default: entra on Container Apps, an internal load balancer on AKS."""
        if not isinstance(data, Mapping) or not isinstance(auth := data.get("auth") or {}, Mapping) or \
                not (allowed := AUTH_MODES.get(str(data.get("target", "containerapps"))) or ()):
            return data  # not an object, or a target that is not a choice: its own error says so
        rule(auth.get("mode", allowed[0]) in allowed, f"@auth.mode is {auth.get('mode')!r}; allowed values: "
             f"{', '.join(allowed)}")
        return {**data, "auth": {"mode": allowed[0], **auth}}

    def rules(self) -> None:
        rule(self.auth.mode != "internal" or self.target != "containerapps" or
             bool(self.container_app.infrastructure_subnet_id), "@auth.mode internal needs "
             "serving.containerApp.infrastructureSubnetId: an internal environment lives in a VNet subnet (Azure "
             "refuses it without one)")
        self.check_memory(SMALLEST_RUNTIME)

    def check_memory(self, runtime: str) -> None:
        """What the bodies a container may hold, their parses and its processes take fits its memory (the OOM killer
        takes the whole container, the requests of every worker in it)."""
        body, worker = self.max_body_bytes / MIB, WORKER_MIB.get(runtime, max(WORKER_MIB.values()))
        supervisor = SUPERVISOR_MIB if self.web_concurrency > 1 else 0
        need = supervisor + self.web_concurrency * (worker + (self.max_in_flight + PARSE_FACTOR) * body)
        if self.target == "aks":
            memory, memory_key, need = quantity_mib(self.aks.memory_limit), "@aks.memoryLimit", need + POD_TMPFS_MIB
        else:
            memory, memory_key = self.container_app.memory_gi * 1024, "@containerApp.memoryGi"
        rule(need <= memory, f"@webConcurrency ({self.web_concurrency}) x (a {runtime} worker ~{worker} MiB + "
             f"(@maxInFlight {self.max_in_flight} + {PARSE_FACTOR} for a parse) x @maxBodyBytes {body:.1f} MiB) + the "
             f"supervisor {supervisor} MiB{f' + /tmp {POD_TMPFS_MIB} MiB' if self.target == 'aks' else ''} needs "
             f"{need:.0f} MiB, more than {memory_key} ({memory:.0f} MiB): lower @maxInFlight, @maxBodyBytes or "
             "@webConcurrency, or give the container more memory")

    @property
    def port(self) -> int:
        return CONTAINER_PORT


def check_memory(s: StackSettings, runtime: str) -> None:
    """The memory rule again with the runtime the image's model runs on (known once the build context is assembled)."""
    try:
        s.serving.check_memory(runtime)
    except ValueError as error:
        raise ConfigError(named_keys(str(error), ("serving",)) +
                          f" (the model version this stack serves runs on the {runtime} runtime)") from None


class PromotionSettings(Section):
    """Where a promotion target (prod) takes its artifact from; `source_stack` None = this stack builds itself."""
    # Only the name: the organization is the engine's (pulumi.get_organization()), so no placeholder organization
    # can reach a StackReference that would only work on one backend.
    source_stack: Annotated[str, matching(r"[A-Za-z0-9_.-]+", "the source stack's name only, such as staging (the "
                                          "organization and project are this stack's own)")] | None = key(
        "name of the stack of this project (e.g. staging; the organization and project are this stack's own) whose "
        "tested image digest and model version this stack deploys; set = this stack never builds or trains", None)
    # One Unity Catalog metastore usually holds both stacks' models: read the source where this stack registers.
    source_tracking_uri: str | None = key("MLflow tracking URI the source model version is read from", None,
                                          shown="model.trackingUri")
    source_registry_uri: str | None = key("MLflow registry URI the source model version is read from", None,
                                          shown="model.registryUri")
    pinned_digest: Digest | None = key("rollback: deploy this digest (sha256:...) from this stack's registry instead of "
                                       "the source's current image", None)
    tested_digest: Digest | None = key("the image digest (sha256:...) the same workflow run's staging job deployed and "
                                       "smoke-tested; the program refuses when staging now serves another (set by CI; "
                                       "ignored while pinnedDigest is set: a rollback serves the pin)", None)
    tested_model_version: ModelVersion | None = key("the model version staging tested with testedDigest (set with it, "
                                                    "by CI)", None)
    pinned_model_version: ModelVersion | None = key("rollback: the source model version the pinned digest serves (set "
                                                    "with pinnedDigest)", None)
    tested_runtime: Runtime | None = key(
        "the runtime the image staging tested runs on (set by CI with testedDigest): this stack's memory rule runs for "
        "it before any resource changes", None)
    pinned_personal_checked: bool = key("rollback: you checked that the pinned image honours "
                                        "observability.requestLogPersonal (docs/operate.md, Roll back): an image older than its "
                                        "/ready report of it is then not refused by the smoke test; on AKS, where the "
                                        "pin serves before its smoke test, a pin without it is refused (true|false)",
                                        False)

    def rules(self) -> None:
        rule((self.tested_digest is None) == (self.tested_model_version is None), "@testedDigest and "
             "@testedModelVersion go together: staging tested one image serving one model version")
        rule((self.pinned_digest is None) == (self.pinned_model_version is None), "@pinnedDigest and "
             "@pinnedModelVersion go together: a rollback names the image and the model version it serves")
        rule(not self.pinned or self.enabled, "@pinnedDigest needs @sourceStack: only a promotion target can pin")
        rule(self.pinned or not self.pinned_personal_checked, "@pinnedPersonalChecked is about a pinned image: set it "
             "with @pinnedDigest, and remove it with the pin")

    @property
    def enabled(self) -> bool:
        return self.source_stack is not None

    @property
    def pinned(self) -> bool:
        return self.pinned_digest is not None


class Identity(Section):
    """What every name derives from (infra/naming.py): checked before the rest of the stack's keys."""
    project_name: Annotated[str, matching(r"[a-z][a-z0-9-]{0,22}[a-z0-9]", "2..24 lowercase letters, digits and '-', "
                                          "starting with a letter")] = key(
        "the project's one name (e.g. churn-risk): the model module models/<name>.py (with '_' for '-') and every "
        "resource, job, experiment, registered model and repository name derive from it (infra/naming.py)",
        alias="name")
    environment: Annotated[str, matching(r"[a-z][a-z0-9]{1,11}", "2..12 lowercase letters/digits")] = key(
        "environment name, used in tags and resource names (dev|staging|prod|...)")
    location: Annotated[str, matching(r"[a-z0-9]+", "an Azure region name such as westeurope")] = key(
        "Azure region of the stack's resource group and resources")

    @property
    def names(self) -> naming.Names:
        return naming.Names(self.project_name, self.environment, self.location)


class StackSettings(Identity):
    cost_centre: str = key("cost-centre tag on every taggable resource")
    extra_tags: dict[str, str] = key("extra tags (map) added to every taggable resource", {}, shown="{}", alias="tags")
    protect: bool = key("protect the stateful resources (resource group, registry, Log Analytics and Databricks "
                        "workspaces, registered model): `pulumi destroy` or a replacing change stops instead of "
                        "deleting them", False)
    observability: ObservabilitySettings = SECTION
    registry: RegistrySettings = SECTION
    databricks: DatabricksSettings = SECTION
    model: ModelSettings = SECTION
    image: ImageSettings = SECTION
    serving: ServingSettings = SECTION
    promotion: PromotionSettings = SECTION
    drift: DriftSettings = SECTION
    quality: QualitySettings = SECTION
    # A SecretStr: never in a repr or an error message; the program hands it on only as a secret Output.
    request_log_pseudonym_key: SecretStr | None = key(
        f"a secret, set with `pulumi config set --secret {NAMESPACE}:{PSEUDONYM_KEY} <value>` (e.g. `openssl rand "
        f"-hex 32`): the HMAC key of observability.requestLogPersonal pseudonymise, at least {MIN_PSEUDONYM_KEY_CHARS} "
        "characters. A new key gives every value a new pseudonym. Leaving pseudonymise, keep it set until that "
        "release has completed, then remove it: with drop or keep it stays declared (unused) on Container Apps, "
        "which refuses to delete a secret an active revision still refers to", None,
        shown="required for pseudonymise")
    _stack: str = PrivateAttr("")

    def rules(self) -> None:
        """The pseudonym key goes with pseudonymise: required there. With drop or keep it may stay set while a stack
        leaves pseudonymise (infra/program.py retired_secrets: Container Apps keeps it declared, unused, because
        it refuses to delete a secret the stable revision still refers to during the release)."""
        mode, secret = self.observability.request_log_personal, self.request_log_pseudonym_key
        rule(secret is not None or mode != "pseudonymise", f"@{PSEUDONYM_KEY} is required with "
             f"@observability.requestLogPersonal pseudonymise: set it with `pulumi config set --secret "
             f"{NAMESPACE}:{PSEUDONYM_KEY} <at least {MIN_PSEUDONYM_KEY_CHARS} random characters>`")
        rule(not self.quality.labels_table or self._labels_join(), "@quality.labelsTable joins labels by the contract's "
             f"ids ({', '.join(self._contract().ids) or 'none'}), and @observability.requestLogPersonal {mode} leaves "
             "none of them in the inference table (they are personal): set it to pseudonymise (with "
             f"@{PSEUDONYM_KEY}) or keep, or omit @quality.labelsTable")
        length = len(secret.get_secret_value()) if secret is not None else MIN_PSEUDONYM_KEY_CHARS
        rule(length >= MIN_PSEUDONYM_KEY_CHARS, f"@{PSEUDONYM_KEY} must be a secret of at least "
             f"{MIN_PSEUDONYM_KEY_CHARS} characters, got {length}")
        # On AKS the Deployment rolls to a pin before any smoke test can ask /ready how it logs the personal columns:
        # the operator says first that the image was checked (a preview, `make plan` and a hand-run `up` refuse too).
        rule(self.serving.target != "aks" or not self.promotion.pinned or mode == "keep"
             or self.promotion.pinned_personal_checked, "@promotion.pinnedDigest on AKS needs "
             "@promotion.pinnedPersonalChecked: true: the pin serves before its smoke test can ask how it logs the "
             "personal columns, and an image older than that report may log them whole whatever "
             "@observability.requestLogPersonal says; check the image (docs/operate.md, Roll back), then set it")

    def model_post_init(self, context: Any) -> None:
        self._stack = context["stack"]

    def _contract(self) -> Contract:
        from training import contract as contracts  # the model's module: imported only for this rule

        return contracts.load(self.model.module).contract

    def _labels_join(self) -> bool:
        """Some id of the contract reaches the inference table: labels can be joined by it."""
        contract, mode = self._contract(), self.observability.request_log_personal
        return any(name not in contract.personal or mode != "drop" for name in contract.ids)

    @property
    def stack(self) -> str:
        return self._stack

    @property
    def tags(self) -> dict[str, str]:
        return {**self.extra_tags, "environment": self.environment, "project": self.project_name,
                "cost-centre": self.cost_centre}


def module_path(module: str) -> Path | None:
    """The file of a module of this repository (models.churn_risk -> models/churn_risk.py), or None."""
    base = ROOT.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def load(env: Mapping[str, str] | None = None) -> StackSettings:
    """Read the current stack's config, the `mlops` namespace (inside a Pulumi program or under mocks)."""
    import os

    import pulumi
    from pulumi.runtime import config as runtime_config

    given = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    if stray := stack_files.misplaced(given, pulumi.get_project()):
        raise ConfigError(f"{', '.join(stray)}: this program reads {NAMESPACE}:<key>, not the Pulumi project's "
                          f"namespace ({pulumi.get_project()}); set them as `pulumi config set {NAMESPACE}:<key>` "
                          "(the stack files spell every key that way)")
    config = pulumi.Config(NAMESPACE)
    values = {k: config.get_object(k) if k == "tags" or _section_of(f) else config.get(k)
              for k, f in keys_of(StackSettings).items()}
    if values.get(PSEUDONYM_KEY) is not None and not runtime_config.is_config_secret(f"{NAMESPACE}:{PSEUDONYM_KEY}"):
        raise ConfigError(f"{NAMESPACE}:{PSEUDONYM_KEY} is in plain text in the stack's config: remove it and set it "
                          f"with `pulumi config set --secret {NAMESPACE}:{PSEUDONYM_KEY} <value>` (encrypted), and "
                          "choose a new key: the old one may have been read")
    return from_values(pulumi.get_stack(), values, os.environ if env is None else env)


def from_values(stack: str, values: Mapping[str, Any], env: Mapping[str, str]) -> StackSettings:
    """Validate already-parsed config values (top-level key -> scalar or object) into settings. `env` is the
    deployer's environment, which on purpose no longer steers what a stack deploys (see model.trackingUri).

    First `name`, `environment` and `location`, then every name they derive (infra/naming.py, each against its
    service's rule; the ones another key sets are that key's to check), then everything else."""
    raw = {k: v for k, v in values.items() if v is not None}
    if isinstance(raw.get(PSEUDONYM_KEY), Mapping) and "secure" in raw[PSEUDONYM_KEY]:
        raw[PSEUDONYM_KEY] = ENCRYPTED
    try:
        identity = Identity.model_validate({k: raw[k] for k in keys_of(Identity) if k in raw})
    except ValidationError as error:
        raise ConfigError("\n".join(explain(e) for e in error.errors(include_url=False))) from None
    names = identity.names
    sections: dict[str, Mapping[str, Any]] = {name: section if isinstance(section := raw.get(name), Mapping) else {}
                                               for name in keys_of(StackSettings)}
    overridden = {f"{section}.{key}" for section, given in sections.items() for key in given}
    aks = sections["serving"].get("target") == "aks"
    problems = names.problems(aks=aks, overridden=overridden, key=f"{NAMESPACE}:name")
    if "model.module" not in overridden and module_path(names.model_module) is None:
        problems.append(f"{NAMESPACE}:name is {names.project!r}: its model module {names.model_module} "
                        f"(models/{names.slug}.py) does not exist; write it (docs/bring-your-own-model.md) or set "
                        f"{NAMESPACE}:model.module")
    if problems:
        raise ConfigError("\n".join(problems))

    databricks, model = sections["databricks"], sections["model"]
    unity_catalog = databricks.get("modelRegistry", "unityCatalog") == "unityCatalog"
    tracking = model.get("trackingUri", "databricks")
    registry = model.get("registryUri", "databricks-uc" if unity_catalog and tracking == "databricks" else None)
    computed = {  # the config-key table shows these defaults as the `shown` of their keys
        "registry": {"name": names.registry},
        "databricks": {"folder": names.workspace_folder, "experiment": names.experiment, "filesRoot": names.files_root,
                       "codeVolume": names.code_volume},
        "drift": {"secretScope": names.secret_scope},
        "image": {"repository": names.repository, "contextDir": f".local/pulumi/{stack}/context"},
        "model": {"name": names.registered_model, "module": names.model_module, "registryUri": registry},
        "promotion": {"sourceTrackingUri": tracking, "sourceRegistryUri": registry}}
    raw.update({name: {**defaults, **sections[name]} for name, defaults in computed.items()
                if isinstance(raw.get(name, {}), Mapping)})
    catalog_schema = f"{databricks.get('catalog')}.{databricks.get('schema')}" if unity_catalog else None
    try:
        return StackSettings.model_validate(raw, context={"stack": stack, "catalog_schema": catalog_schema})
    except ValidationError as error:
        raise ConfigError("\n".join(explain(e) for e in error.errors(include_url=False))) from None


# ---- errors that name the key and what is allowed ----

def _path(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def keys_of(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A section's fields by the names the stack files use."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _section_of(info: Any) -> Any:
    """The section model a field holds (`BatchSettings | None` too), or None for a plain value."""
    return next((t for t in (info.annotation, *get_args(info.annotation))
                 if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _field(loc: tuple) -> Any:
    """The FieldInfo at `loc` (aliases, list indices skipped), or None."""
    model: Any = StackSettings
    found = None
    for part in (p for p in loc if not isinstance(p, int)):
        found = keys_of(model).get(part) if model else None
        if found is None:
            return None
        model = _section_of(found)
    return found


def named_keys(message: str, section: tuple, namespace: str = NAMESPACE) -> str:
    """A rule's message with each @key written as its full key, the key of `section` (where the rule was raised)."""
    return re.sub(r"@([A-Za-z][\w.]*)", lambda m: f"{namespace}:{_path((*section, m[1]))}", message)


def explain(error: Mapping[str, Any], namespace: str = NAMESPACE) -> str:
    """One pydantic error as this project says it: the full key first, then what is allowed."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    item = bool(loc) and isinstance(loc[-1], int)
    name = f"{namespace}:{_path(loc[:-1] if item else loc)}"
    if kind == "value_error":  # a rule of ours: @key names a key of the section it was raised in
        return named_keys(str(error["ctx"]["error"]), loc, namespace)
    if kind == "config":
        return f"{name} holds {value!r}; each item {error['msg']}" if item else f"{name} is {value!r}; it {error['msg']}"
    if kind == "missing":
        return f"{name} is required (set it in Pulumi.<stack>.yaml or with `pulumi config set --path {_path(loc)} <value>`)"
    if kind == "extra_forbidden":
        model = _section_of(_field(loc[:-1])) if loc[:-1] else StackSettings
        known = sorted(keys_of(model))
        return f"{namespace}{':' if loc[:-1] else ''}{_path(loc[:-1])}: unknown key(s) {loc[-1]}; known keys: " \
               f"{', '.join(known)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])  # pydantic's "'a', 'b' or 'c'"
        return f"{name} is {value!r}; allowed values: {', '.join(choices)}"
    if kind.startswith(("greater_than", "less_than", "int_", "float_")):
        info = _field(loc)
        bounds = bounds_of(info)
        return f"{name} must be a {'whole ' if 'int' in str(info.annotation) else ''}number" \
               f"{' in {}..{}'.format(*bounds) if len(bounds) == 2 else ''}, got {value!r}"
    if kind in ("model_type", "dict_type", "tuple_type"):
        return f"{name} must be {'a list' if kind == 'tuple_type' else 'an object (a map of keys)'}, got {value!r}"
    if kind.startswith("bool"):
        return f"{name} must be true or false, got {value!r}"
    if kind in ("string_type", "string_too_short"):
        return f"{name} must be a non-empty string, got {value!r}"
    return f"{name}: {error['msg']}, got {value!r}"


# ---- the config-key table (docs/reference/config.md) ----

def bounds_of(info: FieldInfo) -> list[Any]:
    """A number's [lowest, highest] allowed (ge, le), or [] for a field without bounds."""
    return [b for m in info.metadata if (b := getattr(m, "ge", getattr(m, "le", None))) is not None]


def fields(model: type[BaseModel] = StackSettings, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every key under `model` as its dotted path (`serving.containerApp.cpu`) with its field."""
    for name, info in keys_of(model).items():
        section = _section_of(info)
        yield from fields(section, f"{prefix}{name}.") if section else [(f"{prefix}{name}", info)]


def _shown(info: FieldInfo) -> str:
    return str(info.json_schema_extra.get("shown", "")) if isinstance(info.json_schema_extra, dict) else ""


KEYS: dict[str, tuple[str, str]] = {key: (info.description or "", _shown(info)) for key, info in fields()}
MAIN_TABLE = ("", "observability", "registry", "databricks", "model", "image", "serving", "drift", "quality")
PROMOTION_TABLE = ("promotion",)  # docs/reference/config.md, Promotion keys


def readme_table(sections: tuple[str, ...]) -> str:
    """The markdown rows of the keys under these top-level names ("" = the top-level scalars)."""
    rows = [(k, d, s) for k, (d, s) in KEYS.items() if (k.split(".")[0] if "." in k else "") in sections]
    return "\n".join(f"| `{k}` | {d.replace('|', ' or ')} | {s} |" for k, d, s in rows)


# The stack files ship GUIDs of zeros where each team puts its own (the API registration, its callers, the Databricks
# account): they validate as GUIDs, and EasyAuth would then answer 401 to everyone.
PLACEHOLDER_GUID = re.compile(r"00000000-0000-0000-0000-[0-9a-fA-F]{12}")


def placeholders(s: StackSettings) -> list[str]:
    """The keys of `s` that still hold a placeholder GUID."""
    auth = s.serving.auth
    values = {f"{NAMESPACE}:serving.auth.tenantId": auth.tenant_id, f"{NAMESPACE}:serving.auth.clientId": auth.client_id,
              f"{NAMESPACE}:databricks.accountId": s.databricks.account_id,
              f"{NAMESPACE}:databricks.deployer": s.databricks.deployer,
              f"{NAMESPACE}:databricks.previewReader": s.databricks.preview_reader}
    values |= {f"{NAMESPACE}:serving.auth.allowedClientApplications[{i}]": app
               for i, app in enumerate(auth.allowed_client_applications)}
    values |= {f"{NAMESPACE}:databricks.promotionReaders[{i}]": reader
               for i, reader in enumerate(s.databricks.promotion_readers)}
    return [key for key, value in values.items() if value and PLACEHOLDER_GUID.fullmatch(value)]


def refuse_placeholders(s: StackSettings) -> None:
    """Only where a stack is really deployed (`pulumi preview|up`, __main__.py): tests and `make plan` evaluate the
    stack files as committed, under mocks, where a placeholder is what they should show."""
    if found := placeholders(s):
        raise ConfigError(f"{', '.join(found)}: still the stack file's placeholder (a GUID of zeros); set the real "
                          "id (docs/deploy.md: 'The API's app registration', and the Databricks account console)")
