"""The drift job: compare a window of scored requests with the model version's training baseline.

    python -m monitoring.drift                                  # .local/logs/requests.jsonl vs .local/context
    python -m monitoring.drift --log FILE --baseline drift_baseline.json --out report/
    python -m monitoring.drift --workspace-id <LA workspace GUID> --target containerapps --app-name <container app> \\
        --window-hours 24 --tracking-uri databricks --registry-uri databricks-uc --model-name <catalog.schema.model>

Input: the request log (serving/scoring/requestlog.py; either version, monitoring/logformat.py), from a JSON-lines
file or from Log Analytics (azure-monitor-query, DefaultAzureCredential; the KQL is infra/kql.py's
`prediction_lines`). Lines
that are not JSON, lack fields, or are not `log_type: "prediction"` are counted and skipped. A request
logged in several parts (lines over 16 KiB are split by the service, see serving/scoring/requestlog.py)
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

Here: the job (its arguments, the run, the exit codes) and where its results go (the report files, MLflow,
Application Insights). What it reads: monitoring/drift_sources.py; the statistics and the report:
monitoring/drift_stats.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitoring.drift_sources import DriftInputError, file_lines, job_credential, load_baseline, log_analytics_lines, read_window
from monitoring.drift_stats import PREDICTION, compare, drift_record, render_html

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 2, 3
# A JSON-lines file that stands in for the stack's Log Analytics where there is none (the local run of the
# declared Databricks job, tests/databricks): the job's parameters stay exactly as declared.
LOCAL_LOG_ANALYTICS = "DRIFT_LOCAL_LOG_ANALYTICS"


class DriftDeliveryError(DriftInputError):
    """The drift record did not reach Application Insights (the run fails: exit 2, and the failure e-mail)."""


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
