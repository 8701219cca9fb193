"""Databricks: the workspace (new or existing), Unity Catalog objects and grants, the jobs' code as one
wheel, the experiment, the registered model, the train -> gate job and the scheduled drift job.

Both jobs are python_wheel_task entry points of the wheel infra/jobwheel.py builds (mlops-train,
mlops-gate, mlops-drift), run as a dedicated service principal. The tasks hand nothing over through
task values (only notebooks can set them): both receive the job run id (`{{job.run_id}}`), train tags
the version it registers with it, and the gate looks the version up by it. Where MLflow lives is the
cluster's environment (MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI), not a task parameter, so the very
parameters declared here also run locally against a local store (tests/databricks). The batch scoring job
(mlops-batch) is declared once the program knows the version the stack serves (`declare_batch_job`). The quality
loop (`_quality`, docs/model-quality.md) is the inference table, its Lakehouse monitor and the quality job
(mlops-quality), which reads the log as drift does and may start the training job (Can Manage Run on it, no more).

Train and gate name the model's module (`--model-module`, model.module): its contract, how it is built and its
gate (metric, floor, tolerance) are the module's, not the stack's. The drift and batch jobs read the contract (the
columns, the ids) from the registered version they judge or score. Every name here derives from the config key
`name` (infra/naming.py), so two projects share one workspace and one metastore without meeting.

Why one module: every resource here lives in the one workspace behind one provider and shares the jobs'
principal, the wheel and the grants; split up, each part would take all of them as arguments.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.databricks as azure_databricks
import pulumi_databricks as databricks

from infra import jobwheel, runtime
from infra.naming import Names
from infra.registry import role_definition_id
from infra.settings import UUID, BatchSettings, DatabricksSettings, DriftSettings, ModelSettings, QualitySettings
from monitoring import delta_table
from training import contract as contracts

ROOT = Path(__file__).resolve().parent.parent
WHEEL_DIR = ROOT / ".local" / "jobwheel"
DRIFT_TIMEOUT_SECONDS = 3600
JOB_RUN_ID = "{{job.run_id}}"  # a dynamic value reference Databricks resolves in task parameters
CONNECTION_STRING_KEY = "appinsights-connection-string"
PSEUDONYM_SECRET_KEY = "request-log-pseudonym-key"  # the quality job pseudonymises the labels' ids with it
QUALITY_TIMEOUT_SECONDS = 3600
QUALITY_LOG_HOURS = 48.0  # the request log a quality run reads (then the catch-up: hours_to_read)
QUALITY_WAREHOUSE_AUTO_STOP_MINUTES = 10  # the table's DDL and the dashboard's queries are rare: stop soon after
CHANGE_DATA_FEED = "delta.enableChangeDataFeed"
RETRY_INTERVAL_MS = 60_000  # a retried task waits a minute: long enough for a transient API error to pass
SERVICE_PRINCIPAL_USER = "roles/servicePrincipal.user"  # may set the principal as a job's run_as
SERVICE_PRINCIPAL_MANAGER = "roles/servicePrincipal.manager"  # may change the principal's rule set
LOG_ANALYTICS_READER_ROLE_ID = "73c42c96-874c-492b-b04d-ab87d138a893"  # built-in Log Analytics Reader
METRICS_PUBLISHER_ROLE_ID = "3913510d-42f4-4e42-8a64-420c390055eb"  # built-in Monitoring Metrics Publisher


@dataclass(frozen=True)
class DatabricksArgs:
    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
    location: str
    names: Names  # the workspace's, the jobs', the principal's, the connector's, the credential's (infra/naming.py)
    settings: DatabricksSettings
    model: ModelSettings
    environment: str
    tags: dict[str, str]
    drift: DriftJobArgs | None = None  # None: no drift job
    quality: QualityJobArgs | None = None  # None: no inference table, monitor or quality job (needs drift's log reader)
    trains: bool = True  # False in a promotion target (prod): no training job
    wheel_dir: Path = WHEEL_DIR
    protect: bool = False  # the workspace and the registered model (its versions) survive destroy and replacement
    # The first `up` creates the workspace and nothing in it: nobody is a member of a workspace the same `up` creates
    # (GitHub OIDC federation adds no one), so every call inside it would be refused (bootstrap_message).
    workspace_only: bool = False
    # Whether this `up` declares the scoring service (staging waits for its first model in bootstrap `up`s): until it
    # does, no request log exists to read (Log Analytics creates a table with its first row: a query naming it fails),
    # so the drift and quality jobs are declared paused, not failing and e-mailing every run (audit s11 F4).
    serving: bool = True


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
    log_analytics_workspace_id: pulumi.Input[str] = ""  # ARM id: the one scope the drift identity may read
    app_insights_id: pulumi.Input[str] = ""  # ARM id: the one component the drift identity may publish to
    model_name: str = ""  # a promotion target's model: baselines come from its copies, not the source model the log names


@dataclass(frozen=True)
class QualityJobArgs:
    """What the quality loop needs besides the drift job's log reader: its settings, which columns the request log
    keeps (observability.requestLogPersonal: the inference table holds the same), and the log's pseudonym key."""
    settings: QualitySettings
    personal: str  # keep|drop|pseudonymise
    pseudonym_key: pulumi.Input[str] | None = None  # with pseudonymise: the labels' ids are pseudonymised with it


def training_job_flag(job_id: pulumi.Output[str]) -> list[pulumi.Input[str]]:
    return ["--training-job-id", job_id]


def is_service_principal(principal: str) -> bool:
    """An application id (a UUID), not a user name (an e-mail address)."""
    return re.fullmatch(UUID, principal) is not None


def acl_principal(principal: str) -> str:
    """How an account rule set names a service principal (application id) or a user (user name)."""
    return f"servicePrincipals/{principal}" if is_service_principal(principal) else f"users/{principal}"


def access(principal: pulumi.Input[str], level: str) -> databricks.PermissionsAccessControlArgs:
    """One ACL entry for a service principal (application id) or a user (user name)."""
    if isinstance(principal, str) and not is_service_principal(principal):
        return databricks.PermissionsAccessControlArgs(user_name=principal, permission_level=level)
    return databricks.PermissionsAccessControlArgs(service_principal_name=principal, permission_level=level)


def reader_access(principal: str, level: str) -> databricks.PermissionsAccessControlArgs:
    """One ACL entry for a reader: an application id, a user name (an e-mail address) or else a group."""
    if is_service_principal(principal):
        return databricks.PermissionsAccessControlArgs(service_principal_name=principal, permission_level=level)
    if "@" in principal:
        return databricks.PermissionsAccessControlArgs(user_name=principal, permission_level=level)
    return databricks.PermissionsAccessControlArgs(group_name=principal, permission_level=level)


def policy_definition(spark_version: str, node_type: str, workers: int, max_dbu_per_hour: float,
                      unity_catalog: bool) -> str:
    """A job cluster policy (Databricks' policy definition language): exactly this runtime, node type and size, a job
    cluster only, at most this many DBU per hour. A job cluster ends with its run (bounded by the job's timeout), so
    there is no autotermination to set: clusters of the all-purpose kind are refused by `cluster_type`."""
    definition: dict[str, Any] = {
        "cluster_type": {"type": "fixed", "value": "job"},
        "spark_version": {"type": "fixed", "value": spark_version},
        "node_type_id": {"type": "fixed", "value": node_type},
        "driver_node_type_id": {"type": "fixed", "value": node_type},
        "num_workers": {"type": "range", "minValue": 0, "maxValue": workers},
        "dbus_per_hour": {"type": "range", "maxValue": max_dbu_per_hour},
    }
    if unity_catalog:
        definition["data_security_mode"] = {"type": "fixed", "value": "SINGLE_USER"}
    return json.dumps(definition, sort_keys=True)


def mlflow_env(registry_uri: str) -> dict[str, str]:
    """The cluster environment that points MLflow at the workspace's tracking server and registry."""
    return {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": registry_uri}


Wanted = tuple[str, dict[str, Any], pulumi.Input[str], list[str]]  # key, securable, principal, privileges


def batch_grants(batch: BatchSettings, catalog: str, schema: str, principal: pulumi.Input[str]) -> list[Wanted]:
    """The batch job reads its input (SELECT) and creates and appends to its outputs (CREATE_TABLE on their schemas:
    a grant on a table that does not exist yet fails the `up`, and the creator owns the table it creates). Each
    catalog and schema on the way needs USE_CATALOG / USE_SCHEMA; the stack's own already has them."""
    wanted: list[Wanted] = []
    reads = batch.input_table.split(".")
    if len(reads) != 3:  # the workspace registry: tables of the workspace's Hive metastore, no Unity Catalog grants
        return wanted
    for table, privileges in ((batch.input_table, []), (batch.output_table, ["CREATE_TABLE"]),
                              (batch.rejects_table, ["CREATE_TABLE"])):
        table_catalog, table_schema, _ = table.split(".")
        slug = f"{table_catalog}-{table_schema}".replace("_", "-")
        if table_catalog != catalog:
            wanted.append((f"batch-catalog-{table_catalog}", {"catalog": table_catalog}, principal, ["USE_CATALOG"]))
        if (table_catalog, table_schema) != (catalog, schema) or privileges:
            same = (table_catalog, table_schema) == (catalog, schema)
            wanted.append(("jobs-schema" if same else f"batch-schema-{slug}", {"schema": f"{table_catalog}.{table_schema}"},
                           principal, ["USE_SCHEMA", *privileges]))
    wanted.append(("batch-input", {"table": batch.input_table}, principal, ["SELECT"]))
    return wanted


def quality_declared(args: DatabricksArgs) -> bool:
    """The quality loop needs Unity Catalog (a Delta table, a monitor) and the drift job's log reader."""
    return args.quality is not None and args.drift is not None and args.settings.unity_catalog


def quality_grants(args: DatabricksArgs, catalog: str, schema: str, principal: pulumi.Input[str]) -> list[Wanted]:
    """Who does what in the quality loop, with what right (the table's own grants come with it: _quality):
    the deployer creates the inference table in the stack's schema and the monitor, whose metric tables go to the same
    schema (CREATE_TABLE there, USE_CATALOG and USE_SCHEMA it holds as a reader); the jobs' principal reads the labels
    table (SELECT, and USE_CATALOG / USE_SCHEMA on its path where it lies outside the stack's schema)."""
    assert args.quality is not None
    wanted: list[Wanted] = [("deployer-schema", {"schema": f"{catalog}.{schema}"}, args.settings.deployer,
                             ["USE_SCHEMA", "CREATE_TABLE"])]
    labels = args.quality.settings.labels_table
    if labels:
        table_catalog, table_schema, _ = labels.split(".")
        slug = f"{table_catalog}-{table_schema}".replace("_", "-")
        if table_catalog != catalog:
            wanted.append((f"quality-catalog-{table_catalog}", {"catalog": table_catalog}, principal, ["USE_CATALOG"]))
        if (table_catalog, table_schema) != (catalog, schema):
            wanted.append((f"quality-schema-{slug}", {"schema": f"{table_catalog}.{table_schema}"}, principal,
                           ["USE_SCHEMA"]))
        wanted.append(("quality-labels", {"table": labels}, principal, ["SELECT"]))
    for n, reader in enumerate(args.quality.settings.readers):  # their tables' SELECT: _quality_readers
        wanted.append((f"quality-reader{n}-catalog", {"catalog": catalog}, reader, ["USE_CATALOG"]))
        wanted.append((f"quality-reader{n}-schema", {"schema": f"{catalog}.{schema}"}, reader, ["USE_SCHEMA"]))
    return wanted


def principal_of(identity: Any) -> str:
    """The principal id of a system-assigned identity (Azure sets it on create)."""
    if identity is None or not identity.principal_id:
        raise ValueError("the access connector has no system-assigned identity yet")
    return identity.principal_id


def deployer_privileges(catalog: str, schema: str, deployer: str, declares_model: bool) -> list[Wanted]:
    """Everything the deployer uses on the stack's catalog and schema: a databricks Grant is authoritative for its
    principal (pulumi_databricks grant.py: it OVERWRITES the principal's grants there), so a privilege left out would
    be revoked by the deployer's own Grant. MANAGE: it grants the jobs, the readers and itself there (an owner holds
    it anyway); CREATE_VOLUME: the code volume; CREATE_MODEL where it declares the model (a promotion target). Its
    reads (EXECUTE) and the quality loop's CREATE_TABLE merge in beside (_wanted_grants). Audit s11, F1 and F2."""
    schema_privileges = ["USE_SCHEMA", "MANAGE", "CREATE_VOLUME", *(["CREATE_MODEL"] if declares_model else [])]
    return [("deployer-catalog", {"catalog": catalog}, deployer, ["USE_CATALOG", "MANAGE"]),
            ("deployer-schema", {"schema": f"{catalog}.{schema}"}, deployer, schema_privileges)]


def deployers_own(wanted: Wanted, deployer: str) -> bool:
    """A Grant to the deployer on the stack's catalog or schema (one of _deployer_grants)."""
    principal, securable = wanted[2], wanted[1]
    return isinstance(principal, str) and principal == deployer and securable.keys() <= {"catalog", "schema"}


def merged(wanted: list[Wanted]) -> list[Wanted]:
    """One Grant per principal and securable, holding all its privileges: a databricks Grant is authoritative for its
    principal on its securable, so two of them for the same pair overwrite each other on every `up`."""
    found: dict[tuple[str, str | int], Wanted] = {}
    for key, securable, principal, privileges in wanted:
        pair = (repr(sorted(securable.items())), str(principal) if isinstance(principal, str) else id(principal))
        if pair in found:
            first = found[pair]
            found[pair] = (first[0], first[1], first[2], sorted({*first[3], *privileges}))
        else:
            found[pair] = (key, securable, principal, sorted(set(privileges)))
    return list(found.values())


class Databricks(pulumi.ComponentResource):
    workspace_url: pulumi.Output[str]
    run_as_rules: databricks.AccessControlRuleSet | None
    secrets: list[pulumi.CustomResource]
    job_id: pulumi.Output[str]

    def __init__(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:Databricks", name, None, opts)
        s = args.settings
        host = self._workspace(name, args)
        if args.workspace_only:
            self.job_id = self.drift_job_id = self.quality_job_id = pulumi.Output.from_input("")
            self.register_outputs({"workspace_url": self.workspace_url})
            return
        self.provider = databricks.Provider(f"{name}-provider", host=host, azure_workspace_resource_id=self.workspace_resource_id,
                                            opts=pulumi.ResourceOptions(parent=self))
        on_workspace = pulumi.ResourceOptions(parent=self, provider=self.provider)
        self._name, self._args, self._on_workspace = name, args, on_workspace
        self.batch_job: databricks.Job | None = None
        self.policies: list[pulumi.CustomResource] = []  # the jobs' cluster policies and who may use them (_cluster)
        self.job_principal = self._job_principal(name, args, on_workspace)
        self.members = self._members(name, args, on_workspace)
        self.folder = self._folder(name, args, on_workspace)
        purpose = "training" if args.trains else "promotions"
        self.experiment = databricks.MlflowExperiment(f"{name}-experiment", name=s.experiment,
                                                      description=f"{args.names.project} {purpose} ({args.environment})",
                                                      opts=self._in_folder(on_workspace))
        self.catalog = self._catalog(name, args, on_workspace)
        wanted = self._wanted_grants(args)
        # The deployer's own privileges first: the model and the code volume it creates need them (audit s11 F1).
        self.deployer_grants = self._deployer_grants(name, args, wanted, on_workspace)
        self.registered_model = self._registered_model(name, args, on_workspace)
        conflicts = runtime.conflicts(jobwheel.pins(jobwheel.REQUIRES), s.job.spark_version)
        if conflicts:  # installing them would replace the runtime's libraries underneath it
            raise ValueError(f"the jobs' requirements conflict with {s.job.spark_version}: {'; '.join(conflicts)}")
        self.wheel = jobwheel.build(args.wheel_dir, distribution=args.names.wheel_distribution,
                                    model_module=args.model.module)
        self.wheel_path, self.code = self._upload_wheel(name, args, on_workspace)
        self.grants = [*self.deployer_grants, *self._grants(name, args, wanted, on_workspace)]
        self.job = self._job(name, args, on_workspace) if args.trains else None
        self.job_id = self.job.id if self.job else pulumi.Output.from_input("")
        self.drift_job = self._drift_job(name, args, on_workspace)
        self.drift_job_id = self.drift_job.id if self.drift_job else pulumi.Output.from_input("")
        self.quality_job = self._quality(name, args, on_workspace)
        self.quality_job_id = self.quality_job.id if self.quality_job else pulumi.Output.from_input("")
        self.permissions = self._permissions(args, on_workspace)
        self.register_outputs({"workspace_url": self.workspace_url, "job_id": self.job_id, "drift_job_id": self.drift_job_id,
                               "quality_job_id": self.quality_job_id})

    def _workspace(self, name: str, args: DatabricksArgs) -> pulumi.Output[str]:
        s = args.settings
        if s.existing_workspace_url:
            self.workspace = None
            self.workspace_resource_id: pulumi.Input[str] | None = s.existing_workspace_resource_id
            self.workspace_url = pulumi.Output.from_input(s.existing_workspace_url)
            return self.workspace_url
        # Premium: Unity Catalog and cluster policies need it. The managed resource group sits beside ours.
        self.workspace = azure_databricks.Workspace(
            f"{name}-workspace", workspace_name=args.names.databricks_workspace,
            resource_group_name=args.resource_group_name,
            location=args.location, sku=azure_databricks.SkuArgs(name="premium"),
            managed_resource_group_id=pulumi.Output.from_input(args.resource_group_id).apply(lambda rg: f"{rg}-databricks"),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        self.workspace_resource_id = self.workspace.id
        self.workspace_url = self.workspace.workspace_url.apply(lambda url: url if url.startswith("https://") else f"https://{url}")
        return self.workspace_url

    def _job_principal(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """The application id the jobs run as: configured, or a service principal of their own (no workspace
        admin, no cluster creation: job clusters are created by the job, not by the principal)."""
        if args.settings.job_principal:
            self.service_principal = None
            self.run_as_rules = None
            return pulumi.Output.from_input(args.settings.job_principal)
        self.service_principal = databricks.ServicePrincipal(
            f"{name}-job-principal", display_name=args.names.jobs_principal, allow_cluster_create=False,
            databricks_sql_access=False, workspace_access=True, opts=opts)
        self.run_as_rules = self._run_as_rules(name, args, self.service_principal.application_id, opts)
        return self.service_principal.application_id

    def _may_run_as(self) -> list[pulumi.Resource]:
        """What a job with run_as waits for: the rule set that gives the deployer Service Principal User on the jobs'
        principal (the Jobs API refuses run_as without it), when the stack declares that principal."""
        return [self.run_as_rules] if self.run_as_rules is not None else []

    def _members(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> list[databricks.ServicePrincipal]:
        """The identities of other stacks' deployers (promotionReaders) and CI's preview (previewReader) as members of
        this workspace: Unity Catalog grants are account-wide, but its API answers only a workspace's members. A
        workspace admin (the deployer) adds an account service principal by its application id (identity federation);
        `force` takes over one an admin already added."""
        s = args.settings
        readers = [*((f"reader{n}", r) for n, r in enumerate(s.promotion_readers)),
                   *([("preview", s.preview_reader)] if s.preview_reader else [])]
        return [databricks.ServicePrincipal(f"{name}-member-{key}", application_id=app_id, force=True,
                                            workspace_access=True, allow_cluster_create=False,
                                            databricks_sql_access=False, opts=opts) for key, app_id in readers]

    def _folder(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
        """The stack's workspace folder, with authoritative permissions: the experiments (the training one, and the
        drift one the job creates at run time) and, with the workspace registry, the wheel live in it. Objects inherit
        their folder's permissions, and under /Shared every user may manage everything, so the folder lies outside it:
        the deployer and the jobs' principal manage it, workspace users read it (admins keep their implicit rights)."""
        s = args.settings
        folder = databricks.Directory(f"{name}-folder", path=s.folder, opts=opts)
        acl = databricks.Permissions(f"{name}-folder-permissions", directory_path=folder.path, access_controls=[
            access(s.deployer, "CAN_MANAGE"), access(self.job_principal, "CAN_MANAGE"),
            databricks.PermissionsAccessControlArgs(group_name="users", permission_level="CAN_READ")], opts=opts)
        return [folder, acl]

    def _in_folder(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=self.folder))

    def _run_as_rules(self, name: str, args: DatabricksArgs, principal: pulumi.Output[str],
                      opts: pulumi.ResourceOptions) -> databricks.AccessControlRuleSet:
        """Setting a job's run_as to a service principal needs the Service Principal User role on it, which its
        creator does not inherit from the Manager role creating gives. The rule set is authoritative, so it keeps
        the deployer's Manager role too: without it the next `up` could not update these rules. The deployer is the
        configured one (databricks.deployer), never whoever runs this program: a preview or a second identity would
        otherwise rewrite the rule set to itself, and strip the real deployer's roles if it could."""
        deployer = acl_principal(args.settings.deployer)
        account = args.settings.account_id
        rule_set = principal.apply(lambda app_id: f"accounts/{account}/servicePrincipals/{app_id}/ruleSets/default")
        return databricks.AccessControlRuleSet(
            f"{name}-job-principal-rules", name=rule_set, grant_rules=[
                databricks.AccessControlRuleSetGrantRuleArgs(role=role, principals=[deployer])
                for role in (SERVICE_PRINCIPAL_USER, SERVICE_PRINCIPAL_MANAGER)], opts=opts)

    def _catalog(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
        """With databricks.createCatalog: the catalog, isolated (only bound workspaces reach it, so another stack's
        workspace cannot write it; ISOLATED binds the workspace that creates it, this stack's, read-write, so no
        WorkspaceBinding of ours competes with that binding), with its own managed storage (databricks.storageRoot:
        a metastore Unity Catalog enabled automatically has no metastore-level storage), and the schema."""
        s = args.settings
        if not s.create_catalog:
            return []
        catalog = databricks.Catalog(f"{name}-catalog", name=s.catalog, isolation_mode="ISOLATED",
                                     storage_root=s.storage_root,
                                     comment=f"{args.names.project} ({args.environment})", properties=args.tags,
                                     opts=opts)
        schema = databricks.Schema(f"{name}-schema", catalog_name=catalog.name, name=s.schema,
                                   comment=f"{args.names.project} data, model and job code", properties=args.tags,
                                   opts=opts)
        return [catalog, schema]

    def _in_schema(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=self.catalog))

    def _created_by_deployer(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        """In the schema, after the deployer's own Grants (CREATE_VOLUME, CREATE_MODEL: _deployer_privileges)."""
        return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[*self.catalog, *self.deployer_grants]))

    def _registered_model(self, name: str, args: DatabricksArgs,
                          opts: pulumi.ResourceOptions) -> pulumi.CustomResource | None:
        s, model = args.settings, args.model
        # A renamed model (model.name) replaces this resource: retained, the old model and its versions stay in the
        # registry instead of being deleted with it. Protected stacks refuse the replacement outright.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True, protect=args.protect))
        if s.unity_catalog:
            # Owned by whoever writes versions and aliases (Unity Catalog lets only the owner or a metastore admin move
            # an alias), and owned from its creation: only a metastore admin may give a model to another principal
            # (testing/platform_rules/databricks_catalog.py, unity-catalog-model-owner-writes). Where train and gate write,
            # the jobs' principal creates it at its first registration (CREATE MODEL on the schema) and nobody declares it;
            # the readers hold EXECUTE on the schema, which its models inherit (_grants). Where the promotion writes
            # (inside this program), the deployer creates it here and owns it.
            if args.trains:
                return None
            # Its aliases (@champion, @candidate) are the promotion's and the gate's to move, never the stack's: a
            # provider that manages them (databricks/terraform-provider-databricks PR 5448) would delete them.
            return databricks.RegisteredModel(f"{name}-model", name=model.short_name, catalog_name=s.catalog,
                                              schema_name=s.schema, owner=s.deployer,
                                              comment=f"{args.names.project} model", opts=pulumi.ResourceOptions.merge(
                                                  self._created_by_deployer(opts),
                                                  pulumi.ResourceOptions(ignore_changes=["aliases"])))
        return databricks.MlflowModel(f"{name}-model", name=model.short_name, description=f"{args.names.project} model",
                                      tags=[databricks.MlflowModelTagArgs(key=k, value=v) for k, v in args.tags.items()],
                                      opts=opts)

    def _model(self) -> list[pulumi.CustomResource]:
        """The declared registered model, to depend on ([] where the jobs' principal creates it)."""
        return [self.registered_model] if self.registered_model is not None else []

    @property
    def promotion_writes_into(self) -> list[pulumi.CustomResource]:
        """What a promotion's copy writes into: its run goes to the experiment (in the folder, under the folder's
        permissions), its version to the model. Without these as dependencies a first `up` may race them (audit B2)."""
        return [self.experiment, *self.folder, *self._model()]

    def _upload_wheel(self, name: str, args: DatabricksArgs,
                      opts: pulumi.ResourceOptions) -> tuple[str, list[pulumi.CustomResource]]:
        """The wheel goes to a Unity Catalog volume (readable by grant, writable only by its owner, the deployer),
        or with the workspace registry to a workspace folder."""
        s = args.settings
        content = base64.b64encode(self.wheel.path.read_bytes()).decode()
        if s.unity_catalog:
            volume = databricks.Volume(f"{name}-code-volume", catalog_name=s.catalog, schema_name=s.schema,
                                       name=s.code_volume, volume_type="MANAGED", comment="the Databricks jobs' wheel",
                                       opts=self._created_by_deployer(opts))
            path = f"/Volumes/{s.catalog}/{s.schema}/{s.code_volume}/{self.wheel.name}"
            file: pulumi.CustomResource = databricks.File(f"{name}-wheel", path=path, content_base64=content,
                                   opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[volume])))
            return path, [volume, file]
        path = f"{s.files_root}/{self.wheel.name}"
        file = databricks.WorkspaceFile(f"{name}-wheel", path=path, content_base64=content, opts=self._in_folder(opts))
        return f"/Workspace{path}", [file]

    def _wanted_grants(self, args: DatabricksArgs) -> list[Wanted]:
        """Least privilege in Unity Catalog, one entry per principal and securable (merged). Each Grant adds one
        principal's privileges on one securable and leaves other principals' grants alone (the catalog and the training
        table are usually shared)."""
        s, model = args.settings, args.model
        if not s.unity_catalog or s.catalog is None or s.schema is None:  # settings require both with unityCatalog
            return []
        jobs = self.job_principal
        wanted: list[Wanted] = [
            ("jobs-catalog", {"catalog": s.catalog}, jobs, ["USE_CATALOG"]),
            ("jobs-schema", {"schema": f"{s.catalog}.{s.schema}"}, jobs, ["USE_SCHEMA"]),
            ("jobs-code", {"volume": f"{s.catalog}.{s.schema}.{s.code_volume}"}, jobs, ["READ_VOLUME"]),
            *deployer_privileges(s.catalog, s.schema, s.deployer, declares_model=not args.trains),
        ]
        if args.trains:
            # CREATE MODEL: the jobs' principal creates the model at its first registration, and so owns it; a three-part
            # table name: the training table (read only).
            wanted.append(("jobs-schema-model", {"schema": f"{s.catalog}.{s.schema}"}, jobs, ["CREATE_MODEL"]))
            if len(s.job.data_table.split(".")) == 3:
                wanted.append(("jobs-table", {"table": s.job.data_table}, jobs, ["SELECT"]))
        # Whoever reads the model's versions and files holds EXECUTE on it, unless it owns it (EXECUTE = read a
        # model; owning the catalog or schema does not give it): the deployer packages the version (and the model-build
        # workflow reports on it), another stack's deployer copies versions out (promotionReaders), CI's preview
        # reads what it would package (previewReader), and where the deployer owns the model, the jobs read it.
        readers = [("deployer", s.deployer), *((f"reader{n}", r) for n, r in enumerate(s.promotion_readers)),
                   *([("preview", s.preview_reader)] if s.preview_reader else [])]
        for key, reader in readers:
            wanted += [(f"{key}-catalog", {"catalog": s.catalog}, reader, ["USE_CATALOG"]),
                       (f"{key}-schema", {"schema": f"{s.catalog}.{s.schema}"}, reader, ["USE_SCHEMA"])]
            if args.trains:  # the model does not exist before the first training: EXECUTE on the schema, inherited
                wanted.append((f"{key}-schema-execute", {"schema": f"{s.catalog}.{s.schema}"}, reader, ["EXECUTE"]))
            elif key != "deployer":  # a promotion target's deployer owns the model
                wanted.append((f"{key}-model", {"model": model.full_name}, reader, ["EXECUTE"]))
        if not args.trains:  # the batch and drift jobs read the copies the deployer owns
            wanted.append(("jobs-model", {"model": model.full_name}, jobs, ["EXECUTE"]))
        if s.batch is not None:
            wanted += batch_grants(s.batch, s.catalog, s.schema, jobs)
        if quality_declared(args):
            wanted += quality_grants(args, s.catalog, s.schema, jobs)
        return merged(wanted)

    def _deployer_grants(self, name: str, args: DatabricksArgs, wanted: list[Wanted],
                         opts: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
        """The deployer's own Grants on the stack's catalog and schema (of `wanted`, _wanted_grants), before anything it
        creates there: a Grant is authoritative for its principal, so these hold every privilege the deployer uses
        there (deployer_privileges)."""
        return [self._grant(name, grant, self.catalog, opts) for grant in wanted
                if deployers_own(grant, args.settings.deployer)]

    def _grants(self, name: str, args: DatabricksArgs, wanted: list[Wanted],
                opts: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
        """Every other Grant of `wanted`: after the code volume they name (or the model), and after the deployer's own."""
        grants = []
        for grant in wanted:
            if not deployers_own(grant, args.settings.deployer):
                on = [*self.catalog, *self._model()] if grant[0].endswith("model") else [*self.catalog, *self.code]
                # ... and a member of this workspace (self.members) before the grant names it
                grants.append(self._grant(name, grant, [*on, *self.deployer_grants, *self.members], opts))
        return grants

    def _grant(self, name: str, wanted: Wanted, depends: Sequence[pulumi.Resource],
               opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
        key, securable, principal, privileges = wanted
        return databricks.Grant(f"{name}-grant-{key}", principal=principal, privileges=privileges, **securable,
                                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends)))

    def _wheel_task(self, key: str, entry_point: str, parameters: list[pulumi.Input[str]], timeout: int, cluster: str,
                    depends_on: list[str] | None = None, retries: int = 0) -> databricks.JobTaskArgs:
        return databricks.JobTaskArgs(
            task_key=key, job_cluster_key=cluster, timeout_seconds=timeout,
            max_retries=retries or None, min_retry_interval_millis=RETRY_INTERVAL_MS if retries else None,
            libraries=[databricks.JobTaskLibraryArgs(whl=self.wheel_path)],  # its Requires-Dist come with it
            depends_ons=[databricks.JobTaskDependsOnArgs(task_key=k) for k in depends_on or []] or None,
            python_wheel_task=databricks.JobTaskPythonWheelTaskArgs(package_name=self.wheel.distribution,
                                                                    entry_point=entry_point, parameters=parameters))

    def _job(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> databricks.Job:
        s, job, model = args.settings, args.settings.job, args.model
        # The model's module brings its contract, how it is built and its gate (metric, floor, tolerance): no
        # --gate-floor/--gate-tolerance here, the gate is the model's.
        common = ["--model-module", model.module, "--model-name", model.full_name, "--experiment", s.experiment,
                  "--job-run-id", JOB_RUN_ID]
        # --search spark: the hyper-parameter candidates run as Spark tasks on the cluster's workers (training/tuning.py)
        train = self._wheel_task("train", "mlops-train", ["--data", job.data_table, *common, "--environment",
                                                          args.environment, "--skip-gate", "--search", "spark"],
                                 job.timeout_seconds, "training")
        # The gate judges exactly the version this run's train task registered: it finds it by the job run id.
        # and scores it on the table's held-out split, read from the table itself: no version carries rows of people.
        # Only the gate retries: it judges the one version tagged with the run id and moves the alias to it, the same
        # outcome twice. A retried train registers a second version with that tag (the gate then refuses), a retried
        # batch appends its rows again, and drift fails on purpose on drift (exit 3), which a retry would report twice.
        gate = self._wheel_task("gate", "mlops-gate", ["--data", job.data_table, *common], job.timeout_seconds,
                                "training", depends_on=["train"], retries=1)
        return databricks.Job(
            f"{name}-job", name=args.names.job("train"), max_concurrent_runs=1,
            timeout_seconds=job.timeout_seconds, tags=args.tags, tasks=[train, gate],
            run_as=databricks.JobRunAsArgs(service_principal_name=self.job_principal),
            job_clusters=[databricks.JobJobClusterArgs(job_cluster_key="training", new_cluster=self._cluster(
                name, "train", args, env=mlflow_env("databricks-uc" if s.unity_catalog else "databricks")))],
            schedule=(databricks.JobScheduleArgs(quartz_cron_expression=job.schedule, timezone_id=job.timezone)
                      if job.schedule else None),
            email_notifications=(databricks.JobEmailNotificationsArgs(on_failures=list(job.failure_emails))
                                 if job.failure_emails else None),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=[*self.code, *self.grants, *self._may_run_as(), *self.policies, self.experiment,
                            *self._model()])))

    def _connection_string_secret(self, name: str, drift: DriftJobArgs, opts: pulumi.ResourceOptions) -> str:
        """A secret scope of this stack holding the Application Insights connection string; only the jobs'
        principal may read it. Returns the `{{secrets/...}}` reference the cluster resolves."""
        scope_name = drift.settings.secret_scope
        scope = databricks.SecretScope(f"{name}-secret-scope", name=scope_name, opts=opts)
        secret = databricks.Secret(f"{name}-secret-appinsights", scope=scope.name, key=CONNECTION_STRING_KEY,
                                   string_value=pulumi.Output.secret(drift.app_insights_connection_string), opts=opts)
        acl = databricks.SecretAcl(f"{name}-secret-acl-jobs", scope=scope.name, principal=self.job_principal,
                                   permission="READ", opts=opts)
        self.secrets = [scope, secret, acl]
        self.secret_refs = {"connection": f"{{{{secrets/{scope_name}/{CONNECTION_STRING_KEY}}}}}"}
        return self.secret_refs["connection"]

    def _log_reader(self, name: str, args: DatabricksArgs, drift: DriftJobArgs, opts: pulumi.ResourceOptions) -> str:
        """How the drift job reads Log Analytics without a client secret: an access connector's managed identity,
        Log Analytics Reader on this stack's workspace only, wrapped in a Unity Catalog service credential that
        only the jobs' principal may use. Returns the credential's name (the drift task's --service-credential)."""
        credential_name = args.names.logs_credential
        connector = azure_databricks.AccessConnector(
            f"{name}-log-reader", connector_name=args.names.access_connector, location=args.location,
            resource_group_name=args.resource_group_name, tags=args.tags,
            identity=azure_databricks.ManagedServiceIdentityArgs(type="SystemAssigned"), opts=pulumi.ResourceOptions(parent=self))
        workspace = pulumi.Output.from_input(drift.log_analytics_workspace_id)
        role = authorization.RoleAssignment(
            f"{name}-log-reader-role", principal_id=connector.identity.apply(principal_of),
            principal_type="ServicePrincipal", scope=workspace,
            role_definition_id=workspace.apply(lambda scope: role_definition_id(scope, LOG_ANALYTICS_READER_ROLE_ID)),
            description="the drift job reads this stack's request log", opts=pulumi.ResourceOptions(parent=self))
        component = pulumi.Output.from_input(drift.app_insights_id)
        publisher = authorization.RoleAssignment(
            f"{name}-drift-publisher-role", principal_id=connector.identity.apply(principal_of),
            principal_type="ServicePrincipal", scope=component,
            role_definition_id=component.apply(lambda scope: role_definition_id(scope, METRICS_PUBLISHER_ROLE_ID)),
            description="the drift job sends its record with Entra ID (local auth is off)",
            opts=pulumi.ResourceOptions(parent=self))
        credential = databricks.Credential(
            f"{name}-log-reader-credential", name=credential_name, purpose="SERVICE",
            comment="drift job: reads Log Analytics, publishes to Application Insights",
            # Usable from this stack's workspace only: OPEN would let any workspace of the metastore use it once a
            # principal there holds ACCESS. ISOLATED binds the creating workspace (the provider's, this stack's).
            isolation_mode="ISOLATION_MODE_ISOLATED",
            azure_managed_identity=databricks.CredentialAzureManagedIdentityArgs(access_connector_id=connector.id),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[role, publisher])))
        access = databricks.Grant(f"{name}-grant-jobs-log-reader", credential=credential.name, principal=self.job_principal,
                                  privileges=["ACCESS"], opts=opts)
        self.secrets += [credential, access]
        return credential_name

    def _drift_job(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> databricks.Job | None:
        """monitoring/drift.py on a schedule: exit 3 (drift) or 2 (no baseline, no log) fails the run, which
        e-mails `notify`; the drift record also goes to Application Insights, where the drift alert rule reads it."""
        self.secrets = []
        if args.drift is None:
            return None
        s, d, drift = args.settings, args.drift, args.drift.settings
        # The request log names the model and version the image was built from; in a promotion target that is the
        # source's (staging's), which this stack's jobs may not read: --model-name points at this stack's copies.
        parameters: list[pulumi.Input[str]] = [
            "--workspace-id", d.log_analytics_customer_id, "--target", d.target,
            "--app-name", d.app_name, "--namespace", d.namespace, "--window-hours", f"{drift.window_hours:g}",
            "--experiment", f"{s.experiment}-drift",
            "--psi-threshold", f"{drift.psi_threshold:g}", "--p-value", f"{drift.p_value:g}",
            "--min-records", str(drift.min_records), "--out", "/tmp/drift",
            *(["--model-name", d.model_name] if d.model_name else [])]
        connection_string = self._connection_string_secret(name, d, opts)
        credential = self._log_reader(name, args, d, opts)
        self.log_credential = credential
        parameters += ["--service-credential", credential]
        env: dict[str, pulumi.Input[str]] = {**mlflow_env(d.registry_uri),
                                             "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string}
        task = self._wheel_task("drift", "mlops-drift", parameters, DRIFT_TIMEOUT_SECONDS, "drift")
        return self._scheduled_job(name, "drift", args, task, env, drift.node_type, DRIFT_TIMEOUT_SECONDS,
                                   drift.schedule, drift.paused, self.experiment, opts)

    def _scheduled_job(self, name: str, key: str, args: DatabricksArgs, task: databricks.JobTaskArgs,
                       env: dict[str, pulumi.Input[str]], node_type: str, timeout: int, cron: str, paused: bool,
                       after: pulumi.Resource, opts: pulumi.ResourceOptions) -> databricks.Job:
        """A watching job (drift, quality): one task on a single-node cluster of its own, as the jobs' principal, on
        its schedule (paused as configured, or while the stack serves nothing: DatabricksArgs.serving), one run at a
        time; a failed run e-mails drift.notify. It waits for the code, the grants, the secrets, the right to run as
        the principal, the policies and `after` (what it reads or writes)."""
        d = args.drift
        assert d is not None
        paused = paused or not args.serving
        return databricks.Job(
            f"{name}-{key}-job", name=args.names.job(key), max_concurrent_runs=1,
            timeout_seconds=timeout, tags=args.tags, tasks=[task],
            run_as=databricks.JobRunAsArgs(service_principal_name=self.job_principal),
            job_clusters=[databricks.JobJobClusterArgs(job_cluster_key=key, new_cluster=self._cluster(
                name, key, args, workers=0, env=env, node_type=node_type))],
            schedule=databricks.JobScheduleArgs(quartz_cron_expression=cron, timezone_id=args.settings.job.timezone,
                                                pause_status="PAUSED" if paused else "UNPAUSED"),
            email_notifications=(databricks.JobEmailNotificationsArgs(on_failures=list(d.notify)) if d.notify else None),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=[*self.code, *self.grants, *self.secrets, *self._may_run_as(), *self.policies, after])))

    def _quality(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> databricks.Job | None:
        """The quality loop (docs/model-quality.md): the inference table, its Lakehouse monitor and the quality job.

        The table is declared here (a databricks.SqlTable), not created by the job as the batch job creates its outputs:
        the monitor is declared on it in the same `up`, and a monitor needs its table to exist. The deployer creates both
        and owns the table (CREATE_TABLE on the schema: _grants), which is what creating a monitor asks (the table's
        owner, USE_CATALOG, USE_SCHEMA); its refreshes write the metric tables to the same schema. The jobs' principal
        appends and labels rows (SELECT, MODIFY on the table) and reads the labels (SELECT: _grants)."""
        self.inference_table: databricks.SqlTable | None = None
        self.quality_monitor: databricks.QualityMonitor | None = None
        self.quality_warehouse: databricks.SqlEndpoint | None = None
        self.inference_writer: tuple[list[pulumi.Input[str]], dict[str, pulumi.Input[str]], list[pulumi.Resource]] = (
            [], {}, [])  # what a job that appends to the table adds: parameters, cluster env, what it waits for
        if not quality_declared(args):
            return None
        assert args.quality is not None and args.drift is not None
        s, q, d = args.settings, args.quality.settings, args.drift
        contract = contracts.load(args.model.module).contract
        full = f"{s.catalog}.{s.schema}.{q.inference_table}"
        warehouse = self._quality_warehouse(name, args, opts)
        self.inference_table = databricks.SqlTable(
            f"{name}-inference-table", catalog_name=s.catalog, schema_name=s.schema, name=q.inference_table,
            table_type="MANAGED", owner=s.deployer, warehouse_id=warehouse,
            comment=f"{args.names.project}: every prediction, online and batch, and its label once known",
            # lowercase types: the provider reads them back lowercase, and an uppercase one fails every later `up` with
            # "changing the 'type' of an existing column is not supported" (terraform-provider-databricks#3490)
            columns=[databricks.SqlTableColumnArgs(name=c.name, type=c.type.lower(), nullable=c.nullable)
                     for c in delta_table.columns(contract, args.quality.personal)],
            # Lakehouse Monitoring's inference profile reads the table incrementally through its change data feed
            properties={CHANGE_DATA_FEED: "true"},
            # A new name is a new table (the provider would otherwise rename nothing and lose track of the old one); the
            # old table, every prediction and label so far, stays in the metastore (retained), and prod's is protected.
            opts=pulumi.ResourceOptions.merge(self._in_schema(opts), pulumi.ResourceOptions(
                depends_on=self.grants, replace_on_changes=["name"], retain_on_delete=True, protect=args.protect)))
        table_grant = databricks.Grant(f"{name}-grant-jobs-inference", table=full, principal=self.job_principal,
                                       privileges=["MODIFY", "SELECT"], opts=pulumi.ResourceOptions.merge(
                                           opts, pulumi.ResourceOptions(depends_on=[self.inference_table, *self.members])))
        self.grants.append(table_grant)
        if q.monitor:
            self.quality_monitor = self._quality_monitor(name, args, contract, full, warehouse, opts)
        self._quality_readers(name, args, full, opts)
        env: dict[str, pulumi.Input[str]] = {**mlflow_env(d.registry_uri),
                                             "APPLICATIONINSIGHTS_CONNECTION_STRING": self.secret_refs["connection"]}
        scope, key_needs = d.settings.secret_scope, []
        if args.quality.personal == "pseudonymise" and args.quality.pseudonym_key is not None:
            self.secrets.append(databricks.Secret(
                f"{name}-secret-pseudonym-key", scope=scope, key=PSEUDONYM_SECRET_KEY,
                string_value=pulumi.Output.secret(args.quality.pseudonym_key),
                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=self.secrets[:1]))))
            env["REQUEST_LOG_PSEUDONYM_KEY"] = f"{{{{secrets/{scope}/{PSEUDONYM_SECRET_KEY}}}}}"
            key_needs = [self.secrets[-1], *(r for r in self.secrets if isinstance(r, databricks.SecretAcl))]
        # The batch job appends its scored rows to the same table (declare_batch_job): as the same principal, holding
        # the same columns (--personal), pseudonymised with the same key, once the table and its grant exist.
        self.inference_writer = (
            ["--inference-table", full, "--personal", args.quality.personal],
            {k: v for k, v in env.items() if k == "REQUEST_LOG_PSEUDONYM_KEY"},
            [self.inference_table, table_grant, *key_needs])
        # Two days of the log a run, whatever the window judged: a run that overlaps the last adds nothing (the
        # anti-join); after missed runs, or on a schedule rarer than daily, the job reads back to the newest prediction
        # it holds, a week at most (monitoring/quality_delta.py hours_to_read).
        hours = QUALITY_LOG_HOURS
        parameters: list[pulumi.Input[str]] = [
            "--workspace-id", d.log_analytics_customer_id, "--target", d.target, "--app-name", d.app_name,
            "--namespace", d.namespace, "--window-hours", f"{hours:g}", "--service-credential", self.log_credential,
            "--model-module", args.model.module, "--model-name", args.model.full_name, "--inference-table", full,
            *(["--labels-table", q.labels_table] if q.labels_table else []), "--personal", args.quality.personal,
            "--window", q.window, "--windows", str(q.windows), "--min-labelled", str(q.min_labelled),
            "--drift-windows", str(q.drift_windows), "--retention-days", str(q.retention_days),
            "--min-records", str(d.settings.min_records),
            "--psi-threshold", f"{d.settings.psi_threshold:g}", "--p-value", f"{d.settings.p_value:g}",
            *(["--margin", f"{q.margin:g}"] if q.margin is not None else []),
            *(["--label-horizon", f"{q.label_horizon_days}D"] if q.label_horizon_days is not None else []),
            # Retraining starts the stack's own training job; prod has none (a promotion target): it alerts only.
            *(training_job_flag(self.job.id) if self.job is not None else [])]
        task = self._wheel_task("quality", "mlops-quality", parameters, QUALITY_TIMEOUT_SECONDS, "quality")
        return self._scheduled_job(name, "quality", args, task, env, d.settings.node_type, QUALITY_TIMEOUT_SECONDS,
                                   q.schedule, q.paused, self.inference_table, opts)

    def _quality_warehouse(self, name: str, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> pulumi.Input[str]:
        """The SQL warehouse that runs the inference table's DDL and the monitor's dashboard: quality.warehouseId, or a
        small serverless one the stack declares. Without either the provider would start an all-purpose cluster of its
        own (`terraform-sql-table`: the latest runtime, outside the stack's cluster policies, shared by name across the
        workspace) for every create, change and delete of the table."""
        q = args.quality.settings if args.quality else None
        assert q is not None
        if q.warehouse_id:
            return q.warehouse_id
        warehouse = databricks.SqlEndpoint(
            f"{name}-quality-warehouse", name=args.names.sql_warehouse, cluster_size="2X-Small", min_num_clusters=1,
            max_num_clusters=1, auto_stop_mins=QUALITY_WAREHOUSE_AUTO_STOP_MINUTES, enable_serverless_compute=True,
            warehouse_type="PRO", tags=databricks.SqlEndpointTagsArgs(custom_tags=[
                databricks.SqlEndpointTagsCustomTagArgs(key=k, value=v) for k, v in sorted(args.tags.items())]),
            opts=opts)
        self.quality_warehouse = warehouse
        return warehouse.id

    def _quality_readers(self, name: str, args: DatabricksArgs, full: str, opts: pulumi.ResourceOptions) -> None:
        """quality.readers read the inference table and open the monitor's dashboard on the stack's warehouse (CAN_USE);
        nothing else. Their USE_CATALOG and USE_SCHEMA come with the stack's grants (quality_grants). The monitor's
        metric tables are not granted here: they appear with its first refresh, after this `up` (docs/model-quality.md
        says how to grant them)."""
        assert args.quality is not None
        readers = args.quality.settings.readers
        for n, reader in enumerate(readers):
            self.grants.append(databricks.Grant(
                f"{name}-grant-quality-reader{n}-inference", table=full, principal=reader, privileges=["SELECT"],
                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                    depends_on=[*filter(None, [self.inference_table]), *self.members]))))
        if readers and self.quality_warehouse is not None:
            self.quality_warehouse_acl = (databricks.Permissions(
                f"{name}-quality-warehouse-permissions", sql_endpoint_id=self.quality_warehouse.id,
                access_controls=[reader_access(r, "CAN_USE") for r in readers], opts=opts))

    def _quality_monitor(self, name: str, args: DatabricksArgs, contract: Any, full: str,
                         warehouse: pulumi.Input[str], opts: pulumi.ResourceOptions) -> databricks.QualityMonitor:
        """Lakehouse Monitoring's inference profile of the table. Its refreshes run on serverless compute. Its schedule
        takes no pause status (the provider reads it back, and refuses it configured): `paused` declares none, so it
        refreshes only when asked. It refreshes after the quality job's run (quality.monitorSchedule), so its metrics
        include that run's rows and labels."""
        assert args.quality is not None and args.drift is not None
        s, q, d = args.settings, args.quality.settings, args.drift
        return databricks.QualityMonitor(
            f"{name}-quality-monitor", table_name=full, output_schema_name=f"{s.catalog}.{s.schema}",
            assets_dir=f"{s.folder}/quality-monitor",  # in the stack's governed folder (_folder), not /Shared
            inference_log=databricks.QualityMonitorInferenceLogArgs(
                problem_type=delta_table.PROBLEM_TYPES[contract.task],
                prediction_col=delta_table.PREDICTION_COLUMN[contract.task],
                label_col=contract.target.name, model_id_col=delta_table.MODEL_ID, timestamp_col=delta_table.TIMESTAMP,
                granularities=[q.window]),
            slicing_exprs=delta_table.slicing_exprs(contract, args.quality.personal) or None,
            schedule=None if q.paused else databricks.QualityMonitorScheduleArgs(
                quartz_cron_expression=q.monitor_schedule, timezone_id=s.job.timezone),
            warehouse_id=warehouse,
            notifications=(databricks.QualityMonitorNotificationsArgs(on_failure=databricks.QualityMonitorNotificationsOnFailureArgs(
                email_addresses=list(d.notify))) if d.notify else None),
            # the API cannot move a monitor to another table or assets folder, nor change its warehouse: a new one
            # replaces it
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=[*filter(None, [self.inference_table]), *self.grants, *self.folder],
                # one monitor per table: the old one goes first
                replace_on_changes=["tableName", "assetsDir", "warehouseId"], delete_before_replace=True)))

    def declare_batch_job(self, model_version: pulumi.Input[str]) -> databricks.Job | None:
        """The scheduled batch scoring job (serving/batch.py), scoring with `model_version` of the stack's registered
        model: the version the stack serves, so batch and online answers come from one model. Declared after the
        serving workload resolves it (a promotion target learns it from its promotion); None without databricks.batch."""
        name, args, opts = self._name, self._args, self._on_workspace
        s, b = args.settings, args.settings.batch
        if b is None:
            return None
        uri = pulumi.Output.concat("models:/", args.model.full_name, "/", model_version)
        # The ids copied beside each prediction are the contract's, which the scored version carries; --key only for a
        # version without one (databricks.batch.idColumns).
        keys = [part for column in b.id_columns for part in ("--key", column)]
        # With the quality loop, the scored rows go to the stack's inference table too (_quality: inference_writer).
        inference, inference_env, inference_needs = self.inference_writer
        task = self._wheel_task("batch", "mlops-batch", [
            "--input-table", b.input_table, "--output-table", b.output_table, "--rejects-table", b.rejects_table,
            *keys, "--model-uri", uri, "--job-run-id", JOB_RUN_ID, *inference], b.timeout_seconds, "batch")
        self.batch_job = databricks.Job(
            f"{name}-batch-job", name=args.names.job("batch"), max_concurrent_runs=1,
            timeout_seconds=b.timeout_seconds, tags=args.tags, tasks=[task],
            run_as=databricks.JobRunAsArgs(service_principal_name=self.job_principal),
            job_clusters=[databricks.JobJobClusterArgs(job_cluster_key="batch", new_cluster=self._cluster(
                name, "batch", args, env={**mlflow_env("databricks-uc" if s.unity_catalog else "databricks"),
                                          **inference_env}))],
            schedule=databricks.JobScheduleArgs(quartz_cron_expression=b.schedule, timezone_id=b.timezone,
                                                pause_status="PAUSED" if b.paused else "UNPAUSED"),
            email_notifications=(databricks.JobEmailNotificationsArgs(on_failures=list(s.job.failure_emails))
                                 if s.job.failure_emails else None),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=[*self.code, *self.grants, *self._may_run_as(), *self.policies, *self._model(),
                            *inference_needs])))
        self.permissions.append(databricks.Permissions(f"{name}-batch-job-permissions", job_id=self.batch_job.id,
                                                       access_controls=self._job_acls(args), opts=opts))
        return self.batch_job

    def _permissions(self, args: DatabricksArgs, opts: pulumi.ResourceOptions) -> list[databricks.Permissions]:
        """Authoritative ACLs: the job definitions are not editable by every workspace user (the experiment is the
        folder's: _folder). The deployer owns the jobs (_job_acls); workspace admins keep their implicit rights."""
        created = []
        for key, job in (("job", self.job), ("drift-job", self.drift_job), ("quality-job", self.quality_job)):
            if job is not None:
                acls = self._job_acls(args)
                if key == "job" and self.quality_job is not None:
                    # The quality job starts the training job (Jobs API run-now) as the jobs' principal: Can Manage Run
                    # lets it start and cancel runs, not edit the job or its ACL (Can Manage would). One Permissions per
                    # job: the resource is authoritative for the job's whole ACL.
                    acls.append(access(self.job_principal, "CAN_MANAGE_RUN"))
                created.append(databricks.Permissions(f"{self._name}-{key}-permissions", job_id=job.id,
                                                      access_controls=acls, opts=opts))
        return created

    @staticmethod
    def _job_acls(args: DatabricksArgs) -> list[databricks.PermissionsAccessControlArgs]:
        """A job's ACL: workspace users see it. Its owner is the deployer, named by nobody: a job has exactly one
        IS_OWNER, and the provider makes whoever runs `up` the owner when the list names none (terraform-provider-
        databricks docs/resources/permissions.md, "Job usage"); naming the deployer again with CAN_MANAGE gives one
        principal two entries, which the API refuses ("The job must have exactly one owner", databricks/cli#4466)."""
        return [databricks.PermissionsAccessControlArgs(group_name="users", permission_level="CAN_VIEW")]

    def _cluster(self, name: str, kind: str, args: DatabricksArgs, workers: int | None = None,
                 env: Mapping[str, pulumi.Input[str]] | None = None,
                 node_type: str | None = None) -> databricks.JobJobClusterNewClusterArgs:
        """A job's cluster, under a cluster policy of its own that admits exactly this cluster (runtime, node type,
        size, DBU per hour): a job edited in the workspace cannot grow past it. The jobs' principal and the deployer
        may use the policy."""
        job = args.settings.job
        workers = job.workers if workers is None else workers
        node_type = node_type or job.node_type
        single_node = workers == 0
        policy = databricks.ClusterPolicy(
            f"{name}-{kind}-policy", name=args.names.cluster_policy(kind),
            description=f"{args.names.project} {kind} job cluster ({args.environment})",
            definition=policy_definition(job.spark_version, node_type, workers, job.max_dbu_per_hour,
                                         args.settings.unity_catalog), opts=self._on_workspace)
        usage = databricks.Permissions(f"{name}-{kind}-policy-permissions", cluster_policy_id=policy.id, access_controls=[
            access(args.settings.deployer, "CAN_USE"), access(self.job_principal, "CAN_USE")], opts=self._on_workspace)
        self.policies += [policy, usage]
        return databricks.JobJobClusterNewClusterArgs(
            spark_version=job.spark_version, node_type_id=node_type, driver_node_type_id=node_type, num_workers=workers,
            policy_id=policy.id,
            # Unity Catalog needs an access mode; dedicated (single user) runs arbitrary Python, as the run-as principal.
            data_security_mode="SINGLE_USER" if args.settings.unity_catalog else None,
            spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"} if single_node else None,
            spark_env_vars=env or None,
            custom_tags={**args.tags, **({"ResourceClass": "SingleNode"} if single_node else {})})
