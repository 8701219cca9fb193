"""Azure's own rules: Azure Monitor (log alerts, action groups, Application Insights' Entra-only ingestion), resource
names, managed identities, the subscription (resource providers, reviewed API versions) and what the preview
identity, a Reader, may call.
"""

from __future__ import annotations

import re
from pathlib import Path

import pulumi_azure_native

from infra import jobwheel, naming
from testing.mockcloud import Evaluation
from testing.platform_rules.common import AUTH_CONFIG, JOB, MONITOR_WORKSPACE, PROM_RULES, QUERY_RULE, ROLE, Rule, _get, _minutes


def skip_query_validation(ev: Evaluation) -> list[str]:
    return [f"{r.name}: skipQueryValidation must be true" for r in ev.of_type(QUERY_RULE)
            if r.inputs.get("kind") == "LogAlert" and r.inputs.get("skipQueryValidation") is not True]


ALLOWED_WINDOWS = {"PT1M", "PT5M", "PT10M", "PT15M", "PT30M", "PT45M", "PT60M", "PT120M", "PT180M", "PT240M",
                   "PT300M", "PT360M", "PT1440M", "PT2880M", "PT1H", "PT2H", "PT3H", "PT4H", "PT5H", "PT6H",
                   "PT24H", "PT48H", "P1D", "P2D"}


def query_rule_windows(ev: Evaluation) -> list[str]:
    problems = []
    for rule in ev.of_type(QUERY_RULE):
        window, frequency = rule.inputs.get("windowSize", ""), rule.inputs.get("evaluationFrequency", "")
        if _minutes(window) not in {_minutes(w) for w in ALLOWED_WINDOWS}:
            problems.append(f"{rule.name}: windowSize {window} is not one Azure accepts")
        elif _minutes(window) < _minutes(frequency):
            problems.append(f"{rule.name}: windowSize {window} is shorter than evaluationFrequency {frequency}")
    return problems


def action_group_short_name(ev: Evaluation) -> list[str]:
    return [f"{r.name}: groupShortName {r.inputs.get('groupShortName')!r} is longer than 12 characters"
            for r in ev.of_type("azure-native:monitor:ActionGroup") if len(r.inputs.get("groupShortName", "")) > 12]


# Each service's naming rule, with where it is documented: infra/naming.py, the table the settings check the names
# they derive with before anything is declared. Here the same rules meet what the program did declare.
NAME_RULES: dict[tuple[str, str], naming.NameRule] = {
    declared: rule for rule in naming.RULES for declared in rule.declared}


def resource_names(ev: Evaluation) -> list[str]:
    problems = []
    for (typ, key), rule in NAME_RULES.items():
        for resource in ev.of_type(typ):
            if key not in resource.inputs:  # optional (an auto-named resource): nothing to check
                continue
            value = str(resource.inputs[key])
            if not rule.holds(value):
                problems.append(f"{resource.name}: {key} {value!r} must be {rule.says} ({rule.doc})")
    return problems


def managed_identity_principal_type(ev: Evaluation) -> list[str]:
    """A new identity may not have replicated yet: without principalType the assignment fails (PrincipalNotFound)."""
    return [f"{r.name}: principalType must be ServicePrincipal for a managed identity"
            for r in ev.of_type(ROLE) if r.inputs.get("principalType") != "ServicePrincipal"]


def entra_only_ingestion_has_a_publisher(ev: Evaluation) -> list[str]:
    """With local auth off, Application Insights accepts telemetry only with a token of an identity holding
    Monitoring Metrics Publisher on the component: the drift job's record would be refused without it."""
    drift = next(name for name, target in jobwheel.ENTRY_POINTS.items() if target == "monitoring.drift:cli")
    if not any(_get(task, "pythonWheelTask", "entryPoint") == drift for job in ev.of_type(JOB)
               for task in job.inputs.get("tasks") or []):
        return []
    problems = []
    for component in ev.of_type("azure-native:applicationinsights:Component"):
        if not component.inputs.get("disableLocalAuth"):
            continue
        publishers = [r for r in ev.of_type(ROLE) if r.inputs.get("scope") == component.id
                      and str(r.inputs.get("roleDefinitionId", "")).endswith("3913510d-42f4-4e42-8a64-420c390055eb")]
        if not publishers:
            problems.append(f"{component.name}: local auth is off and no identity may publish to it (Monitoring "
                            "Metrics Publisher): the drift record would be refused")
    return problems


# Namespaces a first `up` needs registered (a new subscription registers only a few by default), and why.
PROVIDERS: dict[str, str] = {
    "Microsoft.Resources": "resource group (registered by default)",
    "Microsoft.Authorization": "role assignments (registered by default)",
    "Microsoft.OperationalInsights": "Log Analytics workspace, saved searches",
    "Microsoft.Insights": "Application Insights, action group, alert rules, diagnostic settings, data collection rules",
    "Microsoft.ContainerRegistry": "the registry",
    "Microsoft.ManagedIdentity": "the pull identity",
    "Microsoft.Databricks": "the Databricks workspace",
    "Microsoft.App": "Container Apps environment and app (serving.target containerapps)",
    "Microsoft.ContainerService": "AKS cluster (serving.target aks)",
    "Microsoft.Monitor": "Azure Monitor workspace, managed Prometheus (serving.target aks)",
    "Microsoft.AlertsManagement": "Prometheus rule groups (serving.target aks)",
}
# azure-native module -> the namespace its resources live in, where the two names differ.
MODULE_NAMESPACE = {"resources": "Microsoft.Resources", "operationalinsights": "Microsoft.OperationalInsights",
                    "applicationinsights": "Microsoft.Insights", "monitor": "Microsoft.Insights",
                    "containerregistry": "Microsoft.ContainerRegistry", "managedidentity": "Microsoft.ManagedIdentity",
                    "authorization": "Microsoft.Authorization", "databricks": "Microsoft.Databricks",
                    "app": "Microsoft.App", "containerservice": "Microsoft.ContainerService",
                    "alertsmanagement": "Microsoft.AlertsManagement"}
# Types whose namespace is not their module's (azure-native files the Azure Monitor workspace under `monitor`).
TYPE_NAMESPACE = {MONITOR_WORKSPACE: "Microsoft.Monitor"}


def namespaces(ev: Evaluation) -> set[str]:
    return {TYPE_NAMESPACE.get(r.typ) or MODULE_NAMESPACE.get(r.typ.split(":")[1], f"unmapped:{r.typ.split(':')[1]}")
            for r in ev.custom if r.typ.startswith("azure-native:")}


def providers_documented(ev: Evaluation) -> list[str]:
    return [f"{namespace} is not in PROVIDERS (docs/deploy.md's first-time steps register those)"
            for namespace in sorted(namespaces(ev) - set(PROVIDERS))]


SDK = Path(pulumi_azure_native.__path__[0])
# type -> (API version the installed SDK uses, why we accept it). A preview version is accepted only with a reason;
# azure-native v3 offers other versions only through `pulumi package add azure-native <module> <version>`, a
# local SDK generated by the Pulumi CLI from the provider's schema (see docs/design/architecture.md, "API versions").
API_VERSIONS: dict[str, tuple[str, str]] = {
    "azure-native:resources:ResourceGroup": ("2024-03-01", "GA"),
    "azure-native:operationalinsights:Workspace": ("2023-09-01", "GA"),
    "azure-native:operationalinsights:SavedSearch": ("2023-09-01", "GA"),
    "azure-native:applicationinsights:Component": ("2020-02-02", "GA"),
    "azure-native:managedidentity:UserAssignedIdentity": ("2023-01-31", "GA"),
    "azure-native:authorization:RoleAssignment": ("2022-04-01", "GA"),
    "azure-native:databricks:Workspace": ("2026-01-01", "GA"),
    "azure-native:databricks:AccessConnector": ("2026-01-01", "GA"),
    "azure-native:containerservice:ManagedCluster": ("2025-09-01", "GA"),
    "azure-native:monitor:DataCollectionRule": ("2022-06-01", "GA"),
    "azure-native:monitor:DataCollectionRuleAssociation": ("2022-06-01", "GA"),
    "azure-native:monitor:DataCollectionEndpoint": ("2022-06-01", "GA"),
    MONITOR_WORKSPACE: ("2023-04-03", "GA"),
    PROM_RULES: ("2023-03-01", "GA"),
    "azure-native:monitor:DiagnosticSetting": ("2021-05-01-preview", "preview only: ARM publishes no GA version of "
                                                                     "Microsoft.Insights/diagnosticSettings"),
    "azure-native:monitor:ActionGroup": ("2024-10-01-preview", "preview default of the SDK; GA 2023-01-01 needs a "
                                                             "generated local SDK"),
    "azure-native:monitor:ScheduledQueryRule": ("2025-01-01-preview", "preview default of the SDK; skipQueryValidation "
                                                                     "is GA since 2021-08-01; GA 2026-03-01 needs a "
                                                                     "generated local SDK"),
    "azure-native:containerregistry:Registry": ("2023-01-01-preview", "preview default of the SDK; GA 2025-11-01 "
                                                                      "needs a generated local SDK"),
    "azure-native:app:ManagedEnvironment": ("2025-02-02-preview", "preview default of the SDK; GA 2026-01-01 needs a "
                                                                  "generated local SDK"),
    "azure-native:app:ContainerApp": ("2025-02-02-preview", "preview default of the SDK; GA 2026-01-01 needs a "
                                                            "generated local SDK"),
    AUTH_CONFIG: ("2025-02-02-preview", "preview default of the SDK, the same as the app's; GA 2026-01-01 needs a "
                                        "generated local SDK"),
}


def sdk_api_version(typ: str) -> str:
    """`Uses Azure REST API version X` from the installed SDK's class docstring: what `up` really sends."""
    _, module, kind = typ.split(":")
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    text = (SDK / module / f"{snake}.py").read_text()
    match = re.search(r"Uses Azure REST API version ([0-9a-z-]+)", text)
    return match.group(1) if match else ""


def api_versions_reviewed(ev: Evaluation) -> list[str]:
    problems = []
    for typ in sorted({r.typ for r in ev.custom if r.typ.startswith("azure-native:")}):
        if typ not in API_VERSIONS:
            problems.append(f"{typ}: API version {sdk_api_version(typ)} was never reviewed (add it to API_VERSIONS)")
            continue
        reviewed, why = API_VERSIONS[typ]
        actual = sdk_api_version(typ)
        if actual != reviewed:
            problems.append(f"{typ}: the SDK now sends {actual}, reviewed was {reviewed}: review it again")
        elif "preview" in actual and why == "GA":
            problems.append(f"{typ}: {actual} is a preview version; say why it is accepted")
    return problems


# Invoke token -> the ARM action it needs. Reader holds every */read action and no POST (list*/action) one.
INVOKE_ACTIONS = {
    "azure-native:databricks:getWorkspace": "Microsoft.Databricks/workspaces/read",
    "azure-native:app:getContainerApp": "Microsoft.App/containerApps/read",
    "azure-native:containerservice:listManagedClusterUserCredentials":
        "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
    "azure-native:operationalinsights:getSharedKeys": "Microsoft.OperationalInsights/workspaces/sharedKeys/action",
}
# The preview identity's roles, per serving target: Reader, and on AKS the built-in role that lets a principal
# fetch the user kubeconfig (the Kubernetes provider needs it even to diff) and, inside the cluster (Azure RBAC for
# Kubernetes, rule aks-entra-only), Azure Kubernetes Service RBAC Reader: read-only, no secrets.
PREVIEW_ROLES = {
    "containerapps": {"Reader": "*/read"},
    "aks": {"Reader": "*/read",
            "Azure Kubernetes Service Cluster User Role":
                "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
            "Azure Kubernetes Service RBAC Reader": "Microsoft.ContainerService/managedClusters/*/read (data actions)"},
}


def preview_allows(target: str, action: str) -> bool:
    grants = PREVIEW_ROLES[target].values()
    return any(action == grant or (grant == "*/read" and action.endswith("/read")) for grant in grants)


# Invokes that call the Databricks workspace, not ARM: what each asks, and why any workspace identity may.
WORKSPACE_READS = {
    "databricks:index/getCurrentUser:getCurrentUser": "GET /api/2.0/preview/scim/v2/Me: every identity may read itself",
}


def preview_needs_only_its_roles(ev: Evaluation) -> list[str]:
    # From the config: a preview's outputs stay unknown while any of them is (the image's name, say).
    target = _get(ev.config, "serving", "target") or ev.outputs.get("serving_target", "containerapps")
    problems = []
    for token, _ in ev.calls:
        if token in WORKSPACE_READS:
            continue
        action = INVOKE_ACTIONS.get(token)
        if action is None:
            problems.append(f"invoke {token} has no known ARM action: add it to INVOKE_ACTIONS")
        elif not preview_allows(target, action):
            problems.append(f"invoke {token} needs {action}, which the preview roles "
                            f"({', '.join(PREVIEW_ROLES[target])}) do not grant")
    return problems


RULES: tuple[Rule, ...] = (
    Rule("log-alert-skip-query-validation", "ARM validates a log alert's query at creation; tables without data "
         "yet fail it", "https://learn.microsoft.com/rest/api/monitor/scheduled-query-rules/create-or-update",
         skip_query_validation),
    Rule("log-alert-window", "windowSize is one of Azure's fixed durations and not shorter than evaluationFrequency",
         "https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule", query_rule_windows),
    Rule("action-group-short-name", "an action group's short name has at most 12 characters",
         "https://learn.microsoft.com/azure/azure-monitor/alerts/action-groups", action_group_short_name),
    Rule("resource-names", "each resource type has its own name length and characters (infra/naming.py: each rule "
         "with its own source; a violation names it)",
         "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules", resource_names),
    Rule("role-assignment-principal-type", "assignments to a new managed identity set principalType, or fail "
         "before the identity has replicated",
         "https://learn.microsoft.com/azure/role-based-access-control/role-assignments-template#new-service-principal",
         managed_identity_principal_type),
    Rule("app-insights-entra-ingestion", "with local auth disabled, telemetry needs an Entra token of an identity with "
         "Monitoring Metrics Publisher on the component",
         "https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication", entra_only_ingestion_has_a_publisher),
    Rule("resource-providers", "a subscription must register a resource provider before its first resource",
         "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-providers-and-types",
         providers_documented),
    Rule("api-versions", "each resource is sent with one ARM API version; preview versions can change or go",
         "https://www.pulumi.com/registry/packages/azure-native/version-guide/", api_versions_reviewed),
    Rule("preview-permissions", "a Reader can run reads, not POST actions such as listing keys or credentials",
         "https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/general#reader",
         preview_needs_only_its_roles),
)
