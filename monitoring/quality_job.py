"""`make quality`: the quality loop on this machine. Appends the request log's predictions to the inference table (exactly
once), joins the labels known so far, scores each model version per window and slice, judges the rule, and writes
the report (monitoring/inference.py, quality.py, quality_report.py say what each step does).

    python -m monitoring.quality_job                       # .local's log, labels, table and build context
    python -m monitoring.quality_job --window 1h --windows 3 --margin 0.02 --min-labelled 50 --as-of 2026-12-07T12:00Z

Outputs in --out: quality_report.html (a chart per metric over time, per version), quality_report.json (the table,
the calibration, the verdict). Exit codes: 0 the rule holds (or too few labels to judge), 3 the loop would retrain
(quality below the rule, or drift that persists), 2 bad input (no log, no labels, a table or labels without the ids).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring import inference, quality, quality_report
from training import contract as contracts
from training.contract import Contract, ContractError, ModelModule

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_BAD_INPUT, EXIT_RETRAIN = 0, 2, 3
AUTO_WINDOWS = 8  # --window auto: the log's span in this many windows


class QualityInputError(ValueError):
    pass


def window_length(text: str, scored_at: pd.Series) -> pd.Timedelta:
    """--window: a duration ("1h", "1D", "30s"), or auto: the span of the predictions in AUTO_WINDOWS windows."""
    if text != "auto":
        return inference.positive_duration("--window", text, "30s, 10min, 1h or 1D, or auto")
    times = pd.to_datetime(scored_at, utc=True, format="ISO8601")
    span = (times.max() - times.min()) if len(times) else pd.Timedelta(0)
    return max(pd.Timedelta(milliseconds=1), (span / AUTO_WINDOWS).ceil("ms"))


references = quality.references  # each version's score at approval (monitoring/quality.py)


drift_by_window = quality.drift_by_window  # per version, each window's drift status


def run(args: argparse.Namespace, model: ModelModule) -> tuple[int, dict]:
    contract, gate = model.contract, model.gate
    counts: Counter = Counter()
    log = Path(args.log)
    if not log.exists():
        raise QualityInputError(f"request log {log} does not exist (run `make local` and `make traffic` first)")
    with log.open("rb") as lines:
        added = inference.LocalTable(Path(args.table)).append(inference.rows_from_log(lines, contract.task, counts))
    table = inference.LocalTable(Path(args.table)).read()
    if table.empty:
        raise QualityInputError(f"no predictions in {log} (lines: {dict(counts)})")
    as_of = inference.as_of_time(args.as_of)
    key = pseudonym_key(Path(args.pseudonym_key_file))
    joined = inference.join_labels(table, inference.read_labels(Path(args.labels)), list(contract.ids),
                                   contract.target.name, as_of, key, inference.horizon(args.label_horizon))
    window = window_length(args.window, joined["scored_at"])
    rule = quality.QualityRule(gate.floor, gate.measure.greater_is_better, args.margin, args.windows,
                               args.min_labelled, args.drift_windows)
    scored = quality.quality_table(joined, contract, gate.measure, window, args.min_labelled, args.resamples)
    versions = sorted(joined["model_version"].astype(str).unique())
    model_name = str(joined["model_name"].iloc[0])
    refs = references(args.tracking_uri, model_name, versions, gate.name)
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline and Path(args.baseline).exists() else None
    decision = quality.decide(scored, gate.name, rule, refs,
                              drift_by_window(joined, contract, baseline, window, args.min_records))
    labelled = int(joined[contract.target.name].notna().sum())
    report = {"model_name": model_name, "gate": gate.name, "as_of": as_of.isoformat(), "window": str(window),
              "lines": dict(counts), "added": added, "predictions": len(joined), "labelled": labelled,
              "coverage": labelled / len(joined), "references": refs,
              "calibration": calibration(joined, contract) if contract.task == "binary" else {},
              "rule": rule.__dict__, "retrain": decision.retrain, "reasons": decision.reasons,
              "by_version": decision.by_version,
              "table": json.loads(scored.assign(window=scored["window"].astype(str)).to_json(orient="records"))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "quality_report.html").write_text(quality_report.render(report, scored, decision, rule))
    return (EXIT_RETRAIN if decision.retrain else EXIT_OK), report


def pseudonym_key(path: Path) -> bytes | None:
    """The request log's pseudonym key: $REQUEST_LOG_PSEUDONYM_KEY (the stack's secret, in a job), else the file
    `make local` made (.local/pseudonym.key), else none (the log pseudonymised nothing)."""
    found = os.environ.get("REQUEST_LOG_PSEUDONYM_KEY") or (path.read_text().strip() if path.exists() else "")
    return found.encode() or None


def calibration(joined: pd.DataFrame, contract: Contract) -> dict[str, list[dict]]:
    target, positive = contract.target.name, str(contract.target.positive)
    found = {}
    for version, group in joined[joined[target].notna()].groupby("model_version", sort=True):
        actual = np.array([str(v) == positive for v in group[target]])
        found[str(version)] = quality.calibration(actual, group["probability"].astype(np.float64).to_numpy())
    return found


def parser() -> argparse.ArgumentParser:
    local = ROOT / ".local"
    p = argparse.ArgumentParser(prog="python -m monitoring.quality_job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="the model module or project name (default: what `make local` serves, else the dev "
                                   "stack's name)")
    p.add_argument("--log", default=str(local / "logs" / "requests.jsonl"))
    p.add_argument("--labels", default=str(local / "quality" / "labels.jsonl"))
    p.add_argument("--table", default=str(local / "quality" / "inference.parquet"))
    p.add_argument("--baseline", default=str(local / "context" / "model" / "mlflow" / "extra_files" /
                                             "drift_baseline.json"))
    p.add_argument("--tracking-uri", default=f"sqlite:///{local / 'mlflow.db'}",
                   help="MLflow: each version's score at approval (empty: no reference)")
    p.add_argument("--pseudonym-key-file", default=str(local / "pseudonym.key"),
                   help="the key the service pseudonymised ids with (or $REQUEST_LOG_PSEUDONYM_KEY)")
    p.add_argument("--out", default=str(local / "quality"))
    p.add_argument("--window", default="auto", help="a duration (30s, 10min, 1h, 1D) or auto (the span in 8)")
    p.add_argument("--as-of", help="use the labels known at this time (ISO 8601; default: now)")
    p.add_argument("--label-horizon", help="a label applies to the predictions scored within this duration (90D, 1h) "
                                           "before its outcome was known (default: all scored before)")
    p.add_argument("--windows", type=int, default=3, help="labelled windows in a row below the rule to retrain")
    p.add_argument("--margin", type=float, default=None,
                   help="retrain also when worse than the version's score at approval by more than this")
    p.add_argument("--min-labelled", type=int, default=50, help="labels a window needs to be judged")
    p.add_argument("--drift-windows", type=int, default=3, help="windows in a row with drift to retrain")
    p.add_argument("--min-records", type=int, default=200, help="records a window needs for the drift test")
    p.add_argument("--resamples", type=int, default=quality.BOOTSTRAP, help="bootstrap resamples per interval")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from infra import stack_files
        from monitoring.traffic import served_model

        model = contracts.load(args.model or served_model() or stack_files.project("dev"))
        code, report = run(args, model)
    except (QualityInputError, inference.InferenceError, ContractError, ValueError) as error:
        print(f"quality: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps({"log_type": "quality", "model_name": report["model_name"], "retrain": report["retrain"],
                      "reasons": report["reasons"], "predictions": report["predictions"],
                      "labelled": report["labelled"], "report": str(Path(args.out) / "quality_report.html"),
                      "ts": datetime.now(UTC).isoformat()}))
    return code


if __name__ == "__main__":
    sys.exit(main())
