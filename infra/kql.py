"""KQL over the scoring service's request log (serving/scoring/requestlog.py), for both targets.

The service writes one JSON line per scored request on stdout ({"log_type": "prediction", "ts",
"request_id", "model_name", "model_version", "n_records", "latency_ms", "inputs", "outputs":
[{"probability", "label"}]}). Where that line lands depends on the target:

  Container Apps  the environment's log destination decides:
                  azure-monitor  ContainerAppConsoleLogs, line in `Log`, app in `ContainerAppName`
                  log-analytics  ContainerAppConsoleLogs_CL, line in `Log_s`, app in `ContainerAppName_s`
  AKS             ContainerLogV2 (Container Insights), line in `LogMessage`, container in `ContainerName`

so every query is a function of a `LogSource`. infra/log_tables.py holds the documented columns of
every table read here; tests/infra/test_kql_bind.py binds each query against them with Microsoft's
Kusto parser (an unknown table, column or function, or a keyword used as a name, fails it).
`latency_ms` is the in-process scoring time, not the end-to-end time a client sees.

5xx: the service writes a `log_type: "error"` JSON line for every request it fails to answer (500
or 503), so each failed request is counted once (its traceback on stderr is not counted). The
error rate is errors / (errors + predictions) over the window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogSource:
    table: str           # where stdout lines land
    message_column: str  # the column holding one stdout line
    app_column: str      # the column naming the app/container
    app_name: str        # its value for the scoring service
    restarts: str        # a query with one `restarts` column over the window, for the restart alert

    @property
    def lines(self) -> str:
        return f"{self.table}\n| where {self.app_column} == '{self.app_name}'"


# The managed environment's appLogsConfiguration.destination. `azure-monitor` (a diagnostic setting sends the
# logs; no shared key is read) lands in Azure tables with plain column names; `log-analytics` (the environment
# writes with the workspace's shared key) in custom-log tables whose columns carry a type suffix.
DESTINATIONS = ("azure-monitor", "log-analytics")
# The one the stacks' managed environments use (infra/containerapp.py), and so the one every query reads.
CONTAINER_APPS_DESTINATION = "azure-monitor"


def container_apps(app_name: str, destination: str = CONTAINER_APPS_DESTINATION) -> LogSource:
    if destination not in DESTINATIONS:
        raise ValueError(f"Container Apps log destination {destination!r}: expected one of {', '.join(DESTINATIONS)}")
    table, column = ("_CL", "_s") if destination == "log-analytics" else ("", "")
    restarts = (f"ContainerAppSystemLogs{table}\n"
                f"| where ContainerAppName{column} == '{app_name}'\n"
                f"| where Reason{column} in ('ContainerCrashing', 'ContainerTerminated', 'BackOff', 'ProbeFailed')\n"
                "| summarize restarts = count()")
    return LogSource(f"ContainerAppConsoleLogs{table}", f"Log{column}", f"ContainerAppName{column}", app_name, restarts)


def aks(container_name: str, namespace: str) -> LogSource:
    # KubePodInventory carries a cumulative restart count per container: the increase is the restarts.
    # Not `first`/`last` as names: they are KQL keywords, and the parser rejects them unbracketed.
    restarts = ("KubePodInventory\n"
                f"| where Namespace == '{namespace}' and ContainerName endswith '{container_name}'\n"
                "| summarize first_count = min(ContainerRestartCount), last_count = max(ContainerRestartCount)"
                " by ContainerID\n"
                "| summarize restarts = sum(last_count - first_count)")
    return LogSource("ContainerLogV2", "LogMessage", "ContainerName", container_name, restarts)


def predictions(source: LogSource, every_part: bool = False) -> str:
    """One row per scored request, typed. A request of more than ~16 KiB is logged in `parts` lines that each
    carry the whole header and a slice of the outputs: counts and latencies take part 1 only (lines older than
    the split have no part); `every_part` keeps every slice, for what sums over records."""
    parts = "" if every_part else "| where tostring(entry.part) in ('', '1')\n"
    return (f"{source.lines}\n"
            f"| extend entry = parse_json(tostring({source.message_column}))\n"
            "| where tostring(entry.log_type) == 'prediction'\n"
            f"{parts}"
            "| project TimeGenerated, request_id = tostring(entry.request_id), model_name = tostring(entry.model_name),\n"
            "    model_version = tostring(entry.model_version), n_records = toint(entry.n_records),\n"
            "    latency_ms = todouble(entry.latency_ms), outputs = entry.outputs")


def errors(source: LogSource) -> str:
    """One row per failed request the service logged."""
    return (f"{source.lines}\n"
            f"| extend line = tostring({source.message_column})\n"
            "| extend entry = parse_json(line)\n"
            "| where tostring(entry.log_type) == 'error'\n"
            "| project TimeGenerated, line")


def latency(source: LogSource, bin_minutes: int = 5) -> str:
    """Saved query: request count and latency percentiles per model version over time."""
    return (f"{predictions(source)}\n"
            f"| summarize requests = count(), p50_ms = percentile(latency_ms, 50), p95_ms = percentile(latency_ms, 95),\n"
            f"    p99_ms = percentile(latency_ms, 99) by bin(TimeGenerated, {bin_minutes}m), model_version\n"
            "| order by TimeGenerated asc")


def error_rate(source: LogSource, bin_minutes: int = 5) -> str:
    """Saved query: errors, requests and the error percentage over time."""
    return (f"let ok = {_inline(predictions(source))} | summarize ok = count() by bin(TimeGenerated, {bin_minutes}m);\n"
            f"let failed = {_inline(errors(source))} | summarize failed = count() by bin(TimeGenerated, {bin_minutes}m);\n"
            "ok\n| join kind=fullouter failed on TimeGenerated\n"
            "| extend TimeGenerated = coalesce(TimeGenerated, TimeGenerated1),\n"
            "    ok = coalesce(ok, 0), failed = coalesce(failed, 0)\n"
            "| project TimeGenerated, requests = ok + failed, failed,\n"
            "    error_rate_percent = iff(ok + failed == 0, 0.0, 100.0 * failed / (ok + failed))\n"
            "| order by TimeGenerated asc")


def probability_distribution(source: LogSource, bucket: float = 0.05) -> str:
    """Saved query: histogram of predicted default probabilities per model version (drift at a glance)."""
    return (f"{predictions(source, every_part=True)}\n"
            "| mv-expand output = outputs\n"
            "| extend probability = todouble(output.probability), label = toint(output.label)\n"
            "| summarize records = count(), positives = countif(label == 1)\n"
            f"    by bucket = bin(probability, {bucket}), model_version\n"
            "| order by model_version asc, bucket asc")


# Alert queries: each returns one row with the measured column the rule compares to its threshold.

def alert_error_rate(source: LogSource) -> str:
    return (f"let ok = toscalar({_inline(predictions(source))} | count);\n"
            f"let failed = toscalar({_inline(errors(source))} | count);\n"
            "print error_rate_percent = iff(ok + failed == 0, 0.0, 100.0 * failed / (ok + failed))")


def alert_p95_latency(source: LogSource) -> str:
    return f"{predictions(source)}\n| summarize p95_ms = percentile(latency_ms, 95)"


def alert_restarts(source: LogSource) -> str:
    return source.restarts


def alert_traffic(source: LogSource) -> str:
    return f"{predictions(source)}\n| summarize requests = count()"


def _inline(query: str) -> str:
    return "(" + query.replace("\n", " ") + ")"


def prediction_lines(source: LogSource) -> str:
    """The raw prediction lines (column `line`), for the drift job (monitoring/drift.py): it needs the inputs."""
    return (f"{source.lines}\n"
            f"| extend line = tostring({source.message_column})\n"
            "| extend entry = parse_json(line)\n"
            "| where tostring(entry.log_type) == 'prediction'\n"
            "| project TimeGenerated, line")


def alert_drift(table: str = "AppTraces") -> str:
    """The drift job's record (monitoring/drift.py sends it as an Application Insights trace): drifted versions."""
    return (f"{table}\n"
            "| extend entry = parse_json(Message)\n"
            "| where tostring(entry.log_type) == 'drift' and tostring(entry.status) == 'drift'\n"
            "| summarize drifted_versions = dcount(tostring(entry.model_version))")
