"""Azure Container Apps: the environment's logs, revisions and traffic, secrets, allocations, pulling with a managed
identity, and the auth config that keeps a new app closed until it exists.
"""

from __future__ import annotations

import re
from typing import Any

from infra import kql
from testing.mockcloud import Evaluation
from testing.platform_rules.common import (
    ACR_PULL_ROLE,
    APP,
    AUTH_CONFIG,
    CLUSTER,
    DEPLOYMENT,
    DIAGNOSTICS,
    ENVIRONMENT,
    ERROR_RATE_ALERT,
    GUID,
    QUERY_RULE,
    ROLE,
    Rule,
    _get,
)


def logs_have_a_destination(ev: Evaluation) -> list[str]:
    """azure-monitor sends the logs where a diagnostic setting says; log-analytics needs the workspace's shared key."""
    problems = []
    for env in ev.of_type(ENVIRONMENT):
        destination = _get(env.inputs, "appLogsConfiguration", "destination")
        settings = [d for d in ev.of_type(DIAGNOSTICS) if d.inputs.get("resourceUri") == env.id]
        if destination == "azure-monitor" and not any(d.inputs.get("workspaceId") for d in settings):
            problems.append(f"{env.name}: azure-monitor destination without a diagnostic setting to a workspace")
        if destination == "log-analytics" and not _get(env.inputs, "appLogsConfiguration", "logAnalyticsConfiguration",
                                                       "sharedKey"):
            problems.append(f"{env.name}: log-analytics destination without a shared key")
        tables = " ".join(_get(q.inputs, "criteria", "allOf", 0, "query") or "" for q in ev.of_type(QUERY_RULE))
        if destination == "azure-monitor" and "ContainerApp" in tables and "_CL" in tables:
            problems.append(f"{env.name}: alert queries read ..._CL tables, which only the log-analytics destination fills")
    return problems


def platform_5xx_counted(ev: Evaluation) -> list[str]:
    """Container Apps: the ingress's 5xx (no healthy replica, a crashed one, a timeout) never reach the app's log. Only
    the environment's HTTP logs (a diagnostic-setting category; the log-analytics destination has none) record them,
    so the error-rate alert must read ContainerAppHTTPLogs and a setting must send that category to its workspace."""
    problems = []
    error_queries = [q for q in ev.of_type(QUERY_RULE) if q.name.endswith(ERROR_RATE_ALERT)]
    for env in ev.of_type(ENVIRONMENT):
        destination = _get(env.inputs, "appLogsConfiguration", "destination")
        sent = {(log.get("category"), d.inputs.get("workspaceId")) for d in ev.of_type(DIAGNOSTICS)
                if d.inputs.get("resourceUri") == env.id for log in d.inputs.get("logs") or [] if log.get("enabled")}
        for rule in error_queries:
            query = _get(rule.inputs, "criteria", "allOf", 0, "query") or ""
            scope = (rule.inputs.get("scopes") or [""])[0]
            if kql.HTTP_LOGS not in query or f"'{kql.FROM_APP}'" not in query:
                problems.append(f"{rule.name}: does not count the 5xx the ingress returned itself ({kql.HTTP_LOGS} "
                                f"rows whose ResponseCodeDetails is not {kql.FROM_APP})")
            elif destination != "azure-monitor" or (kql.HTTP_LOGS, scope) not in sent:
                problems.append(f"{rule.name}: reads {kql.HTTP_LOGS}, but {env.name} sends no such logs to the rule's "
                                "workspace (a diagnostic setting with that category, azure-monitor destination)")
    return problems


def one_diagnostic_setting_per_destination(ev: Evaluation) -> list[str]:
    """A second setting on one resource to the same workspace is refused ("Data sink ... is already used")."""
    seen: dict[tuple[str, str], str] = {}
    problems = []
    for setting in ev.of_type(DIAGNOSTICS):
        key = (str(setting.inputs.get("resourceUri")), str(setting.inputs.get("workspaceId")))
        if key in seen:
            problems.append(f"{setting.name}: {seen[key]} already sends this resource's logs to that workspace")
        seen[key] = setting.name
    return problems


def single_revision_unless_split(ev: Evaluation) -> list[str]:
    """In Multiple mode Azure keeps every earlier revision active (running minReplicas, billed) until deactivated."""
    problems = []
    for app in ev.of_type(APP):
        mode = _get(app.inputs, "configuration", "activeRevisionsMode")
        traffic = _get(app.inputs, "configuration", "ingress", "traffic") or []
        split = any(not t.get("latestRevision") for t in traffic)
        if mode == "Multiple" and not split:
            problems.append(f"{app.name}: Multiple revision mode with no traffic split keeps superseded revisions running")
        if mode != "Multiple" and split:
            problems.append(f"{app.name}: revision weights need Multiple revision mode")
    return problems


LABEL = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")


def traffic_labels_and_weights(ev: Evaluation) -> list[str]:
    """Azure refuses a traffic list whose weights do not sum to 100 or that repeats a label; a label is a DNS name
    part (its URL is <app>---<label>.<domain>, one DNS label of at most 63 characters) and needs Multiple mode."""
    problems = []
    for app in ev.of_type(APP):
        traffic = _get(app.inputs, "configuration", "ingress", "traffic") or []
        labels = [t["label"] for t in traffic if t.get("label")]
        if traffic and sum(int(t.get("weight") or 0) for t in traffic) != 100:
            problems.append(f"{app.name}: traffic weights sum to {sum(int(t.get('weight') or 0) for t in traffic)}, not 100")
        if len(labels) != len(set(labels)):
            problems.append(f"{app.name}: a traffic label is given twice: {labels}")
        name = str(app.inputs.get("containerAppName") or app.name)
        for label in labels:
            if not LABEL.fullmatch(label) or len(f"{name}---{label}") > 63:
                problems.append(f"{app.name}: label {label!r} must be lowercase letters, digits and '-', and "
                                f"{name}---{label} one DNS label of at most 63 characters")
        if labels and _get(app.inputs, "configuration", "activeRevisionsMode") != "Multiple":
            problems.append(f"{app.name}: traffic labels need Multiple revision mode")
    return problems


SECRET_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?")


def container_app_secrets(ev: Evaluation) -> list[str]:
    """A secret's name is lowercase letters, digits and '-', starts and ends with a letter or digit, at most 253
    characters (ContainerAppInvalidSecretName); a variable's secretRef names a secret of the app."""
    problems = []
    for app in ev.of_type(APP):
        names = [str(secret.get("name")) for secret in _get(app.inputs, "configuration", "secrets") or []]
        problems += [f"{app.name}: secret name {name!r} must be lowercase letters, digits and '-', starting and ending "
                     "with a letter or digit, at most 253 characters" for name in names if not SECRET_NAME.fullmatch(name)]
        for container in _get(app.inputs, "template", "containers") or []:
            problems += [f"{app.name}: {var.get('name')} refers to secret {var['secretRef']!r}, which the app does not "
                         "declare" for var in container.get("env") or [] if var.get("secretRef") and
                         var["secretRef"] not in names]
    return problems


def consumption_allocation(ev: Evaluation) -> list[str]:
    problems = []
    for app in ev.of_type(APP):
        for container in _get(app.inputs, "template", "containers") or []:
            cpu = float(_get(container, "resources", "cpu") or 0)
            memory = str(_get(container, "resources", "memory") or "")
            if cpu * 4 != int(cpu * 4) or not 0.25 <= cpu <= 4 or memory != f"{cpu * 2:g}Gi":
                problems.append(f"{app.name}: {cpu} vCPU / {memory} is not a Consumption allocation (cpu 0.25..4, "
                                "memory 2 x cpu Gi)")
    return problems


RBAC_WAIT = "pulumi-python:dynamic/mlops:RbacPropagation"


def _propagated_grants(ev: Evaluation, dependencies: list[str]) -> list[Any]:
    """The AcrPull assignments a resource waits for through a propagation wait (infra/registry.py RbacPropagation)."""
    waits = [w for w in ev.of_type(RBAC_WAIT) if w.urn in dependencies]
    return [r for r in ev.of_type(ROLE) for w in waits if r.urn in w.dependencies
            and str(r.inputs.get("roleDefinitionId", "")).endswith(ACR_PULL_ROLE)]


def pull_identity_ready_before_first_revision(ev: Evaluation) -> list[str]:
    """A new assignment takes minutes to take effect: the first pull waits for it, not only for its creation."""
    problems = []
    for app in ev.of_type(APP):
        for registry in _get(app.inputs, "configuration", "registries") or []:
            if registry.get("identity") and not _propagated_grants(ev, app.dependencies):
                problems.append(f"{app.name}: pulls with an identity but does not wait for its AcrPull assignment to "
                                "propagate (an RbacPropagation after the assignment)")
    if ev.of_type(CLUSTER):
        problems += [f"{d.name}: pulls with the kubelet identity but does not wait for its AcrPull assignment to "
                     "propagate" for d in ev.of_type(DEPLOYMENT) if not _propagated_grants(ev, d.dependencies)]
    return problems


def auth_configs(ev: Evaluation) -> list[str]:
    """An app has one auth config, named `current`; Entra's allowed applications and client id are application (client)
    ids, GUIDs (a display name or an object id is accepted by ARM and matches no token); the auth sidecar only sees
    requests that come through the app's ingress."""
    problems = []
    apps = {app.urn: app for app in ev.of_type(APP)}
    for auth in ev.of_type(AUTH_CONFIG):
        if auth.inputs.get("authConfigName") != "current":
            problems.append(f"{auth.name}: authConfigName {auth.inputs.get('authConfigName')!r} must be 'current'")
        aad = _get(auth.inputs, "identityProviders", "azureActiveDirectory") or {}
        ids = [_get(aad, "registration", "clientId"),
               *(_get(aad, "validation", "defaultAuthorizationPolicy", "allowedApplications") or [])]
        problems += [f"{auth.name}: {value!r} is not an application (client) id (a GUID)" for value in ids
                     if not GUID.fullmatch(str(value))]
        guarded = [apps[d] for d in auth.dependencies if d in apps]
        if not guarded:
            problems.append(f"{auth.name}: belongs to no container app of this stack")
        problems += [f"{auth.name}: {app.name} has no ingress, so no request passes the auth sidecar" for app in guarded
                     if not _get(app.inputs, "configuration", "ingress")]
    return problems


OPENER = "pulumi-python:dynamic/mlops:IngressOpener"


def closed_until_auth(ev: Evaluation) -> list[str]:
    """An app's auth config can be created only after the app; an app created with external ingress answers anyone
    until then. So an app this `up` creates is closed (a deny-all IP restriction) and opened by something that waits
    for its auth config; an app declared open must be one the program found existing (its lookup)."""
    problems = []
    apps = {app.urn: app for app in ev.of_type(APP)}
    looked_up = {str(args.get("containerAppName")) for token, args in ev.calls if token == "azure-native:app:getContainerApp"}
    for auth in ev.of_type(AUTH_CONFIG):
        for app in (apps[d] for d in auth.dependencies if d in apps):
            if not any(auth.urn in opener.dependencies for opener in ev.of_type(OPENER)):
                problems.append(f"{app.name}: nothing opens its ingress after {auth.name} exists")
            rules = _get(app.inputs, "configuration", "ingress", "ipSecurityRestrictions") or []
            deny_all = any(r.get("action") == "Deny" and r.get("ipAddressRange") == "0.0.0.0/0" for r in rules)
            if not deny_all and str(app.inputs.get("containerAppName")) not in looked_up:
                problems.append(f"{app.name}: may be created public before {auth.name} exists (no deny-all restriction, "
                                "and the program did not look it up)")
    return problems


def internal_environment_subnet(ev: Evaluation) -> list[str]:
    """An internal environment has no public IP: it must be given the subnet its internal load balancer lives in."""
    return [f"{env.name}: vnetConfiguration.internal needs infrastructureSubnetId" for env in ev.of_type(ENVIRONMENT)
            if _get(env.inputs, "vnetConfiguration", "internal") and not _get(env.inputs, "vnetConfiguration",
                                                                              "infrastructureSubnetId")]


RULES: tuple[Rule, ...] = (
    Rule("container-apps-log-destination", "azure-monitor logs go where a diagnostic setting says (dedicated tables "
         "without suffixes); log-analytics needs the shared key and fills ..._CL tables",
         "https://learn.microsoft.com/azure/container-apps/log-options", logs_have_a_destination),
    Rule("container-apps-platform-5xx", "the ingress's own 5xx (no healthy replica, crashes, timeouts) are logged only "
         "in ContainerAppHTTPLogs, sent by a diagnostic setting with that category (azure-monitor destination)",
         "https://learn.microsoft.com/azure/container-apps/log-monitoring#http-logs", platform_5xx_counted),
    Rule("diagnostic-settings-one-per-destination", "one resource may send its logs to a workspace through one "
         "diagnostic setting only", "https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings",
         one_diagnostic_setting_per_destination),
    Rule("container-apps-revision-mode", "Single mode deactivates superseded revisions; Multiple keeps them active "
         "until deactivated; weights need Multiple", "https://learn.microsoft.com/azure/container-apps/revisions",
         single_revision_unless_split),
    Rule("container-apps-traffic-labels", "traffic weights sum to 100; labels are unique DNS name parts, reached at "
         "<app>---<label>.<domain>, and need Multiple mode",
         "https://learn.microsoft.com/azure/container-apps/traffic-splitting", traffic_labels_and_weights),
    Rule("container-apps-secrets", "a secret's name is lowercase letters, digits and '-' (at most 253); a variable "
         "refers to a secret of its app; a changed secret makes no new revision",
         "https://learn.microsoft.com/azure/container-apps/manage-secrets", container_app_secrets),
    Rule("container-apps-allocation", "Consumption: 0.25..4 vCPU in 0.25 steps with 2 GiB per vCPU",
         "https://learn.microsoft.com/azure/container-apps/containers#allocations", consumption_allocation),
    Rule("container-apps-identity-pull", "a revision (or pod) pulling with a managed identity needs its AcrPull "
         "assignment first, and propagated: a new assignment takes minutes to take effect",
         "https://learn.microsoft.com/azure/role-based-access-control/troubleshooting"
         "#symptom---role-assignment-changes-are-not-being-detected", pull_identity_ready_before_first_revision),
    Rule("container-apps-auth-config", "an app's auth config is named 'current'; Entra's client id and allowed "
         "applications are application (client) ids; the auth sidecar sees only requests through the app's ingress",
         "https://learn.microsoft.com/azure/templates/microsoft.app/containerapps/authconfigs", auth_configs),
    Rule("container-apps-closed-until-auth", "an app's auth config is a child created after the app: a new app with "
         "external ingress answers anonymous callers until then, so it is created closed and opened after",
         "https://learn.microsoft.com/azure/templates/microsoft.app/containerapps/authconfigs", closed_until_auth),
    Rule("container-apps-internal-environment", "an internal environment (no public IP) needs infrastructureSubnetId",
         "https://learn.microsoft.com/azure/container-apps/networking#accessibility-level", internal_environment_subnet),
)
