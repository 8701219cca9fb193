"""Every KQL query the program declares parses and binds against the documented tables, offline.

ARM validates a scheduled query rule's query only when it creates the rule, and mocks accept any
string. So each alert rule's and saved query's text, as the real program declares it under mocks (per
stack and serving target), plus the drift job's Log Analytics query, goes through Microsoft's Kusto
parser (npm @kusto/language-service-next, via scripts/kusto_bind.cjs) with a database holding only
the tables and typed columns of infra/log_tables.py: an unknown table, column or function, a type
error or a keyword used as a name is an error. One node process binds all the queries of a test.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra import kql, log_tables, stack_files
from testing import mockcloud
from tests.infra.conftest import settings_of

ROOT = Path(__file__).resolve().parents[2]
KUSTO = ROOT / ".tools" / "node_modules" / "@kusto" / "language-service-next" / "Kusto.Language.Bridge.js"
SCRIPT = ROOT / "scripts" / "kusto_bind.cjs"
STACKS = ("dev", "staging", "prod")
TARGETS = ("containerapps", "aks")
BUILDS = {"promotion": stack_files.DELETE}  # prod is a promotion target; as in test_program.py, build it here
RULE = "azure-native:monitor:ScheduledQueryRule"
SAVED = "azure-native:operationalinsights:SavedSearch"
DRIFT_JOB = "databricks-drift-job"

# What each log source may read. AppTraces is the drift job's record (Application Insights), in every stack.
READS = {"azure-monitor": {"ContainerAppConsoleLogs", "ContainerAppSystemLogs", "ContainerAppHTTPLogs", "AppTraces"},
         "log-analytics": {"ContainerAppConsoleLogs_CL", "ContainerAppSystemLogs_CL", "AppTraces"},
         "aks": {"ContainerLogV2", "KubePodInventory", "AppTraces"}}


@pytest.fixture(scope="module")
def node() -> str:
    if not KUSTO.exists():  # `make test` installs it first; a bare pytest run installs it here
        subprocess.run(["make", "-s", str(KUSTO.relative_to(ROOT))], cwd=ROOT, check=True, timeout=300)
    found = shutil.which("node")
    assert found, "node is needed for the Kusto parser (make kusto installs it)"
    return found


def bind(node: str, queries: dict[str, str], tables: dict[str, dict[str, str]] | None = None) -> dict[str, dict]:
    """{name: {"tables": [...read...], "errors": [...]}} for every query, from one node process."""
    request = {"tables": log_tables.schemas() if tables is None else tables,
               "queries": [{"name": name, "text": text} for name, text in queries.items()]}
    result = subprocess.run([node, str(SCRIPT)], input=json.dumps(request), capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr  # 2: the script refused its input
    results = {r["name"]: r for r in json.loads(result.stdout)["results"]}
    assert set(results) == set(queries)
    assert (result.returncode == 1) == any(r["errors"] for r in results.values()), "exit status disagrees with errors"
    return results


def failures(results: dict[str, dict], queries: dict[str, str]) -> str:
    """Readable errors: which query, where, what the parser said."""
    lines = []
    for name, result in results.items():
        for e in result["errors"]:
            lines.append(f"{name} line {e['line']} col {e['column']} ({e['code']}) {e['message']!r} at {e['excerpt']!r}")
    return "\n".join(lines) + "\n" + "\n\n".join(queries[n] for n, r in results.items() if r["errors"])


def drift_source(evaluation: mockcloud.Evaluation) -> kql.LogSource:
    """The source monitoring/drift.py builds from the drift job's parameters (its --target, --app-name, --namespace)."""
    job = evaluation.named("databricks:index/job:Job", DRIFT_JOB)
    task = job.inputs["tasks"][0]["pythonWheelTask"]  # the mlops-drift entry point of the jobs' wheel
    assert task["entryPoint"] == "mlops-drift"
    params = task["parameters"]
    args = dict(zip(params[0::2], params[1::2], strict=True))
    if args["--target"] == "containerapps":
        return kql.container_apps(args["--app-name"])
    return kql.aks(args["--app-name"], args["--namespace"])


def declared_queries(evaluation: mockcloud.Evaluation) -> dict[str, str]:
    """Every alert condition's and saved query's text the program declared, and the drift job's query."""
    queries = {f"{evaluation.stack} rule {rule.name}[{i}]": condition["query"]
               for rule in evaluation.of_type(RULE) for i, condition in enumerate(rule.inputs["criteria"]["allOf"])}
    queries.update({f"{evaluation.stack} saved {saved.name}": saved.inputs["query"] for saved in evaluation.of_type(SAVED)})
    queries[f"{evaluation.stack} drift job prediction_lines"] = kql.prediction_lines(drift_source(evaluation))
    return queries


@pytest.fixture(scope="module")
def program_queries(evaluate) -> dict[str, tuple[str, str]]:
    """{name: (query, what it may read)} over every stack and serving target."""
    queries: dict[str, tuple[str, str]] = {}
    for stack in STACKS:
        for target in TARGETS:
            # The stacks serve on containerapps: no override there, so the evaluations test_program.py made are reused.
            overrides = {**(BUILDS if stack == "prod" else {}), **({"serving.target": "aks"} if target == "aks" else {})}
            evaluation = evaluate(stack, overrides or None)
            reads = "aks" if target == "aks" else "azure-monitor"  # the program's Container Apps source: the default
            found = declared_queries(evaluation)
            # error-rate, p95-latency, restarts, drift, quality (+ no-traffic where configured); 3 saved queries; the
            # drift job.
            assert sum(" rule " in n for n in found) >= 5 and sum(" saved " in n for n in found) == 3, sorted(found)
            queries.update({f"{target} {name}": (text, reads) for name, text in found.items()})
    return queries


def test_every_declared_query_binds_against_the_documented_tables(node, program_queries):
    queries = {name: text for name, (text, _) in program_queries.items()}
    results = bind(node, queries)
    assert not any(r["errors"] for r in results.values()), failures(results, queries)
    for name, (_, reads) in program_queries.items():
        tables = set(results[name]["tables"])
        assert tables and tables <= READS[reads], f"{name} reads {sorted(tables)}, not only {sorted(READS[reads])}"


def source_queries(source: kql.LogSource) -> dict[str, str]:
    """Every query kql.py builds from a log source."""
    return {"predictions": kql.predictions(source), "errors": kql.errors(source), "latency": kql.latency(source),
            "error_rate": kql.error_rate(source), "probability_distribution": kql.probability_distribution(source),
            "alert_error_rate": kql.alert_error_rate(source), "alert_p95_latency": kql.alert_p95_latency(source),
            "alert_restarts": kql.alert_restarts(source), "alert_traffic": kql.alert_traffic(source),
            "prediction_lines": kql.prediction_lines(source),
            **({"platform_errors": kql.platform_errors(source)} if source.ingress else {})}


APP_NAME = settings_of("dev").names.container_app
SOURCES = {"azure-monitor": kql.container_apps(APP_NAME, "azure-monitor"),
           "log-analytics": kql.container_apps(APP_NAME, "log-analytics"),
           "aks": kql.aks("scoring", "scoring")}


def test_both_container_apps_destinations_and_aks_bind_and_read_only_their_tables(node):
    queries = {f"{kind} {name}": text for kind, source in SOURCES.items() for name, text in source_queries(source).items()}
    queries["alert_drift"] = kql.alert_drift()
    queries["alert_quality"] = kql.alert_quality()
    results = bind(node, queries)
    assert not any(r["errors"] for r in results.values()), failures(results, queries)
    for kind in SOURCES:
        read = set().union(*(results[n]["tables"] for n in queries if n.startswith(f"{kind} ")))
        # console logs for every query, system logs (or the pod inventory) for the restart alert, the ingress's HTTP
        # logs (azure-monitor only) for the error rate
        assert read == READS[kind] - {"AppTraces"}, (kind, read)
    assert results["alert_drift"]["tables"] == ["AppTraces"]
    assert results["alert_quality"]["tables"] == ["AppTraces"]
    for name in ("alert_error_rate", "error_rate"):
        assert "ContainerAppHTTPLogs" in results[f"azure-monitor {name}"]["tables"], name
    # The destinations differ in table and column names only (and log-analytics has no HTTP logs): the same query
    # text otherwise.
    plain = source_queries(dataclasses.replace(SOURCES["azure-monitor"], ingress=None))
    custom = source_queries(SOURCES["log-analytics"])
    for name in plain:
        assert "_CL" not in plain[name] and "_s " not in plain[name] and "_s)" not in plain[name], name
        renamed = custom[name].replace("_CL", "").replace("Log_s", "Log").replace("Name_s", "Name").replace("Reason_s", "Reason")
        assert renamed == plain[name], name


def test_container_apps_default_destination_and_unknown_ones():
    assert kql.container_apps("ca-x") == kql.container_apps("ca-x", "azure-monitor")
    assert (kql.container_apps("ca-x").table, kql.container_apps("ca-x").message_column) == ("ContainerAppConsoleLogs", "Log")
    for wrong in ("log_analytics", "Azure-Monitor", "none", ""):
        with pytest.raises(ValueError, match="expected one of azure-monitor, log-analytics"):
            kql.container_apps("ca-x", wrong)


def test_the_checker_fails_what_arm_would_refuse(node):
    """The binder is strict enough to matter: each of these is an error, at the offending name."""
    restarts_with_keywords = ("KubePodInventory\n| where Namespace == 'scoring' and ContainerName endswith 'scoring'\n"
                              "| summarize first = min(ContainerRestartCount), last = max(ContainerRestartCount) by ContainerID\n"
                              "| summarize restarts = sum(last - first)")
    cases = {
        "unknown column": ("ContainerAppConsoleLogs\n| where ContainerAppName_s == 'ca'", "ContainerAppName_s", "KS142"),
        "unknown table": ("ContainerAppConsoleLogs_V2\n| count", "ContainerAppConsoleLogs_V2", "KS204"),
        "unknown function": ("AppTraces\n| extend entry = parse_jsonn(Message)", "parse_jsonn", "KS211"),
        "keyword as a name (the old AKS restart query)": (restarts_with_keywords, "first", "KS228"),
        # A _CL column asked of the azure-monitor table: the mistake a destination switch would make.
        "log-analytics column on an azure-monitor table": (
            kql.alert_traffic(SOURCES["log-analytics"]).replace("ContainerAppConsoleLogs_CL", "ContainerAppConsoleLogs"),
            "ContainerAppName_s", "KS142"),
    }
    queries = {name: text for name, (text, _, _) in cases.items()}
    results = bind(node, queries)
    for name, (_, excerpt, code) in cases.items():
        errors = results[name]["errors"]
        assert errors, f"{name}: the parser accepted it"
        assert (errors[0]["excerpt"], errors[0]["code"]) == (excerpt, code), (name, errors)
    keyword_errors = results["keyword as a name (the old AKS restart query)"]["errors"]
    assert [e["message"] for e in keyword_errors[:2]] == [
        "The name 'first' needs to be bracketed as ['first'] to be used in this context.",
        "The name 'last' needs to be bracketed as ['last'] to be used in this context."]
    assert (keyword_errors[0]["line"], keyword_errors[0]["column"]) == (3, 13)
    # The fixed query is the same text with the names changed, and binds.
    assert "first_count" in kql.aks("scoring", "scoring").restarts


def test_the_schema_is_what_decides(node):
    """Take the column away and the same query fails: the pass above comes from the documented schema."""
    query = {"restarts": kql.alert_restarts(SOURCES["log-analytics"])}
    assert bind(node, query)["restarts"]["errors"] == []
    tables = log_tables.schemas()
    del tables["ContainerAppSystemLogs_CL"]["Reason_s"]
    errors = bind(node, query, tables)["restarts"]["errors"]
    assert [(e["excerpt"], e["code"]) for e in errors] == [("Reason_s", "KS142")]


def test_the_http_log_schema_is_what_decides(node):
    """The platform-5xx count reads ContainerAppHTTPLogs' StatusCode and ResponseCodeDetails as documented; without
    the column the same query fails."""
    query = {"errors": kql.alert_error_rate(SOURCES["azure-monitor"])}
    assert bind(node, query)["errors"]["errors"] == []
    tables = log_tables.schemas()
    del tables["ContainerAppHTTPLogs"]["ResponseCodeDetails"]
    errors = bind(node, query, tables)["errors"]["errors"]
    assert errors and {(e["excerpt"], e["code"]) for e in errors} == {("ResponseCodeDetails", "KS142")}


def test_the_documented_tables():
    """Every table names where its columns come from, and has the columns every query filters on time with."""
    for name, table in log_tables.TABLES.items():
        assert table.docs and all(d.startswith("https://learn.microsoft.com/") for d in table.docs), name
        assert table.columns["TimeGenerated"] == "datetime" and table.columns["Type"] == "string", name
        if table.custom_log:
            assert log_tables.CONTAINER_APPS_LOG_ANALYTICS in table.docs, name
            assert all(c in log_tables.TABLES[name].columns for c in ("_ResourceId", "TenantId")), name
        else:
            assert table.docs[0] == log_tables.AZURE_MONITOR_TABLES + name.lower(), name
    # ContainerLogV2 keeps the stdout line as dynamic: kql.py's tostring() around the message column is what makes
    # one text form for all three sources.
    assert log_tables.TABLES["ContainerLogV2"].columns["LogMessage"] == "dynamic"
    assert "TenantId" not in log_tables.TABLES["KubePodInventory"].columns  # its page lists none


def test_the_script_refuses_a_bad_schema(node):
    # {"first": ...}: the parser's schema reader drops a keyword-named column without a word; the script refuses it.
    for tables in ({"T": {"a b": "string"}}, {"T": {"a": "varchar"}}, {"T-1": {"a": "string"}},
                   {"T": {"a": "string", "first": "long"}}):
        result = subprocess.run([node, str(SCRIPT)], input=json.dumps({"tables": tables, "queries": []}),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "bad schema" in result.stderr, (tables, result.stderr)


def test_the_drift_rule_binds_before_the_first_drift_record(node):
    """AppTraces appears with the drift job's first record (days after the rule, or never on a quiet stack): the
    drift rule must not fail without it, or Azure disables the rule after a week of failures (audit B4)."""
    tables = {name: columns for name, columns in log_tables.schemas().items() if name != "AppTraces"}
    result = bind(node, {"alert_drift": kql.alert_drift()}, tables)
    assert not result["alert_drift"]["errors"], failures(result, {"alert_drift": kql.alert_drift()})
    plain = "AppTraces\n" + kql.alert_drift().split("\n", 1)[1]  # the same rule without the fuzzy union
    assert bind(node, {"plain": plain}, tables)["plain"]["errors"], "the parser must see the missing table"


def test_the_quality_rule_binds_before_the_first_quality_record(node):
    """The quality job's first record comes a day or more after the rule: like the drift rule, the quality rule binds
    without AppTraces, and reads only AppTraces once it exists."""
    tables = {name: columns for name, columns in log_tables.schemas().items() if name != "AppTraces"}
    result = bind(node, {"alert_quality": kql.alert_quality()}, tables)
    assert not result["alert_quality"]["errors"], failures(result, {"alert_quality": kql.alert_quality()})
    result = bind(node, {"alert_quality": kql.alert_quality()})
    assert not result["alert_quality"]["errors"] and result["alert_quality"]["tables"] == ["AppTraces"]
