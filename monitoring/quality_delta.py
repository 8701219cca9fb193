"""`mlops-quality`: the quality loop on Databricks, the stack's scheduled quality job (infra/databricks.py).

Each run, as the jobs' service principal:
  1. reads the request log's window from Log Analytics (as the drift job does, with the same service credential);
  2. appends its predictions to the inference table, a Delta table the stack declares (monitoring/delta_table.py), the
     rows whose (request_id, record) it lacks (an anti-join, the batch job's statement): a re-run, or a window that
     overlaps the last, adds nothing;
  3. with a labels table (quality.labelsTable), merges the latest label known per ids into the target column of the
     predictions it applies to (scored before the outcome was first known, within quality.labelHorizonDays when set):
     a label that arrives late is joined then, one that arrives twice changes nothing, a correction (a later known_at)
     replaces it (monitoring/inference.py labels_by_held_ids and applies, the local loop's own join);
  4. scores the table's recent windows as `make quality` does (monitoring/quality.py) and judges the rule;
  5. sends a `log_type: quality` record to Application Insights (the quality alert reads it);
  6. when the rule says retrain and the stack has a training job (--training-job-id), starts it (Jobs API run-now:
     CAN_MANAGE_RUN on that job, nothing more). The new version then goes through the gate, staging and approval:
     nothing here promotes. Prod has no training job: the alert and the failed run (exit 3) tell people.
Lakehouse Monitoring (the stack's QualityMonitor on the same table) computes its own profile and drift tables from it.

Exit codes: 0 the rule holds (or no labels to judge), 3 retrain, 2 bad input.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from monitoring import delta_store, delta_table, drift, drift_sources, inference, quality
from monitoring import granularity as granularity_durations
from training import contract as contracts
from training.contract import Contract

EXIT_OK, EXIT_BAD_INPUT, EXIT_RETRAIN = 0, 2, 3
MAX_NOTES, MAX_REASONS, MAX_REASON_CHARS = 5, 20, 500  # the record stays well under App Insights' 32 KiB message
APPEND_ROWS = 200_000  # predictions appended at a time
CATCH_UP_HOURS = 8 * 24.0  # the most of the log a run reads back after missed runs: a week and a day's margin


def table_rows(rows: Iterable[dict], columns: list[delta_table.Column]) -> pd.DataFrame:
    """monitoring/inference.py's rows as the Delta table's: its names (`#hmac` -> `_hmac`), its columns only (a
    column the log has and the table does not, a personal one the stack drops, is not written), ids as text."""
    frame = pd.DataFrame(list(rows))
    out = pd.DataFrame({c.name: frame[c.logged_as] if c.logged_as in frame.columns else None for c in columns},
                       index=frame.index)
    for c in columns:
        if c.type == "STRING":
            out[c.name] = [None if _missing(v) else _text(v) for v in out[c.name]]
        elif c.type == "DOUBLE":
            out[c.name] = pd.to_numeric(out[c.name], errors="coerce").astype("float64")
        elif c.type == "BIGINT":
            out[c.name] = out[c.name].astype("int64")
        elif c.type == "TIMESTAMP":
            out[c.name] = pd.to_datetime(out[c.name], utc=True, format="ISO8601")
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text(value: Any) -> str:
    """An id or a class as the table holds it: 123, 123.0 and "123" are one."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def label_rows(labels: pd.DataFrame, contract: Contract, personal: str, as_of: pd.Timestamp,
               key: bytes | None) -> pd.DataFrame:
    """One row per held ids and form: the table's id columns, the target (as the table types it), known_at and
    first_known_at (the MERGE's bound on the predictions a label applies to)."""
    held = delta_table.id_columns(contract, personal)
    if not held:
        raise inference.InferenceError("the inference table holds none of the contract's ids (requestLogPersonal "
                                       "drop): no label can be joined; pseudonymise or keep them")
    ids = [i for i in contract.ids if any(c.logged_as in (i, i + inference.PSEUDONYM_SUFFIX) for c in held)]
    latest = inference.labels_by_held_ids(labels, ids, [c.logged_as for c in held], contract.target.name, as_of, key)
    target = contract.target.name
    out = pd.DataFrame({c.name: [None if _missing(v) else _text(v) for v in latest[c.logged_as]] for c in held})
    out[target] = (pd.to_numeric(latest[target]).astype("float64").to_numpy() if contract.task == "regression"
                   else [None if _missing(v) else _text(v) for v in latest[target]])
    for name in (inference.KNOWN_AT, inference.FIRST_KNOWN_AT):
        out[name] = list(pd.to_datetime(latest[name], utc=True))
    return out.drop_duplicates([c.name for c in held], keep="last").reset_index(drop=True)


def as_logged(table: pd.DataFrame, contract: Contract, personal: str) -> pd.DataFrame:
    """The Delta table's rows with monitoring/inference.py's names and values, for monitoring/quality.py."""
    columns = delta_table.columns(contract, personal)
    frame = table.rename(columns={c.name: c.logged_as for c in columns})
    if contract.task != "regression" and contract.target.classes:
        classes = {_text(c): c for c in contract.target.classes}
        for name in {contract.target.name, "label"} & set(frame.columns):
            frame[name] = [None if _missing(v) else classes.get(str(v), v) for v in frame[name]]
    return frame


def run(args: argparse.Namespace, store: Any, lines: Iterable[Any], labels: pd.DataFrame | None,
        send: Callable[[list[dict]], None], start: Callable[[int, pd.Timestamp, str], Any],
        notes: Iterable[str] = ()) -> tuple[int, dict]:
    model = contracts.load(args.model_module)
    contract, gate = model.contract, model.gate
    columns = delta_table.columns(contract, args.personal)
    counts: Counter = Counter()
    added = 0
    rows = inference.rows_from_log(lines, contract.task, counts)
    # In parts: the driver holds one part at a time, and a run that fails later has kept what it appended (the
    # append is exactly once, so the next run adds only the rest).
    while part := list(itertools.islice(rows, APPEND_ROWS)):
        added += store.append(table_rows(part, columns))
    as_of = inference.as_of_time(args.as_of)
    removed = store.forget(as_of - pd.Timedelta(days=args.retention_days))
    window = pd.Timedelta(quality_job_window(args.window))
    notes = list(notes)  # first in the record, capped apart: the rule's own reasons always fit
    if labels is None:  # none named (else the labels table could not be read: its note says so)
        if not args.labels_table:
            notes.append("no labels table (quality.labelsTable): predictions are recorded, no quality is judged")
    else:
        held = [c.name for c in delta_table.id_columns(contract, args.personal)]
        store.label(label_rows(labels, contract, args.personal, as_of, _pseudonym_key()), held,
                    contract.target.name, inference.horizon(args.label_horizon))
    since = as_of - window * args.lookback_windows
    joined = as_logged(store.read(since, args.max_rows), contract, args.personal)
    target = contract.target.name
    labelled = int(joined[target].notna().sum()) if target in joined.columns and len(joined) else 0
    rule = quality.QualityRule(gate.floor, gate.measure.greater_is_better, args.margin, args.windows,
                               args.min_labelled, args.drift_windows)
    model_name = str(joined["model_name"].iloc[0]) if len(joined) else ""
    drifted = drift_by_version(args, joined, contract, model_name, window, notes)
    retrain, reasons = False, capped(notes, MAX_NOTES)
    if labelled or drifted:
        scored = quality.quality_table(joined, contract, gate.measure, window, args.min_labelled, args.resamples)
        versions = sorted(joined["model_version"].astype(str).unique())
        refs = quality.references(args.tracking_uri, args.model_name or model_name, versions, gate.name,
                                  os.environ.get("MLFLOW_REGISTRY_URI"), logged_name=model_name)
        decision = quality.decide(scored, gate.name, rule, refs, drifted)
        retrain, reasons = decision.retrain, [*reasons, *decision.reasons]
    started = None
    if retrain and args.training_job_id:
        job_id = int(args.training_job_id)
        started = start(job_id, as_of - window * args.windows, f"mlops-quality-{job_id}-{as_of.floor(window):%Y%m%dT%H%M}")
        reasons.append(f"the training job {args.training_job_id}: run {started}")
    elif retrain:
        reasons.append("no training job in this stack: retrain where the model is trained (it never promotes itself)")
    reasons = capped(reasons, MAX_REASONS)
    record = {"log_type": "quality", "model_name": model_name, "retrain": retrain, "reasons": reasons,
              "added": added, "removed": removed, "predictions": len(joined), "labelled": labelled, "window": args.window,
              "labels": labels is not None, "training_run": started, "lines": dict(counts),
              "ts": datetime.now(UTC).isoformat()}
    print(json.dumps(record, default=str), flush=True)
    send([record])
    return (EXIT_RETRAIN if retrain else EXIT_OK), record


def capped(reasons: list[str], most: int) -> list[str]:
    """At most `most` reasons of at most MAX_REASON_CHARS characters: App Insights cuts a message at 32 KiB, and a cut
    record is no JSON for the alert."""
    kept = [*reasons[:most], f"... and {len(reasons) - most} more"] if len(reasons) > most else reasons
    return [r if len(r) <= MAX_REASON_CHARS else r[:MAX_REASON_CHARS - 3] + "..." for r in kept]


def hours_to_read(newest: pd.Timestamp | None, now: pd.Timestamp, window_hours: float, most_hours: float) -> float:
    """The request log's hours the run reads: its --window-hours, or back to the newest prediction the table holds
    from the log when that is older (missed runs: a paused job, a failing cluster), at most `most_hours`
    (CATCH_UP_HOURS: the queries and the run's time stay bounded); all of those when it holds none from then (the
    first run, an idle service, or more missed runs than that: docs/model-quality.md)."""
    if newest is None:
        return most_hours
    behind = (now - newest) / pd.Timedelta(hours=1) + 1  # an hour's margin: lines reach Log Analytics minutes late
    return min(max(window_hours, behind), most_hours)


def gap_note(newest: pd.Timestamp | None, now: pd.Timestamp, most_hours: float) -> str | None:
    """What the record says when the table's newest prediction from the log is older than the catch-up reads."""
    if newest is None or (now - newest) <= pd.Timedelta(hours=most_hours):
        return None
    return (f"the newest prediction held from the request log is {(now - newest) / pd.Timedelta(hours=1):.0f} h old: "
            f"this run reads the log's last {most_hours:g} h; if the service answered before that (missed runs, not an "
            "idle service), those predictions are not in the inference table")


def start_training(jobs: Any, job_id: int, since: pd.Timestamp, token: str) -> str:
    """Start the stack's training job (Jobs API run-now, as the jobs' principal: CAN_MANAGE_RUN), once per fall: not
    while a run of it is active, nor when one started within the windows the rule judged (its version is on its way
    through the gate, staging and approval, or failed the gate; a fall that persists starts one run per `windows`
    windows at most). The idempotency token (one per window) makes a retried task start one run at most. Listing
    runs takes CAN_VIEW. `jobs` is databricks-sdk's JobsAPI."""
    active = next(iter(jobs.list_runs(job_id=job_id, active_only=True, limit=1)), None)
    if active is not None:
        return f"{active.run_id} (running: none started)"
    recent = next(iter(jobs.list_runs(job_id=job_id, start_time_from=int(since.timestamp() * 1000), limit=1)), None)
    if recent is not None:
        return f"{recent.run_id} (started within the windows judged: none started)"
    return f"{jobs.run_now(job_id, idempotency_token=token).run_id} (started)"


def drift_by_version(args: argparse.Namespace, joined: pd.DataFrame, contract: Contract, model_name: str,
                     window: pd.Timedelta, notes: list[str]) -> dict[str, list[str]]:
    """Each version's drift status per window, by the drift job's own test against the version's training baseline
    (read from the registry as the drift job reads it); a version without one is noted, and judged on quality only."""
    if not args.tracking_uri or joined.empty:
        return {}
    source = argparse.Namespace(baseline=None, context=None, tracking_uri=args.tracking_uri,
                                registry_uri=os.environ.get("MLFLOW_REGISTRY_URI"), model_name=args.model_name)
    found: dict[str, list[str]] = {}
    for version, group in joined.groupby(joined["model_version"].astype(str), sort=True):
        try:
            baseline = drift_sources.load_baseline(source, model_name, str(version))
        except drift_sources.DriftInputError as error:
            notes.append(f"version {version}: no drift baseline, judged on quality only ({error})")
            continue
        found.update(quality.drift_by_window(group, contract, baseline, window, args.min_records, args.psi_threshold,
                                             args.p_value))
    return found


def _pseudonym_key() -> bytes | None:
    """The request log's pseudonym key: the stack's secret, which the job's cluster sets from its secret scope."""
    return os.environ.get("REQUEST_LOG_PSEUDONYM_KEY", "").encode() or None


def quality_job_window(granularity: str) -> str:
    """Lakehouse Monitoring's granularity as a pandas duration."""
    return granularity_durations.GRANULARITIES[granularity]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace-id", required=True, help="Log Analytics workspace (customer) id")
    p.add_argument("--target", choices=("containerapps", "aks"), default="containerapps")
    p.add_argument("--app-name", required=True)
    p.add_argument("--namespace", default="scoring")
    p.add_argument("--service-credential", help="the Unity Catalog service credential that reads Log Analytics")
    p.add_argument("--window-hours", type=float, default=24, help="the request log's last N hours to append")
    p.add_argument("--model-module", required=True, help="the model's module: its contract and gate")
    p.add_argument("--model-name", default="", help="the registered model whose versions' approval scores are the "
                                                    "reference (default: the name the log holds)")
    p.add_argument("--inference-table", required=True, help="catalog.schema.table (the stack declares it)")
    p.add_argument("--labels-table", help="catalog.schema.table of labels (omit: no labels)")
    p.add_argument("--personal", choices=delta_table.PERSONAL_MODES, default="drop",
                   help="observability.requestLogPersonal: which columns the table holds")
    p.add_argument("--window", default="1 day", help="a Lakehouse Monitoring granularity (infra/settings.py)")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--margin", type=float, default=None)
    p.add_argument("--min-labelled", type=int, default=50)
    p.add_argument("--drift-windows", type=int, default=3)
    p.add_argument("--min-records", type=int, default=200, help="records a window needs for the drift test")
    p.add_argument("--psi-threshold", type=float, default=0.2, help="drift.psiThreshold: the drift job's PSI bound")
    p.add_argument("--p-value", type=float, default=0.01, help="drift.pValue: the drift job's chi-square bound")
    p.add_argument("--max-rows", type=int, default=500_000, help="predictions judged at most (a uniform sample of the "
                                                                 "windows read beyond it: the driver's memory)")
    p.add_argument("--retention-days", type=int, default=730, help="quality.retentionDays: older predictions are "
                                                                   "deleted from the inference table")
    p.add_argument("--label-horizon", help="quality.labelHorizonDays as a duration (90D): a label applies to the "
                                           "predictions scored within it before the outcome was known (omit: all)")
    p.add_argument("--lookback-windows", type=int, default=30, help="windows of the table read to judge the rule")
    p.add_argument("--resamples", type=int, default=quality.BOOTSTRAP)
    p.add_argument("--as-of", help="labels known at this time (default: now)")
    p.add_argument("--training-job-id", help="the stack's training job, started when the rule says retrain")
    return p


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - the cluster's Spark, Azure and the Jobs API
    args = parser().parse_args(argv)
    args.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    from pyspark.sql import SparkSession

    from infra import kql

    spark = SparkSession.builder.getOrCreate()
    model = contracts.load(args.model_module)
    store = delta_store.Store(spark, args.inference_table, delta_table.columns(model.contract, args.personal))
    source = kql.container_apps(args.app_name) if args.target == "containerapps" else kql.aks(args.app_name, args.namespace)
    local = os.environ.get(drift.LOCAL_LOG_ANALYTICS)
    now = pd.Timestamp.now(tz=UTC)
    most = max(args.window_hours, CATCH_UP_HOURS)
    newest = store.newest_online(now - pd.Timedelta(hours=most))
    hours = hours_to_read(newest, now, args.window_hours, most)
    # None: the first run, an idle service, or more missed runs than the catch-up reads (then said in the record)
    read_note = gap_note(store.newest_online(None), now, most) if newest is None else None
    lines = (drift_sources.file_lines(__import__("pathlib").Path(local)) if local
             else drift_sources.log_analytics_lines(args.workspace_id, source, hours, args.service_credential))
    labels, labels_problem = None, None
    if args.labels_table:
        from pyspark.errors import AnalysisException

        as_of = inference.as_of_time(args.as_of)
        lookback = pd.Timedelta(quality_job_window(args.window)) * args.lookback_windows
        try:
            labels = delta_store.read_labels(spark, args.labels_table, model.contract, as_of - lookback, as_of)
        except AnalysisException as error:  # no table, no SELECT on it, a column missing: the predictions go in still
            labels_problem = f"the labels table {args.labels_table} cannot be read: {str(error)[:MAX_REASON_CHARS - 80]}"
    connection = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")

    def send(records: list[dict]) -> None:
        if connection:
            drift.send_to_app_insights(connection, records, drift_sources.job_credential(args.service_credential))

    def start(job_id: int, since: pd.Timestamp, token: str) -> str:
        from databricks.sdk import WorkspaceClient

        return start_training(WorkspaceClient().jobs, job_id, since, token)

    notes = [note for note in (labels_problem, read_note) if note]
    try:
        code, _ = run(args, store, lines, labels, send, start, notes)
    except (inference.InferenceError, contracts.ContractError, drift_sources.DriftInputError) as error:
        print(f"quality: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if labels_problem:  # the run appended and judged what it could; the failed task says the labels need a look
        print(f"quality: {labels_problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code


def cli() -> None:
    """The `mlops-quality` entry point (python_wheel_task): exit 3 (retrain) or 2 fails the task, and so the run."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
