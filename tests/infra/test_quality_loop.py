"""The quality loop the stacks declare (issue 22 on Databricks): the inference table, its monitor, the quality job, the
alert and the rights each call needs; and the platform rules that hold them catch the mistakes they are there for."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from infra import kql
from monitoring import delta_table
from testing import platform_rules
from tests.infra.conftest import settings_of
from tests.infra.test_platform_rules import fake, problems, resource
from training import contract as contracts

STACKS = ("dev", "staging", "prod")
KEY = "pseudonym-key-" + "3" * 30  # what `pulumi config set --secret mlops:requestLogPseudonymKey` holds


def labelled(stack: str) -> dict:
    """A stack that names its labels table, with the ids it joins by pseudonymised (the example's ids are personal)."""
    return {"observability.requestLogPersonal": "pseudonymise", "requestLogPseudonymKey": KEY,
            "quality.labelsTable": f"{stack}.credit.outcomes"}


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
    if s.quality.paused:  # refreshed when asked: a monitor's schedule cannot be paused
        assert not monitor.inputs.get("schedule")
    else:
        assert monitor.inputs["schedule"] == {"quartzCronExpression": s.quality.monitor_schedule,
                                              "timezoneId": s.databricks.job.timezone}
    assert monitor.inputs["warehouseId"] == one(ev, platform_rules.SQL_TABLE).inputs["warehouseId"]
    assert monitor.inputs["slicingExprs"] == delta_table.slicing_exprs(contract, s.observability.request_log_personal)
    assert monitor.inputs["assetsDir"].startswith(s.databricks.folder + "/")


@pytest.mark.parametrize("stack", STACKS)
def test_the_quality_job_reads_the_log_as_drift_does_and_starts_training_only_where_it_exists(evaluate, stack):
    s, ev = settings_of(stack, labelled(stack)), evaluate(stack, labelled(stack))
    job = quality_job(ev)
    drift = next(j for j in ev.of_type(platform_rules.JOB)
                 if j.inputs["tasks"][0]["pythonWheelTask"]["entryPoint"] == "mlops-drift")
    assert job.inputs["runAs"] == drift.inputs["runAs"]
    got, theirs = params(job), params(drift)
    for flag in ("--workspace-id", "--target", "--app-name", "--service-credential", "--min-records", "--psi-threshold",
                 "--p-value"):
        assert got[flag] == theirs[flag], flag
    assert got["--inference-table"] == f"{s.databricks.catalog}.{s.databricks.schema}.{s.quality.inference_table}"
    assert got.get("--labels-table") == s.quality.labels_table
    assert got["--retention-days"] == str(s.quality.retention_days)
    assert "--label-horizon" not in got  # unset: every prediction scored before the outcome
    trains = [j for j in ev.of_type(platform_rules.JOB)
              if j.inputs["tasks"][0]["pythonWheelTask"]["entryPoint"] == "mlops-train"]
    if stack == "prod":
        assert not trains and "--training-job-id" not in got
    else:
        [train] = trains
        assert got["--training-job-id"] == train.id


def test_a_label_horizon_reaches_the_job_as_a_duration_its_parser_takes(evaluate):
    from monitoring import inference, quality_delta

    given = {**labelled("staging"), "quality.labelHorizonDays": 365}
    job = quality_job(evaluate("staging", given))
    assert params(job)["--label-horizon"] == "365D"
    values = [str(p) for p in job.inputs["tasks"][0]["pythonWheelTask"]["parameters"]]
    parsed = quality_delta.parser().parse_args(values)
    assert inference.horizon(parsed.label_horizon) == pd.Timedelta(days=365)


@pytest.mark.parametrize("stack", STACKS)
def test_least_privilege_for_every_call_of_the_loop(evaluate, stack):
    s, ev = settings_of(stack, labelled(stack)), evaluate(stack, labelled(stack))
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
                "databricks-sql-table-column-types", "databricks-run-now-permission", "databricks-quality-monitor-schedule",
                "databricks-sql-table-compute"):
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


def test_the_monitor_is_paused_without_a_schedule_and_the_tables_ddl_runs_on_the_stacks_warehouse(evaluate):
    ev = evaluate("staging")
    table, monitor = one(ev, platform_rules.SQL_TABLE), one(ev, platform_rules.QUALITY_MONITOR)
    warehouse = one(ev, "databricks:index/sqlEndpoint:SqlEndpoint")
    assert table.inputs["warehouseId"] == warehouse.id and warehouse.inputs["enableServerlessCompute"] is True
    assert warehouse.inputs["autoStopMins"] == 10 and warehouse.inputs["maxNumClusters"] == 1
    paused = copy.deepcopy(monitor.inputs)
    paused["schedule"]["pauseStatus"] = "PAUSED"
    assert problems("databricks-quality-monitor-schedule", fake(resource(platform_rules.QUALITY_MONITOR, "m", paused)))
    unnamed = {k: v for k, v in table.inputs.items() if k != "warehouseId"}
    assert problems("databricks-sql-table-compute", fake(resource(platform_rules.SQL_TABLE, "t", unnamed)))
    # a warehouse of the team's own: none declared
    own = evaluate("staging", {"quality.warehouseId": "0123456789abcdef"})
    assert not own.of_type("databricks:index/sqlEndpoint:SqlEndpoint")
    assert one(own, platform_rules.SQL_TABLE).inputs["warehouseId"] == "0123456789abcdef"


def test_a_renamed_table_is_a_new_one_and_the_old_one_is_kept(evaluate):
    ev = evaluate("prod")
    table, monitor = one(ev, platform_rules.SQL_TABLE), one(ev, platform_rules.QUALITY_MONITOR)
    assert table.replace_on_changes == ["name"] and table.retain_on_delete
    assert table.protect  # prod's history of predictions and labels
    assert set(monitor.replace_on_changes) == {"tableName", "assetsDir", "warehouseId"}


def test_without_serverless_the_stack_declares_no_monitor_and_keeps_the_rest(evaluate):
    ev = evaluate("staging", {"quality.monitor": False})
    assert not ev.of_type(platform_rules.QUALITY_MONITOR)
    assert one(ev, platform_rules.SQL_TABLE) and quality_job(ev)


@pytest.mark.parametrize("stack", STACKS)
def test_each_shipped_stacks_quality_job_runs_with_its_own_parameters(evaluate, stack, tmp_path):
    """The job as each stack declares it (its --personal, its labels table or none) over the service's log lines:
    it appends, judges what it can and sends its record; it never fails on the stack's own settings."""
    from monitoring import quality_delta
    from tests.monitoring.loglines import log_lines
    from tests.monitoring.test_quality_delta import FrameStore
    from training import data

    s, ev = settings_of(stack), evaluate(stack)
    model = contracts.load(s.model.module)
    given = params(quality_job(ev))
    argv = [*(x for k, v in given.items() if k not in ("--training-job-id", "--service-credential") for x in (k, v))]
    args = quality_delta.parser().parse_args(argv)
    args.tracking_uri = None
    store = FrameStore(delta_table.columns(model.contract, args.personal))
    rows = data.example_table(model, 50, seed=3)
    sent: list = []
    c = model.contract
    labels = pd.DataFrame({**{i: rows[i] for i in c.ids}, c.target.name: rows[c.target.name],
                           "known_at": pd.Timestamp.now(tz="UTC")}) if args.labels_table else None
    code, record = quality_delta.run(args, store, log_lines(model, rows, "req").splitlines(), labels, sent.extend,
                                     lambda *_: "never")
    assert code == quality_delta.EXIT_OK and sent == [record] and record["added"] == 50


def test_quality_readers_read_the_table_and_open_the_dashboard_and_nothing_else(evaluate):
    group = "credit-analysts"
    s, ev = settings_of("staging"), evaluate("staging", {"quality.readers": [group]})
    held = {(kind, name): privileges for (principal, kind, name), privileges in platform_rules._held(ev).items()
            if principal == group}
    table = f"{s.databricks.catalog}.{s.databricks.schema}.{s.quality.inference_table}"
    assert held == {("catalog", s.databricks.catalog): {"USE_CATALOG"},
                    ("schema", f"{s.databricks.catalog}.{s.databricks.schema}"): {"USE_SCHEMA"},
                    ("table", table): {"SELECT"}}  # the metric tables come with the first refresh: granted then
    warehouse = one(ev, "databricks:index/sqlEndpoint:SqlEndpoint")
    [acl] = [r for r in ev.of_type(platform_rules.PERMISSIONS) if r.inputs.get("sqlEndpointId") == warehouse.id]
    assert acl.inputs["accessControls"] == [{"groupName": group, "permissionLevel": "CAN_USE"}]



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
