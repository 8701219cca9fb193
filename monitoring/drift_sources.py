"""What the drift job reads: the request log, from a JSON-lines file or from Log Analytics (with the job's service
credential on Databricks), made into a window of records per model version (a request logged in parts is
reassembled; what is not a prediction line is counted and skipped); and each version's training baseline, from a
build context (--context), a file (--baseline) or the registered version (--tracking-uri).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitoring import lineage, logformat
from training.baseline import BASELINE_FILE
from training.contract import CONTRACT_FILE


class DriftInputError(Exception):
    """No baseline, or a log source that cannot be read: exit code 2."""


@dataclass
class Window:
    """Records per model version read from one window of the request log, and what was skipped."""
    records: dict[tuple[str, str], list[dict]] = field(default_factory=dict)      # (name, version) -> inputs
    outputs: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (name, version) -> outputs
    counts: Counter = field(default_factory=Counter)
    start: datetime | None = None
    end: datetime | None = None


def read_window(lines, start: datetime | None = None, end: datetime | None = None) -> Window:
    """Parse request-log lines; never raises on a bad line (it is counted under counts["malformed"]).
    A request logged in parts (requestlog.py: "part" i of "parts" n, same request_id) counts once, when
    all its parts arrived; one whose parts never all arrived is counted as "incomplete" and not used."""
    window = Window(start=start, end=end)
    pending: dict[tuple, dict[int, dict]] = {}
    for raw in lines:
        entry = logformat.prediction_entry(raw, window.counts)
        if entry is None:
            continue
        parts = entry.get("parts", 1)
        if parts == 1:
            _add(window, entry)
            continue
        window.counts["part_lines"] += 1
        key = (entry.get("request_id"), entry.get("model_name"), str(entry["model_version"]), entry["ts"], parts)
        received = pending.setdefault(key, {})
        received[entry["part"]] = entry
        if len(received) == parts:
            del pending[key]
            _add(window, _reassemble(received))
    if pending:  # requests whose other parts never arrived (lost, or outside the query's time range)
        window.counts["incomplete"] = len(pending)
    return window


def _reassemble(received: dict[int, dict]) -> dict:
    ordered = [received[number] for number in sorted(received)]
    return {**ordered[0], "inputs": [r for p in ordered for r in p["inputs"]],
            "outputs": [o for p in ordered for o in p["outputs"]], "part": 1, "parts": 1}


def _add(window: Window, entry: dict) -> None:
    ts, counts = logformat.parse_ts(entry["ts"]), window.counts
    assert ts is not None, "prediction_entry admits only entries whose ts parses"
    if (window.start and ts < window.start) or (window.end and ts > window.end):
        counts["outside_window"] += 1
        return
    inputs, outputs = entry["inputs"], entry["outputs"]
    key = (str(entry.get("model_name") or ""), str(entry["model_version"]))
    window.records.setdefault(key, []).extend(inputs)
    window.outputs.setdefault(key, []).extend(outputs)
    counts["predictions"] += 1
    counts["records"] += len(inputs)


def file_lines(path: Path):
    if not path.exists():
        raise DriftInputError(f"request log {path} does not exist (run `make local` and `make traffic` first)")
    with path.open("rb") as handle:
        yield from handle


SLICE = timedelta(hours=1)  # one Log Analytics query per hour of log: each answer stays within the query limits


def time_slices(hours: float, now: datetime, length: timedelta = SLICE) -> list[tuple[datetime, datetime]]:
    """The last `hours` before `now` as consecutive (start, end) spans of `length` at most, oldest first."""
    start, spans = now - timedelta(hours=hours), []
    while start < now:
        end = min(start + length, now)
        spans.append((start, end))
        start = end
    return spans


def log_analytics_lines(workspace_id: str, source, hours: float,
                        service_credential: str | None = None):  # pragma: no cover - needs Azure
    """The raw request-log lines of the last `hours` from Log Analytics (the only cloud call), an hour a query, a
    query whose answer comes back partial asked again in halves (sliced): one query over days of a busy service would
    pass the service's limits on a query's answer (rows and bytes). On Databricks the identity is a Unity Catalog
    service credential (a managed identity: no client secret); elsewhere whatever DefaultAzureCredential finds
    (`az login`, a workload identity)."""
    from azure.core.exceptions import AzureError
    from azure.monitor.query import LogsQueryClient, LogsQueryStatus

    from infra import kql

    client = LogsQueryClient(job_credential(service_credential))

    def query(span: tuple[datetime, datetime]) -> list | None:
        try:  # a failed query raises (azure-monitor-query); one past the limits answers PARTIAL: asked again in halves
            response = client.query_workspace(workspace_id, kql.prediction_lines(source), timespan=span)
        except AzureError as error:  # refused, or no answer (a connection, a timeout): exit 2, naming the hour
            raise DriftInputError(f"Log Analytics query of {span[0]:%Y-%m-%d %H:%M}..{span[1]:%H:%M} UTC failed: "
                                  f"{error}") from error
        if response.status != LogsQueryStatus.SUCCESS:
            return None
        return [row[list(table.columns).index("line")] for table in response.tables for row in table.rows]

    yield from sliced(query, time_slices(hours, datetime.now(UTC)))


SMALLEST_SLICE = timedelta(minutes=1)


def sliced(query, spans: list[tuple[datetime, datetime]]):
    """The lines `query` answers for each span, oldest first; a span it answers only in part (None) is asked again as
    two halves, down to SMALLEST_SLICE, below which the run stops with an error that says so."""
    pending = list(reversed(spans))
    while pending:
        start, end = pending.pop()
        lines = query((start, end))
        if lines is None:
            if end - start <= SMALLEST_SLICE:
                raise DriftInputError(f"Log Analytics answers {start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC only in part, "
                                      "even a minute at a time: more request-log lines than one query may return")
            middle = start + (end - start) / 2
            pending += [(middle, end), (start, middle)]
            continue
        yield from lines


def load_baseline(args: argparse.Namespace, model_name: str, version: str) -> dict:
    """The version's drift baseline, with its contract under "contract" where the version carries one (a version
    trained by this project does: extra_files/contract.json beside the baseline)."""
    files = model_files(args, model_name, version)
    baseline = json.loads(files(BASELINE_FILE).read_text())
    try:
        baseline["contract"] = json.loads(files(CONTRACT_FILE).read_text())
    except DriftInputError:
        baseline["contract"] = None
    return baseline


def model_files(args: argparse.Namespace, model_name: str, version: str):
    """A function from a file name in the version's extra_files/ to its local path, from wherever --baseline,
    --context or --tracking-uri says the version lives."""
    if args.baseline:
        folder = Path(args.baseline).parent
        return lambda name: _existing(Path(args.baseline) if name == BASELINE_FILE else folder / name)
    if args.context:
        context = Path(args.context)
        manifest_path = context / "model" / "manifest.json"
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            served = str(manifest.get("model", {}).get("version", manifest.get("model_version", version)))
            if served != version:
                raise DriftInputError(f"{context} holds model version {served}, not {version}")
        return lambda name: _existing(context / "model" / "mlflow" / "extra_files" / name)
    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
        if args.registry_uri:
            mlflow.set_registry_uri(args.registry_uri)
        uri = "models:/{}/{}".format(*registered_version(args, model_name, version))

        def download(name: str) -> Path:
            try:
                return Path(mlflow.artifacts.download_artifacts(f"{uri}/extra_files/{name}"))
            except Exception as error:
                raise DriftInputError(f"no {name} for {uri}: {error}") from error
        return download
    raise DriftInputError("no baseline source: give --baseline, --context or --tracking-uri")


def registered_version(args: argparse.Namespace, logged_name: str, logged_version: str) -> tuple[str, str]:
    """The registered model and version that hold the baseline of a version the log names: that version itself, or,
    where --model-name names another model, that model's copy of it. A promotion target (prod) serves the source
    stack's image, so its log names staging's model, which prod's jobs may not read; prod's copy of it is the version
    whose source_model and source_version tags (infra/promote.py's lineage) name the logged one."""
    if not args.model_name or args.model_name == logged_name:
        return logged_name or args.model_name, logged_version
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri, registry_uri=args.registry_uri or args.tracking_uri)
    copy = lineage.copies_of(client, args.model_name, logged_name, wanted=str(logged_version)).get(str(logged_version))
    if copy is not None:
        return args.model_name, copy
    raise DriftInputError(f"{args.model_name} holds no copy of {logged_name} v{logged_version} (no version tagged "
                          "source_model and source_version with it): was it promoted to this stack?")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DriftInputError(f"no {path.name} at {path}")
    return path


def job_credential(service_credential: str | None):
    """The identity the job reads Log Analytics and writes Application Insights with: the Unity Catalog service
    credential on Databricks (a managed identity, no client secret), DefaultAzureCredential elsewhere."""
    if service_credential:
        return service_credentials_provider(service_credential)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def service_credentials_provider(name: str):
    """A Unity Catalog service credential's Azure TokenCredential, by the API that works where the code runs: on the
    driver (the drift job calls from there) dbutils.credentials.getServiceCredentialsProvider, which a wheel task
    reaches through pyspark.dbutils.DBUtils (it has no `dbutils` global); inside a Spark task (a UDF), where dbutils
    is not available, the module databricks.service_credentials. The module is the UDF-only API, not the driver's:
    learn.microsoft.com/azure/databricks/connect/unity-catalog/cloud-services/use-service-credentials (Databricks
    Runtime 15.4+)."""
    from pyspark import TaskContext

    if TaskContext.get() is not None:
        from databricks.service_credentials import getServiceCredentialsProvider

        return getServiceCredentialsProvider(name)
    from pyspark.dbutils import DBUtils  # the Databricks Runtime's pyspark; open-source pyspark has no dbutils
    from pyspark.sql import SparkSession

    return DBUtils(SparkSession.builder.getOrCreate()).credentials.getServiceCredentialsProvider(name)
