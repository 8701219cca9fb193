"""Unity Catalog on Databricks: grants, the tables jobs read and write, registered models' owners and readers, the
catalog's storage, and the quality monitor with the SQL tables it reads.
"""

from __future__ import annotations

import re
from typing import Any

from infra import jobwheel, stack_files
from testing.mockcloud import Evaluation
from testing.platform_rules.common import JOB, Rule, _get
from testing.platform_rules.databricks import _deployer, _entry_points

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


VOLUME = "databricks:index/volume:Volume"
CREATE_PRIVILEGE = {VOLUME: "CREATE_VOLUME", MODEL: "CREATE_MODEL"}


def deployer_holds_what_it_creates_with(ev: Evaluation) -> list[str]:
    """The deployer creates the code volume (CREATE_VOLUME on its schema, or its catalog) and, in a promotion target,
    the registered model (CREATE_MODEL), after its own Grant there; a Grant being authoritative for its principal, the
    deployer's own Grant on a catalog or schema where it grants others keeps MANAGE, or revokes what those Grants
    need (audit s11, F1 and F2)."""
    deployer, held = str(_deployer(ev)), _held(ev)
    if not held:
        return []  # the workspace registry: no Unity Catalog grants
    grants = {(str(g.inputs.get("principal")), *_securable(g.inputs)): g for g in ev.of_type(GRANT)}
    problems = []
    for typ, privilege in CREATE_PRIVILEGE.items():
        for created in ev.of_type(typ):
            catalog, schema = str(created.inputs.get("catalogName")), str(created.inputs.get("schemaName"))
            where = f"{catalog}.{schema}"
            own = grants.get((deployer, "schema", where))
            if not {privilege, "ALL_PRIVILEGES"} & (held.get((deployer, "schema", where), set())
                                                     | held.get((deployer, "catalog", catalog), set())):
                problems.append(f"{created.name}: the deployer {deployer} lacks {privilege} on {where}")
            elif own is not None and created.urn and own.urn not in created.dependencies:
                problems.append(f"{created.name}: created without waiting for the deployer's own Grant on {where}")
    for (principal, kind, name), grant in grants.items():
        others = [p for p, k, n in grants if (k, n) == (kind, name) and p != deployer]
        if principal == deployer and kind in ("catalog", "schema") and others \
                and "MANAGE" not in (grant.inputs.get("privileges") or []):
            problems.append(f"{grant.name}: the deployer's own Grant on {kind} {name} leaves out MANAGE, which it needs "
                            f"to grant {len(others)} other principal(s) there")
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


RULES: tuple[Rule, ...] = (
    Rule("databricks-grant-per-principal", "a Grant is authoritative for its principal on its securable: two for the same "
         "pair overwrite each other on every `up`",
         "https://registry.terraform.io/providers/databricks/databricks/latest/docs/resources/grant",
         one_grant_per_principal_and_securable),
    Rule("unity-catalog-table-access", "a job reads a table with SELECT and creates one with CREATE_TABLE on its schema, "
         "with USE_CATALOG and USE_SCHEMA on the way",
         "https://docs.databricks.com/aws/en/data-governance/unity-catalog/manage-privileges/privileges",
         job_tables_granted),
    Rule("unity-catalog-model-owner-writes", "creating a model version and moving an alias take the registered model's "
         "owner (or a metastore admin): whoever writes versions or aliases owns the model; only a metastore admin gives "
         "a model to another principal (learn.microsoft.com/azure/databricks/data-governance/unity-catalog/"
         "manage-privileges/ownership), so it is its writer's from the creation",
         "https://docs.databricks.com/api/uc-registered-models/v1/set-registered-model-alias", model_written_by_its_owner),
    Rule("unity-catalog-model-execute", "reading a model's versions and files needs EXECUTE on it and USE_CATALOG, "
         "USE_SCHEMA on the way, unless one owns it; catalog or schema ownership does not give it",
         "https://databricks-sdk-py.readthedocs.io/en/latest/workspace/catalog/registered_models.html",
         model_readers_hold_execute),
    Rule("unity-catalog-managed-location", "a catalog needs managed storage of its own when the metastore has none "
         "(metastores of automatically enabled workspaces)",
         "https://learn.microsoft.com/azure/databricks/connect/unity-catalog/managed-storage",
         catalog_has_managed_location),
    Rule("unity-catalog-deployer-creates", "creating a managed volume takes CREATE_VOLUME on its schema and a model "
         "CREATE_MODEL; granting takes MANAGE (or ownership); a Grant is authoritative for its principal, so the "
         "deployer's own lists all it uses there, and what it creates waits for it",
         "https://learn.microsoft.com/azure/databricks/data-governance/unity-catalog/manage-privileges/privileges",
         deployer_holds_what_it_creates_with),
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
)
