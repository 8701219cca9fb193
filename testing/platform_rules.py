"""What Azure, Databricks, Kubernetes and the Pulumi engine refuse or do differently, as checks.

A mock accepts anything; the platform does not. Every rule we rely on or have learned is one entry of
`RULES`, with a link to where it is documented, and is checked against what the program declared
under mocks (`testing/mockcloud.py`), for every stack and both serving targets (tests/infra/test_platform_rules.py;
`make plan` prints the results). Add a rule whenever we learn one.

Some behaviour needs two `up`s to show: `changes` is Pulumi's diff between two evaluations, and
`RevisionHistory` is Container Apps' revision bookkeeping (tests/infra/test_stateful.py).

Why one module: the rules are one table a reviewer reads top to bottom, each check next to the link that
justifies it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi_azure_native

from infra import jobwheel, k8s_manifests, kql, naming, stack_files
from testing.mockcloud import Evaluation

APP = "azure-native:app:ContainerApp"
ENVIRONMENT = "azure-native:app:ManagedEnvironment"
QUERY_RULE = "azure-native:monitor:ScheduledQueryRule"
DIAGNOSTICS = "azure-native:monitor:DiagnosticSetting"
ROLE = "azure-native:authorization:RoleAssignment"
CLUSTER = "azure-native:containerservice:ManagedCluster"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
JOB = "databricks:index/job:Job"
RULE_SET = "databricks:index/accessControlRuleSet:AccessControlRuleSet"
DCR = "azure-native:monitor:DataCollectionRule"
DCRA = "azure-native:monitor:DataCollectionRuleAssociation"
MONITOR_WORKSPACE = "azure-native:monitor:AzureMonitorWorkspace"
PROM_RULES = "azure-native:alertsmanagement:PrometheusRuleGroup"
AUTH_CONFIG = "azure-native:app:ContainerAppsAuthConfig"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ERROR_RATE_ALERT = "-alert-error-rate"  # infra/observability.py names each log alert <component>-alert-<key>


@dataclass(frozen=True)
class Rule:
    key: str
    says: str  # the platform's rule, in one line
    doc: str  # where it is documented
    check: Callable[[Evaluation], list[str]]  # violations, each naming the resource


def _get(value: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and len(value) > key else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


# ---- Azure Monitor ----

def skip_query_validation(ev: Evaluation) -> list[str]:
    return [f"{r.name}: skipQueryValidation must be true" for r in ev.of_type(QUERY_RULE)
            if r.inputs.get("kind") == "LogAlert" and r.inputs.get("skipQueryValidation") is not True]


ALLOWED_WINDOWS = {"PT1M", "PT5M", "PT10M", "PT15M", "PT30M", "PT45M", "PT60M", "PT120M", "PT180M", "PT240M",
                   "PT300M", "PT360M", "PT1440M", "PT2880M", "PT1H", "PT2H", "PT3H", "PT4H", "PT5H", "PT6H",
                   "PT24H", "PT48H", "P1D", "P2D"}


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", duration or "")
    if not match:
        return -1
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return days * 1440 + hours * 60 + minutes


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


# ---- Container Apps ----

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


def pod_secret_refs(ev: Evaluation) -> list[str]:
    """A pod whose variable refers to a missing Secret or key does not start (CreateContainerConfigError): the Secret
    is declared in the Deployment's namespace with that key, and the Deployment rolls when it changes (pods read
    it at start)."""
    problems = []
    secrets = {(_get(s.inputs, "metadata", "namespace"), _get(s.inputs, "metadata", "name")): s
               for s in ev.of_type("kubernetes:core/v1:Secret")}
    for deployment in ev.of_type(DEPLOYMENT):
        namespace = _get(deployment.inputs, "metadata", "namespace")
        template = _get(deployment.inputs, "spec", "template") or {}
        for container in _get(template, "spec", "containers") or []:
            for var in container.get("env") or []:
                ref = _get(var, "valueFrom", "secretKeyRef")
                if not ref:
                    continue
                secret = secrets.get((namespace, ref.get("name")))
                if secret is None or ref.get("key") not in {**(secret.inputs.get("stringData") or {}),
                                                           **(secret.inputs.get("data") or {})}:
                    problems.append(f"{deployment.name}: {var.get('name')} refers to key {ref.get('key')!r} of Secret "
                                    f"{ref.get('name')!r}, which {namespace} does not hold")
                elif not (_get(template, "metadata", "annotations") or {}).get(k8s_manifests.SECRET_VERSION):
                    problems.append(f"{deployment.name}: reads Secret {ref.get('name')!r} but does not roll when it "
                                    f"changes (no {k8s_manifests.SECRET_VERSION} annotation)")
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


# ---- names ----

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


# ---- identities ----

def managed_identity_principal_type(ev: Evaluation) -> list[str]:
    """A new identity may not have replicated yet: without principalType the assignment fails (PrincipalNotFound)."""
    return [f"{r.name}: principalType must be ServicePrincipal for a managed identity"
            for r in ev.of_type(ROLE) if r.inputs.get("principalType") != "ServicePrincipal"]


# ---- Databricks ----

def databricks_managed_resource_group(ev: Evaluation) -> list[str]:
    problems = []
    for ws in ev.of_type("azure-native:databricks:Workspace"):
        managed = str(ws.inputs.get("managedResourceGroupId", ""))
        if managed.rsplit("/", 1)[-1].lower() == str(ws.inputs.get("resourceGroupName", "")).lower():
            problems.append(f"{ws.name}: the managed resource group must be a new one, not the workspace's own")
    return problems


TASK_VALUE = re.compile(r"\{\{\s*tasks\.([A-Za-z0-9_-]+)\.values\.[A-Za-z0-9_-]+\s*\}\}")


def task_values_from_notebooks_only(ev: Evaluation) -> list[str]:
    """dbutils.jobs.taskValues exists only in notebooks: from any other task the reference stays a literal string."""
    problems = []
    for job in ev.of_type(JOB):
        tasks = {t.get("taskKey"): t for t in job.inputs.get("tasks") or []}
        for task in tasks.values():
            for producer in TASK_VALUE.findall(json.dumps(task)):
                if "notebookTask" not in tasks.get(producer, {}):
                    problems.append(f"{job.name}: task {task.get('taskKey')} reads a task value of {producer}, which "
                                    "is not a notebook task and so cannot set one")
    return problems


def jobs_run_as_a_service_principal(ev: Evaluation) -> list[str]:
    """Without run_as a job runs as whoever deployed it last: a person's rights, and gone when they leave. With it,
    Databricks refuses the job unless the deployer holds Service Principal User on that principal, a role the
    principal's creator does not inherit from Manager. The stack's rule set is authoritative: it must keep the
    deployer's Manager role too, or the next `up` cannot change it. And the job waits for it: it needs only the
    principal's application id, which exists before the rule set does."""
    problems = [f"{job.name}: declares no run_as service principal" for job in ev.of_type(JOB)
                if not _get(job.inputs, "runAs", "servicePrincipalName")]
    declared = {sp.outputs.get("applicationId") for sp in ev.of_type("databricks:index/servicePrincipal:ServicePrincipal")}
    rules = {r.inputs.get("name", ""): r for r in ev.of_type(RULE_SET)}
    for job in ev.of_type(JOB):
        principal = _get(job.inputs, "runAs", "servicePrincipalName")
        if principal not in declared:
            continue  # configured (databricks.jobPrincipal): its roles are managed where it was created
        rule_set = next((r for name, r in rules.items() if name.endswith(f"/servicePrincipals/{principal}/ruleSets/default")),
                        None)
        if rule_set is None:
            problems.append(f"{job.name}: no rule set gives the deployer Service Principal User on {principal}")
            continue
        if rule_set.urn not in job.dependencies:  # the job needs only the principal's id, which exists first
            problems.append(f"{job.name}: is created without waiting for the rule set on {principal}: the Jobs API "
                            "refuses its run_as until the deployer holds Service Principal User")
        grants = rule_set.inputs.get("grantRules") or []
        holders = {role: {p for g in grants if g.get("role") == role for p in g.get("principals") or []}
                   for role in ("roles/servicePrincipal.user", "roles/servicePrincipal.manager")}
        if not holders["roles/servicePrincipal.user"] & holders["roles/servicePrincipal.manager"]:
            problems.append(f"{job.name}: the rule set on {principal} must give one deployer both the user and the "
                            f"manager role (an authoritative set without manager locks the next `up` out)")
    return problems


GRANT = "databricks:index/grant:Grant"
SECURABLES = ("catalog", "schema", "table", "volume", "model", "credential", "function", "metastore", "externalLocation",
              "storageCredential", "share", "foreignConnection")


def _securable(grant: dict) -> tuple[str, str]:
    [(kind, name)] = [(k, grant[k]) for k in SECURABLES if grant.get(k)] or [("?", "?")]
    return kind, name


def one_grant_per_principal_and_securable(ev: Evaluation) -> list[str]:
    """databricks_grant is authoritative for one principal on one securable: a second Grant for the same pair
    replaces the first's privileges, and on the next `up` the first puts them back: the two never settle."""
    seen: dict[tuple[str, str, str], str] = {}
    problems = []
    for grant in ev.of_type(GRANT):
        pair = (str(grant.inputs.get("principal")), *_securable(grant.inputs))
        if pair in seen:
            problems.append(f"{grant.name} and {seen[pair]} both grant {pair[0]} privileges on {pair[1]} {pair[2]}")
        seen[pair] = grant.name
    return problems


QUARTZ_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week", "year")


def job_schedules(ev: Evaluation) -> list[str]:
    """Databricks schedules are Quartz cron: 6 or 7 fields, and '?' in exactly one of day-of-month and day-of-week
    (Quartz does not support both); the time zone is a Java time zone id (the IANA database's)."""
    import zoneinfo

    problems = []
    zones = zoneinfo.available_timezones()
    for job in ev.of_type(JOB):
        schedule = job.inputs.get("schedule") or {}
        cron = str(schedule.get("quartzCronExpression") or "")
        if not schedule:
            continue
        fields = cron.split()
        if len(fields) not in (6, 7):
            problems.append(f"{job.name}: '{cron}' has {len(fields)} fields; Quartz has 6 or 7 "
                            f"({', '.join(QUARTZ_FIELDS)})")
        elif (fields[3] == "?") == (fields[5] == "?"):
            problems.append(f"{job.name}: '{cron}' needs '?' in exactly one of day-of-month and day-of-week")
        zone = schedule.get("timezoneId")
        if zones and zone not in zones:
            problems.append(f"{job.name}: time zone {zone!r} is not a Java/IANA time zone id")
    return problems


WHEEL_NAME = re.compile(r"(?P<name>[A-Za-z0-9_]+)-(?P<version>[0-9]+(\.[0-9]+)*\.dev[0-9]{9,})-py3-none-any\.whl")
FILES = ("databricks:index/file:File", "databricks:index/workspaceFile:WorkspaceFile")


def job_wheels_versioned_by_content(ev: Evaluation) -> list[str]:
    """A cluster installs a wheel as pip does and cannot swap a library's version in place: a changed wheel must be a
    new file with a new version. Each task's wheel is a file the stack uploads, named by PEP 427 with a dev release
    number that carries the content hash, and the version inside (METADATA) is the one in the name. No `+` (a local
    version label): a volume's Files API reads it as a space (pulumi/pulumi-databricks#589), so the uploaded file
    would not be the one the job names."""
    import base64
    import io
    import zipfile

    uploaded = {str(f.inputs.get("path")): f for typ in FILES for f in ev.of_type(typ)}
    problems = []
    for job in ev.of_type(JOB):
        for task in job.inputs.get("tasks") or []:
            for library in task.get("libraries") or []:
                path = str(library.get("whl") or "")
                if not path:
                    continue
                found = WHEEL_NAME.fullmatch(path.rsplit("/", 1)[-1])
                if found is None:
                    problems.append(f"{job.name}: {path} is not <name>-<version>.dev<content hash>-py3-none-any.whl "
                                    "(no '+': a volume upload reads it as a space)")
                elif path not in uploaded:
                    problems.append(f"{job.name}: {path} is not a file this stack uploads")
                else:
                    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(uploaded[path].inputs["contentBase64"])))
                    metadata = next(archive.read(n).decode() for n in archive.namelist()
                                    if n.endswith(".dist-info/METADATA"))
                    if f"\nVersion: {found['version']}\n" not in metadata:
                        problems.append(f"{job.name}: {path} holds another version than its name says")
    return problems


TABLE_FLAGS = {"--data": "read", "--input-table": "read", "--output-table": "write", "--rejects-table": "write",
               "--labels-table": "read", "--inference-table": "modify"}


def job_tables_granted(ev: Evaluation) -> list[str]:
    """Unity Catalog: a job's identity reads a table with SELECT on it (or its schema or catalog) and creates one
    with CREATE_TABLE on its schema (or catalog), and reaches either only with USE_CATALOG and USE_SCHEMA on the way."""
    held: dict[tuple[str, str, str], set[str]] = {}
    for grant in ev.of_type(GRANT):
        kind, name = _securable(grant.inputs)
        held.setdefault((str(grant.inputs.get("principal")), kind, name), set()).update(grant.inputs.get("privileges") or [])
    if not held:
        return []  # the workspace registry: no Unity Catalog grants to check
    problems = []
    for job in ev.of_type(JOB):
        principal = str(_get(job.inputs, "runAs", "servicePrincipalName"))
        for task in job.inputs.get("tasks") or []:
            params = [str(p) for p in _get(task, "pythonWheelTask", "parameters") or []]
            for flag, use in TABLE_FLAGS.items():
                if flag in params and len(table := params[params.index(flag) + 1].split(".")) == 3:
                    problems += _table_access(job.name, principal, table, use, held)
    return problems


def _table_access(job: str, principal: str, table: list[str], use: str, held: dict) -> list[str]:
    catalog, schema, _ = table
    has = lambda kind, name: held.get((principal, kind, name), set())  # noqa: E731
    missing = []
    if not {"USE_CATALOG", "ALL_PRIVILEGES"} & has("catalog", catalog):
        missing.append(f"USE_CATALOG on {catalog}")
    if not {"USE_SCHEMA", "ALL_PRIVILEGES"} & (has("schema", f"{catalog}.{schema}") | has("catalog", catalog)):
        missing.append(f"USE_SCHEMA on {catalog}.{schema}")
    scopes = [("table", ".".join(table)), ("schema", f"{catalog}.{schema}"), ("catalog", catalog)]
    # read: SELECT; modify (MERGE into a table another principal owns): SELECT and MODIFY; write: create it
    needs = {"read": ["SELECT"], "modify": ["SELECT", "MODIFY"], "write": ["CREATE_TABLE"]}[use]
    for wanted in needs:
        where = scopes if use != "write" else scopes[1:]
        if not any({wanted, "ALL_PRIVILEGES"} & has(kind, name) for kind, name in where):
            missing.append(f"{wanted} on {'.'.join(table) if use != 'write' else f'{catalog}.{schema}'}")
    return [f"{job}: its principal needs {m} to {use} {'.'.join(table)}" for m in missing]


MODEL = "databricks:index/registeredModel:RegisteredModel"
WRITERS = ("training.train:cli", "training.gate:cli")  # the entry points that register versions and move aliases


def _models(ev: Evaluation) -> dict[str, Any]:
    return {".".join(str(m.inputs.get(k)) for k in ("catalogName", "schemaName", "name")): m for m in ev.of_type(MODEL)}


def _entry_points(job: Any) -> set[str]:
    return {jobwheel.ENTRY_POINTS.get(str(_get(t, "pythonWheelTask", "entryPoint")), "") for t in job.inputs.get("tasks") or []}


def _job_principals(ev: Evaluation) -> set[str]:
    return {str(_get(job.inputs, "runAs", "servicePrincipalName")) for job in ev.of_type(JOB)}


def _trained_models(ev: Evaluation) -> set[str]:
    """The models train and gate register into (their --model-name)."""
    names = set()
    for job in ev.of_type(JOB):
        for task in job.inputs.get("tasks") or []:
            params = [str(p) for p in _get(task, "pythonWheelTask", "parameters") or []]
            if jobwheel.ENTRY_POINTS.get(str(_get(task, "pythonWheelTask", "entryPoint")), "") in WRITERS \
                    and "--model-name" in params:
                names.add(params[params.index("--model-name") + 1])
    return names


def _deployer(ev: Evaluation) -> str | None:
    return (ev.config.get("databricks") or {}).get("deployer")


def model_written_by_its_owner(ev: Evaluation) -> list[str]:
    """Unity Catalog: creating a model version goes with the model's owner, and setting an alias needs its owner (or a
    metastore admin; MANAGE is not ownership). So whoever writes versions and aliases owns the model: the jobs'
    principal where train and gate run, the deployer where the promotion runs (inside `up`). And it owns it from the
    creation: only a metastore admin may give a model to another principal (an owner or a MANAGE holder only to
    itself or a group it belongs to), and the deployer is none. So a declared model is the deployer's, and where the
    jobs write, nobody declares it: they create it at their first registration."""
    problems = []
    promotes = bool((ev.config.get("promotion") or {}).get("sourceStack"))
    writers = {str(_get(job.inputs, "runAs", "servicePrincipalName")) for job in ev.of_type(JOB)
               if _entry_points(job) & set(WRITERS)}
    deployer = str(_deployer(ev))
    if promotes:
        writers.add(deployer)
    for name, model in _models(ev).items():
        owner = str(model.inputs.get("owner"))
        for writer in sorted(writers - {owner}):
            problems.append(f"{model.name}: {writer} writes versions or aliases of {name}, which {owner} owns")
        if owner != deployer:
            problems.append(f"{model.name}: the deployer {deployer} creates {name} and cannot give it to {owner} "
                            "(a transfer to another principal takes a metastore admin)")
    return problems


def _held(ev: Evaluation) -> dict[tuple[str, str, str], set[str]]:
    held: dict[tuple[str, str, str], set[str]] = {}
    for grant in ev.of_type(GRANT):
        kind, name = _securable(grant.inputs)
        held.setdefault((str(grant.inputs.get("principal")), kind, name), set()).update(grant.inputs.get("privileges") or [])
    return held


def job_has_one_owner(ev: Evaluation) -> list[str]:
    """A job has exactly one IS_OWNER. The provider adds whoever runs `up` as the owner when a job's ACL names none,
    so an ACL that names the deployer (at any level) or an owner of its own ends with two entries for one principal
    or two owners, which the permissions API refuses."""
    deployer, problems = _deployer(ev), []
    for acl in ev.of_type("databricks:index/permissions:Permissions"):
        if not acl.inputs.get("jobId"):
            continue
        for entry in acl.inputs.get("accessControls") or []:
            who = entry.get("servicePrincipalName") or entry.get("userName") or entry.get("groupName")
            if entry.get("permissionLevel") == "IS_OWNER" or (deployer and who == deployer):
                problems.append(f"{acl.name}: names {who} ({entry.get('permissionLevel')}); the job's one owner is "
                                "the identity that runs `up`, which the provider adds itself")
    return problems


def model_readers_hold_execute(ev: Evaluation) -> list[str]:
    """Unity Catalog: reading a model's versions and files needs EXECUTE on it (and USE_CATALOG, USE_SCHEMA), unless
    one owns it; owning its catalog or schema does not give it. The readers: the deployer (it packages the version),
    CI's preview identity (it reads what a preview would package), a job that scores with the model, and, for a
    promotion target, its deployer on the source stack's model (that stack's promotionReaders)."""
    databricks = ev.config.get("databricks") or {}
    if databricks.get("modelRegistry", "unityCatalog") != "unityCatalog":
        return []
    held, problems = _held(ev), []
    deployer = _deployer(ev)
    if not deployer:
        return ["databricks.deployer is not set: the identity that runs `up` reads the model with no EXECUTE on it"]
    readers = {deployer: "the deployer", **({databricks["previewReader"]: "the preview"}
                                           if databricks.get("previewReader") else {})}
    for job in ev.of_type(JOB):
        for task in job.inputs.get("tasks") or []:
            params = [str(p) for p in _get(task, "pythonWheelTask", "parameters") or []]
            if "--model-uri" in params:
                uri = params[params.index("--model-uri") + 1]
                readers.setdefault(str(_get(job.inputs, "runAs", "servicePrincipalName")), f"{job.name}'s principal")
                if not uri.startswith("models:/"):
                    problems.append(f"{job.name}: --model-uri {uri} is not a models:/ URI")
    owners = {name: str(model.inputs.get("owner")) for name, model in _models(ev).items()}
    for name in sorted({*owners, *_trained_models(ev)}):  # a trained model is its jobs' own (they create it)
        catalog, schema, _ = name.split(".")
        for reader, who in readers.items():
            if reader == owners.get(name) or (name not in owners and reader in _job_principals(ev)):
                continue
            for privilege, scopes in (("USE_CATALOG", [("catalog", catalog)]),
                                      ("USE_SCHEMA", [("schema", f"{catalog}.{schema}")]),
                                      # inherited: EXECUTE on the schema or catalog holds for every model in it
                                      ("EXECUTE", [("model", name), ("schema", f"{catalog}.{schema}"),
                                                   ("catalog", catalog)])):
                if not any({privilege, "ALL_PRIVILEGES"} & held.get((reader, kind, securable), set())
                           for kind, securable in scopes):
                    problems.append(f"{name}: {who} ({reader}) reads {name} without {privilege} on {scopes[0][1]}")
    source = (ev.config.get("promotion") or {}).get("sourceStack")
    if source and source in stack_files.stacks():
        readers_there = (stack_files.stack_values(source).get("databricks") or {}).get("promotionReaders") or []
        if deployer not in readers_there:
            problems.append(f"the deployer {deployer} copies versions out of {source}'s model, whose "
                            "databricks.promotionReaders does not list it (no EXECUTE there, no workspace membership)")
    return problems


def catalog_has_managed_location(ev: Evaluation) -> list[str]:
    """A metastore Unity Catalog enabled automatically has no metastore-level managed storage: a catalog created
    without its own (storageRoot) cannot hold managed tables, volumes or model versions."""
    return [f"{c.name}: catalog {c.inputs.get('name')} declares no storageRoot" for c in
            ev.of_type("databricks:index/catalog:Catalog") if not c.inputs.get("storageRoot")]


DIRECTORY = "databricks:index/directory:Directory"
PERMISSIONS = "databricks:index/permissions:Permissions"


def experiments_in_a_governed_folder(ev: Evaluation) -> list[str]:
    """Objects inherit their folder's permissions, and in /Shared every user has Can Manage: an experiment's own ACL
    adds rights, it cannot take inherited ones away. So the experiments (the declared one and the drift job's, which
    it creates at run time) live in a folder the stack declares with authoritative permissions, outside /Shared."""
    governed = {str(p.inputs.get("directoryPath")) for p in ev.of_type(PERMISSIONS) if p.inputs.get("directoryPath")}
    folders = [str(d.inputs.get("path")).rstrip("/") for d in ev.of_type(DIRECTORY)
               if str(d.inputs.get("path")) in governed and not str(d.inputs.get("path")).startswith("/Shared")]
    paths = [(e.name, str(e.inputs.get("name"))) for e in ev.of_type("databricks:index/mlflowExperiment:MlflowExperiment")]
    for job in ev.of_type(JOB):
        for task in job.inputs.get("tasks") or []:
            params = [str(p) for p in _get(task, "pythonWheelTask", "parameters") or []]
            if "--experiment" in params:
                paths.append((job.name, params[params.index("--experiment") + 1]))
    return [f"{owner}: experiment {path} is not inside a folder the stack declares with its permissions (outside "
            "/Shared)" for owner, path in sorted(set(paths)) if not any(path.startswith(f"{f}/") for f in folders)]


POLICY = "databricks:index/clusterPolicy:ClusterPolicy"


def job_clusters_under_a_policy(ev: Evaluation) -> list[str]:
    """A job cluster without a cluster policy is whatever its definition says, edited in the workspace or not: each
    job cluster names a policy the stack declares, and the policy admits that cluster (runtime, node type). The drift
    job (a KQL query and a PSI) does not run on the training node type unless the stack says so (drift.nodeType)."""
    policies = {p.id: json.loads(str(p.inputs.get("definition") or "{}")) for p in ev.of_type(POLICY)}
    problems = []
    for job in ev.of_type(JOB):
        for cluster in job.inputs.get("jobClusters") or []:
            spec, key = cluster.get("newCluster") or {}, cluster.get("jobClusterKey")
            policy = policies.get(str(spec.get("policyId")))
            if policy is None:
                problems.append(f"{job.name}: cluster {key} has no cluster policy the stack declares")
                continue
            for attribute, field_name in (("spark_version", "sparkVersion"), ("node_type_id", "nodeTypeId")):
                allowed = policy.get(attribute) or {}
                if allowed.get("type") == "fixed" and allowed.get("value") != spec.get(field_name):
                    problems.append(f"{job.name}: cluster {key}'s {field_name} {spec.get(field_name)} is not what its "
                                    f"policy fixes ({allowed.get('value')})")
            if "dbus_per_hour" not in policy:
                problems.append(f"{job.name}: cluster {key}'s policy does not cap its DBU per hour")
    training = (ev.config.get("databricks") or {}).get("nodeType", "Standard_DS3_v2")
    configured = (ev.config.get("drift") or {}).get("nodeType")
    for job in ev.of_type(JOB):
        if "monitoring.drift:cli" in _entry_points(job) and configured != training:
            for cluster in job.inputs.get("jobClusters") or []:
                if (cluster.get("newCluster") or {}).get("nodeTypeId") == training:
                    problems.append(f"{job.name}: the drift cluster runs on the training node type {training} "
                                    "(set drift.nodeType to choose it on purpose)")
    return problems


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


# ---- Kubernetes on AKS ----

def hpa_owns_replicas(ev: Evaluation) -> list[str]:
    scaled = {_get(h.inputs, "spec", "scaleTargetRef", "name") for h in ev.of_type(HPA)}
    return [f"{d.name}: sets spec.replicas while an HPA scales it" for d in ev.of_type(DEPLOYMENT)
            if _get(d.inputs, "metadata", "name") in scaled and _get(d.inputs, "spec", "replicas") is not None]


def container_insights_collects(ev: Evaluation) -> list[str]:
    problems = []
    for cluster in ev.of_type(CLUSTER):
        oms = _get(cluster.inputs, "addonProfiles", "omsagent") or {}
        if not oms.get("enabled") or _get(oms, "config", "useAADAuth") != "true":
            continue
        rules = {r.id: r for r in ev.of_type("azure-native:monitor:DataCollectionRule")
                 if "Microsoft-ContainerInsights-Group-Default" in json.dumps(r.inputs.get("dataSources"))}
        # The agent looks for the association by this exact name.
        associated = [a for a in ev.of_type("azure-native:monitor:DataCollectionRuleAssociation")
                      if a.inputs.get("resourceUri") == cluster.id and a.inputs.get("dataCollectionRuleId") in rules
                      and a.inputs.get("associationName") == "ContainerInsightsExtension"]
        if not associated:
            problems.append(f"{cluster.name}: Container Insights with managed identity needs a data collection rule "
                            "associated with the cluster")
    return problems


def managed_prometheus_collects(ev: Evaluation) -> list[str]:
    """The metrics add-on sends what a data collection rule associated with the cluster asks for: Prometheus metrics
    (prometheusForwarder) through a data collection endpoint to an Azure Monitor workspace (monitoringAccounts)."""
    problems = []
    workspaces = {w.id for w in ev.of_type(MONITOR_WORKSPACE)}
    for cluster in ev.of_type(CLUSTER):
        if not _get(cluster.inputs, "azureMonitorProfile", "metrics", "enabled"):
            continue
        if _get(cluster.inputs, "identity", "type") not in ("SystemAssigned", "UserAssigned"):
            problems.append(f"{cluster.name}: managed Prometheus needs a cluster with a managed identity")
        rules = {r.id: r for r in ev.of_type(DCR)
                 if "Microsoft-PrometheusMetrics" in json.dumps(_get(r.inputs, "dataSources", "prometheusForwarder"))
                 and r.inputs.get("dataCollectionEndpointId")
                 and {d.get("accountResourceId") for d in _get(r.inputs, "destinations", "monitoringAccounts") or []}
                 & workspaces}
        if not any(a.inputs.get("resourceUri") == cluster.id and a.inputs.get("dataCollectionRuleId") in rules
                   for a in ev.of_type(DCRA)):
            problems.append(f"{cluster.name}: managed Prometheus is enabled but no rule associated with the cluster "
                            "forwards Microsoft-PrometheusMetrics through an endpoint to an Azure Monitor workspace")
    return problems


def annotated_pods_scraped(ev: Evaluation) -> list[str]:
    """Pod annotations are honoured only in namespaces matching podannotationnamespaceregex of the add-on's settings
    ConfigMap (kube-system/ama-metrics-settings-configmap), on a cluster with the add-on enabled."""
    settings = [c for c in ev.of_type(CONFIG_MAP) if _get(c.inputs, "metadata", "name") == "ama-metrics-settings-configmap"
                and _get(c.inputs, "metadata", "namespace") == "kube-system"]
    regexes = [re.search(r'podannotationnamespaceregex\s*=\s*"([^"]*)"',
                         str(_get(c.inputs, "data", "pod-annotation-based-scraping") or "")) for c in settings]
    enabled = any(_get(c.inputs, "azureMonitorProfile", "metrics", "enabled") for c in ev.of_type(CLUSTER))
    problems = []
    for deployment in ev.of_type(DEPLOYMENT):
        annotations = _get(deployment.inputs, "spec", "template", "metadata", "annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        namespace = _get(deployment.inputs, "metadata", "namespace") or "default"
        if not enabled:
            problems.append(f"{deployment.name}: asks to be scraped, but no cluster has managed Prometheus enabled")
        elif not any(m and m.group(1) and re.fullmatch(m.group(1), namespace) for m in regexes):
            problems.append(f"{deployment.name}: asks to be scraped, but podannotationnamespaceregex of "
                            f"kube-system/ama-metrics-settings-configmap does not match namespace {namespace!r}")
        if not str(annotations.get("prometheus.io/port", "")).isdigit():
            problems.append(f"{deployment.name}: prometheus.io/port must be the port number")
    return problems


PROM_INTERVAL_MINUTES = range(1, 16)  # a rule group's interval, and an alert's time to resolve: 1..15 minutes


def prometheus_rule_groups(ev: Evaluation) -> list[str]:
    """A rule group queries one Azure Monitor workspace (its only scope in this API version), every 1..15 minutes;
    durations are ISO 8601; severity 0..4; an alert rule has an alert name and no `record`."""
    workspaces = {w.id for w in ev.of_type(MONITOR_WORKSPACE)}
    clusters = {str(c.inputs.get("resourceName")) for c in ev.of_type(CLUSTER)}
    problems = []
    for group in ev.of_type(PROM_RULES):
        scopes = group.inputs.get("scopes") or []
        if len(scopes) != 1 or scopes[0] not in workspaces:
            problems.append(f"{group.name}: scopes must be exactly one declared Azure Monitor workspace, not {scopes}")
        if _minutes(str(group.inputs.get("interval", ""))) not in PROM_INTERVAL_MINUTES:
            problems.append(f"{group.name}: interval {group.inputs.get('interval')} is not 1..15 minutes (ISO 8601)")
        if group.inputs.get("clusterName") and group.inputs["clusterName"] not in clusters:
            problems.append(f"{group.name}: clusterName {group.inputs['clusterName']!r} is not a declared cluster")
        for rule in group.inputs.get("rules") or []:
            problems += [f"{group.name}: {problem}" for problem in _prometheus_rule(rule)]
    return problems


def _prometheus_rule(rule: dict) -> list[str]:
    name, problems = rule.get("alert") or rule.get("record"), []
    if bool(rule.get("alert")) == bool(rule.get("record")):
        problems.append(f"rule {name!r} must have either an alert or a record name")
    if "for" in rule and _minutes(str(rule["for"])) < 0:
        problems.append(f"rule {name}: for {rule['for']!r} is not an ISO 8601 duration")
    resolve = _get(rule, "resolveConfiguration", "timeToResolve")
    if resolve is not None and _minutes(str(resolve)) not in PROM_INTERVAL_MINUTES:
        problems.append(f"rule {name}: timeToResolve {resolve} is not 1..15 minutes")
    if rule.get("alert") and rule.get("severity") not in range(5):
        problems.append(f"rule {name}: severity {rule.get('severity')} is not 0..4")
    return problems


# ---- the Pulumi engine ----

def stack_references_qualified(ev: Evaluation) -> list[str]:
    return [f"{r.name}: StackReference {r.inputs.get('name')!r} must be <organization>/<project>/<stack>"
            for r in ev.of_type("pulumi:pulumi:StackReference") if str(r.inputs.get("name", "")).count("/") != 2]


STATEFUL = ("azure-native:resources:ResourceGroup", "azure-native:containerregistry:Registry",
            "azure-native:operationalinsights:Workspace", "azure-native:databricks:Workspace",
            "databricks:index/registeredModel:RegisteredModel", "databricks:index/mlflowModel:MlflowModel")
REGISTERED_MODELS = STATEFUL[-2:]


def stateful_resources_kept(ev: Evaluation) -> list[str]:
    """A registered model is always retained (a rename must not delete its versions); where the stack says
    `protect`, every stateful resource is protected."""
    problems = [f"{r.name}: a registered model must be retainOnDelete" for typ in REGISTERED_MODELS
                for r in ev.of_type(typ) if not r.retain_on_delete]
    if ev.config.get("protect") in (True, "true"):
        problems += [f"{r.name}: not protected in a stack with protect: true" for typ in STATEFUL
                     for r in ev.of_type(typ) if not r.protect]
    return problems


# ---- the subscription: resource providers and API versions ----

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


# ---- preview: what a Reader may run ----

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


# ---- AKS access ----

def aks_entra_only(ev: Evaluation) -> list[str]:
    """Without Entra integration and with local accounts on, listClusterUserCredential returns the cluster's static
    credential, which has full rights: the PR preview's identity (it must fetch the kubeconfig to diff) would hold an
    admin's. With Entra, Azure RBAC and no local accounts the kubeconfig carries no credential, only the endpoint and an
    exec login, and the caller's Azure roles on the cluster decide; so the provider's kubeconfig must hold no token,
    password or client key of its own. And the exec command is a name on PATH: `up --refresh` refreshes with the
    kubeconfig as the state holds it, before the program runs, on whatever machine refreshes (client-go runs the
    command as given: kubernetes.io/docs/reference/access-authn-authz/authentication/#configuration)."""
    import yaml

    problems = []
    for cluster in ev.of_type(CLUSTER):
        aad = cluster.inputs.get("aadProfile") or {}
        if not (aad.get("managed") and aad.get("enableAzureRBAC") and cluster.inputs.get("disableLocalAccounts")):
            problems.append(f"{cluster.name}: needs aadProfile.managed, aadProfile.enableAzureRBAC and "
                            "disableLocalAccounts, or its user kubeconfig is an admin credential")
    for provider in ev.of_type("pulumi:providers:kubernetes"):
        config = yaml.safe_load(str(provider.inputs.get("kubeconfig") or "")) or {}
        for user in config.get("users") or [] if isinstance(config, dict) else []:
            held = {"token", "password", "client-key-data", "client-key"} & set(user.get("user") or {})
            command = str(((user.get("user") or {}).get("exec") or {}).get("command", ""))
            if held:
                problems.append(f"{provider.name}: kubeconfig user {user.get('name')} holds {sorted(held)}: use an "
                                "Entra login (an exec plugin), not a static credential")
            elif not command or "/" in command:
                problems.append(f"{provider.name}: kubeconfig user {user.get('name')} logs in with "
                                f"{command or 'no exec plugin'}: an exec command found on PATH, not a path on the "
                                "machine that ran `up`")
    return problems


# ---- AKS networking ----

POLICY_ENGINES = {"azure", "calico", "cilium"}


def network_policy_engine(ev: Evaluation) -> list[str]:
    """Without an engine the API server stores NetworkPolicy objects and nothing enforces them. Cilium's policy comes
    with the Cilium dataplane of Azure CNI (both or neither); the engine is chosen at creation."""
    if not ev.of_type(NETWORK_POLICY):
        return []
    problems = []
    for cluster in ev.of_type(CLUSTER):
        profile = cluster.inputs.get("networkProfile") or {}
        engine, dataplane, plugin = (profile.get(k) for k in ("networkPolicy", "networkDataplane", "networkPlugin"))
        if engine not in POLICY_ENGINES:
            problems.append(f"{cluster.name}: networkPolicy {engine!r} enforces no NetworkPolicy (the stack declares "
                            f"some); use one of {', '.join(sorted(POLICY_ENGINES))}")
        if (engine == "cilium") != (dataplane == "cilium"):
            problems.append(f"{cluster.name}: networkPolicy cilium and networkDataplane cilium go together, got "
                            f"{engine!r} / {dataplane!r}")
        if dataplane == "cilium" and plugin != "azure":
            problems.append(f"{cluster.name}: the Cilium dataplane needs networkPlugin azure, got {plugin!r}")
    return problems



SQL_TABLE = "databricks:index/sqlTable:SqlTable"
QUALITY_MONITOR = "databricks:index/qualityMonitor:QualityMonitor"
PLAIN_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _table_name(table: Any) -> str:
    return ".".join(str(table.inputs.get(k)) for k in ("catalogName", "schemaName", "name"))


def monitor_created_by_the_tables_owner(ev: Evaluation) -> list[str]:
    """Creating a monitor takes, of the identity that runs `up` (the deployer): USE_CATALOG on the table's catalog,
    USE_SCHEMA on its schema, and owning the table (or owning the schema or catalog with SELECT on the table); its
    metric tables are created in the output schema, which takes CREATE_TABLE and USE_SCHEMA there."""
    deployer, held, problems = str(_deployer(ev)), _held(ev), []
    tables = {_table_name(t): t for t in ev.of_type(SQL_TABLE)}
    has = lambda kind, name: held.get((deployer, kind, name), set())  # noqa: E731
    for monitor in ev.of_type(QUALITY_MONITOR):
        name = str(monitor.inputs.get("tableName"))
        catalog, schema, _ = name.split(".")
        table = tables.get(name)
        if table is None or str(table.inputs.get("owner") or deployer) != deployer:
            problems.append(f"{monitor.name}: {name} is not a table the deployer {deployer} owns (declared with it)")
        for privilege, kind, securable in (("USE_CATALOG", "catalog", catalog), ("USE_SCHEMA", "schema", f"{catalog}.{schema}")):
            if not {privilege, "ALL_PRIVILEGES"} & has(kind, securable):
                problems.append(f"{monitor.name}: the deployer lacks {privilege} on {securable}")
        output = str(monitor.inputs.get("outputSchemaName"))
        out_catalog = output.split(".")[0]
        if not {"CREATE_TABLE", "ALL_PRIVILEGES"} & (has("schema", output) | has("catalog", out_catalog)):
            problems.append(f"{monitor.name}: the deployer lacks CREATE_TABLE on the output schema {output}")
        if table is not None and monitor.urn and table.urn not in monitor.dependencies:
            problems.append(f"{monitor.name}: is created without waiting for its table {name}")
    return problems


PROBLEM_TYPES = {"PROBLEM_TYPE_CLASSIFICATION", "PROBLEM_TYPE_REGRESSION"}
MONITOR_GRANULARITIES = {"5 minutes", "30 minutes", "1 hour", "1 day", "1 week", "2 weeks", "3 weeks", "4 weeks",
                         "1 month", "1 year"}


def inference_profile_columns(ev: Evaluation) -> list[str]:
    """An inference-log monitor names a problem type, the prediction, label, model id and timestamp columns of its
    table (the timestamp a TIMESTAMP, the prediction and the label of one type) and granularities from a fixed list;
    its inference profile reads the table's change data feed, which must be on for incremental refreshes."""
    tables = {_table_name(t): t for t in ev.of_type(SQL_TABLE)}
    problems = []
    for monitor in ev.of_type(QUALITY_MONITOR):
        log = monitor.inputs.get("inferenceLog") or {}
        table = tables.get(str(monitor.inputs.get("tableName")))
        if not log or table is None:
            problems.append(f"{monitor.name}: no inference log profile on a table the stack declares")
            continue
        types = {c.get("name"): str(c.get("type") or "").upper() for c in table.inputs.get("columns") or []}
        if log.get("problemType") not in PROBLEM_TYPES:
            problems.append(f"{monitor.name}: problemType {log.get('problemType')!r} is not one of {sorted(PROBLEM_TYPES)}")
        for key in ("predictionCol", "labelCol", "modelIdCol", "timestampCol"):
            if log.get(key) not in types:
                problems.append(f"{monitor.name}: {key} {log.get(key)!r} is no column of {monitor.inputs.get('tableName')}")
        if types.get(log.get("timestampCol")) != "TIMESTAMP":
            problems.append(f"{monitor.name}: the timestamp column is not a TIMESTAMP")
        if log.get("labelCol") in types and types.get(log.get("predictionCol")) != types.get(log.get("labelCol")):
            problems.append(f"{monitor.name}: the prediction and the label columns differ in type")
        if not set(log.get("granularities") or []) or not set(log.get("granularities") or []) <= MONITOR_GRANULARITIES:
            problems.append(f"{monitor.name}: granularities {log.get('granularities')} are not Lakehouse Monitoring's")
        for expression in monitor.inputs.get("slicingExprs") or []:
            if expression not in types:
                problems.append(f"{monitor.name}: slicing expression {expression!r} is no column of the table")
        if str((table.inputs.get("properties") or {}).get("delta.enableChangeDataFeed")).lower() != "true":
            problems.append(f"{table.name}: a monitored inference table without delta.enableChangeDataFeed")
    return problems


def delta_columns_plain(ev: Evaluation) -> list[str]:
    """A Delta table without column mapping refuses ' ,;{}()\\n\\t=' in a column name, and a name outside
    [A-Za-z0-9_] must be quoted in every MERGE, slicing expression and query: the stack's tables use plain names
    (the request log's `<column>#hmac` is `<column>_hmac` there)."""
    return [f"{t.name}: column {c.get('name')!r} is not a plain identifier" for t in ev.of_type(SQL_TABLE)
            for c in t.inputs.get("columns") or [] if not PLAIN_COLUMN.fullmatch(str(c.get("name")))]


def sql_table_column_types_lowercase(ev: Evaluation) -> list[str]:
    """The provider keeps a table's column types as the metastore returns them, lowercase: a type declared in capitals
    reads as a type change on the next plan, which it refuses for an existing column, so every later `up` fails."""
    return [f"{t.name}: column {c.get('name')!r} type {c.get('type')!r} is not lowercase" for t in ev.of_type(SQL_TABLE)
            for c in t.inputs.get("columns") or [] if str(c.get("type") or "") != str(c.get("type") or "").lower()]


def monitor_schedule_without_pause_status(ev: Evaluation) -> list[str]:
    """The provider reads a monitor's schedule pause status back and refuses it configured ("Invalid Configuration for
    Read-Only Attribute"): a paused monitor is one declared without a schedule."""
    return [f"{m.name}: schedule.pauseStatus is read-only (declare no schedule to pause the monitor)"
            for m in ev.of_type(QUALITY_MONITOR) if (m.inputs.get("schedule") or {}).get("pauseStatus") is not None]


def sql_tables_name_their_compute(ev: Evaluation) -> list[str]:
    """A SqlTable's DDL runs on the warehouse or cluster it names; without one the provider creates and starts an
    all-purpose cluster of its own (`terraform-sql-table`, latest runtime, outside every cluster policy, one name for
    the whole workspace) on each create, change and delete."""
    return [f"{t.name}: names neither warehouseId nor clusterId" for t in ev.of_type(SQL_TABLE)
            if not t.inputs.get("warehouseId") and not t.inputs.get("clusterId")]


def job_starters_may_run_only(ev: Evaluation) -> list[str]:
    """Starting a job (Jobs API run-now) takes Can Manage Run on it; Can Manage would also let the starter edit the
    job and its ACL. A task that starts a job (--training-job-id) runs as a principal holding exactly Can Manage Run."""
    acls: dict[str, dict[str, str]] = {}
    for acl in ev.of_type(PERMISSIONS):
        if acl.inputs.get("jobId"):
            acls[str(acl.inputs["jobId"])] = {str(e.get("servicePrincipalName") or e.get("userName") or e.get("groupName")):
                                              str(e.get("permissionLevel")) for e in acl.inputs.get("accessControls") or []}
    problems = []
    for job in ev.of_type(JOB):
        principal = str(_get(job.inputs, "runAs", "servicePrincipalName"))
        for task in job.inputs.get("tasks") or []:
            params = [str(p) for p in _get(task, "pythonWheelTask", "parameters") or []]
            if "--training-job-id" in params:
                started = params[params.index("--training-job-id") + 1]
                level = acls.get(started, {}).get(principal)
                if level != "CAN_MANAGE_RUN":
                    problems.append(f"{job.name}: its principal {principal} starts job {started} with {level or 'no right'}"
                                    " (CAN_MANAGE_RUN: to start runs, and no more)")
    return problems


RULES: tuple[Rule, ...] = (
    Rule("log-alert-skip-query-validation", "ARM validates a log alert's query at creation; tables without data "
         "yet fail it", "https://learn.microsoft.com/rest/api/monitor/scheduled-query-rules/create-or-update",
         skip_query_validation),
    Rule("log-alert-window", "windowSize is one of Azure's fixed durations and not shorter than evaluationFrequency",
         "https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule", query_rule_windows),
    Rule("action-group-short-name", "an action group's short name has at most 12 characters",
         "https://learn.microsoft.com/azure/azure-monitor/alerts/action-groups", action_group_short_name),
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
    Rule("kubernetes-secret-refs", "a pod's secretKeyRef names a Secret and key of its namespace or the pod does not "
         "start; a pod reads the value at start only",
         "https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-environment-variables",
         pod_secret_refs),
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
    Rule("aks-network-policy-engine", "NetworkPolicy is enforced only by a network policy engine (none: accepted and "
         "ignored); Cilium's needs the Cilium dataplane on Azure CNI; chosen at creation, changed later only by "
         "Azure's migration steps", "https://learn.microsoft.com/azure/aks/use-network-policies", network_policy_engine),
    Rule("aks-entra-only", "a cluster without Entra integration and local accounts disabled hands its static admin "
         "credential to anyone allowed listClusterUserCredential; the kubeconfig's exec login is a command on PATH, as "
         "a refresh runs the state's copy anywhere", "https://learn.microsoft.com/azure/aks/"
         "control-kubeconfig-access", aks_entra_only),
    Rule("resource-names", "each resource type has its own name length and characters (infra/naming.py: each rule "
         "with its own source; a violation names it)",
         "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules", resource_names),
    Rule("role-assignment-principal-type", "assignments to a new managed identity set principalType, or fail "
         "before the identity has replicated",
         "https://learn.microsoft.com/azure/role-based-access-control/role-assignments-template#new-service-principal",
         managed_identity_principal_type),
    Rule("databricks-managed-resource-group", "a workspace's managed resource group is created by Databricks and "
         "cannot be an existing one", "https://learn.microsoft.com/azure/databricks/getting-started/",
         databricks_managed_resource_group),
    Rule("databricks-task-values", "task values can be set only from notebooks; an unset reference is passed on as "
         "literal text", "https://docs.databricks.com/aws/en/jobs/task-values", task_values_from_notebooks_only),
    Rule("databricks-grant-per-principal", "a Grant is authoritative for its principal on its securable: two for the same "
         "pair overwrite each other on every `up`",
         "https://registry.terraform.io/providers/databricks/databricks/latest/docs/resources/grant",
         one_grant_per_principal_and_securable),
    Rule("databricks-job-schedule", "a job schedule is Quartz cron (6-7 fields, '?' in exactly one of day-of-month and "
         "day-of-week) in a Java time zone", "https://docs.databricks.com/aws/en/jobs/scheduled", job_schedules),
    Rule("databricks-job-wheel-versioned", "a cluster installs a wheel library as pip does and cannot change a "
         "library's version in place: a changed wheel is a new file with a new version",
         "https://www.pulumi.com/registry/packages/databricks/api-docs/library/", job_wheels_versioned_by_content),
    Rule("unity-catalog-table-access", "a job reads a table with SELECT and creates one with CREATE_TABLE on its schema, "
         "with USE_CATALOG and USE_SCHEMA on the way",
         "https://docs.databricks.com/aws/en/data-governance/unity-catalog/manage-privileges/privileges",
         job_tables_granted),
    Rule("app-insights-entra-ingestion", "with local auth disabled, telemetry needs an Entra token of an identity with "
         "Monitoring Metrics Publisher on the component",
         "https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication", entra_only_ingestion_has_a_publisher),
    Rule("unity-catalog-model-owner-writes", "creating a model version and moving an alias take the registered model's "
         "owner (or a metastore admin): whoever writes versions or aliases owns the model; only a metastore admin gives "
         "a model to another principal (learn.microsoft.com/azure/databricks/data-governance/unity-catalog/"
         "manage-privileges/ownership), so it is its writer's from the creation",
         "https://docs.databricks.com/api/uc-registered-models/v1/set-registered-model-alias", model_written_by_its_owner),
    Rule("databricks-job-one-owner", "a job has exactly one owner; the provider makes the identity that runs `up` its "
         "owner when the ACL names none, so naming it again gives one principal two entries (databricks/cli#4466)",
         "https://registry.terraform.io/providers/databricks/databricks/latest/docs/resources/permissions#job-usage",
         job_has_one_owner),
    Rule("unity-catalog-model-execute", "reading a model's versions and files needs EXECUTE on it and USE_CATALOG, "
         "USE_SCHEMA on the way, unless one owns it; catalog or schema ownership does not give it",
         "https://databricks-sdk-py.readthedocs.io/en/latest/workspace/catalog/registered_models.html",
         model_readers_hold_execute),
    Rule("unity-catalog-managed-location", "a catalog needs managed storage of its own when the metastore has none "
         "(metastores of automatically enabled workspaces)",
         "https://learn.microsoft.com/azure/databricks/connect/unity-catalog/managed-storage",
         catalog_has_managed_location),
    Rule("databricks-experiment-folder", "workspace objects inherit their folder's permissions; in /Shared all users "
         "have Can Manage", "https://docs.azure.cn/zh-cn/databricks/security/access-control/workspace-acl",
         experiments_in_a_governed_folder),
    Rule("databricks-job-cluster-policy", "a cluster policy limits what a cluster may be (runtime, node type, size, DBU "
         "per hour); a job cluster without one is whatever its definition says",
         "https://learn.microsoft.com/azure/databricks/admin/clusters/policy-definition", job_clusters_under_a_policy),
    Rule("databricks-jobs-run-as", "a job runs as its owner unless run_as names a service principal (the deployer "
         "needs the Service Principal User role on it)", "https://docs.databricks.com/jobs/privileges.html",
         jobs_run_as_a_service_principal),
    Rule("kubernetes-hpa-replicas", "a Deployment scaled by an HPA leaves spec.replicas unset",
         "https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/"
         "#migrating-deployments-and-statefulsets-to-horizontal-autoscaling", hpa_owns_replicas),
    Rule("aks-container-insights-dcr", "Container Insights with managed-identity auth collects what an associated "
         "data collection rule asks for", "https://learn.microsoft.com/azure/azure-monitor/containers/"
         "kubernetes-monitoring-enable", container_insights_collects),
    Rule("aks-managed-prometheus-dcr", "the metrics add-on sends Prometheus metrics where an associated data collection "
         "rule says: prometheusForwarder through an endpoint to an Azure Monitor workspace",
         "https://learn.microsoft.com/azure/azure-monitor/containers/kubernetes-monitoring-enable", managed_prometheus_collects),
    Rule("aks-pod-annotation-scraping", "annotated pods are scraped only in namespaces matching podannotationnamespaceregex "
         "of kube-system/ama-metrics-settings-configmap", "https://learn.microsoft.com/azure/azure-monitor/containers/"
         "prometheus-metrics-scrape-configuration#enable-pod-annotation-based-scraping", annotated_pods_scraped),
    Rule("prometheus-rule-group", "a Prometheus rule group has one scope, an Azure Monitor workspace; interval and time "
         "to resolve 1..15 minutes (ISO 8601); severity 0..4",
         "https://learn.microsoft.com/azure/azure-monitor/essentials/prometheus-rule-groups", prometheus_rule_groups),
    Rule("pulumi-stack-reference", "a StackReference is <organization>/<project>/<stack> on every backend",
         "https://www.pulumi.com/docs/iac/concepts/stacks/#stackreferences", stack_references_qualified),
    Rule("stateful-resources-kept", "protected resources are never deleted or replaced; retained ones outlive "
         "their removal from the program", "https://www.pulumi.com/docs/iac/concepts/options/protect/",
         stateful_resources_kept),
    Rule("resource-providers", "a subscription must register a resource provider before its first resource",
         "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-providers-and-types",
         providers_documented),
    Rule("api-versions", "each resource is sent with one ARM API version; preview versions can change or go",
         "https://www.pulumi.com/registry/packages/azure-native/version-guide/", api_versions_reviewed),
    Rule("preview-permissions", "a Reader can run reads, not POST actions such as listing keys or credentials",
         "https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/general#reader",
         preview_needs_only_its_roles),
    Rule("lakehouse-monitor-creator", "creating a monitor takes USE_CATALOG, USE_SCHEMA and the table's ownership "
         "(or MANAGE and SELECT) of the caller; its metric tables need CREATE_TABLE on the output schema",
         "https://docs.databricks.com/api/workspace/qualitymonitors/create", monitor_created_by_the_tables_owner),
    Rule("lakehouse-monitor-inference-profile", "an inference-log monitor names its problem type, the prediction, label, "
         "model id and timestamp columns of its table and fixed granularities; incremental refreshes read the table's "
         "change data feed", "https://docs.databricks.com/aws/en/lakehouse-monitoring/create-monitor-api",
         inference_profile_columns),
    Rule("delta-column-names", "a Delta table without column mapping refuses ' ,;{}()\\n\\t=' in column names; other "
         "characters outside [A-Za-z0-9_] need quoting everywhere", "https://docs.databricks.com/aws/en/delta/column-mapping",
         delta_columns_plain),
    Rule("databricks-sql-table-column-types", "a SqlTable's column types are read back lowercase; in providers before "
         "the fix of #3490 one declared otherwise is a type change on the next plan, refused for an existing column",
         "https://github.com/databricks/terraform-provider-databricks/issues/3490", sql_table_column_types_lowercase),
    Rule("databricks-quality-monitor-schedule", "a quality monitor's schedule pause status is read-only in the "
         "provider: configured, the plan fails", "https://github.com/databricks/terraform-provider-databricks/blob/main/"
         "docs/resources/quality_monitor.md", monitor_schedule_without_pause_status),
    Rule("databricks-sql-table-compute", "a SqlTable without warehouse_id or cluster_id makes the provider create an "
         "all-purpose cluster `terraform-sql-table` for its DDL", "https://registry.terraform.io/providers/databricks/"
         "databricks/latest/docs/resources/sql_table", sql_tables_name_their_compute),
    Rule("databricks-run-now-permission", "starting a job takes Can Manage Run on it (Can Manage also edits it and its "
         "permissions)", "https://docs.databricks.com/aws/en/jobs/privileges", job_starters_may_run_only),
)


@dataclass
class Result:
    rule: Rule
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(ev: Evaluation, rules: Iterable[Rule] = RULES) -> list[Result]:
    return [Result(rule, rule.check(ev)) for rule in rules]


def report(results: list[Result]) -> str:
    lines = []
    for result in results:
        lines.append(f"  {'ok  ' if result.ok else 'FAIL'} {result.rule.key:34} {result.rule.says}")
        lines += [f"         - {problem}" for problem in result.problems]
        if not result.ok:
            lines.append(f"         see {result.rule.doc}")
    return "\n".join(lines)


# ---- two `up`s: the engine's diff and Container Apps' revisions ----

def changes(before: Evaluation, after: Evaluation) -> dict[str, str]:
    """(type, name) -> create / update / delete, as `pulumi preview` would list them: the engine diffs inputs."""
    old = {(r.typ, r.name): r for r in before.custom}
    new = {(r.typ, r.name): r for r in after.custom}
    plan = {f"{t} {n}": "create" for t, n in new.keys() - old.keys()}
    plan |= {f"{t} {n}": "delete" for t, n in old.keys() - new.keys()}
    plan |= {f"{t} {n}": "update" for (t, n) in new.keys() & old.keys() if new[(t, n)].inputs != old[(t, n)].inputs}
    return plan


def _secret_refs(value: Any) -> set[str]:
    """Every `secretRef` a template holds (containers' env, volumes)."""
    if isinstance(value, dict):
        found = {value["secretRef"]} if isinstance(value.get("secretRef"), str) else set()
        return found.union(*(_secret_refs(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_secret_refs(item) for item in value))
    return set()


class RevisionRefused(RuntimeError):
    """What ARM answers: the update is refused and nothing changes."""


@dataclass
class RevisionHistory:
    """One Container App's revisions, as Azure keeps them. Any change under `template` makes a new revision
    (application-scope changes do not); a suffix, given or generated, can never be used twice in an app."""
    app: str
    revisions: list[tuple[str, str]] = field(default_factory=list)  # (name, template as JSON)
    active: set[str] = field(default_factory=set)
    generated: int = 0
    weights: dict[str, int] = field(default_factory=dict)  # revision -> % of the app's traffic
    labels: dict[str, str] = field(default_factory=dict)  # label -> revision (its URL reaches it at any weight)
    # microsoft/azure-container-apps#679: a switch to Single mode (no new revision) once left an older revision active.
    # True: such a switch deactivates nothing (only an explicit deactivate does), to check a release does not rely on it.
    single_keeps_others_active: bool = False

    def apply(self, inputs: dict[str, Any]) -> str | None:
        """PUT the app; returns the new revision's name, or None when no revision was made."""
        self._secrets_kept(inputs)
        made = self._revision(inputs)
        self._route(inputs)
        return made

    def _secrets_kept(self, inputs: dict[str, Any]) -> None:
        """In Multiple mode a secret an active revision refers to cannot be removed (learn.microsoft.com/azure/
        container-apps/manage-secrets: "deploy a new revision that no longer references the old secret. Then deactivate
        all revisions that reference the secret"; microsoft/vscode-azurecontainerapps#1098: "In Multiple mode deletion
        is blocked, while in Single mode deletion succeeds"; hashicorp/terraform-provider-azurerm#22493: a 400). Not
        documented, so not modelled: which mode applies when one PUT switches mode and removes a secret (the mode it
        asks for is taken here), and inactive revisions (taken as not referring)."""
        if (_get(inputs, "configuration", "activeRevisionsMode") or "Single") == "Single":
            return
        declared = {secret.get("name") for secret in _get(inputs, "configuration", "secrets") or []}
        for name, template in self.revisions:
            missing = sorted(_secret_refs(json.loads(template)) - declared) if name in self.active else []
            if missing:
                raise RevisionRefused(f"secret {missing[0]!r} is in use by the active revision {name}: it cannot be "
                                      "removed in Multiple mode")

    def _revision(self, inputs: dict[str, Any]) -> str | None:
        template = json.dumps(inputs.get("template") or {}, sort_keys=True)
        single = (_get(inputs, "configuration", "activeRevisionsMode") or "Single") == "Single"
        if self.revisions and self.revisions[-1][1] == template:
            if single and not self.single_keeps_others_active:  # a switch to Single leaves only the latest active
                self.active = {self.revisions[-1][0]}
            return None
        suffix = (inputs.get("template") or {}).get("revisionSuffix")
        if suffix is None:
            self.generated += 1
            suffix = f"gen{self.generated:04d}"  # Azure makes a random unique one
        name = f"{self.app}--{suffix}"
        if any(existing == name for existing, _ in self.revisions):
            raise RevisionRefused(f"a revision with the suffix {suffix!r} already exists in {self.app}")
        self.revisions.append((name, template))
        self.active = {name} if single else {*self.active, name}
        return name

    def _route(self, inputs: dict[str, Any]) -> None:
        """The ingress traffic list replaces the routing (labels not listed are dropped); Single mode sends all
        traffic to the latest revision. A named revision must exist and be active."""
        latest = self.revisions[-1][0]
        if (_get(inputs, "configuration", "activeRevisionsMode") or "Single") == "Single":
            self.weights, self.labels = {latest: 100}, {}
            return
        weights: dict[str, int] = {}
        labels: dict[str, str] = {}
        for entry in _get(inputs, "configuration", "ingress", "traffic") or []:
            revision = latest if entry.get("latestRevision") else entry.get("revisionName")
            if revision not in self.active:
                raise RevisionRefused(f"traffic names {revision!r}, which is not an active revision of {self.app}")
            weights[revision] = weights.get(revision, 0) + int(entry.get("weight") or 0)
            if entry.get("label"):
                labels[entry["label"]] = revision
        if sum(weights.values()) != 100:
            raise RevisionRefused(f"traffic weights of {self.app} sum to {sum(weights.values())}, not 100")
        self.weights, self.labels = weights, labels

    def deactivate(self, name: str) -> None:
        """POST revisions/{name}/deactivate: refused for a revision that has traffic or a label."""
        if self.weights.get(name) or name in self.labels.values():
            raise RevisionRefused(f"{name} has traffic or a label: it cannot be deactivated")
        self.active.discard(name)

    def serving(self) -> set[str]:
        """The revisions that receive any of the app's traffic."""
        return {revision for revision, weight in self.weights.items() if weight > 0}

