"""The Pulumi program per stack and target, under mocks; MLflow resolution and context assembly are real."""

from __future__ import annotations

import base64
import io
import re
import zipfile

import pulumi
import pytest

from infra import containerapp, jobwheel, k8s_manifests, naming, settings, stack_files
from infra.databricks import LOG_ANALYTICS_READER_ROLE_ID, METRICS_PUBLISHER_ROLE_ID
from infra.registry import ACR_PULL_ROLE_ID
from policy.rules import TAGGABLE
from testing import mockcloud, platform_rules
from tests.infra.conftest import settings_of

STACKS = ("dev", "staging", "prod")
APP = "azure-native:app:ContainerApp"
JOB = "databricks:index/job:Job"
ROLE = "azure-native:authorization:RoleAssignment"
OUTPUTS = ("endpoint_url", "image_ref", "model_name", "model_version", "model_run_id", "databricks_workspace_url",
           "databricks_job_id", "log_analytics_workspace_id", "bootstrap")


# prod is a promotion target (tests/infra/test_promotion.py); here it runs the build path at prod's sizes.
BUILDS = {"promotion": stack_files.DELETE}


@pytest.fixture(scope="module", params=STACKS)
def stack(request, evaluate) -> mockcloud.Evaluation:
    return evaluate(request.param, BUILDS if request.param == "prod" else None)


@pytest.fixture(scope="module")
def aks(evaluate) -> mockcloud.Evaluation:
    return evaluate("prod", {"serving.target": "aks"})


def test_resources_per_stack(stack):
    types = {r.typ for r in stack.custom}
    for expected in ("azure-native:resources:ResourceGroup", "azure-native:operationalinsights:Workspace",
                     "azure-native:applicationinsights:Component", "azure-native:monitor:ActionGroup",
                     "azure-native:monitor:ScheduledQueryRule", "azure-native:operationalinsights:SavedSearch",
                     "azure-native:containerregistry:Registry", "azure-native:managedidentity:UserAssignedIdentity",
                     ROLE, "azure-native:monitor:DiagnosticSetting", "azure-native:databricks:Workspace",
                     "databricks:index/file:File", "databricks:index/mlflowExperiment:MlflowExperiment",
                     "databricks:index/job:Job",
                     "docker:index/image:Image", "azure-native:app:ManagedEnvironment", APP):
        assert expected in types, expected
    # the model is its writer's from the creation: the jobs' principal creates it at its first registration
    assert "databricks:index/registeredModel:RegisteredModel" not in types
    assert not any(t.startswith("azure-native:containerservice") or t.startswith("kubernetes:") for t in types)
    names = settings_of(stack.stack).names
    assert stack.one("azure-native:resources:ResourceGroup").inputs["resourceGroupName"] == names.resource_group


def test_outputs_have_stable_names(stack):
    assert set(OUTPUTS) <= set(stack.outputs)
    assert stack.outputs["bootstrap"] == ""
    assert stack.outputs["endpoint_url"].startswith("https://")
    s = settings_of(stack.stack)
    assert stack.outputs["model_name"] == s.model.full_name
    assert stack.outputs["model_version"] == "1" and stack.outputs["model_run_id"]
    assert stack.outputs["databricks_workspace_url"].startswith("https://adb-")
    assert stack.outputs["log_analytics_workspace_id"].endswith(f"/workspaces/{s.names.log_analytics}")


def acr_pull_role(stack: mockcloud.Evaluation) -> mockcloud.Captured:
    [role] = [r for r in stack.of_type(ROLE) if r.inputs["roleDefinitionId"].endswith(ACR_PULL_ROLE_ID)]
    return role


def test_registry_admin_off_and_acr_pull_to_the_identity(stack):
    acr = stack.one("azure-native:containerregistry:Registry")
    assert acr.inputs["adminUserEnabled"] is False
    identity = stack.one("azure-native:managedidentity:UserAssignedIdentity")
    role = acr_pull_role(stack)
    assert role.inputs["roleDefinitionId"].endswith(f"/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE_ID}")
    assert role.inputs["roleDefinitionId"].startswith(f"/subscriptions/{mockcloud.SUBSCRIPTION}/")
    assert role.inputs["principalId"] == identity.outputs["principalId"]
    assert role.inputs["principalType"] == "ServicePrincipal"
    assert role.inputs["scope"] == acr.id
    diagnostics = stack.named("azure-native:monitor:DiagnosticSetting", "registry-diagnostics")
    assert diagnostics.inputs["resourceUri"] == acr.id
    assert diagnostics.inputs["workspaceId"] == stack.outputs["log_analytics_workspace_id"]


def test_image_pushed_with_a_secret_token_and_used_by_digest(stack):
    image = stack.one("docker:index/image:Image")
    server = stack.one("azure-native:containerregistry:Registry").outputs["loginServer"]
    assert image.inputs["imageName"].startswith(f"{server}/{settings_of(stack.stack).image.repository}:1-")
    assert image.inputs["registry"]["username"] == "00000000-0000-0000-0000-000000000000"
    assert image.inputs["registry"]["password"] == mockcloud.FAKE_ACR_TOKEN
    assert image.inputs["build"]["platform"] == "linux/amd64"
    app = stack.one(APP)
    container = app.inputs["template"]["containers"][0]
    assert "@sha256:" in container["image"] and container["image"] == stack.outputs["image_ref"]
    # No fixed suffix: Azure names each new revision uniquely (tests/infra/test_stateful.py shows why).
    assert "revisionSuffix" not in app.inputs["template"]


def test_registry_credentials_are_secrets_and_no_shared_key_is_read(evaluate):
    ev = evaluate("dev")
    assert "registry" in ev.one("docker:index/image:Image").secrets
    assert not [token for token, _ in ev.calls if token.endswith(":getSharedKeys")]
    assert "sharedKey" not in str(ev.one("azure-native:app:ManagedEnvironment").inputs)
    assert "kubeconfig" in next(r for r in evaluate("prod", {"serving.target": "aks"}).resources
                            if r.typ == "pulumi:providers:kubernetes").secrets


def test_container_app_https_identity_probes_and_logs(stack):
    app = stack.one(APP)
    config = app.inputs["configuration"]
    assert config["ingress"]["allowInsecure"] is False and config["ingress"]["external"] is True
    assert config["ingress"]["targetPort"] == settings.CONTAINER_PORT
    assert config["activeRevisionsMode"] == "Single"  # superseded revisions are deactivated by Azure
    identity = stack.one("azure-native:managedidentity:UserAssignedIdentity")
    assert app.inputs["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [identity.id]}
    assert config["registries"] == [{"server": stack.outputs["registry_login_server"], "identity": identity.id}]
    probes = {p["type"]: p["httpGet"]["path"] for p in app.inputs["template"]["containers"][0]["probes"]}
    assert probes == {"Startup": "/health", "Liveness": "/health", "Readiness": "/ready"}
    role = acr_pull_role(stack)
    wait = stack.one("pulumi-python:dynamic/mlops:RbacPropagation")
    assert role.urn in wait.dependencies and wait.urn in app.dependencies, "the app waits for AcrPull to propagate"
    environment = stack.one("azure-native:app:ManagedEnvironment")
    assert environment.inputs["appLogsConfiguration"] == {"destination": "azure-monitor"}
    workspace = stack.one("azure-native:operationalinsights:Workspace")
    diagnostics = stack.named("azure-native:monitor:DiagnosticSetting", "containerapp-diagnostics")
    assert diagnostics.inputs["resourceUri"] == environment.id and diagnostics.inputs["workspaceId"] == workspace.id
    assert diagnostics.inputs["logAnalyticsDestinationType"] == "Dedicated"
    assert {log["category"] for log in diagnostics.inputs["logs"]} == {"ContainerAppConsoleLogs", "ContainerAppSystemLogs",
                                                                     "ContainerAppHTTPLogs"}
    assert diagnostics.urn in app.dependencies, "the first revision's logs need their destination"


def test_replicas_scale_rule_and_traffic(evaluate):
    prod, dev = evaluate("prod").one(APP), evaluate("dev").one(APP)
    assert prod.inputs["template"]["scale"]["minReplicas"] >= 2
    assert dev.inputs["template"]["scale"]["minReplicas"] == 0
    rule = prod.inputs["template"]["scale"]["rules"][0]
    assert rule["http"]["metadata"] == {"concurrentRequests": "30"}
    assert prod.inputs["configuration"]["ingress"]["traffic"] == [{"latestRevision": True, "weight": 100}]
    revision = f"{settings_of('prod').names.container_app}--v1-aaaaaaaa"
    canary = evaluate("prod", {"serving.containerApp.latestWeight": 10, "serving.containerApp.pinnedRevisions":
                               [{"revision": revision, "weight": 90}]}).one(APP)
    assert canary.inputs["configuration"]["activeRevisionsMode"] == "Multiple"  # only while traffic is split
    assert canary.inputs["configuration"]["ingress"]["traffic"] == [
        {"latestRevision": True, "weight": 10},
        {"revisionName": revision, "latestRevision": False, "weight": 90}]


def test_tags_on_every_taggable_resource(stack):
    taggable = [r for r in stack.custom if r.typ in TAGGABLE]
    assert len(taggable) >= 10
    for resource in taggable:
        tags = resource.inputs.get("tags") or {}
        assert tags.get("environment") == stack.stack, resource.name
        assert tags.get("project") == stack_files.project(stack.stack) and tags.get("cost-centre"), resource.name
    for job in stack.of_type(JOB):
        assert job.inputs["tags"]["environment"] == stack.stack, job.name


def test_observability_alerts_and_queries(evaluate):
    prod, dev = evaluate("prod"), evaluate("dev")
    workspace = prod.one("azure-native:operationalinsights:Workspace")
    assert workspace.inputs["retentionInDays"] == 90 and "workspaceCapping" not in workspace.inputs
    assert dev.one("azure-native:operationalinsights:Workspace").inputs["workspaceCapping"] == {"dailyQuotaGb": 1}
    insights = prod.one("azure-native:applicationinsights:Component")
    assert insights.inputs["workspaceResourceId"] == workspace.id and insights.inputs["ingestionMode"] == "LogAnalytics"
    rules = {r.name.rsplit("alert-", 1)[1]: r for r in prod.of_type("azure-native:monitor:ScheduledQueryRule")}
    assert set(rules) == {"error-rate", "p95-latency", "restarts", "drift", "quality", "no-traffic"} == set(naming.ALERT_KEYS)
    assert {r.name for r in dev.of_type("azure-native:monitor:ScheduledQueryRule")} == {
        "observability-alert-error-rate", "observability-alert-p95-latency", "observability-alert-restarts",
        "observability-alert-drift", "observability-alert-quality"}
    names = settings_of("prod").names
    assert {r.inputs["ruleName"] for r in rules.values()} == {names.alert_rule(key) for key in rules}
    group = prod.one("azure-native:monitor:ActionGroup")
    assert (group.inputs["actionGroupName"], group.inputs["groupShortName"]) == (names.action_group,
                                                                                  names.action_group_short)
    assert group.inputs["emailReceivers"][0]["emailAddress"] == "ml-platform-oncall@example.com"
    for key, rule in rules.items():
        assert rule.inputs["scopes"] == [workspace.id]
        assert rule.inputs["actions"]["actionGroups"] == [group.id]
        query = rule.inputs["criteria"]["allOf"][0]["query"]
        if key in ("drift", "quality"):  # the drift or quality job's record, sent through Application Insights
            assert query.startswith("union isfuzzy=true (AppTraces)") and f"'{key}'" in query
        else:
            # the azure-monitor destination's table (not ContainerAppConsoleLogs_CL): see tests/infra/test_kql_bind.py
            assert re.search(r"\bContainerAppConsoleLogs\b", query) or key == "restarts"
    assert (rules["no-traffic"].inputs["windowSize"], rules["no-traffic"].inputs["severity"]) == ("PT60M", 3)
    drift = rules["drift"].inputs
    assert drift["enabled"] is True and drift["windowSize"] == "PT60M"
    condition = drift["criteria"]["allOf"][0]
    assert (condition["metricMeasureColumn"], condition["operator"], condition["threshold"]) == (
        "drifted_versions", "GreaterThan", 0)
    queries = {q.inputs["savedSearchId"]: q.inputs["query"] for q in prod.of_type("azure-native:operationalinsights:SavedSearch")}
    assert set(queries) == {"scoring-latency", "scoring-errors", "scoring-probabilities"}
    assert "tostring(Log)" in queries["scoring-latency"] and "percentile(latency_ms, 95)" in queries["scoring-latency"]
    assert "output.probability" in queries["scoring-probabilities"]


def wheel_task(task: dict) -> tuple[str, list[str]]:
    wheel = task["pythonWheelTask"]
    assert wheel["packageName"] == settings_of("dev").names.wheel_distribution  # the project's (every stack's)
    return wheel["entryPoint"], wheel["parameters"]


def test_databricks_job_runs_train_then_gate_from_the_wheel(evaluate):
    prod = evaluate("prod", BUILDS)
    job = prod.named(JOB, "databricks-job")
    train, gate = job.inputs["tasks"]
    assert (train["taskKey"], gate["taskKey"]) == ("train", "gate")
    assert gate["dependsOns"] == [{"taskKey": "train"}]
    (train_entry, train_params), (gate_entry, gate_params) = wheel_task(train), wheel_task(gate)
    assert (train_entry, gate_entry) == ("mlops-train", "mlops-gate")
    assert set(jobwheel.ENTRY_POINTS) >= {train_entry, gate_entry}
    assert "--skip-gate" in train_params
    assert train_params[train_params.index("--search") + 1] == "spark"  # candidates as Spark tasks on the workers
    s = settings_of("prod")
    assert job.inputs["name"] == s.names.job("train")
    for params in (train_params, gate_params):
        assert params[params.index("--model-module") + 1] == s.model.module == s.names.model_module
        assert params[params.index("--model-name") + 1] == s.model.full_name
        assert params[params.index("--experiment") + 1] == s.databricks.experiment
        assert "--tracking-uri" not in params and "--registry-uri" not in params  # the cluster's environment says
        assert not {"--gate-floor", "--gate-tolerance"} & set(params), "the gate is the model module's"
    cluster = job.inputs["jobClusters"][0]["newCluster"]
    assert cluster["sparkEnvVars"] == {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": "databricks-uc"}
    assert (cluster["nodeTypeId"], cluster["numWorkers"]) == ("Standard_DS4_v2", 2)
    assert "schedule" not in job.inputs  # prod never retrains on a schedule
    assert job.inputs["emailNotifications"]["onFailures"] == ["ml-platform-oncall@example.com"]
    assert job.inputs["timeoutSeconds"] == 7200
    provider = next(r for r in prod.resources if r.typ == "pulumi:providers:databricks")
    assert provider.inputs["host"] == prod.outputs["databricks_workspace_url"]
    workspace = prod.one("azure-native:databricks:Workspace")
    assert workspace.inputs["sku"] == {"name": "premium"}
    assert workspace.inputs["workspaceName"] == s.names.databricks_workspace
    assert workspace.inputs["managedResourceGroupId"].endswith(
        f"/resourceGroups/{s.names.databricks_managed_resource_group}")


def test_gate_finds_the_version_by_the_job_run_id_not_by_task_values(stack):
    """Task values can be set only from notebooks: a wheel task's `{{tasks.train.values.x}}` would reach the gate
    as the literal string. Both tasks get `{{job.run_id}}`, a value Databricks resolves for every task."""
    for job in stack.of_type(JOB):
        for task in job.inputs["tasks"]:
            _, params = wheel_task(task)
            assert not any("{{tasks." in p and ".values." in p for p in params), task["taskKey"]
            assert not any("{{" in p and p != "{{job.run_id}}" for p in params), params
    if stack.stack == "prod":
        return
    train, gate = stack.named(JOB, "databricks-job").inputs["tasks"]
    for _, params in (wheel_task(train), wheel_task(gate)):
        assert params[params.index("--job-run-id") + 1] == "{{job.run_id}}"


def test_one_wheel_holds_every_task_and_is_uploaded_to_the_stack_volume(stack):
    files = stack.of_type("databricks:index/file:File")
    assert len(files) == 1 and not stack.of_type("databricks:index/workspaceFile:WorkspaceFile")
    path = files[0].inputs["path"]
    s = settings_of(stack.stack)
    catalog, schema, volume_name = s.databricks.catalog, s.databricks.schema, s.databricks.code_volume
    assert volume_name == s.names.code_volume
    wheel_name = rf"{s.names.wheel_distribution}-1\.0\.0\.dev[0-9]{{9,15}}-py3-none-any\.whl"  # no '+': see jobwheel
    assert re.fullmatch(rf"/Volumes/{catalog}/{schema}/{volume_name}/{wheel_name}", path)
    volume = stack.one("databricks:index/volume:Volume")
    assert [volume.inputs[k] for k in ("catalogName", "schemaName", "name")] == [catalog, schema, volume_name]
    wheel = zipfile.ZipFile(io.BytesIO(base64.b64decode(files[0].inputs["contentBase64"])))
    assert "monitoring/drift.py" in wheel.namelist() and "training/train.py" in wheel.namelist()
    assert f"{s.model.module.replace('.', '/')}.py" in wheel.namelist(), "the model's module, imported by name"
    for job in stack.of_type(JOB):
        for task in job.inputs["tasks"]:
            assert task["libraries"] == [{"whl": path}], "the declared tasks run the uploaded wheel and nothing else"
            assert "sparkPythonTask" not in task


def grants_of(stack: mockcloud.Evaluation, principal: str) -> dict[str, list[str]]:
    """securable kind + name -> privileges granted to `principal`, sorted (grants register in any order)."""
    found: dict[str, list[str]] = {}
    for grant in stack.of_type("databricks:index/grant:Grant"):
        if grant.inputs["principal"] == principal:
            [(kind, name)] = [(k, v) for k, v in grant.inputs.items() if k not in ("principal", "privileges")]
            found.setdefault(f"{kind} {name}", []).extend(grant.inputs["privileges"])
    return {securable: sorted(privileges) for securable, privileges in found.items()}


def test_jobs_run_as_their_own_service_principal_with_least_privilege(evaluate):
    dev = evaluate("dev")
    principal = dev.one("databricks:index/servicePrincipal:ServicePrincipal")
    s = settings_of("dev")
    assert principal.inputs["displayName"] == s.names.jobs_principal and principal.inputs["allowClusterCreate"] is False
    app_id = principal.outputs["applicationId"]
    for job in dev.of_type(JOB):
        assert job.inputs["runAs"] == {"servicePrincipalName": app_id}, job.name
    # CREATE_TABLE: the batch job creates (and so owns) its predictions and rejects tables in the schema
    catalog, schema = s.databricks.catalog, f"{s.databricks.catalog}.{s.databricks.schema}"
    assert s.databricks.batch is not None
    assert grants_of(dev, app_id) == {
        f"catalog {catalog}": ["USE_CATALOG"], f"schema {schema}": ["CREATE_MODEL", "CREATE_TABLE", "USE_SCHEMA"],
        f"volume {schema}.{s.databricks.code_volume}": ["READ_VOLUME"], f"table {s.databricks.data_table}": ["SELECT"],
        f"table {s.databricks.batch.input_table}": ["SELECT"], f"credential {s.names.logs_credential}": ["ACCESS"],
        # the quality job appends to the inference table the deployer owns (and reads the labels where a stack names
        # them: tests/infra/test_quality_loop.py)
        f"table {schema}.{s.quality.inference_table}": ["MODIFY", "SELECT"]}
    # train and gate register versions and move aliases, so the jobs' principal owns the model: it creates it at its
    # first registration (CREATE_MODEL above); a declared one would be the deployer's, which only a metastore admin
    # could give away
    assert not dev.of_type("databricks:index/registeredModel:RegisteredModel")
    # job definitions and the stack's folder (the experiments): not editable by every workspace user
    deployer = {"userName": s.databricks.deployer, "permissionLevel": "CAN_MANAGE"}  # dev: a person deploys
    acls = {r.name: r.inputs["accessControls"] for r in dev.of_type("databricks:index/permissions:Permissions")}
    for job in ("drift-job", "batch-job", "quality-job"):  # owned by the deployer, which the provider adds (one owner)
        assert acls[f"databricks-{job}-permissions"] == [{"groupName": "users", "permissionLevel": "CAN_VIEW"}]
    # the quality job starts training runs (Can Manage Run), nothing more
    assert acls["databricks-job-permissions"] == [{"groupName": "users", "permissionLevel": "CAN_VIEW"},
                                                  {"servicePrincipalName": app_id, "permissionLevel": "CAN_MANAGE_RUN"}]
    folder = dev.one("databricks:index/directory:Directory")
    assert folder.inputs["path"] == s.databricks.folder and s.databricks.experiment.startswith(f"{s.databricks.folder}/")
    assert acls["databricks-folder-permissions"] == [deployer, {"servicePrincipalName": app_id, "permissionLevel": "CAN_MANAGE"},
                                                     {"groupName": "users", "permissionLevel": "CAN_READ"}]
    experiment = dev.one("databricks:index/mlflowExperiment:MlflowExperiment")
    assert folder.urn in experiment.dependencies  # created in the folder, which exists first
    assert not dev.of_type("databricks:index/catalog:Catalog")  # existing catalog and schema by default


def test_the_deployer_may_run_jobs_as_the_principal_it_declares(evaluate):
    """run_as a service principal needs Service Principal User on it; the creator holds only Manager."""
    dev = evaluate("dev")
    app_id = dev.one("databricks:index/servicePrincipal:ServicePrincipal").outputs["applicationId"]
    rules = dev.one("databricks:index/accessControlRuleSet:AccessControlRuleSet")
    account = settings_of("dev").databricks.account_id
    assert rules.inputs["name"] == f"accounts/{account}/servicePrincipals/{app_id}/ruleSets/default"
    # the configured deployer (dev: a person), not whoever runs this evaluation (mockcloud's get_current_user)
    deployer = f"users/{settings_of('dev').databricks.deployer}"
    assert {(g["role"], tuple(g["principals"])) for g in rules.inputs["grantRules"]} == {
        ("roles/servicePrincipal.user", (deployer,)), ("roles/servicePrincipal.manager", (deployer,))}
    assert not any(token.endswith("getCurrentUser") for token, _ in dev.calls)  # a preview evaluates the same rules
    configured = evaluate("dev", {"databricks.deployer": DEPLOYER})
    rules = configured.one("databricks:index/accessControlRuleSet:AccessControlRuleSet")
    assert {p for g in rules.inputs["grantRules"] for p in g["principals"]} == {f"servicePrincipals/{DEPLOYER}"}
    # a configured principal's roles are managed where it was created: no authoritative rule set over them
    assert not evaluate("dev", {"databricks.jobPrincipal": JOBS_SP}).of_type(
        "databricks:index/accessControlRuleSet:AccessControlRuleSet")


def test_prods_deployer_may_read_stagings_model_and_nothing_else(evaluate):
    ev = evaluate("staging", {"databricks.promotionReaders": [PROD_DEPLOYER]})
    assert grants_of(ev, PROD_DEPLOYER) == model_readers_grants("staging")


def model_readers_grants(stack: str) -> dict[str, list[str]]:
    """What a reader of a training stack's model holds: its catalog, its schema with EXECUTE, which the model inherits
    (the jobs create it at their first registration, so no grant can name it before)."""
    s = settings_of(stack)
    return {f"catalog {s.databricks.catalog}": ["USE_CATALOG"],
            f"schema {s.databricks.catalog}.{s.databricks.schema}": ["EXECUTE", "USE_SCHEMA"]}


def deployer_grants(stack: str) -> dict[str, list[str]]:
    """The deployer reads the model as the readers do, creates the code volume (CREATE_VOLUME), the inference table and
    its monitor, whose metric tables go to the same schema (CREATE_TABLE), and grants there (MANAGE): all of it declared,
    since its own Grant is authoritative for it (audit s11 F1, F2)."""
    s = settings_of(stack)
    return {f"catalog {s.databricks.catalog}": ["MANAGE", "USE_CATALOG"],
            f"schema {s.databricks.catalog}.{s.databricks.schema}": ["CREATE_TABLE", "CREATE_VOLUME", "EXECUTE", "MANAGE",
                                                                     "USE_SCHEMA"]}


DEPLOYER, JOBS_SP = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
PROD_DEPLOYER = "77777777-8888-9999-aaaa-bbbbbbbbbbbb"


def test_configured_principals_and_a_created_catalog_bound_to_this_workspace(evaluate):
    root = "abfss://uc@stcreditstaging.dfs.core.windows.net/staging"
    ev = evaluate("staging", {"databricks.createCatalog": True, "databricks.storageRoot": root,
                              "databricks.jobPrincipal": JOBS_SP, "databricks.deployer": DEPLOYER})
    assert [sp.name for sp in ev.of_type("databricks:index/servicePrincipal:ServicePrincipal")] == [
        "databricks-member-reader0", "databricks-member-preview"]  # members, not a principal the jobs run as
    assert {job.inputs["runAs"]["servicePrincipalName"] for job in ev.of_type(JOB)} == {JOBS_SP}
    s = settings_of("staging")
    catalog = ev.one("databricks:index/catalog:Catalog")
    assert (catalog.inputs["name"], catalog.inputs["isolationMode"], catalog.inputs["storageRoot"]) == (
        s.databricks.catalog, "ISOLATED", root)
    schema = ev.one("databricks:index/schema:Schema")
    assert (schema.inputs["catalogName"], schema.inputs["name"]) == (s.databricks.catalog, s.databricks.schema)
    # ISOLATED binds the creating workspace (this stack's) itself: a WorkspaceBinding beside it would only compete
    assert not ev.of_type("databricks:index/workspaceBinding:WorkspaceBinding")
    volume = ev.one("databricks:index/volume:Volume")
    assert catalog.urn in volume.dependencies and schema.urn in volume.dependencies
    assert grants_of(ev, DEPLOYER) == deployer_grants("staging")
    job_acl = next(r for r in ev.of_type("databricks:index/permissions:Permissions") if r.name == "databricks-job-permissions")
    assert DEPLOYER not in str(job_acl.inputs["accessControls"])  # its owner, added by the provider


@pytest.mark.parametrize(("overrides", "message"), [
    ({"databricks.jobPrincipal": "jobs-sp"}, r"databricks\.jobPrincipal is 'jobs-sp'; it must be a service principal's "),
    ({"databricks.createCatalog": True, "databricks.modelRegistry": "workspace",
      "databricks.catalog": stack_files.DELETE, "databricks.schema": stack_files.DELETE},
     r"databricks\.createCatalog needs mlops:databricks\.modelRegistry"),
    ({"databricks.codeVolume": "job code"}, r"databricks\.codeVolume is 'job code'; it must be a volume identifier"),
    ({"databricks.accountId": stack_files.DELETE}, r"databricks\.accountId is required when the stack declares the jobs'"),
    ({"databricks.promotionReaders": ["prod-ci"]}, r"databricks\.promotionReaders holds 'prod-ci'; each item must be a "),
    # N9: the run-as rule set, the grants and the ACLs name the deployer; none follows whoever runs `up`
    ({"databricks.deployer": stack_files.DELETE}, r"databricks\.deployer is required"),
    ({"databricks.deployer": "ci"}, r"databricks\.deployer is 'ci'; it must be a service principal's application id "),
    ({"databricks.createCatalog": True}, r"databricks\.createCatalog needs mlops:databricks\.storageRoot"),
    ({"databricks.folder": "/Shared/credit"}, r"databricks\.folder is '/Shared/credit'; it must not be under /Shared"),
    ({"databricks.experiment": "/Shared/credit-dev"}, r"databricks\.experiment is '/Shared/credit-dev'; it must be "
                                                      r"inside mlops:databricks\.folder"),
])
def test_bad_unity_catalog_config_names_the_key(evaluate, overrides, message):
    with pytest.raises(settings.ConfigError, match=rf"mlops:{message}"):
        evaluate("dev", overrides)


def drift_parameters(job) -> dict[str, str]:
    entry, params = wheel_task(job.inputs["tasks"][0])
    assert entry == "mlops-drift"
    return dict(zip(params[0::2], params[1::2], strict=True))


def test_every_stack_declares_the_scheduled_drift_job(stack):
    config = stack_files.stack_values(stack.stack)
    drift, timezone = config["drift"], config["databricks"].get("timezone", "UTC")
    job = stack.named(JOB, "databricks-drift-job")
    s = settings_of(stack.stack)
    assert job.inputs["name"] == s.names.job("drift")
    assert job.inputs["schedule"] == {"quartzCronExpression": drift["schedule"], "timezoneId": timezone,
                                      "pauseStatus": "UNPAUSED"}
    workspace = stack.one("azure-native:operationalinsights:Workspace")
    params = drift_parameters(job)
    assert params == {
        "--workspace-id": workspace.outputs["customerId"], "--target": "containerapps",
        "--app-name": s.names.container_app, "--namespace": "scoring", "--window-hours": f"{drift['windowHours']:g}",
        "--experiment": f"{s.databricks.experiment}-drift",
        "--psi-threshold": f"{drift['psiThreshold']:g}", "--p-value": f"{drift['pValue']:g}",
        "--min-records": str(drift["minRecords"]), "--out": "/tmp/drift",
        "--service-credential": s.names.logs_credential}
    cluster = job.inputs["jobClusters"][0]["newCluster"]
    assert cluster["numWorkers"] == 0 and cluster["sparkConf"]["spark.databricks.cluster.profile"] == "singleNode"
    # the connection string is a secret of the stack's scope, resolved by the cluster: never a plain value
    scope = s.drift.secret_scope
    assert scope == s.names.secret_scope
    reference = f"{{{{secrets/{scope}/appinsights-connection-string}}}}"
    assert cluster["sparkEnvVars"] == {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": "databricks-uc",
                                       "APPLICATIONINSIGHTS_CONNECTION_STRING": reference}
    insights = stack.one("azure-native:applicationinsights:Component")
    secret = stack.one("databricks:index/secret:Secret")
    assert (secret.inputs["scope"], secret.inputs["key"]) == (scope, "appinsights-connection-string")
    assert secret.inputs["stringValue"] == insights.outputs["connectionString"] and "stringValue" in secret.secrets
    acl = stack.one("databricks:index/secretAcl:SecretAcl")
    assert (acl.inputs["scope"], acl.inputs["permission"]) == (scope, "READ")
    assert acl.inputs["principal"] == job.inputs["runAs"]["servicePrincipalName"]
    # exit 3 (drift) fails the run, so the e-mail fires: to the alert e-mails and the job failure e-mails
    expected = [*config["observability"].get("alertEmails", []), *config["databricks"].get("failureEmails", [])]
    assert job.inputs["emailNotifications"]["onFailures"] == list(dict.fromkeys(expected))
    assert stack.outputs["databricks_drift_job_id"] == job.id


def test_drift_job_takes_its_schedule_and_thresholds_from_config(evaluate):
    ev = evaluate("dev", {"drift": {"schedule": "0 30 2 * * ?", "paused": True, "windowHours": 12, "psiThreshold": 0.3,
                                    "pValue": 0.05, "minRecords": 500, "secretScope": "drift-dev"},
                          "databricks.timezone": "Europe/Amsterdam", "serving.target": "aks"})
    job = ev.named(JOB, "databricks-drift-job")
    assert job.inputs["schedule"] == {"quartzCronExpression": "0 30 2 * * ?", "timezoneId": "Europe/Amsterdam",
                                      "pauseStatus": "PAUSED"}
    params = drift_parameters(job)
    assert {k: params[k] for k in ("--window-hours", "--psi-threshold", "--p-value", "--min-records", "--target",
                                   "--app-name", "--namespace")} == {
        "--window-hours": "12", "--psi-threshold": "0.3", "--p-value": "0.05", "--min-records": "500", "--target": "aks",
        "--app-name": "scoring", "--namespace": "scoring"}
    env = job.inputs["jobClusters"][0]["newCluster"]["sparkEnvVars"]
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "{{secrets/drift-dev/appinsights-connection-string}}"
    assert not any(key.startswith("AZURE_") for key in env)  # no client secret anywhere


def test_drift_job_reads_log_analytics_as_a_managed_identity_on_this_workspace_only(stack):
    job = stack.named(JOB, "databricks-drift-job")
    credential = stack.one("databricks:index/credential:Credential")
    assert drift_parameters(job)["--service-credential"] == credential.inputs["name"]
    connector = stack.one("azure-native:databricks:AccessConnector")
    assert credential.inputs["purpose"] == "SERVICE"
    assert credential.inputs["azureManagedIdentity"] == {"accessConnectorId": connector.id}
    [reader] = [r for r in stack.of_type(ROLE) if r.inputs["roleDefinitionId"].endswith(LOG_ANALYTICS_READER_ROLE_ID)]
    workspace = stack.one("azure-native:operationalinsights:Workspace")
    assert reader.inputs["scope"] == workspace.id  # this stack's workspace, not the group or the subscription
    assert reader.inputs["principalId"] == connector.outputs["identity"]["principalId"]
    [access] = [g for g in stack.of_type("databricks:index/grant:Grant") if g.inputs.get("credential")]
    assert (access.inputs["credential"], access.inputs["privileges"]) == (credential.inputs["name"], ["ACCESS"])
    assert access.inputs["principal"] == job.inputs["runAs"]["servicePrincipalName"]


def test_drift_job_publishes_its_record_with_entra_id_to_this_stacks_app_insights_only(stack):
    component = stack.one("azure-native:applicationinsights:Component")
    assert component.inputs["disableLocalAuth"] is True  # the instrumentation key alone writes nothing
    connector = stack.one("azure-native:databricks:AccessConnector")
    [publisher] = [r for r in stack.of_type(ROLE) if r.inputs["roleDefinitionId"].endswith(METRICS_PUBLISHER_ROLE_ID)]
    assert publisher.inputs["scope"] == component.id
    assert publisher.inputs["principalId"] == connector.outputs["identity"]["principalId"]
    credential = stack.one("databricks:index/credential:Credential")
    assert publisher.urn in credential.dependencies  # the job's credential is usable only once it may publish


@pytest.mark.parametrize(("overrides", "key"), [
    ({"drift.schedule": "hourly"}, "drift.schedule"),
    ({"drift.windowHours": 0}, "drift.windowHours"),
    ({"drift.psiThreshold": "high"}, "drift.psiThreshold"),
    ({"drift.pValue": 0.9}, "drift.pValue"),
    ({"drift.minRecords": 2.5}, "drift.minRecords"),
    ({"drift.threshold": 0.2}, "drift: unknown key"),
])
def test_bad_drift_config_names_the_key(evaluate, overrides, key):
    with pytest.raises(settings.ConfigError, match=rf"mlops:{re.escape(key)}"):
        evaluate("dev", overrides)


def test_existing_workspace_and_workspace_registry(evaluate, registry):
    ev = evaluate("dev", {"databricks.existingWorkspaceUrl": "https://adb-1.2.azuredatabricks.net",
                          "databricks.modelRegistry": "workspace", "databricks.catalog": stack_files.DELETE,
                          "databricks.schema": stack_files.DELETE, "model.name": registry["model_name"]})
    assert not ev.of_type("azure-native:databricks:Workspace")
    assert ev.outputs["databricks_workspace_url"] == "https://adb-1.2.azuredatabricks.net"
    assert ev.one("databricks:index/mlflowModel:MlflowModel").inputs["name"] == registry["model_name"]
    assert ev.outputs["model_name"] == registry["model_name"] and ev.outputs["model_version"]
    assert not ev.of_type("databricks:index/registeredModel:RegisteredModel")
    wheel = ev.one("databricks:index/workspaceFile:WorkspaceFile").inputs["path"]
    assert wheel.startswith(f"{settings_of('dev').names.files_root}/{settings_of('dev').names.wheel_distribution}-")


def test_aks_target(aks):
    types = {r.typ for r in aks.custom}
    assert APP not in types and "azure-native:app:ManagedEnvironment" not in types
    cluster = aks.one("azure-native:containerservice:ManagedCluster")
    workspace = aks.one("azure-native:operationalinsights:Workspace")
    assert cluster.inputs["addonProfiles"]["omsagent"] == {
        "enabled": True, "config": {"logAnalyticsWorkspaceResourceID": workspace.id, "useAADAuth": "true"}}
    pool = cluster.inputs["agentPoolProfiles"][0]
    assert (pool["vmSize"], pool["count"], pool["maxCount"]) == ("Standard_D4s_v5", 3, 6)
    assert pool["availabilityZones"] == ["1", "2", "3"] and pool["enableAutoScaling"] is True
    acr = aks.one("azure-native:containerregistry:Registry")
    kubelet = next(r for r in aks.of_type(ROLE) if r.name == "aks-kubelet-acr-pull")
    assert kubelet.inputs["principalId"] == cluster.outputs["identityProfile"]["kubeletidentity"]["objectId"]
    assert kubelet.inputs["principalId"] != cluster.outputs["identity"]["principalId"]
    assert kubelet.inputs["scope"] == acr.id and kubelet.inputs["roleDefinitionId"].endswith(ACR_PULL_ROLE_ID)
    for kind in ("core/v1:Namespace", "apps/v1:Deployment", "core/v1:Service", "autoscaling/v2:HorizontalPodAutoscaler",
                 "policy/v1:PodDisruptionBudget"):
        resource = aks.one(f"kubernetes:{kind}")
        assert resource.provider.startswith("urn:") and "pulumi:providers:kubernetes" in resource.provider
    deployment = aks.one("kubernetes:apps/v1:Deployment")
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    assert "@sha256:" in container["image"] and container["image"] == aks.outputs["image_ref"]
    assert "replicas" not in deployment.inputs["spec"], "the HPA owns the replica count"
    assert aks.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]["minReplicas"] >= 2
    rule = aks.named("azure-native:monitor:DataCollectionRule", "aks-container-insights")
    streams = rule.inputs["dataSources"]["extensions"][0]["streams"]
    assert streams == ["Microsoft-ContainerInsights-Group-Default"]
    assert rule.inputs["destinations"]["logAnalytics"][0]["workspaceResourceId"] == workspace.id
    association = aks.named("azure-native:monitor:DataCollectionRuleAssociation", "aks-container-insights-association")
    assert association.inputs["resourceUri"] == cluster.id and association.inputs["dataCollectionRuleId"] == rule.id
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    wait = aks.one("pulumi-python:dynamic/mlops:RbacPropagation")
    assert kubelet.urn in wait.dependencies and wait.urn in deployment.dependencies
    assert aks.outputs["endpoint_url"] == "http://20.50.60.70"
    assert any(t == "azure-native:containerservice:listManagedClusterUserCredentials" for t, _ in aks.calls)
    rule = next(r for r in aks.of_type("azure-native:monitor:ScheduledQueryRule") if r.name.endswith("p95-latency"))
    assert "ContainerLogV2" in rule.inputs["criteria"]["allOf"][0]["query"]


def test_bootstrap_without_a_version(evaluate, empty_registry):
    ev = evaluate("dev", {"model.trackingUri": empty_registry, "model.registryUri": empty_registry})
    types = {r.typ for r in ev.resources}
    assert "docker:index/image:Image" not in types and APP not in types
    assert "azure-native:containerregistry:Registry" in types and "databricks:index/job:Job" in types
    assert ev.outputs["bootstrap"].startswith(f"BOOTSTRAP: {settings_of('dev').model.uri} has no registered version")
    assert ev.outputs["image_ref"] == "" and ev.outputs["endpoint_url"] == ""
    # Nothing serves, so no request log exists to read (Log Analytics makes the table with its first row): the watching
    # jobs wait paused instead of failing every run; the training job keeps its schedule (audit s11 F4).
    def schedules(evaluation) -> dict[str, str]:
        return {job.name: job.inputs["schedule"]["pauseStatus"] for job in evaluation.of_type("databricks:index/job:Job")
                if job.inputs.get("schedule")}

    assert schedules(ev) == {"databricks-drift-job": "PAUSED", "databricks-quality-job": "PAUSED"}
    s = settings_of("dev")
    assert not s.drift.paused and schedules(evaluate("dev"))["databricks-drift-job"] == "UNPAUSED"  # once it serves


def test_prod_refuses_to_bootstrap(evaluate, empty_registry):
    with pytest.raises(pulumi.RunError, match=r"allowBootstrap: false\). .*set promotion\.sourceStack"):
        evaluate("prod", {**BUILDS, "model.trackingUri": empty_registry, "model.registryUri": empty_registry})


def test_bad_config_fails_the_program_with_the_key(evaluate):
    with pytest.raises(settings.ConfigError, match=r"mlops:serving\.target .*containerapps, aks"):
        evaluate("dev", {"serving.target": "lambda"})


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_the_batch_job_scores_with_the_version_the_stack_serves(evaluate, stack):
    ev = evaluate(stack)
    job = ev.named(JOB, "databricks-batch-job")
    [task] = job.inputs["tasks"]
    entry, params = wheel_task(task)
    assert entry == "mlops-batch" and entry in jobwheel.ENTRY_POINTS
    assert job.inputs["name"] == settings_of(stack).names.job("batch")
    batch = stack_files.stack_values(stack)["databricks"]["batch"]
    assert params[params.index("--model-uri") + 1] == f"models:/{ev.outputs['model_name']}/{ev.outputs['model_version']}"
    assert [params[params.index(flag) + 1] for flag in ("--input-table", "--output-table", "--rejects-table")] == [
        batch["inputTable"], batch["outputTable"], batch["rejectsTable"]]
    assert "--key" not in params, "the ids are the contract's, which the scored version carries"
    with_ids = evaluate(stack, {"databricks.batch.idColumns": ["row_id", "day"]})  # a version trained elsewhere
    _, given = wheel_task(with_ids.named(JOB, "databricks-batch-job").inputs["tasks"][0])
    assert [given[i + 1] for i, flag in enumerate(given) if flag == "--key"] == ["row_id", "day"]
    assert params[params.index("--job-run-id") + 1] == "{{job.run_id}}"
    assert job.inputs["schedule"] == {"quartzCronExpression": batch["schedule"], "timezoneId": batch["timezone"],
                                      "pauseStatus": "PAUSED" if batch.get("paused") else "UNPAUSED"}
    assert ev.outputs["databricks_batch_job_id"] == job.id
    cluster = job.inputs["jobClusters"][0]["newCluster"]
    assert cluster["sparkEnvVars"] == {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": "databricks-uc"}
    app_id = ev.named("databricks:index/servicePrincipal:ServicePrincipal", "databricks-job-principal").outputs["applicationId"]
    assert job.inputs["runAs"] == {"servicePrincipalName": app_id}
    granted = grants_of(ev, app_id)
    assert granted[f"table {batch['inputTable']}"] == ["SELECT"]
    for table in (batch["outputTable"], batch["rejectsTable"]):
        assert "CREATE_TABLE" in granted["schema " + table.rsplit(".", 1)[0]]


def test_one_grant_per_principal_and_securable(evaluate):
    """A databricks Grant is authoritative for its principal on its securable: two would undo each other every `up`."""
    ev = evaluate("staging")
    pairs = [(g.inputs["principal"], tuple(sorted((k, v) for k, v in g.inputs.items() if k not in ("principal", "privileges"))))
             for g in ev.of_type("databricks:index/grant:Grant")]
    assert len(pairs) == len(set(pairs))


def test_a_stack_that_serves_nothing_yet_declares_no_batch_job(evaluate, empty_registry):
    ev = evaluate("dev", {"model.trackingUri": empty_registry, "model.registryUri": empty_registry})
    assert not [j for j in ev.of_type(JOB) if j.name == "databricks-batch-job"]
    assert ev.outputs["databricks_batch_job_id"] == ""


def test_batch_settings_errors_name_the_key():
    from tests.infra.test_settings import load

    ConfigError = settings.ConfigError  # noqa: N806
    key = "mlops:databricks.batch"
    with pytest.raises(ConfigError, match=rf"{key}\.inputTable is 'portfolio'; it must be catalog\.schema\.table"):
        load("staging", {"databricks.batch.inputTable": "portfolio"})
    with pytest.raises(ConfigError, match=rf"{key}\.idColumns holds '1d'; each item must be a column name"):
        load("staging", {"databricks.batch.idColumns": ["1d"]})
    with pytest.raises(ConfigError, match=rf"{key}\.timezone is 'Mars/Olympus'; it must be an IANA time zone"):
        load("staging", {"databricks.batch.timezone": "Mars/Olympus"})
    with pytest.raises(ConfigError, match=rf"{key}\.schedule is 'nightly'; it must be a Quartz cron"):
        load("staging", {"databricks.batch.schedule": "nightly"})
    batch = settings_of("staging").databricks.batch
    assert batch is not None
    with pytest.raises(ConfigError, match=rf"{key}\.outputTable and .* must be three different tables"):
        load("staging", {"databricks.batch.outputTable": batch.input_table})
    with pytest.raises(ConfigError, match=rf"{key}: unknown key\(s\) outputTabel"):
        load("staging", {"databricks.batch.outputTabel": batch.output_table})


def test_prods_promotion_owns_the_model_it_writes_and_its_jobs_read_it(evaluate):
    """Databricks N2/N5: in a promotion target the deployer writes versions and aliases (the promotion runs in `up`),
    so it owns the model; the jobs' principal reads the copies (batch) with EXECUTE. Staging's model: the jobs own it,
    the deployer, prod's deployer and the preview read it, each a member of staging's workspace (B1)."""
    prod, staging = evaluate("prod"), evaluate("staging")
    s, source = settings_of("prod"), settings_of("staging")
    model = prod.one("databricks:index/registeredModel:RegisteredModel")
    assert model.inputs["owner"] == s.databricks.deployer
    jobs = prod.named("databricks:index/servicePrincipal:ServicePrincipal", "databricks-job-principal").outputs["applicationId"]
    assert grants_of(prod, jobs)[f"model {s.model.full_name}"] == ["EXECUTE"]
    assert f"model {s.model.full_name}" not in grants_of(prod, s.databricks.deployer)  # the owner
    for reader in (s.databricks.deployer, source.databricks.preview_reader):
        assert grants_of(staging, reader) == model_readers_grants("staging"), reader
    assert grants_of(staging, source.databricks.deployer) == deployer_grants("staging")
    members = {sp.inputs["applicationId"] for sp in staging.of_type("databricks:index/servicePrincipal:ServicePrincipal")
               if sp.name.startswith("databricks-member-")}
    assert members == {s.databricks.deployer, source.databricks.preview_reader}


def test_each_job_cluster_runs_under_its_own_policy_and_drift_on_a_small_node(evaluate):
    """Databricks N14: a declared cluster policy per job (runtime, node type, size, DBU/h fixed or capped), which the
    jobs' principal and the deployer may use; prod's hourly drift run no longer starts its DS4_v2."""
    import json

    prod = evaluate("prod")
    s = settings_of("prod")
    policies = {p.id: p for p in prod.of_type("databricks:index/clusterPolicy:ClusterPolicy")}
    for job in prod.of_type(JOB):
        cluster = job.inputs["jobClusters"][0]["newCluster"]
        definition = json.loads(policies[cluster["policyId"]].inputs["definition"])
        assert definition["node_type_id"] == {"type": "fixed", "value": cluster["nodeTypeId"]}, job.name
        assert definition["dbus_per_hour"] == {"type": "range", "maxValue": s.databricks.max_dbu_per_hour}
        assert definition["cluster_type"] == {"type": "fixed", "value": "job"}
    drift = prod.named(JOB, "databricks-drift-job").inputs["jobClusters"][0]["newCluster"]
    assert (drift["nodeTypeId"], s.databricks.node_type) == (s.drift.node_type, "Standard_DS4_v2")
    assert drift["nodeTypeId"] != s.databricks.node_type
    train = evaluate("staging").named(JOB, "databricks-job").inputs["tasks"]
    assert [(t["taskKey"], t.get("maxRetries")) for t in train] == [("train", None), ("gate", 1)]
    credential = prod.one("databricks:index/credential:Credential")
    assert credential.inputs["isolationMode"] == "ISOLATION_MODE_ISOLATED"  # N15: this workspace only


# ---- observability.requestLogPersonal pseudonymise: the key a secret from config to container ----

PSEUDONYM_KEY = "pseudonym-key-" + "7" * 30  # what `pulumi config set --secret mlops:requestLogPseudonymKey` holds
PSEUDONYMISE = {"observability.requestLogPersonal": "pseudonymise", "requestLogPseudonymKey": PSEUDONYM_KEY}


def plain_copies(value, path: str = "") -> list[str]:
    """The paths where the key appears in a resource's inputs."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in plain_copies(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in plain_copies(v, f"{path}[{i}]")]
    return [path] if PSEUDONYM_KEY in str(value) else []


DATABRICKS_SECRET = "databricks:index/secret:Secret"


def the_key_is_secret_wherever_it_goes(ev: mockcloud.Evaluation) -> list[str]:
    """Every place of the key is a secret input (encrypted in the state); none in the stack's outputs."""
    assert PSEUDONYM_KEY not in str(ev.outputs)
    places = [(r, path) for r in ev.resources for path in plain_copies(r.inputs)]
    exposed = [f"{r.name}: {path}" for r, path in places
               if not any(path == s or path.startswith((f"{s}.", f"{s}[")) for s in r.secrets)]
    assert exposed == []
    return [f"{r.typ} {path}" for r, path in places]


def test_container_apps_passes_the_key_as_an_app_secret_the_variable_refers_to(evaluate):
    ev = evaluate("dev", PSEUDONYMISE)
    app = ev.one(APP)
    [secret] = app.inputs["configuration"]["secrets"]
    container = app.inputs["template"]["containers"][0]
    env = {var["name"]: var for var in container["env"]}
    assert env["REQUEST_LOG_PERSONAL"]["value"] == "pseudonymise"
    assert env["REQUEST_LOG_PSEUDONYM_KEY"] == {"name": "REQUEST_LOG_PSEUDONYM_KEY", "secretRef": secret["name"]}
    assert secret["value"] == PSEUDONYM_KEY
    # and in the stack's Databricks secret scope: the quality job pseudonymises the labels' ids with it
    assert set(the_key_is_secret_wherever_it_goes(ev)) == {f"{APP} configuration.secrets[0].value",
                                                           f"{mockcloud.SECRETS_VERSION} secrets.REQUEST_LOG_PSEUDONYM_KEY",
                                                           f"{DATABRICKS_SECRET} stringValue"}
    assert ev.outputs["endpoint_url"].startswith("https://"), "the app's other outputs are not secrets"
    # A changed secret makes no revision by itself: the template carries the secrets' version, which a new key changes.
    version = env[containerapp.SECRETS_VERSION]["value"]
    assert version == ev.one(mockcloud.SECRETS_VERSION).outputs["version"]
    rotated = evaluate("dev", {**PSEUDONYMISE, "requestLogPseudonymKey": "n" * 40}).one(APP)
    assert {var["name"]: var.get("value") for var in rotated.inputs["template"]["containers"][0]["env"]}[
        containerapp.SECRETS_VERSION] != version
    plain = evaluate("dev").one(APP)
    assert "secrets" not in plain.inputs["configuration"], "drop: no secret at all"
    assert containerapp.SECRETS_VERSION not in str(plain.inputs["template"])


def test_leaving_pseudonymise_keeps_the_secret_declared_until_the_key_is_removed(evaluate):
    """Container Apps refuses to delete a secret an active revision refers to, and during a release the stable
    (pseudonymising) revision does: the change that leaves pseudonymise keeps the key declared, no variable refers to
    it, and its removal comes in a later change (audit 2 #1)."""
    for mode in ("drop", "keep"):
        ev = evaluate("dev", {**PSEUDONYMISE, "observability.requestLogPersonal": mode})
        app = ev.one(APP)
        [secret] = app.inputs["configuration"]["secrets"]
        assert secret["value"] == PSEUDONYM_KEY
        env = {var["name"]: var for var in app.inputs["template"]["containers"][0]["env"]}
        assert "REQUEST_LOG_PSEUDONYM_KEY" not in env and env["REQUEST_LOG_PERSONAL"]["value"] == mode
        assert containerapp.SECRETS_VERSION not in env, "no variable refers to a secret: no version to roll on"
        assert set(the_key_is_secret_wherever_it_goes(ev)) == {f"{APP} configuration.secrets[0].value"}
    aks = evaluate("dev", {**PSEUDONYMISE, "observability.requestLogPersonal": "drop", "serving.target": "aks"})
    assert not aks.of_type("kubernetes:core/v1:Secret"), "AKS deletes a Secret a running pod uses without refusing"


def test_the_secrets_version_is_drawn_again_only_when_the_secrets_change():
    provider = containerapp.SecretsVersionProvider()
    created = provider.create({"secrets": {"KEY": "a" * 40}, "version": None}).outs
    assert "a" * 40 not in created["version"]
    assert not provider.diff("id", created, {"secrets": {"KEY": "a" * 40}, "version": None}).changes
    assert provider.diff("id", created, {"secrets": {"KEY": "b" * 40}, "version": None}).changes
    updated = provider.update("id", created, {"secrets": {"KEY": "b" * 40}, "version": None}).outs
    assert updated["version"] != created["version"]


def test_aks_passes_the_key_in_a_secret_and_rolls_the_pods_when_it_changes(evaluate):
    ev = evaluate("dev", {**PSEUDONYMISE, "serving.target": "aks"})
    secret = ev.one("kubernetes:core/v1:Secret")
    deployment = ev.one("kubernetes:apps/v1:Deployment")
    template = deployment.inputs["spec"]["template"]
    env = {var["name"]: var for var in template["spec"]["containers"][0]["env"]}
    assert env["REQUEST_LOG_PSEUDONYM_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": secret.inputs["metadata"]["name"], "key": "REQUEST_LOG_PSEUDONYM_KEY"}
    assert secret.inputs["metadata"]["namespace"] == deployment.inputs["metadata"]["namespace"]
    assert sorted(the_key_is_secret_wherever_it_goes(ev)) == [
        f"{DATABRICKS_SECRET} stringValue", "kubernetes:core/v1:Secret stringData.REQUEST_LOG_PSEUDONYM_KEY"]
    # The pods roll on the Secret's version, which the API server bumps on every change: nothing of the key's.
    version = template["metadata"]["annotations"][k8s_manifests.SECRET_VERSION]
    assert version == secret.outputs["metadata"]["resourceVersion"]
    rotated = evaluate("dev", {**PSEUDONYMISE, "serving.target": "aks", "requestLogPseudonymKey": "n" * 40})
    assert rotated.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["metadata"]["annotations"][
        k8s_manifests.SECRET_VERSION] != version


@pytest.mark.parametrize("target", ["containerapps", "aks"])
def test_a_pseudonymising_stack_keeps_every_platform_rule(evaluate, target):
    results = platform_rules.check(evaluate("dev", {**PSEUDONYMISE, "serving.target": target}))
    assert all(r.ok for r in results), platform_rules.report(results)
