"""Two projects side by side: the dev stack of this repository's project and of a second one (another `name`,
another catalog schema and tables, the same subscription, location, catalog and metastore), evaluated under mocks
on both serving targets. Every name either declares (resource names, the names of jobs, experiments, models,
scopes, credentials and principals, the registry and repository, Unity Catalog objects, the names the jobs' tasks
are given: every input that names something) is collected, and the two sets share nothing but what is listed in
SHARED, each with its reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from mlflow.tracking import MlflowClient

from infra import jobwheel
from testing import mockcloud
from tests.infra.conftest import settings_of

# The second project: its own name, schema and tables (its registry is its own default, cr<name><environment>).
OTHER = "house-prices"
OTHER_SCHEMA = "house"
TARGETS = ("containerapps", "aks")

# What two projects in one catalog and metastore do share, on purpose: given by config, not derived.
SHARED = {
    "catalog dev": "the Unity Catalog catalog both register in (databricks.catalog): each project has its own schema",
}


def other_overrides() -> dict:
    catalog = settings_of("dev").databricks.catalog
    table = f"{catalog}.{OTHER_SCHEMA}"
    # Another team deploys as its own identity: a Grant is authoritative for its principal on its securable, so two
    # projects granting one deployer USE_CATALOG on the shared catalog would each revoke it when destroyed.
    return {"name": OTHER, "databricks.deployer": f"{OTHER}-dev@example.com", "databricks.schema": OTHER_SCHEMA,
            "databricks.dataTable": f"{table}.listings",
            "databricks.batch.inputTable": f"{table}.listings_for_sale",
            "databricks.batch.outputTable": f"{table}.price_predictions",
            "databricks.batch.rejectsTable": f"{table}.price_prediction_rejects"}


@pytest.fixture(scope="module")
def other_registered(stack_registry) -> None:
    """The session's model, registered again under the second project's model name with @champion (what the
    program resolves; the naming does not care what the model predicts)."""
    client = MlflowClient(tracking_uri=stack_registry["tracking_uri"], registry_uri=stack_registry["tracking_uri"])
    name = settings_of("dev", other_overrides()).model.full_name
    source = client.get_model_version(stack_registry["model_name"], stack_registry["version"])
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
        version = client.create_model_version(name, source.source, run_id=source.run_id, tags=source.tags)
        client.set_registered_model_alias(name, "champion", version.version)


@pytest.fixture(scope="module", params=TARGETS)
def both(request, evaluate, other_registered) -> tuple[mockcloud.Evaluation, mockcloud.Evaluation]:
    target = {"serving.target": request.param}
    return evaluate("dev", target), evaluate("dev", {**other_overrides(), **target})


# ---- what names something, per resource type ----

Names = Iterator[str]


def _inputs(*keys: str) -> Callable[[mockcloud.Captured, mockcloud.Evaluation], Names]:
    """The values of these inputs, each a name of the resource (its own, or the one its service shows)."""
    def extract(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
        yield from (f"{k} {r.inputs[k]}" for k in keys if r.inputs.get(k))
    return extract


def _scoped(scope: str, *keys: str) -> Callable[[mockcloud.Captured, mockcloud.Evaluation], Names]:
    """Names unique only inside a parent (the parent's name or id is in `scope`): the pair is the identity."""
    def extract(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
        yield "/".join(str(r.inputs[k]) for k in (scope, *keys))
    return extract


def _unity_catalog(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
    yield f"{r.typ.split('/')[-1].split(':')[0]} {r.inputs['catalogName']}.{r.inputs['schemaName']}.{r.inputs['name']}"


def _grant(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
    [(kind, securable)] = [(k, v) for k, v in r.inputs.items() if k not in ("principal", "privileges")]
    yield f"{kind} {securable}"  # the securable (a shared catalog is listed in SHARED)
    yield f"{r.inputs['principal']} on {kind} {securable}"


FLAGS = ("--data", "--model-name", "--model-module", "--experiment", "--service-credential", "--input-table",
         "--output-table", "--rejects-table", "--model-uri")


def _job(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
    yield f"job {r.inputs['name']}"
    for task in r.inputs["tasks"]:
        wheel = task["pythonWheelTask"]
        yield f"wheel {wheel['packageName']}"
        yield from (f"library {library['whl']}" for library in task.get("libraries") or [])
        params = wheel["parameters"]
        yield from (f"{flag} {params[params.index(flag) + 1]}" for flag in FLAGS if flag in params)
        if "--app-name" in params:  # the request log the drift job reads: its app (or container) in its workspace
            source = [params[params.index(flag) + 1] for flag in ("--workspace-id", "--namespace", "--app-name")]
            yield "request log " + "/".join(source)
    assert all(task["pythonWheelTask"]["entryPoint"] in jobwheel.ENTRY_POINTS for task in r.inputs["tasks"])


def _permissions(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
    yield "acl of " + " ".join(f"{k} {v}" for k, v in r.inputs.items() if k.endswith(("Id", "Path")))


def _image(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
    image = r.inputs["imageName"]
    yield f"image {image}"
    yield "repository " + image.split("/", 1)[1].rsplit(":", 1)[0]  # in its registry, and in any one registry


def _kubernetes(r: mockcloud.Captured, ev: mockcloud.Evaluation) -> Names:
    """Kubernetes objects live in the project's own cluster: the cluster's name scopes theirs."""
    cluster = ev.one("azure-native:containerservice:ManagedCluster").inputs["resourceName"]
    metadata = r.inputs["metadata"]
    yield f"{cluster}/{metadata.get('namespace', '')}/{r.typ}/{metadata['name']}"
    if part_of := (metadata.get("labels") or {}).get("app.kubernetes.io/part-of"):
        yield f"part-of {part_of}"


EXTRACTORS: dict[str, Callable[[mockcloud.Captured, mockcloud.Evaluation], Names]] = {
    "azure-native:resources:ResourceGroup": _inputs("resourceGroupName"),
    "azure-native:operationalinsights:Workspace": _inputs("workspaceName"),
    "azure-native:operationalinsights:SavedSearch": _scoped("workspaceName", "savedSearchId"),
    "azure-native:applicationinsights:Component": _inputs("resourceName"),
    "azure-native:monitor:ActionGroup": _inputs("actionGroupName"),  # groupShortName: a label in SMS, not a name
    "azure-native:monitor:ScheduledQueryRule": _inputs("ruleName"),
    "azure-native:monitor:DiagnosticSetting": _scoped("resourceUri", "name"),
    "azure-native:containerregistry:Registry": _inputs("registryName"),
    "azure-native:managedidentity:UserAssignedIdentity": _inputs("resourceName"),
    # Azure names an assignment by a GUID; what makes it one is (scope, role, principal).
    "azure-native:authorization:RoleAssignment": _scoped("scope", "roleDefinitionId", "principalId"),
    "azure-native:databricks:Workspace": _inputs("workspaceName", "managedResourceGroupId"),
    "azure-native:databricks:AccessConnector": _inputs("connectorName"),
    "azure-native:app:ManagedEnvironment": _inputs("environmentName"),
    "azure-native:app:ContainerApp": _inputs("containerAppName"),
    "azure-native:app:ContainerAppsAuthConfig": _scoped("containerAppName", "authConfigName"),
    "azure-native:containerservice:ManagedCluster": _inputs("resourceName", "dnsPrefix"),
    "azure-native:monitor:AzureMonitorWorkspace": _inputs("azureMonitorWorkspaceName"),
    "azure-native:monitor:DataCollectionEndpoint": _inputs("dataCollectionEndpointName"),
    "azure-native:monitor:DataCollectionRule": _inputs("dataCollectionRuleName"),
    "azure-native:monitor:DataCollectionRuleAssociation": _scoped("resourceUri", "associationName"),
    "azure-native:alertsmanagement:PrometheusRuleGroup": _inputs("ruleGroupName"),
    "docker:index/image:Image": _image,
    # Dynamic resources that name nothing in the cloud: a wait, and a patch of the project's own app.
    **dict.fromkeys(("pulumi-python:dynamic/mlops:RbacPropagation", "pulumi-python:dynamic/mlops:IngressOpener"),
                    lambda r, ev: iter(())),
    "databricks:index/servicePrincipal:ServicePrincipal": _inputs("displayName"),
    "databricks:index/accessControlRuleSet:AccessControlRuleSet": _inputs("name"),
    "databricks:index/mlflowExperiment:MlflowExperiment": _inputs("name"),
    "databricks:index/directory:Directory": _inputs("path"),
    "databricks:index/clusterPolicy:ClusterPolicy": _inputs("name"),
    "databricks:index/sqlEndpoint:SqlEndpoint": _inputs("name"),  # the quality loop's warehouse: workspace-wide names
    "databricks:index/mlflowModel:MlflowModel": _inputs("name"),
    "databricks:index/registeredModel:RegisteredModel": _unity_catalog,
    "databricks:index/volume:Volume": _unity_catalog,
    "databricks:index/sqlTable:SqlTable": _unity_catalog,
    "databricks:index/qualityMonitor:QualityMonitor": lambda r, ev: iter([f"monitor {r.inputs['tableName']}"]),
    "databricks:index/file:File": _inputs("path"),
    "databricks:index/workspaceFile:WorkspaceFile": _inputs("path"),
    "databricks:index/grant:Grant": _grant,
    "databricks:index/job:Job": _job,
    "databricks:index/permissions:Permissions": _permissions,
    "databricks:index/secretScope:SecretScope": _inputs("name"),
    "databricks:index/secret:Secret": _scoped("scope", "key"),
    "databricks:index/secretAcl:SecretAcl": _scoped("scope", "principal"),
    "databricks:index/credential:Credential": _inputs("name"),
    **dict.fromkeys(("kubernetes:core/v1:Namespace", "kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service",
                     "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "kubernetes:policy/v1:PodDisruptionBudget",
                     "kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:core/v1:ConfigMap"), _kubernetes),
}


def physical_names(ev: mockcloud.Evaluation) -> set[str]:
    unknown = {r.typ for r in ev.custom} - set(EXTRACTORS)
    assert not unknown, f"say what names a {sorted(unknown)} (EXTRACTORS), so this test sees its names"
    return {name for r in ev.custom for name in EXTRACTORS[r.typ](r, ev)}


def test_two_projects_share_no_name(both):
    ours, theirs = (physical_names(ev) for ev in both)
    assert len(ours) > 60 and len(theirs) == len(ours), "both declare the same kinds of things"
    assert set(SHARED) <= ours & theirs, "every exception is still shared (else drop it)"
    assert ours & theirs - set(SHARED) == set()


def test_the_second_project_is_another_name_not_another_subscription(both):
    ours, theirs = both
    for typ in ("azure-native:resources:ResourceGroup", "azure-native:databricks:Workspace"):
        assert ours.one(typ).inputs["location"] == theirs.one(typ).inputs["location"]
    ours_s, theirs_s = settings_of("dev"), settings_of("dev", other_overrides())
    assert ours_s.databricks.catalog == theirs_s.databricks.catalog and ours_s.names.project != theirs_s.names.project
    assert theirs_s.registry.name == theirs_s.names.registry != ours_s.registry.name
    assert theirs.one("azure-native:containerregistry:Registry").inputs["registryName"] == theirs_s.registry.name
    assert [r.inputs["resourceGroupName"] for r in theirs.of_type("azure-native:resources:ResourceGroup")] == [
        f"rg-{OTHER}-dev"]
