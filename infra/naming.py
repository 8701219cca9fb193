"""Every name a stack gives something, derived from the project's one name (config key `name`, e.g. churn-risk)
and the environment; and each service's naming rule those names must meet, with where it is documented.

So two projects (two `name`s) share no name when they share a subscription, a Databricks workspace or a Unity
Catalog metastore (tests/infra/test_two_projects.py). infra/settings.py checks every derived name against its rule
before anything is declared, and says which name `name` made and which rule it broke; testing/platform_rules/
checks what the program declared against the same rules. A few names can be set instead (registry.name, model.name,
model.module, image.repository, databricks.experiment, .filesRoot, .codeVolume, drift.secretScope): the settings
check those keys themselves, and the rule here only when the derived default is used.

This module imports nothing of Pulumi's: the settings, the jobs' wheel and the tests use it as it is.

Why one module: each derived name sits next to the service's rule it must meet, so the two are read and changed
together; the rules with their sources are most of its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RULES_PAGE = "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules"


@dataclass(frozen=True)
class NameRule:
    what: str  # "Container App name"
    pattern: str  # the whole name matches it
    says: str  # the rule in words, for the error message
    max_length: int
    doc: str  # where the rule is documented
    declared: tuple[tuple[str, str], ...] = ()  # (resource type, input key) that carry such a name: the platform check

    def holds(self, value: str) -> bool:
        return re.fullmatch(self.pattern, value) is not None


def _azure(anchor: str) -> str:
    return f"{RULES_PAGE}#{anchor}"


# Patterns allow what the documentation allows (the derivations below use a subset: lowercase, digits, '-').
RESOURCE_GROUP = NameRule(
    "resource group name", r"[-\w.()]{0,89}[-\w()]", "1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in "
    "'.'", 90, _azure("microsoftresources") + " (and the SDK's ResourceGroup.resource_group_name docstring)",
    (("azure-native:resources:ResourceGroup", "resourceGroupName"),))
LOG_ANALYTICS = NameRule(
    "Log Analytics workspace name", r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]", "4-63 letters, digits and '-', "
    "starting and ending with a letter or digit", 63, _azure("microsoftoperationalinsights"),
    (("azure-native:operationalinsights:Workspace", "workspaceName"),))
APP_INSIGHTS = NameRule(
    "Application Insights component name", r"[^%&\\?/\x00-\x1f]{0,259}[^%&\\?/\x00-\x1f. ]",
    "1-260 characters, none of % & \\ ? / or control characters, not ending in '.' or a space", 260,
    _azure("microsoftinsights"), (("azure-native:applicationinsights:Component", "resourceName"),))
ACTION_GROUP = NameRule(
    "action group name", r"[^:<>+/&%\\?|\x00-\x1f]{0,259}[^:<>+/&%\\?|\x00-\x1f. ]",
    "1-260 characters, none of : < > + / & % \\ ? | or control characters, not ending in '.' or a space", 260,
    _azure("microsoftinsights"), (("azure-native:monitor:ActionGroup", "actionGroupName"),))
ACTION_GROUP_SHORT = NameRule(
    "action group short name", r".{1,12}", "1-12 characters (SMS and e-mail show it)", 12,
    "https://learn.microsoft.com/azure/azure-monitor/alerts/action-groups",
    (("azure-native:monitor:ActionGroup", "groupShortName"),))
ALERT_RULE = NameRule(
    "log alert rule name", r"[^*<>%{}&:\\?/#|\x00-\x1f]{0,259}[^*<>%{}&:\\?/#|\x00-\x1f. ]",
    "1-260 characters, none of * < > % { } & : \\ ? / # | or control characters, not ending in '.' or a space", 260,
    _azure("microsoftinsights"), (("azure-native:monitor:ScheduledQueryRule", "ruleName"),))
IDENTITY = NameRule(
    "user-assigned identity name", r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}", "3-128 letters, digits, '_' and '-', starting "
    "with a letter or digit", 128, _azure("microsoftmanagedidentity"),
    (("azure-native:managedidentity:UserAssignedIdentity", "resourceName"),))
REGISTRY = NameRule(
    "container registry name", r"[A-Za-z0-9]{5,50}", "5-50 letters and digits, unique in all of Azure", 50,
    _azure("microsoftcontainerregistry"), (("azure-native:containerregistry:Registry", "registryName"),))
CONTAINER_APP_ENVIRONMENT = NameRule(
    "Container Apps environment name", r"(?!.*--)[a-z][a-z0-9-]{0,58}[a-z0-9]", "2-60 lowercase letters, digits and "
    "single '-', starting with a letter and ending with a letter or digit", 60, _azure("microsoftapp"),
    (("azure-native:app:ManagedEnvironment", "environmentName"),))
CONTAINER_APP = NameRule(
    "Container App name", r"(?!.*--)[a-z][a-z0-9-]{0,30}[a-z0-9]", "2-32 lowercase letters, digits and single '-', "
    "starting with a letter and ending with a letter or digit", 32,
    _azure("microsoftapp") + " (PSRule for Azure: Azure.ContainerApp.Name)",
    (("azure-native:app:ContainerApp", "containerAppName"),))
AKS_CLUSTER = NameRule(
    "AKS cluster name", r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?", "1-63 letters, digits, '_' and '-', "
    "starting and ending with a letter or digit", 63, _azure("microsoftcontainerservice"),
    (("azure-native:containerservice:ManagedCluster", "resourceName"),))
AKS_NODE_RESOURCE_GROUP = NameRule(
    "AKS node resource group name (AKS makes it: MC_<resource group>_<cluster>_<location>)", r"[-\w.()]{1,80}",
    "at most 80 characters (AKS refuses the cluster: \"The length of the node resource group name is too long\")",
    80, "https://learn.microsoft.com/azure/aks/faq#why-are-two-resource-groups-created-with-aks and "
    "https://aka.ms/aks-naming-rules (the error's own link)")
AKS_DNS_PREFIX = NameRule(
    "AKS DNS prefix", r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,52}[A-Za-z0-9])?", "1-54 letters, digits and '-', starting and "
    "ending with a letter or digit", 54,
    "https://azure.github.io/PSRule.Rules.Azure/en/rules/Azure.AKS.DNSPrefix/ (the cluster's FQDN label)",
    (("azure-native:containerservice:ManagedCluster", "dnsPrefix"),))
MONITOR_WORKSPACE = NameRule(
    "Azure Monitor workspace name", r"[A-Za-z0-9](?:[A-Za-z0-9-]{2,42})[A-Za-z0-9]", "4-44 letters, digits and '-', "
    "starting and ending with a letter or digit", 44, _azure("microsoftmonitor"),
    (("azure-native:monitor:AzureMonitorWorkspace", "azureMonitorWorkspaceName"),))
DATA_COLLECTION_ENDPOINT = NameRule(
    "data collection endpoint name", r"[A-Za-z0-9][A-Za-z0-9-]{1,42}[A-Za-z0-9]", "3-44 letters, digits and '-', "
    "starting and ending with a letter or digit", 44,
    _azure("microsoftinsights") + " (Microsoft's own managed Prometheus templates cut MSProm-<location>-<cluster> to "
    "44: github.com/Azure/ARO-HCP dev-infrastructure/modules/metrics/datacollection.bicep)",
    (("azure-native:monitor:DataCollectionEndpoint", "dataCollectionEndpointName"),))
DATA_COLLECTION_RULE = NameRule(
    "data collection rule name", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "1-64 letters, digits, '_', '.' and '-', "
    "starting with a letter or digit", 64, _azure("microsoftinsights"),
    (("azure-native:monitor:DataCollectionRule", "dataCollectionRuleName"),))
PROMETHEUS_RULE_GROUP = NameRule(
    "Prometheus rule group name", r"[^*<>%{}&:\\?/#|\x00-\x1f]{0,259}[^*<>%{}&:\\?/#|\x00-\x1f. ]",
    "1-260 characters, none of * < > % { } & : \\ ? / # | or control characters, not ending in '.' or a space", 260,
    _azure("microsoftalertsmanagement"), (("azure-native:alertsmanagement:PrometheusRuleGroup", "ruleGroupName"),))
DATABRICKS_WORKSPACE = NameRule(
    "Databricks workspace name", r"[A-Za-z0-9_-]{3,64}", "3-64 letters, digits, '_' and '-'", 64,
    "https://learn.microsoft.com/rest/api/databricks/workspaces/create-or-update (workspaceName: minLength 3, "
    f"maxLength 64); characters: {_azure('microsoftdatabricks')}",
    (("azure-native:databricks:Workspace", "workspaceName"),))
ACCESS_CONNECTOR = NameRule(
    "Databricks access connector name", r"[A-Za-z0-9_-]{3,64}", "3-64 letters, digits, '_' and '-'", 64,
    "https://learn.microsoft.com/rest/api/databricks/access-connectors/create-or-update (connectorName: minLength 3, "
    f"maxLength 64); characters: {_azure('microsoftdatabricks')}",
    (("azure-native:databricks:AccessConnector", "connectorName"),))
SECRET_SCOPE = NameRule(
    "Databricks secret scope name", r"[A-Za-z0-9_.@-]{1,128}", "1-128 letters, digits, '-', '_', '@' and '.'", 128,
    "https://learn.microsoft.com/azure/databricks/security/secrets/ (scope names)",
    (("databricks:index/secretScope:SecretScope", "name"),))
UNITY_CATALOG = NameRule(
    "Unity Catalog object name", r"[^./\s\x00-\x1f]{1,255}", "1-255 characters, no '.', '/', space or control "
    "character", 255, "https://learn.microsoft.com/azure/databricks/sql/language-manual/sql-ref-names",
    (("databricks:index/credential:Credential", "name"),))
UNITY_CATALOG_IDENTIFIER = NameRule(
    "Unity Catalog object name (used unquoted in three-part names)", r"[A-Za-z_][A-Za-z0-9_]{0,254}",
    "1-255 letters, digits and '_', not starting with a digit (a plain SQL identifier)", 255,
    "https://learn.microsoft.com/azure/databricks/sql/language-manual/sql-ref-identifiers",
    (("databricks:index/volume:Volume", "name"), ("databricks:index/registeredModel:RegisteredModel", "name")))
JOB_NAME = NameRule(
    "Databricks job name", r".{1,4096}", "at most 4096 characters", 4096,
    "https://docs.databricks.com/api/azure/workspace/jobs/create (name)", (("databricks:index/job:Job", "name"),))
SQL_WAREHOUSE = NameRule(
    "Databricks SQL warehouse name", r".{1,99}", "under 100 characters", 99,
    "https://docs.databricks.com/api/azure/workspace/warehouses/create (name)",
    (("databricks:index/sqlEndpoint:SqlEndpoint", "name"),))
REPOSITORY = NameRule(
    "image repository", r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*",
    "lowercase letters and digits, parts joined by '.', '_', '__' or '-' (and '/' between path components)", 256,
    "https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests")
LABEL_VALUE = NameRule(
    "Kubernetes label value", r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?", "at most 63 letters, digits, "
    "'-', '_' and '.', starting and ending with a letter or digit", 63,
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set")
DISTRIBUTION = NameRule(
    "wheel distribution name", r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", "letters, digits, '.', '_' and '-', "
    "starting and ending with a letter or digit", 200,
    "https://packaging.python.org/en/latest/specifications/name-normalization/")
MODULE = NameRule(
    "model module", r"models(?:\.[A-Za-z_][A-Za-z0-9_]*)+", "models.<identifier> (a Python module of the models "
    "package: letters, digits and '_')", 200, "https://docs.python.org/3/reference/lexical_analysis.html#identifiers")

RULES: tuple[NameRule, ...] = (
    RESOURCE_GROUP, LOG_ANALYTICS, APP_INSIGHTS, ACTION_GROUP, ACTION_GROUP_SHORT, ALERT_RULE, IDENTITY, REGISTRY,
    CONTAINER_APP_ENVIRONMENT, CONTAINER_APP, AKS_CLUSTER, AKS_NODE_RESOURCE_GROUP, AKS_DNS_PREFIX, MONITOR_WORKSPACE,
    DATA_COLLECTION_ENDPOINT, DATA_COLLECTION_RULE, PROMETHEUS_RULE_GROUP, DATABRICKS_WORKSPACE, ACCESS_CONNECTOR,
    SECRET_SCOPE, UNITY_CATALOG, UNITY_CATALOG_IDENTIFIER, JOB_NAME, SQL_WAREHOUSE, REPOSITORY, LABEL_VALUE, DISTRIBUTION, MODULE)
ALERT_KEYS = ("error-rate", "p95-latency", "restarts", "drift", "quality", "no-traffic")  # infra/observability.py's alert rules


def _article(words: str) -> str:
    return "an" if words[:1].lower() in "aeio" else "a"  # an AKS..., an Azure..., a Unity Catalog...


def _cut(name: str, length: int) -> str:
    """The first `length` characters, without a trailing '-' (a name ends with a letter or digit)."""
    return name[:length].rstrip("-")


@dataclass(frozen=True)
class Derived:
    """One derived name: what it names, the name, its rule, and the key that sets it instead (if any)."""
    what: str
    value: str
    rule: NameRule
    override: str | None = None  # e.g. "registry.name"
    aks_only: bool = False


@dataclass(frozen=True)
class Names:
    """The names of one stack: `<kind>-<name>-<environment>` for Azure resources, `<name>-<what>-<environment>` for
    Databricks objects, `<name with _>` where only identifiers go (Unity Catalog, Python)."""
    project: str  # the config key `name`: churn-risk
    environment: str
    location: str

    @property
    def slug(self) -> str:
        """The name as an identifier: churn_risk."""
        return self.project.replace("-", "_")

    def azure(self, kind: str) -> str:
        return f"{kind}-{self.project}-{self.environment}"

    # ---- Azure ----
    @property
    def resource_group(self) -> str:
        return self.azure("rg")

    @property
    def databricks_managed_resource_group(self) -> str:
        """Databricks creates it beside ours (infra/databricks.py names it by our group's id + -databricks)."""
        return f"{self.resource_group}-databricks"

    @property
    def log_analytics(self) -> str:
        return self.azure("log")

    @property
    def app_insights(self) -> str:
        return self.azure("appi")

    @property
    def action_group(self) -> str:
        return self.azure("ag")

    @property
    def action_group_short(self) -> str:
        """What an SMS or e-mail shows as the sender: as much of the name as fits beside the environment in 12."""
        compact = self.project.replace("-", "")
        return f"{compact[:max(0, 12 - len(self.environment))]}{self.environment}"[:12]

    def alert_rule(self, key: str) -> str:
        return f"{self.azure('alert')}-{key}"

    @property
    def pull_identity(self) -> str:
        return self.azure("id-pull")

    @property
    def registry(self) -> str:
        """Globally unique, letters and digits only: cr<name without '-'><environment>."""
        return f"cr{self.project.replace('-', '')}{self.environment}"

    @property
    def container_app_environment(self) -> str:
        return self.azure("cae")

    @property
    def container_app(self) -> str:
        return self.azure("ca")

    @property
    def aks_cluster(self) -> str:
        return self.azure("aks")

    @property
    def aks_node_resource_group(self) -> str:
        """The resource group AKS creates for the cluster's nodes (not declared here: AKS names it so)."""
        return f"MC_{self.resource_group}_{self.aks_cluster}_{self.location}"

    @property
    def monitor_workspace(self) -> str:
        return self.azure("amw")

    @property
    def container_insights_rule(self) -> str:
        """Named as the portal's Container Insights onboarding names it, cut to the rule's 64 characters."""
        return _cut(f"MSCI-{self.location}-{self.aks_cluster}", DATA_COLLECTION_RULE.max_length)

    @property
    def prometheus_collection(self) -> str:
        """The managed Prometheus endpoint, rule and association, named as Microsoft's onboarding templates name them:
        MSProm-<location>-<cluster>, cut to an endpoint's 44 characters (their `take(..., 44)`)."""
        return _cut(f"MSProm-{self.location}-{self.aks_cluster}", DATA_COLLECTION_ENDPOINT.max_length)

    @property
    def prometheus_rule_group(self) -> str:
        return f"scoring-{self.aks_cluster}"

    @property
    def part_of(self) -> str:
        """The app.kubernetes.io/part-of label of the AKS objects."""
        return self.project

    # ---- Databricks ----
    @property
    def databricks_workspace(self) -> str:
        return self.azure("dbw")

    @property
    def access_connector(self) -> str:
        return self.azure("dbac-logs")

    @property
    def jobs_principal(self) -> str:
        return f"{self.project}-jobs-{self.environment}"

    @property
    def logs_credential(self) -> str:
        """The Unity Catalog service credential the drift job reads Log Analytics with (metastore-wide name)."""
        return f"{self.project}-logs-{self.environment}"

    @property
    def secret_scope(self) -> str:
        return f"{self.project}-{self.environment}"

    def job(self, kind: str) -> str:
        """train, drift, batch: <name>-<kind>-<environment>."""
        return f"{self.project}-{kind}-{self.environment}"

    @property
    def workspace_folder(self) -> str:
        """The stack's workspace folder: outside /Shared, whose every object all users may manage by inheritance."""
        return f"/{self.project}/{self.environment}"

    @property
    def experiment(self) -> str:
        return f"{self.workspace_folder}/{self.project}-{self.environment}"

    @property
    def files_root(self) -> str:
        return f"{self.workspace_folder}/code"

    @property
    def sql_warehouse(self) -> str:
        """The quality loop's SQL warehouse (workspace-wide name)."""
        return f"{self.project}-quality-{self.environment}"

    def cluster_policy(self, kind: str) -> str:
        """train, drift, batch, quality: the job's cluster policy (workspace-wide name)."""
        return f"{self.project}-{kind}-{self.environment}"

    @property
    def code_volume(self) -> str:
        return f"{self.slug}_job_code"

    @property
    def registered_model(self) -> str:
        return self.slug

    # ---- the image and the jobs' code ----
    @property
    def repository(self) -> str:
        return f"{self.project}-scoring"

    @property
    def wheel_distribution(self) -> str:
        return f"{self.slug}_jobs"

    @property
    def model_module(self) -> str:
        """models/<name with _>.py (training/contract.py module_for says the same)."""
        return f"models.{self.slug}"

    def derived(self) -> list[Derived]:
        """Every derived name with its rule (AKS's only where the stack serves on AKS)."""
        return [
            Derived("resource group", self.resource_group, RESOURCE_GROUP),
            Derived("Databricks managed resource group", self.databricks_managed_resource_group, RESOURCE_GROUP),
            Derived("Log Analytics workspace", self.log_analytics, LOG_ANALYTICS),
            Derived("Application Insights component", self.app_insights, APP_INSIGHTS),
            Derived("action group", self.action_group, ACTION_GROUP),
            Derived("action group short name", self.action_group_short, ACTION_GROUP_SHORT),
            *(Derived(f"alert rule {key}", self.alert_rule(key), ALERT_RULE) for key in ALERT_KEYS),
            Derived("pull identity", self.pull_identity, IDENTITY),
            Derived("container registry", self.registry, REGISTRY, "registry.name"),
            Derived("Container Apps environment", self.container_app_environment, CONTAINER_APP_ENVIRONMENT),
            Derived("Container App", self.container_app, CONTAINER_APP),
            Derived("AKS cluster", self.aks_cluster, AKS_CLUSTER, aks_only=True),
            Derived("AKS DNS prefix", self.aks_cluster, AKS_DNS_PREFIX, aks_only=True),
            Derived("AKS node resource group", self.aks_node_resource_group, AKS_NODE_RESOURCE_GROUP, aks_only=True),
            Derived("Azure Monitor workspace", self.monitor_workspace, MONITOR_WORKSPACE, aks_only=True),
            Derived("Container Insights data collection rule", self.container_insights_rule, DATA_COLLECTION_RULE,
                    aks_only=True),
            Derived("managed Prometheus data collection endpoint", self.prometheus_collection, DATA_COLLECTION_ENDPOINT,
                    aks_only=True),
            Derived("managed Prometheus data collection rule", self.prometheus_collection, DATA_COLLECTION_RULE,
                    aks_only=True),
            Derived("Prometheus rule group", self.prometheus_rule_group, PROMETHEUS_RULE_GROUP, aks_only=True),
            Derived("app.kubernetes.io/part-of label", self.part_of, LABEL_VALUE, aks_only=True),
            Derived("Databricks workspace", self.databricks_workspace, DATABRICKS_WORKSPACE),
            Derived("access connector", self.access_connector, ACCESS_CONNECTOR),
            Derived("service credential", self.logs_credential, UNITY_CATALOG),
            Derived("secret scope", self.secret_scope, SECRET_SCOPE, "drift.secretScope"),
            Derived("SQL warehouse", self.sql_warehouse, SQL_WAREHOUSE),
            *(Derived(f"{kind} job", self.job(kind), JOB_NAME) for kind in ("train", "drift", "batch", "quality")),
            Derived("code volume", self.code_volume, UNITY_CATALOG_IDENTIFIER, "databricks.codeVolume"),
            Derived("registered model", self.registered_model, UNITY_CATALOG_IDENTIFIER, "model.name"),
            Derived("image repository", self.repository, REPOSITORY, "image.repository"),
            Derived("jobs' wheel", self.wheel_distribution, DISTRIBUTION),
            Derived("model module", self.model_module, MODULE, "model.module"),
        ]

    def problems(self, *, aks: bool, overridden: set[str], key: str = "name") -> list[str]:
        """What breaks a rule, each naming `key`, the derived name and the rule; names set by another key
        (`overridden`) and AKS's (unless `aks`) are not checked."""
        found = []
        for d in self.derived():
            if d.rule.holds(d.value) or (d.aks_only and not aks) or d.override in overridden:
                continue
            where = f"environment {self.environment}" + (f", location {self.location}" if self.location in d.value
                                                         else "")
            message = (f"{key} is {self.project!r}: the {d.what} name it makes ({where}) is {d.value!r} "
                       f"({len(d.value)} characters); {_article(d.rule.what)} {d.rule.what} must be {d.rule.says} "
                       f"({d.rule.doc})")
            remedies = []
            if len(d.value) > d.rule.max_length and (room := len(self.project) - (len(d.value) - d.rule.max_length)) > 1:
                remedies.append(f"shorten {key} to at most {room} characters")
            if d.override:
                remedies.append(f"set {d.override} instead")
            found.append(message + (f"; {' or '.join(remedies)}" if remedies else ""))
        return found
