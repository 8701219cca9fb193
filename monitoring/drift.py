"""The drift job: compare a window of scored requests with the model version's training baseline.

    python -m monitoring.drift                                  # .local/logs/requests.jsonl vs .local/context
    python -m monitoring.drift --log FILE --baseline drift_baseline.json --out report/
    python -m monitoring.drift --workspace-id <LA workspace GUID> --target containerapps --app-name <container app> \\
        --window-hours 24 --tracking-uri databricks --registry-uri databricks-uc --model-name <catalog.schema.model>

Input: the request log (serving/scoring/requestlog.py; either version, monitoring/logformat.py), from a JSON-lines
file or from Log Analytics (azure-monitor-query, DefaultAzureCredential; the KQL is infra/kql.py's
`prediction_lines`). Lines
that are not JSON, lack fields, or are not `log_type: "prediction"` are counted and skipped. A request
logged in several parts (lines over 4 KiB, PIPE_BUF, are split by the service, see serving/scoring/requestlog.py)
is reassembled from its parts; if some part never arrived, the request is counted as "incomplete".

Per model version in the window, per feature of its contract and for its prediction (the output the baseline
profiled: a binary model's probability, a multiclass model's label, a regressor's value):
  PSI = sum((window - baseline) * ln(window / baseline)) over buckets; numeric buckets are the
  baseline's quantile bins plus a "missing" bucket, categorical buckets are the baseline's
  categories plus "unseen" and "missing". Empty buckets count as EPSILON.
  Test: chi-square goodness of fit of the window's bucket counts against the baseline's bucket
  shares (buckets expected to hold fewer than 5 records are pooled). KS is not possible: the
  baseline keeps bins, not the raw training values.
A column is drifted when PSI > --psi-threshold AND the chi-square p-value < --p-value (the test
keeps small windows' sampling noise from being called drift; with a few hundred records and more,
any PSI above 0.2 is also significant). Fewer than --min-records records: "not enough data". A feature the log
does not carry under its name (personal data the service drops or pseudonymises, serving/scoring/privacy.py) in at
least --min-records records is not compared: the report lists it as `not_logged`, and the rest is compared.

Outputs: drift_report.json + drift_report.html (summary table, one chart per drifted column) in
--out; one `{"log_type": "drift", ...}` JSON line per model version on stdout; with
--tracking-uri, an MLflow run per model version (experiment --experiment) with psi_<column> metrics (and
the tag `not_logged`: the columns without one);
with $APPLICATIONINSIGHTS_CONNECTION_STRING, the same drift record as an Application Insights
trace (AppTraces in the stack's Log Analytics workspace, where the stack's drift alert looks).

Exit codes: 0 no drift (or not enough data), 3 drift in at least one column, 2 bad input
(no baseline, unreadable log source, bad arguments).

Why one module: the drift job is one wheel entry point; reading the log, the statistics and the report share
its record types, and each is a section of this file.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import itertools
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from monitoring import logformat
from training.baseline import BASELINE_FILE, bin_counts
from training.contract import CONTRACT_FILE

ROOT = Path(__file__).resolve().parent.parent
EPSILON = 1e-4
EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 2, 3
PREDICTION = "prediction"
MISSING, UNSEEN = "missing", "unseen"
# A JSON-lines file that stands in for the stack's Log Analytics where there is none (the local run of the
# declared Databricks job, tests/databricks): the job's parameters stay exactly as declared.
LOCAL_LOG_ANALYTICS = "DRIFT_LOCAL_LOG_ANALYTICS"


class DriftInputError(Exception):
    """No baseline, or a log source that cannot be read: exit code 2."""


class DriftDeliveryError(DriftInputError):
    """The drift record did not reach Application Insights (the run fails: exit 2, and the failure e-mail)."""


# ---------------------------------------------------------------- reading the request log

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


def log_analytics_lines(workspace_id: str, source, hours: float,
                        service_credential: str | None = None):  # pragma: no cover - needs Azure
    """The raw request-log lines of the last `hours` from Log Analytics (the only cloud call). On Databricks the
    identity is a Unity Catalog service credential (a managed identity: no client secret); elsewhere whatever
    DefaultAzureCredential finds (`az login`, a workload identity)."""
    from azure.monitor.query import LogsQueryClient, LogsQueryStatus

    from infra import kql

    client = LogsQueryClient(job_credential(service_credential))
    response = client.query_workspace(workspace_id, kql.prediction_lines(source), timespan=timedelta(hours=hours))
    if response.status != LogsQueryStatus.SUCCESS:
        raise DriftInputError(f"Log Analytics query failed or was partial: {getattr(response, 'partial_error', response)}")
    for table in response.tables:
        column = list(table.columns).index("line")
        for row in table.rows:
            yield row[column]


# ---------------------------------------------------------------- baselines

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
    numbers = sorted((int(found.version) for found in client.search_model_versions(f"name='{args.model_name}'")),
                     reverse=True)
    for number in numbers:  # Unity Catalog's search results carry no tags: each version's come from a get
        tags = client.get_model_version(args.model_name, str(number)).tags or {}
        if tags.get("source_model") == logged_name and tags.get("source_version") == str(logged_version):
            return args.model_name, str(number)
    raise DriftInputError(f"{args.model_name} holds no copy of {logged_name} v{logged_version} (no version tagged "
                          "source_model and source_version with it): was it promoted to this stack?")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DriftInputError(f"no {path.name} at {path}")
    return path


# ---------------------------------------------------------------- statistics

def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.clip(expected, EPSILON, None), np.clip(actual, EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def chi_square(expected: np.ndarray, counts: np.ndarray) -> float:
    """p-value of the window's counts against the baseline's shares; cells expected < 5 are pooled."""
    n = counts.sum()
    shares = np.clip(expected, EPSILON, None)
    exp_counts = shares / shares.sum() * n
    small = exp_counts < 5
    if small.any():
        exp_counts = np.append(exp_counts[~small], exp_counts[small].sum())
        counts = np.append(counts[~small], counts[small].sum())
    if len(counts) < 2:
        return 1.0
    return float(stats.chisquare(counts, exp_counts).pvalue)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 10_000 else f"{value:.0f}"


def numeric_buckets(profile: dict, values: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    edges = np.asarray(profile["edges"], dtype=float)
    present_share = 1 - profile["missing_fraction"]
    expected = np.append(np.asarray(profile["fractions"], dtype=float) * present_share, profile["missing_fraction"])
    floats = np.array([_to_float(v) for v in values], dtype=float)
    present = floats[~np.isnan(floats)]
    counts = bin_counts(present, edges).astype(float)  # the very bins the baseline was built with
    counts = np.append(counts, float(np.isnan(floats).sum()))
    labels = ([f"< {_fmt(edges[0])}"] if len(edges) else ["all"])
    labels += [f"[{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(edges)]
    labels += ([f">= {_fmt(edges[-1])}"] if len(edges) else []) + [MISSING]
    return labels, expected, counts


def categorical_buckets(profile: dict, values: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    categories = list(profile["frequencies"])
    present_share = 1 - profile["missing_fraction"]
    expected = np.array([profile["frequencies"][c] * present_share for c in categories] + [0.0, profile["missing_fraction"]])
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 2)
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            counts[-1] += 1
        else:
            counts[index.get(str(value), len(categories))] += 1
    return [*categories, UNSEEN, MISSING], expected, counts


def _to_float(value: Any) -> float:
    """A JSON value as a number; NaN for anything else."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def compare_column(name: str, profile: dict, values: list, psi_threshold: float, alpha: float) -> dict:
    kind = profile.get("type", "numeric")
    labels, expected, counts = (categorical_buckets if kind == "categorical" else numeric_buckets)(profile, values)
    n = counts.sum()
    actual = counts / max(n, 1)
    value, p_value = psi(expected, actual), chi_square(expected, counts)
    return {
        "type": kind, "psi": round(value, 6), "p_value": p_value, "test": "chi-square",
        "drifted": bool(value > psi_threshold and p_value < alpha),
        "missing_fraction_baseline": round(float(profile["missing_fraction"]), 6),
        "missing_fraction_window": round(float(counts[-1] / max(n, 1)), 6),
        "buckets": [{"label": label, "baseline": round(float(e), 6), "window": round(float(a), 6), "count": int(c)}
                    for label, e, a, c in zip(labels, expected, actual, counts, strict=True)],
    }


def prediction_output(baseline: dict) -> str:
    """The request log's output field the baseline's prediction profile describes (format 1 baselines made before
    any model but a binary one: the probability)."""
    return str(baseline["prediction"].get("output", "probability"))


def compared_columns(baseline: dict) -> list[str]:
    """The features to compare: the contract's, in its order, where the version carries one; else the baseline's."""
    contract = baseline.get("contract")
    if contract:
        return [f["name"] for f in contract["features"] if f["name"] in baseline["features"]]
    return list(baseline["features"])


def compare(baseline: dict, records: list[dict], outputs: list[dict], *, psi_threshold: float, alpha: float,
            min_records: int) -> dict:
    """One model version's result: status, drifted columns and per-column statistics."""
    result: dict[str, Any] = {"records": len(records), "features": {}, "drifted": [], "drifted_features": []}
    if len(records) < min_records:
        return {**result, "status": "not enough data"}
    result["not_logged"] = []
    for column in compared_columns(baseline):
        values = [r[column] for r in records if column in r]  # null is a missing value; an absent key, not logged
        if len(values) < min_records:  # personal data the service drops or pseudonymises (scoring/privacy.py)
            result["not_logged"].append(column)
            continue
        result["features"][column] = compare_column(column, baseline["features"][column], values, psi_threshold, alpha)
    output = prediction_output(baseline)
    result["prediction_output"] = output
    result["features"][PREDICTION] = compare_column(PREDICTION, baseline["prediction"], [o.get(output) for o in outputs],
                                                    psi_threshold, alpha)
    result["drifted"] = [c for c, stat in result["features"].items() if stat["drifted"]]
    result["drifted_features"] = [c for c in result["drifted"] if c != PREDICTION]
    result["max_psi"] = max(stat["psi"] for stat in result["features"].values())
    result["status"] = "drift" if result["drifted"] else "no drift"
    return result


# ---------------------------------------------------------------- reports

def chart_png(column: str, stat: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [b["label"] for b in stat["buckets"]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.65 * len(labels) + 2), 3.4), dpi=100)
    ax.bar(x - 0.2, [b["baseline"] for b in stat["buckets"]], 0.4, label="training baseline", color="#7f8c9a")
    ax.bar(x + 0.2, [b["window"] for b in stat["buckets"]], 0.4, label="this window", color="#d9534f")
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("share of records")
    ax.set_title(f"{column}: PSI {stat['psi']:.3f}, chi-square p = {stat['p_value']:.2g}", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def render_html(report: dict) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title><style>"
             "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}.drift{background:#f8d7da}.status{font-size:18px}"
             "</style></head><body><h1>Drift report</h1>"]
    window = report["window"]
    parts.append(f"<p>Window {html.escape(str(window['start']))} to {html.escape(str(window['end']))}; "
                 f"source {html.escape(report['source'])}; PSI threshold {report['thresholds']['psi']}, "
                 f"p-value {report['thresholds']['p_value']}, min records {report['thresholds']['min_records']}. "
                 f"Lines: {html.escape(json.dumps(report['lines']))}</p>")
    for version in report["versions"]:
        title = f"{version['model_name']} version {version['model_version']}"
        parts.append(f"<h2>{html.escape(title)}</h2><p class='status'>Status: <b>{html.escape(version['status'])}</b>"
                     f" ({version['records']} records)</p>")
        if version.get("target"):
            target = version["target"]
            parts.append(f"<p>A {html.escape(target['task'])} model of <code>{html.escape(target['name'])}</code>"
                         f"{': ' + html.escape(target['description']) if target.get('description') else ''}; the row "
                         f"<code>{PREDICTION}</code> compares its output <code>{html.escape(version['prediction_output'])}"
                         "</code>.</p>")
        if version.get("not_logged"):
            parts.append(f"<p>Not in the request log (personal data, dropped or pseudonymised), not compared: "
                         f"{html.escape(', '.join(version['not_logged']))}</p>")
        if not version["features"]:
            continue
        parts.append("<table><tr><th>column</th><th>type</th><th>PSI</th><th>chi-square p</th>"
                     "<th>missing (baseline)</th><th>missing (window)</th><th>drifted</th></tr>")
        for column, stat in sorted(version["features"].items(), key=lambda item: -item[1]["psi"]):
            css = " class='drift'" if stat["drifted"] else ""
            parts.append(f"<tr{css}><td>{html.escape(column)}</td><td>{stat['type']}</td><td>{stat['psi']:.4f}</td>"
                         f"<td>{stat['p_value']:.3g}</td><td>{stat['missing_fraction_baseline']:.3f}</td>"
                         f"<td>{stat['missing_fraction_window']:.3f}</td><td>{'yes' if stat['drifted'] else ''}</td></tr>")
        parts.append("</table>")
        for column in version["drifted"]:
            encoded = base64.b64encode(chart_png(column, version["features"][column])).decode()
            parts.append(f"<h3>{html.escape(column)}</h3><img alt='{html.escape(column)}' "
                         f"src='data:image/png;base64,{encoded}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def drift_record(report: dict, version: dict) -> dict:
    return {"log_type": "drift", "ts": report["generated_at"], "model_name": version["model_name"],
            "model_version": version["model_version"], "status": version["status"], "records": version["records"],
            "drifted": version["drifted"], "max_psi": version.get("max_psi"),
            "psi_threshold": report["thresholds"]["psi"]}


def log_to_mlflow(args: argparse.Namespace, report: dict, out: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    for version in report["versions"]:
        tags = {"model_name": version["model_name"], "model_version": version["model_version"],
                "drift_status": version["status"]}
        if version.get("not_logged"):  # why a psi_<column> series stops: the column is no longer in the log
            tags["not_logged"] = ", ".join(version["not_logged"])
        with mlflow.start_run(run_name=f"drift {version['model_name']} v{version['model_version']}", tags=tags):
            mlflow.log_params({"psi_threshold": args.psi_threshold, "p_value": args.p_value,
                               "min_records": args.min_records, "window_hours": args.window_hours})
            metrics = {"records": version["records"], "drifted_features": len(version["drifted_features"]),
                       "prediction_drifted": float(PREDICTION in version["drifted"])}
            metrics.update({f"psi_{column}": stat["psi"] for column, stat in version["features"].items()})
            mlflow.log_metrics(metrics)
            mlflow.log_artifacts(str(out), artifact_path="drift_report")


# Application Insights' ingestion ("track") endpoint, with an Entra ID token for this audience: the documented path
# when the resource disables local (instrumentation-key) auth (learn.microsoft.com/azure/azure-monitor/app/
# azure-ad-authentication). Sent by hand rather than through azure-monitor-opentelemetry-exporter: that beta pins
# OpenTelemetry versions the job cluster's runtime bundles at others (infra/runtime.py), and one POST of a few
# records needs none of it.
INGESTION_SCOPE = "https://monitor.azure.com//.default"
SEVERITY = {"drift": 2}  # Warning for a drifted version; Information (1) otherwise


def app_insights_envelope(instrumentation_key: str, record: dict) -> dict:
    """One trace (AppTraces.Message = the record as JSON, what infra/kql.alert_drift parses)."""
    return {"ver": 1, "name": "Microsoft.ApplicationInsights.Message", "time": record.get("ts") or _now(),
            "iKey": instrumentation_key, "tags": {"ai.cloud.role": "mlops-drift"},
            "data": {"baseType": "MessageData", "baseData": {
                "ver": 2, "message": json.dumps(record), "severityLevel": SEVERITY.get(record.get("status", ""), 1),
                "properties": {"log_type": record.get("log_type", "drift")}}}}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def send_to_app_insights(connection_string: str, records: list[dict], credential=None) -> None:
    """The drift records, one trace each, in one POST to the resource's ingestion endpoint with an Entra ID token
    (`credential`, a TokenCredential: the job's service credential on Databricks). A record the service does not
    accept fails the run: a lost record would leave the drift alert silent."""
    import requests

    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    key, endpoint = parts.get("InstrumentationKey"), parts.get("IngestionEndpoint")
    if not key or not endpoint:
        raise DriftDeliveryError("the Application Insights connection string names no InstrumentationKey or "
                                 "IngestionEndpoint")
    token = (credential or job_credential(None)).get_token(INGESTION_SCOPE).token
    body = [app_insights_envelope(key, record) for record in records]
    try:
        response = requests.post(f"{endpoint.rstrip('/')}/v2.1/track", json=body, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as error:
        raise DriftDeliveryError(f"Application Insights did not accept the drift record: {error}") from error
    try:
        accepted = response.json().get("itemsAccepted") if response.ok else None
    except ValueError:  # not the service's JSON answer (a proxy's page, say)
        accepted = None
    if accepted != len(body):
        raise DriftDeliveryError(f"Application Insights did not accept the drift record: HTTP {response.status_code}, "
                                 f"{accepted} of {len(body)} accepted: {response.text[:500]}")


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


# ---------------------------------------------------------------- the job

def run(args: argparse.Namespace, lines=None) -> tuple[int, dict]:
    now = datetime.now(UTC)
    start = now - timedelta(hours=args.window_hours) if args.window_hours else None
    if lines is None:
        if args.workspace_id:
            from infra import kql

            source = (kql.container_apps(args.app_name) if args.target == "containerapps"
                      else kql.aks(args.app_name, args.namespace))
            local = os.environ.get(LOCAL_LOG_ANALYTICS)
            lines = (file_lines(Path(local)) if local
                     else log_analytics_lines(args.workspace_id, source, args.window_hours or 24, args.service_credential))
            where = f"Log Analytics workspace {args.workspace_id} ({args.target}{', local file ' + local if local else ''})"
        else:
            lines, where = file_lines(Path(args.log)), str(args.log)
    else:
        where = "lines"
    window = read_window(lines, start=start, end=None)
    keys = sorted(window.records, key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0))
    if args.model_version:
        keys = [k for k in keys if k[1] == str(args.model_version)] or [(args.model_name or "", str(args.model_version))]
    report: dict[str, Any] = {
        "generated_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": where,
        "window": {"start": start.isoformat(timespec="seconds") if start else "start of log",
                   "end": now.isoformat(timespec="seconds"), "hours": args.window_hours},
        "thresholds": {"psi": args.psi_threshold, "p_value": args.p_value, "min_records": args.min_records},
        "lines": dict(window.counts),
        "versions": [],
    }
    for name, version in keys:
        records = window.records.get((name, version), [])
        baseline = load_baseline(args, name, version) if len(records) >= args.min_records else {"features": {}, "prediction": {}}
        result = compare(baseline, records, window.outputs.get((name, version), []), psi_threshold=args.psi_threshold,
                         alpha=args.p_value, min_records=args.min_records)
        target = (baseline.get("contract") or {}).get("target")
        # The version the log names (what was served: in prod, staging's), whichever registered model holds its baseline
        report["versions"].append({"model_name": name or args.model_name or "", "model_version": version,
                                   "target": target, **result})
    if not report["versions"]:
        report["versions"].append({"model_name": args.model_name or "", "model_version": str(args.model_version or ""),
                                   "records": 0, "features": {}, "drifted": [], "drifted_features": [],
                                   "status": "not enough data"})
    report["status"] = ("drift" if any(v["status"] == "drift" for v in report["versions"])
                        else "no drift" if any(v["status"] == "no drift" for v in report["versions"]) else "not enough data")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift_report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "drift_report.html").write_text(render_html(report))
    connection = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    records = [drift_record(report, version) for version in report["versions"]]
    for record in records:
        print(json.dumps(record), flush=True)
    if connection and records:  # one credential and one exporter for the run's records
        send_to_app_insights(connection, records, job_credential(args.service_credential))
    if args.tracking_uri:
        log_to_mlflow(args, report, out)
    return (EXIT_DRIFT if report["status"] == "drift" else EXIT_OK), report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m monitoring.drift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("request log (a file, or Log Analytics with --workspace-id)")
    src.add_argument("--log", default=str(ROOT / ".local" / "logs" / "requests.jsonl"))
    src.add_argument("--workspace-id", help="Log Analytics workspace (customer) id: read the stack's tables instead")
    src.add_argument("--target", choices=("containerapps", "aks"), default="containerapps")
    src.add_argument("--app-name", help="with --workspace-id: the Container App's name, or the container's on AKS")
    src.add_argument("--namespace", default="scoring", help="AKS namespace")
    src.add_argument("--service-credential", help="Databricks: the Unity Catalog service credential that reads Log Analytics")
    src.add_argument("--window-hours", type=float, default=None,
                     help="only requests of the last N hours (file default: the whole log; Log Analytics default: 24)")
    base = p.add_argument_group("baseline (first given wins)")
    base.add_argument("--baseline", help="a drift_baseline.json file")
    base.add_argument("--context", help="a build context (model/mlflow/extra_files/drift_baseline.json)")
    base.add_argument("--tracking-uri", help="MLflow: download models:/<name>/<version>/extra_files/drift_baseline.json, "
                                             "and log the drift metrics there (with --workspace-id: $MLFLOW_TRACKING_URI)")
    base.add_argument("--registry-uri", help="(with --workspace-id: $MLFLOW_REGISTRY_URI)")
    base.add_argument("--model-name", help="the registered model that holds the baselines (default: model_name in the "
                                           "log lines); a version the log names under another model is read from its "
                                           "copy here (the version tagged source_model/source_version with it)")
    base.add_argument("--model-version", help="only this version (default: every version in the window)")
    p.add_argument("--psi-threshold", type=float, default=0.2)
    p.add_argument("--p-value", type=float, default=0.01)
    p.add_argument("--min-records", type=int, default=200)
    p.add_argument("--experiment", default="drift-monitoring", help="MLflow experiment of the drift runs")
    p.add_argument("--out", default=str(ROOT / ".local" / "drift"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workspace_id and not args.app_name:
        print("drift: --workspace-id needs --app-name (whose request log to read)", file=sys.stderr)
        return EXIT_ERROR
    if args.workspace_id:  # the Databricks job: the cluster's environment names the workspace's MLflow
        args.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        args.registry_uri = args.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI")
    if not args.baseline and not args.context and not args.tracking_uri and not args.workspace_id:
        default_context = ROOT / ".local" / "context"
        args.context = str(default_context) if default_context.exists() else None
    try:
        code, report = run(args)
    except DriftInputError as error:
        print(f"drift: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"drift: {report['status']}; report {Path(args.out) / 'drift_report.html'}", file=sys.stderr)
    return code


def cli() -> None:
    """The `mlops-drift` entry point (python_wheel_task): exit 3 (drift) or 2 fails the task, and so the run."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
