"""The quality loop the stacks declare (issue 22 on Databricks): the inference table, its monitor, the quality job, the
alert and the rights each call needs; and the platform rules that hold them catch the mistakes they are there for."""

from __future__ import annotations

import copy

import pytest

from infra import kql
from monitoring import delta_table
from testing import platform_rules
from tests.infra.conftest import settings_of
from tests.infra.test_platform_rules import fake, problems, resource
from training import contract as contracts

STACKS = ("dev", "staging", "prod")


def one(ev, typ):
    [found] = ev.of_type(typ)
    return found


def quality_job(ev):
    return next(j for j in ev.of_type(platform_rules.JOB)
                if j.inputs["tasks"][0]["pythonWheelTask"]["entryPoint"] == "mlops-quality")


def params(job) -> dict[str, str]:
    values = [str(p) for p in job.inputs["tasks"][0]["pythonWheelTask"]["parameters"]]
    return {values[i]: values[i + 1] for i in range(0, len(values) - 1) if values[i].startswith("--")}


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_declares_its_inference_table_with_the_contracts_columns(evaluate, stack):
    s, ev = settings_of(stack), evaluate(stack)
    contract = contracts.load(s.model.module).contract
    table = one(ev, platform_rules.SQL_TABLE)
    assert (table.inputs["catalogName"], table.inputs["schemaName"], table.inputs["name"]) == (
        s.databricks.catalog, s.databricks.schema, s.quality.inference_table)
    assert table.inputs["properties"] == {"delta.enableChangeDataFeed": "true"}
    names = [c["name"] for c in table.inputs["columns"]]
    assert names[:2] == ["request_id", "record"] and contract.target.name in names and "known_at" in names
    mode = s.observability.request_log_personal
    for name in contract.ids:
        held = name if name not in contract.personal or mode == "keep" else (
            f"{name}_hmac" if mode == "pseudonymise" else None)
        assert held is None or held in names
    assert not any("#" in n for n in names)


@pytest.mark.parametrize("stack", STACKS)
def test_the_monitor_profiles_the_table_by_the_contract(evaluate, stack):
    s, ev = settings_of(stack), evaluate(stack)
    contract = contracts.load(s.model.module).contract
    monitor = one(ev, platform_rules.QUALITY_MONITOR)
    log = monitor.inputs["inferenceLog"]
    assert log["problemType"] == delta_table.PROBLEM_TYPES[contract.task]
    assert (log["labelCol"], log["modelIdCol"], log["timestampCol"]) == (contract.target.name, "model_version", "scored_at")
    assert log["granularities"] == [s.quality.window]
    assert monitor.inputs["schedule"]["quartzCronExpression"] == s.quality.schedule
    assert monitor.inputs["slicingExprs"] == delta_table.slicing_exprs(contract, s.observability.request_log_personal)
    assert monitor.inputs["assetsDir"].startswith(s.databricks.folder + "/")


@pytest.mark.parametrize("stack", STACKS)
def test_the_quality_job_reads_the_log_as_drift_does_and_starts_training_only_where_it_exists(evaluate, stack):
    s, ev = settings_of(stack), evaluate(stack)
    job = quality_job(ev)
    drift = next(j for j in ev.of_type(platform_rules.JOB)
                 if j.inputs["tasks"][0]["pythonWheelTask"]["entryPoint"] == "mlops-drift")
    assert job.inputs["runAs"] == drift.inputs["runAs"]
    got, theirs = params(job), params(drift)
    for flag in ("--workspace-id", "--target", "--app-name", "--service-credential"):
        assert got[flag] == theirs[flag], flag
    assert got["--inference-table"] == f"{s.databricks.catalog}.{s.databricks.schema}.{s.quality.inference_table}"
    assert got.get("--labels-table") == s.quality.labels_table
    trains = [j for j in ev.of_type(platform_rules.JOB)
              if j.inputs["tasks"][0]["pythonWheelTask"]["entryPoint"] == "mlops-train"]
    if stack == "prod":
        assert not trains and "--training-job-id" not in got
    else:
        [train] = trains
        assert got["--training-job-id"] == train.id


@pytest.mark.parametrize("stack", STACKS)
def test_least_privilege_for_every_call_of_the_loop(evaluate, stack):
    s, ev = settings_of(stack), evaluate(stack)
    principal = str(quality_job(ev).inputs["runAs"]["servicePrincipalName"])
    held = platform_rules._held(ev)
    table = f"{s.databricks.catalog}.{s.databricks.schema}.{s.quality.inference_table}"
    assert held[(principal, "table", table)] == {"MODIFY", "SELECT"}
    assert held[(principal, "table", s.quality.labels_table)] == {"SELECT"}
    levels = [e["permissionLevel"] for acl in ev.of_type(platform_rules.PERMISSIONS) if acl.inputs.get("jobId")
              for e in acl.inputs["accessControls"] if e.get("servicePrincipalName") == principal]
    assert levels == ([] if stack == "prod" else ["CAN_MANAGE_RUN"])


def test_the_quality_alert_is_routed_like_the_drift_alert(evaluate):
    ev = evaluate("staging")
    rules = {r.name.rsplit("-alert-", 1)[-1]: r for r in ev.of_type(platform_rules.QUERY_RULE)}
    assert rules["quality"].inputs["criteria"]["allOf"][0]["query"] == kql.alert_quality()
    assert rules["quality"].inputs["actions"] == rules["drift"].inputs["actions"]


def test_the_loop_rules_catch_their_mistakes(evaluate):
    ev = evaluate("staging")
    for key in ("lakehouse-monitor-creator", "lakehouse-monitor-inference-profile", "delta-column-names",
                "databricks-sql-table-column-types", "databricks-run-now-permission"):
        assert problems(key, ev) == [], key
    table, monitor = one(ev, platform_rules.SQL_TABLE), one(ev, platform_rules.QUALITY_MONITOR)
    config = ev.config
    # a table another principal owns: the deployer may not create the monitor
    other = resource(platform_rules.SQL_TABLE, table.name, {**table.inputs, "owner": "someone@example.com"})
    watched = resource(platform_rules.QUALITY_MONITOR, monitor.name, monitor.inputs)
    assert any("owns" in p for p in problems("lakehouse-monitor-creator", fake(other, watched, config=config)))
    # no change data feed, a '#' column, a label column of another type
    bad = copy.deepcopy(table.inputs)
    bad["properties"] = {}
    bad["columns"].append({"name": "customer#hmac", "type": "STRING"})
    target = monitor.inputs["inferenceLog"]["labelCol"]
    for column in bad["columns"]:
        if column["name"] == target:
            column["type"] = "BIGINT"
    broken = resource(platform_rules.SQL_TABLE, table.name, bad)
    found = problems("lakehouse-monitor-inference-profile", fake(broken, watched))
    assert any("ChangeDataFeed" in p for p in found) and any("differ in type" in p for p in found)
    assert problems("delta-column-names", fake(broken))
    shouting = copy.deepcopy(table.inputs)
    shouting["columns"][0]["type"] = "STRING"
    assert problems("databricks-sql-table-column-types",
                    fake(resource(platform_rules.SQL_TABLE, table.name, shouting)))
    # a quality job that starts training with Can Manage
    job = quality_job(ev)
    started = params(job)["--training-job-id"]
    principal = job.inputs["runAs"]["servicePrincipalName"]
    acl = resource(platform_rules.PERMISSIONS, "acl", {"jobId": started, "accessControls": [
        {"servicePrincipalName": principal, "permissionLevel": "CAN_MANAGE"}]})
    assert problems("databricks-run-now-permission", fake(resource(platform_rules.JOB, job.name, job.inputs), acl))


def batch_job(ev):
    return next(j for j in ev.of_type(platform_rules.JOB)
                if j.inputs["tasks"][0]["pythonWheelTask"]["entryPoint"] == "mlops-batch")


@pytest.mark.parametrize("stack", STACKS)
def test_the_batch_job_appends_to_the_stacks_inference_table_as_the_quality_job_does(evaluate, stack):
    """Issue 22: every prediction, batch too, in the one table: the same table, columns (--personal) and principal as
    the quality job, once the table and the principal's MODIFY on it exist; the table-access rule holds it."""
    s, ev = settings_of(stack), evaluate(stack)
    batch, quality = batch_job(ev), quality_job(ev)
    full = f"{s.databricks.catalog}.{s.databricks.schema}.{s.quality.inference_table}"
    got = params(batch)
    assert got["--inference-table"] == params(quality)["--inference-table"] == full
    assert got["--personal"] == params(quality)["--personal"] == s.observability.request_log_personal
    assert batch.inputs["runAs"] == quality.inputs["runAs"]
    table = one(ev, platform_rules.SQL_TABLE)
    [grant] = [g for g in ev.of_type(platform_rules.GRANT) if g.inputs.get("table") == full]
    assert {table.urn, grant.urn} <= set(batch.dependencies)
    assert problems("unity-catalog-table-access", ev) == []
    ungranted = [g for g in ev.of_type(platform_rules.GRANT) if g is not grant]
    found = problems("unity-catalog-table-access", fake(batch, *ungranted))
    assert any(batch.name in p and f"MODIFY on {full}" in p for p in found), found


def test_a_pseudonymising_stack_gives_the_batch_job_the_quality_jobs_key(evaluate):
    ev = evaluate("dev", {"observability.requestLogPersonal": "pseudonymise", "requestLogPseudonymKey": "k" * 40})
    batch, quality = batch_job(ev), quality_job(ev)
    assert params(batch)["--personal"] == "pseudonymise"
    env = batch.inputs["jobClusters"][0]["newCluster"]["sparkEnvVars"]
    key = quality.inputs["jobClusters"][0]["newCluster"]["sparkEnvVars"]["REQUEST_LOG_PSEUDONYM_KEY"]
    assert env["REQUEST_LOG_PSEUDONYM_KEY"] == key and key.startswith("{{secrets/")
    [secret] = [r for r in ev.of_type("databricks:index/secret:Secret") if r.name.endswith("secret-pseudonym-key")]
    [acl] = ev.of_type("databricks:index/secretAcl:SecretAcl")
    assert acl.inputs["principal"] == batch.inputs["runAs"]["servicePrincipalName"] and acl.inputs["permission"] == "READ"
    assert {secret.urn, acl.urn} <= set(batch.dependencies)
