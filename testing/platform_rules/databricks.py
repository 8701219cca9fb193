"""Databricks workspaces and jobs: the managed resource group, task values, run-as principals, schedules, wheels,
ownership and run rights, cluster policies and the experiments' folder.
"""

from __future__ import annotations

import json
import re
from typing import Any

from infra import jobwheel
from testing.mockcloud import Evaluation
from testing.platform_rules.common import JOB, RULE_SET, Rule, _get


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


def _entry_points(job: Any) -> set[str]:
    return {jobwheel.ENTRY_POINTS.get(str(_get(t, "pythonWheelTask", "entryPoint")), "") for t in job.inputs.get("tasks") or []}


def _deployer(ev: Evaluation) -> str | None:
    return (ev.config.get("databricks") or {}).get("deployer")


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
    Rule("databricks-managed-resource-group", "a workspace's managed resource group is created by Databricks and "
         "cannot be an existing one", "https://learn.microsoft.com/azure/databricks/getting-started/",
         databricks_managed_resource_group),
    Rule("databricks-task-values", "task values can be set only from notebooks; an unset reference is passed on as "
         "literal text", "https://docs.databricks.com/aws/en/jobs/task-values", task_values_from_notebooks_only),
    Rule("databricks-job-schedule", "a job schedule is Quartz cron (6-7 fields, '?' in exactly one of day-of-month and "
         "day-of-week) in a Java time zone", "https://docs.databricks.com/aws/en/jobs/scheduled", job_schedules),
    Rule("databricks-job-wheel-versioned", "a cluster installs a wheel library as pip does and cannot change a "
         "library's version in place: a changed wheel is a new file with a new version",
         "https://www.pulumi.com/registry/packages/databricks/api-docs/library/", job_wheels_versioned_by_content),
    Rule("databricks-job-one-owner", "a job has exactly one owner; the provider makes the identity that runs `up` its "
         "owner when the ACL names none, so naming it again gives one principal two entries (databricks/cli#4466)",
         "https://registry.terraform.io/providers/databricks/databricks/latest/docs/resources/permissions#job-usage",
         job_has_one_owner),
    Rule("databricks-experiment-folder", "workspace objects inherit their folder's permissions; in /Shared all users "
         "have Can Manage", "https://docs.azure.cn/zh-cn/databricks/security/access-control/workspace-acl",
         experiments_in_a_governed_folder),
    Rule("databricks-job-cluster-policy", "a cluster policy limits what a cluster may be (runtime, node type, size, DBU "
         "per hour); a job cluster without one is whatever its definition says",
         "https://learn.microsoft.com/azure/databricks/admin/clusters/policy-definition", job_clusters_under_a_policy),
    Rule("databricks-jobs-run-as", "a job runs as its owner unless run_as names a service principal (the deployer "
         "needs the Service Principal User role on it)", "https://docs.databricks.com/jobs/privileges.html",
         jobs_run_as_a_service_principal),
    Rule("databricks-run-now-permission", "starting a job takes Can Manage Run on it (Can Manage also edits it and its "
         "permissions)", "https://docs.databricks.com/aws/en/jobs/privileges", job_starters_may_run_only),
)
