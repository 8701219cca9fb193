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
or 503), so each failed request is counted once (its traceback on stderr is not counted). A request
the app never answered leaves no such line: a replica that crashed, restarted or is not ready, an
upstream timeout. Where the platform logs every request it answers (Container Apps' ingress, the
`ContainerAppHTTPLogs` table: `LogSource.ingress`), those 5xx are counted too:

  platform_failed  ingress 5xx whose status the ingress set itself (ResponseCodeDetails != 'via_upstream':
                   502/503/504 for no healthy replica, a reset or crashed one, an upstream timeout)
  app_failed       the larger of the app's error lines and the ingress's 5xx the app answered ('via_upstream'):
                   both count the same failures (every error line is a 5xx answered through the ingress), and
                   the larger still counts when the HTTP log is late or the app died before writing its line
  error rate       (platform_failed + app_failed) / requests, requests = every request the ingress answered
                   (at least predictions + failures)

Without an ingress log (AKS behind a plain LoadBalancer Service has no L7 proxy: a request that finds no
ready pod gets no HTTP status at all; Container Apps' log-analytics destination emits no HTTP logs) the
error rate is errors / (errors + predictions), and AKS watches replicas and the app's own 5xx counter in
managed Prometheus instead (infra/prometheus.py).
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
    ingress: str | None = None  # the platform's log of every request it answered for the app, where there is one
    scope: str = ""  # a further filter on `table` (AKS: the namespace)

    @property
    def lines(self) -> str:
        scope = f" and {self.scope}" if self.scope else ""
        return f"{self.table}\n| where {self.app_column} == '{self.app_name}'{scope}"


# The managed environment's appLogsConfiguration.destination. `azure-monitor` (a diagnostic setting sends the
# logs; no shared key is read) lands in Azure tables with plain column names; `log-analytics` (the environment
# writes with the workspace's shared key) in custom-log tables whose columns carry a type suffix.
DESTINATIONS = ("azure-monitor", "log-analytics")
# The one the stacks' managed environments use (infra/containerapp.py), and so the one every query reads.
CONTAINER_APPS_DESTINATION = "azure-monitor"
# Container Apps' ingress (Envoy) log: one row per request it answered, with the status and who set it.
HTTP_LOGS = "ContainerAppHTTPLogs"
# Envoy's response code detail when the status came from the app; any other detail means the ingress answered itself.
FROM_APP = "via_upstream"


# ContainerAppSystemLogs reasons that mean a container failed (azureossd.github.io, "Container Apps - Backoff restarts
# and container exits"), and the exit codes of a container that was stopped, not crashed.
CRASH_REASONS = ("ContainerCrashing", "ContainerBackOff", "BackOff")
CLEAN_EXITS = ("0", "143")


def container_apps(app_name: str, destination: str = CONTAINER_APPS_DESTINATION) -> LogSource:
    if destination not in DESTINATIONS:
        raise ValueError(f"Container Apps log destination {destination!r}: expected one of {', '.join(DESTINATIONS)}")
    table, column = ("_CL", "_s") if destination == "log-analytics" else ("", "")
    # HTTP logs come only through a diagnostic setting (the azure-monitor destination); log-analytics has none.
    ingress = None if destination == "log-analytics" else f"{HTTP_LOGS}\n| where ContainerAppName == '{app_name}'"
    # Crashes only: a back-off (the container keeps failing to start) or a termination with a failure exit code.
    # Not ProbeFailed (a replica warming its model fails readiness) nor a clean stop: a release deactivating the old
    # revision and every scale-in terminate containers with exit code 0 (or 143, SIGTERM) and are no restart.
    restarts = (f"ContainerAppSystemLogs{table}\n"
                f"| where ContainerAppName{column} == '{app_name}'\n"
                f"| extend reason = Reason{column}, exit_code = extract(@\"exit code '(-?[0-9]+)'\", 1, Log{column})\n"
                f"| where reason in ({', '.join(map(repr, CRASH_REASONS))})\n"
                f"    or (reason == 'ContainerTerminated' and exit_code !in ('', {', '.join(map(repr, CLEAN_EXITS))}))\n"
                "| summarize restarts = count()")
    return LogSource(f"ContainerAppConsoleLogs{table}", f"Log{column}", f"ContainerAppName{column}", app_name, restarts,
                     ingress)


def aks(container_name: str, namespace: str) -> LogSource:
    # KubePodInventory carries a cumulative restart count per container: the increase is the restarts. Grouped by
    # ContainerName (<pod uid>/<container>), which a restart keeps; ContainerID is the runtime id of the current
    # container, new on every restart, so a group by it never sees the count rise.
    # Not `first`/`last` as names: they are KQL keywords, and the parser rejects them unbracketed.
    restarts = ("KubePodInventory\n"
                f"| where Namespace == '{namespace}' and ContainerName endswith '/{container_name}'\n"
                "| summarize first_count = min(ContainerRestartCount), last_count = max(ContainerRestartCount)"
                " by ContainerName\n"
                "| summarize restarts = sum(last_count - first_count)")
    # ContainerLogV2 by namespace too: another namespace's container of the same name is not this service.
    return LogSource("ContainerLogV2", "LogMessage", "ContainerName", container_name, restarts,
                     scope=f"PodNamespace == '{namespace}'")


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
    """Saved query: requests, failures (and those the platform answered itself) and the error percentage over time."""
    return f"{_error_counts(source, f'bin(TimeGenerated, {bin_minutes}m)')}\n| order by TimeGenerated asc"


def platform_errors(source: LogSource) -> str:
    """One row per 5xx the platform answered without the app (needs an ingress log)."""
    if source.ingress is None:
        raise ValueError(f"{source.table}: no ingress log to find platform 5xx in")
    return (f"{source.ingress}\n| where StatusCode >= 500 and ResponseCodeDetails != '{FROM_APP}'\n"
            "| project TimeGenerated, StatusCode, ResponseCodeDetails, ResponseFlags")


def _error_counts(source: LogSource, time_bin: str | None) -> str:
    """requests, failed, platform_failed and error_rate_percent, over the whole window or per `time_bin`. Each
    source is summarized alone and the union summed: a union, not joins, so a source without rows counts 0."""
    by = f" by TimeGenerated = {time_bin}" if time_bin else ""
    parts = [f"({_flat(predictions(source))} | summarize ok = count(){by})",
             f"({_flat(errors(source))} | summarize app_lines = count(){by})"]
    columns = ["ok", "app_lines"]
    if source.ingress is not None:
        parts.append(f"({_flat(source.ingress)} | summarize answered = count(),"
                     f" platform_failed = countif(StatusCode >= 500 and ResponseCodeDetails != '{FROM_APP}'),"
                     f" app_answered_5xx = countif(StatusCode >= 500 and ResponseCodeDetails == '{FROM_APP}'){by})")
        columns += ["answered", "platform_failed", "app_answered_5xx"]
    sums = ", ".join(f"{c} = coalesce(sum({c}), 0)" for c in columns)
    if source.ingress is None:
        counted = "| extend platform_failed = 0, failed = app_lines\n| extend requests = ok + failed\n"
    else:
        counted = ("| extend failed = platform_failed + max_of(app_lines, app_answered_5xx)\n"
                   "| extend requests = max_of(answered, ok + failed)\n")
    # isfuzzy: a table that does not exist yet (no HTTP log before the first request) counts 0 instead of failing the
    # whole query, which Azure would disable after a week of failures.
    return ("union isfuzzy=true " + ",\n    ".join(parts) + "\n"
            f"| summarize {sums}{' by TimeGenerated' if time_bin else ''}\n{counted}"
            f"| project {'TimeGenerated, ' if time_bin else ''}requests, failed, platform_failed,\n"
            "    error_rate_percent = iff(requests == 0, 0.0, 100.0 * failed / requests)")


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
    """The 5xx share of requests over the window: the app's error lines and, where the platform logs its answers,
    the 5xx it returned without the app (see the module docstring)."""
    return _error_counts(source, None)


def alert_p95_latency(source: LogSource) -> str:
    return f"{predictions(source)}\n| summarize p95_ms = percentile(latency_ms, 95)"


def alert_restarts(source: LogSource) -> str:
    return source.restarts


def alert_traffic(source: LogSource) -> str:
    return f"{predictions(source)}\n| summarize requests = count()"


def _flat(query: str) -> str:
    return query.replace("\n", " ")


def prediction_lines(source: LogSource) -> str:
    """The raw prediction lines (column `line`), for the drift job (monitoring/drift.py): it needs the inputs."""
    return (f"{source.lines}\n"
            f"| extend line = tostring({source.message_column})\n"
            "| extend entry = parse_json(line)\n"
            "| where tostring(entry.log_type) == 'prediction'\n"
            "| project TimeGenerated, line")


def alert_drift(table: str = "AppTraces") -> str:
    """The drift job's record (monitoring/drift.py sends it as an Application Insights trace): drifted versions.
    isfuzzy with an empty table of the same column: before the first drift record there is no `table`, and a rule
    whose query fails for a week is disabled by Azure (microsoft/AzureMonitorCommunity#175)."""
    return (f"union isfuzzy=true ({table}), (datatable(Message:string)[])\n"
            "| extend entry = parse_json(Message)\n"
            "| where tostring(entry.log_type) == 'drift' and tostring(entry.status) == 'drift'\n"
            "| summarize drifted_versions = dcount(tostring(entry.model_version))")


def alert_quality(table: str = "AppTraces") -> str:
    """The quality job's record (monitoring/quality_delta.py): model names whose quality says retrain. The same fuzzy
    union as alert_drift: AppTraces may not exist before the first record, and a failing rule is disabled."""
    return (f"union isfuzzy=true ({table}), (datatable(Message:string)[])\n"
            "| extend entry = parse_json(Message)\n"
            "| where tostring(entry.log_type) == 'quality' and tobool(entry.retrain)\n"
            "| summarize retraining_models = dcount(tostring(entry.model_name))")
