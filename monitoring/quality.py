"""Model quality over time: the inference table with its labels, scored per model version, window and slice, and the
rule that says when to retrain.

Per model version, per window of `scored_at` and per slice (every prediction, then each value of each category the
contract names in `slices`), over the predictions whose label is known:
  the gate's metric (the model module's GATE, computed by scikit-learn's own scorer or the team's function), and
  binary      ROC-AUC, PR-AUC, log-loss, the observed and the predicted positive rate, the expected calibration error
              (and, per version, calibration by decile: mean predicted probability against the observed rate)
  multiclass  accuracy, macro F1, log-loss, one-vs-rest ROC-AUC (when every class is among the rows)
  regression  RMSE, MAE, bias (mean prediction minus mean label)
each with the counts (predictions, labelled) and a 95 % bootstrap interval (percentiles of the metric over resampled
rows, a fixed seed: the same table gives the same report). A metric a group cannot define (ROC-AUC with one class)
is left out. The reference is each version's own score at approval (its gate run's `gate_challenger_<metric>`).

The rule (QualityRule; the stack's `quality` settings on Databricks): retrain when, for a version still serving (it
has predictions in the last window), the last `windows` windows with at least `min_labelled` labels all fall below
the gate's floor or below the version's approval score by more than `margin`; or when its inputs drifted (the drift
job's test, monitoring/drift_stats.py `compare`) in each of the last `drift_windows` windows with enough records. Retraining
starts the training job; the new version goes through the same gate, staging and approval: nothing here promotes.

Why one module: the metrics, the rule and what the rule reads (each version's approval score, each window's drift
status) are one judgement, shared as it is by `make quality` (monitoring/quality_job.py) and the Databricks job
(monitoring/quality_delta.py), so the two cannot judge differently.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from monitoring import lineage
from training.contract import Contract, Metric

ALL = "all"  # the slice of every prediction
BOOTSTRAP = 200
CONFIDENCE = 0.95
DECILES = 10
EPS = 1e-15


# ---------------------------------------------------------------- the logged predictions as an estimator

class ReplayClassifier(ClassifierMixin, BaseEstimator):
    """The logged predictions as a fitted classifier: the rows are their positions, predict_proba and predict answer what
    the service answered. A scikit-learn scorer (the gate's metric by name) then scores the logged predictions."""

    def __init__(self, classes: list, proba: np.ndarray, labels: np.ndarray) -> None:
        self.classes = classes
        self.proba = proba
        self.labels = labels
        self.classes_ = np.asarray(classes)

    def fit(self, rows: Any, y: Any = None) -> ReplayClassifier:
        return self

    def predict_proba(self, rows: Any) -> np.ndarray:
        return self.proba[np.asarray(rows, dtype=np.intp).ravel()]

    def decision_function(self, rows: Any) -> np.ndarray:
        proba = self.predict_proba(rows)
        return proba[:, 1] if proba.shape[1] == 2 else proba

    def predict(self, rows: Any) -> np.ndarray:
        return self.labels[np.asarray(rows, dtype=np.intp).ravel()]


class ReplayRegressor(RegressorMixin, BaseEstimator):
    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def fit(self, rows: Any, y: Any = None) -> ReplayRegressor:
        return self

    def predict(self, rows: Any) -> np.ndarray:
        return self.values[np.asarray(rows, dtype=np.intp).ravel()]


@dataclass(frozen=True)
class Scored:
    """One group's labelled predictions in the model's terms."""
    task: str
    classes: list
    y: np.ndarray           # the labels (the classes' own values; numbers for a regressor)
    proba: np.ndarray       # classifier: [n, classes] probabilities; regressor: empty
    labels: np.ndarray      # classifier: the label the service answered; regressor: the predicted values

    def take(self, rows: np.ndarray) -> Scored:
        return Scored(self.task, self.classes, self.y[rows], self.proba[rows] if self.proba.size else self.proba,
                      self.labels[rows])

    def estimator(self) -> BaseEstimator:
        if self.task == "regression":
            return ReplayRegressor(self.labels.astype(np.float64))
        return ReplayClassifier(self.classes, self.proba, self.labels)


def scored_rows(frame: pd.DataFrame, contract: Contract) -> Scored:
    """The labelled rows of the joined table as labels and the model's answers."""
    task, target = contract.task, contract.target
    if task == "regression":
        return Scored(task, [], frame[target.name].astype(np.float64).to_numpy(), np.empty((0, 0)),
                      frame["prediction"].astype(np.float64).to_numpy())
    classes = list(target.classes or ())
    by_text = {str(c): c for c in classes}
    y = np.array([by_text.get(str(v), v) for v in frame[target.name]], dtype=object)
    labels = np.array([by_text.get(str(v), v) for v in frame["label"]], dtype=object)
    if task == "binary":
        p = frame["probability"].astype(np.float64).to_numpy()
        proba = np.column_stack([1 - p, p])
    else:
        proba = np.array([[json.loads(text).get(str(c), 0.0) for c in classes] for text in frame["probabilities"]],
                         dtype=np.float64).reshape(len(frame), len(classes))
    return Scored(task, classes, y, proba, labels)


# ---------------------------------------------------------------- metrics

def metrics(scored: Scored, gate: Metric) -> dict[str, float]:
    """The group's metrics (those it can define), the gate's first under its own name."""
    found: dict[str, float] = {}
    n = len(scored.y)
    if n == 0:
        return found
    positions = np.arange(n).reshape(-1, 1)
    _put(found, gate.name, lambda: gate.score(scored.estimator(), positions, _target(scored)))
    if scored.task == "regression":
        y, predicted = scored.y.astype(np.float64), scored.labels.astype(np.float64)
        found["rmse"] = float(root_mean_squared_error(y, predicted))
        found["mae"] = float(mean_absolute_error(y, predicted))
        found["bias"] = float(np.mean(predicted) - np.mean(y))
        return found
    if scored.task == "binary":
        positive = scored.classes[1]
        actual = scored.y == positive
        p = scored.proba[:, 1]
        _put(found, "roc_auc", lambda: roc_auc_score(actual, p))
        _put(found, "pr_auc", lambda: average_precision_score(actual, p))
        found["log_loss"] = float(log_loss(actual, np.clip(p, EPS, 1 - EPS), labels=[False, True]))
        found["positive_rate"] = float(np.mean(actual))
        found["predicted_positive_rate"] = float(np.mean(scored.labels == positive))
        found["calibration_error"] = expected_calibration_error(actual, p)
        return found
    classes = scored.classes
    found["accuracy"] = float(accuracy_score(_text(scored.y), _text(scored.labels)))
    found["f1_macro"] = float(f1_score(_text(scored.y), _text(scored.labels), average="macro", zero_division=0))
    found["log_loss"] = float(log_loss(_text(scored.y), np.clip(scored.proba, EPS, 1), labels=_text(classes)))
    if len({str(v) for v in scored.y}) == len(classes):
        _put(found, "roc_auc_ovr", lambda: roc_auc_score(_text(scored.y), scored.proba, multi_class="ovr",
                                                          labels=_text(classes)))
    return found


def _target(scored: Scored) -> np.ndarray:
    """The labels as the gate's scorer takes them: the classes' values (one type), numbers for a regressor."""
    if scored.task == "regression":
        return scored.y.astype(np.float64)
    return np.asarray(list(scored.y))


def _text(values: Iterable) -> list[str]:
    return [str(v) for v in values]


def _put(found: dict[str, float], name: str, compute: Callable[[], float]) -> None:
    """A metric the rows define (ROC-AUC needs both classes): left out where scikit-learn refuses or says NaN."""
    try:
        value = float(compute())
    except ValueError:
        return
    if math.isfinite(value):
        found[name] = value


def expected_calibration_error(actual: np.ndarray, p: np.ndarray) -> float:
    """Mean |observed rate - mean probability| over the deciles of probability, weighted by their rows."""
    table = calibration(actual, p)
    counts = np.array([row["count"] for row in table], dtype=np.float64)
    gaps = np.array([abs(row["observed"] - row["predicted"]) for row in table])
    return float(np.sum(counts * gaps) / counts.sum()) if counts.sum() else math.nan


def calibration(actual: np.ndarray, p: np.ndarray) -> list[dict]:
    """Per decile of probability ([0, 0.1), ..., [0.9, 1]): rows, mean probability, observed positive rate."""
    bins = np.minimum((p * DECILES).astype(int), DECILES - 1)
    table = []
    for decile in range(DECILES):
        inside = bins == decile
        if inside.any():
            table.append({"decile": decile, "count": int(inside.sum()), "predicted": float(p[inside].mean()),
                          "observed": float(actual[inside].mean())})
    return table


def intervals(scored: Scored, gate: Metric, point: dict[str, float], seed: int,
              resamples: int = BOOTSTRAP) -> dict[str, tuple[float, float]]:
    """Each metric's bootstrap interval: percentiles of its value over `resamples` draws of the rows with replacement
    (the draws scored by resample_metrics: scikit-learn's formulas in numpy, a few hundred times faster a draw)."""
    rng = np.random.default_rng(seed)
    n = len(scored.y)
    draws: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(resamples):
        values = resample_metrics(scored.take(rng.integers(0, n, n)), gate)
        for name in point:
            if name in values:
                draws[name].append(values[name])
    tail = (1 - CONFIDENCE) / 2 * 100
    return {name: (float(np.percentile(found, tail)), float(np.percentile(found, 100 - tail)))
            for name, found in draws.items() if len(found) >= resamples // 2}


def resample_metrics(scored: Scored, gate: Metric) -> dict[str, float]:
    """metrics() for a bootstrap draw: the same values (tests/monitoring/test_quality.py compares them), the gate's
    through scikit-learn only when it is a metric not computed here."""
    if scored.task != "binary":
        return metrics(scored, gate)  # multiclass and regression metrics are cheap enough in scikit-learn
    actual = scored.y == scored.classes[1]
    p = scored.proba[:, 1]
    found = {"log_loss": _log_loss(actual, p), "positive_rate": float(actual.mean()),
             "predicted_positive_rate": float(np.mean(scored.labels == scored.classes[1])),
             "calibration_error": expected_calibration_error(actual, p)}
    if 0 < actual.sum() < len(actual):
        found["roc_auc"], found["pr_auc"] = _roc_auc(actual, p), _average_precision(actual, p)
    same = {"roc_auc": "roc_auc", "average_precision": "pr_auc"}.get(gate.name) if gate.function is None else None
    if same is not None:
        if same in found:
            found[gate.name] = found[same]
    else:
        _put(found, gate.name, lambda: gate.score(scored.estimator(), np.arange(len(p)).reshape(-1, 1),
                                                  _target(scored)))
    return found


def _roc_auc(actual: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney U over the average ranks: roc_auc_score's value, ties counted half."""
    ranks = stats.rankdata(p)
    positives = int(actual.sum())
    negatives = len(actual) - positives
    return float((ranks[actual].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_precision(actual: np.ndarray, p: np.ndarray) -> float:
    """average_precision_score: the precision at each distinct threshold, weighted by the recall it adds."""
    order = np.argsort(-p, kind="mergesort")
    ordered, hits = p[order], actual[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]  # the last row of each distinct score
    true_positives = np.cumsum(hits)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _log_loss(actual: np.ndarray, p: np.ndarray) -> float:
    clipped = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(np.where(actual, np.log(clipped), np.log(1 - clipped))))


# ---------------------------------------------------------------- the table of quality over time

def windows_of(scored_at: pd.Series, window: pd.Timedelta) -> pd.Series:
    """Each prediction's window: the start of its `window`-long interval (from the epoch, UTC)."""
    return pd.to_datetime(scored_at, utc=True, format="ISO8601").dt.floor(window)


def quality_table(joined: pd.DataFrame, contract: Contract, gate: Metric, window: pd.Timedelta,
                  min_labelled: int, resamples: int = BOOTSTRAP) -> pd.DataFrame:
    """One row per (model_version, window, slice, metric): value, interval, predictions, labelled. Groups with fewer
    than `min_labelled` labels have their counts and no metric (NaN)."""
    frame = joined.assign(window=windows_of(joined["scored_at"], window))
    target = contract.target.name
    rows = []
    for (version, start), group in frame.groupby(["model_version", "window"], sort=True):
        for slice_name, part in _slices(group, contract):
            labelled = part[part[target].notna()]
            base = {"model_version": str(version), "window": start, "slice": slice_name,
                    "predictions": len(part), "labelled": len(labelled)}
            if len(labelled) < min_labelled:
                rows.append({**base, "metric": gate.name, "value": math.nan, "low": math.nan, "high": math.nan})
                continue
            scored = scored_rows(labelled, contract)
            point = metrics(scored, gate)
            seed = zlib.crc32(f"{version}|{start}|{slice_name}".encode())  # the same group, the same draws
            spread = intervals(scored, gate, point, seed, resamples)
            for name, value in point.items():
                low, high = spread.get(name, (math.nan, math.nan))
                rows.append({**base, "metric": name, "value": value, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["model_version", "window", "slice", "predictions", "labelled", "metric",
                                       "value", "low", "high"])


def _slices(group: pd.DataFrame, contract: Contract) -> Iterable[tuple[str, pd.DataFrame]]:
    yield ALL, group
    for name in contract.slices:
        if name in group.columns:
            for value, part in group.groupby(group[name].fillna("(missing)"), sort=True):
                yield f"{name}={value}", part


# ---------------------------------------------------------------- the rule

@dataclass(frozen=True)
class QualityRule:
    """When the loop retrains (the stack's `quality` settings): see the module's docstring."""
    floor: float
    greater_is_better: bool = True
    margin: float | None = None
    windows: int = 3
    min_labelled: int = 50
    drift_windows: int = 3

    def __post_init__(self) -> None:
        for name in ("windows", "min_labelled", "drift_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, got {getattr(self, name)}")
        if self.margin is not None and self.margin < 0:
            raise ValueError(f"margin must be 0 or more, got {self.margin}")

    def falls_short(self, value: float, reference: float | None) -> str | None:
        """Why `value` is not good enough, or None."""
        worse = (lambda a, b: a < b) if self.greater_is_better else (lambda a, b: a > b)
        if worse(value, self.floor):
            return f"{value:.4f} {'below' if self.greater_is_better else 'above'} the floor {self.floor:.4f}"
        if self.margin is not None and reference is not None:
            limit = reference - self.margin if self.greater_is_better else reference + self.margin
            if worse(value, limit):
                return f"{value:.4f} worse than {reference:.4f} at approval by more than {self.margin:g}"
        return None


@dataclass
class Decision:
    retrain: bool = False
    reasons: list[str] = field(default_factory=list)
    by_version: dict[str, dict] = field(default_factory=dict)


def decide(table: pd.DataFrame, gate_name: str, rule: QualityRule, references: dict[str, float],
           drift: dict[str, list[str]] | None = None) -> Decision:
    """Whether the loop retrains: per version serving in the table's last window, the quality rule over its last
    `rule.windows` windows with enough labels, and drift persisting over the last `rule.drift_windows` windows
    (`drift`: per version, each window's drift status in order, "drift", "no drift" or "not enough data")."""
    decision = Decision()
    overall = table[(table["slice"] == ALL) & (table["metric"] == gate_name)]
    if overall.empty:
        return decision
    last = overall["window"].max()
    serving = sorted(overall.loc[overall["window"] == last, "model_version"].unique(), key=_version_order)
    for version in serving:
        rows = overall[(overall["model_version"] == version) & overall["value"].notna()].sort_values("window")
        recent = rows.tail(rule.windows)
        reference = references.get(version)
        shortfalls = [rule.falls_short(v, reference) for v in recent["value"]]
        quality_fires = len(recent) == rule.windows and all(shortfalls)
        statuses = [s for s in (drift or {}).get(version, []) if s != "not enough data"][-rule.drift_windows:]
        drift_fires = len(statuses) == rule.drift_windows and all(s == "drift" for s in statuses)
        decision.by_version[version] = {"windows_judged": len(recent), "shortfalls": shortfalls,
                                        "reference": reference, "drift": statuses,
                                        "quality_fires": quality_fires, "drift_fires": drift_fires}
        if quality_fires:
            decision.reasons.append(f"version {version}: {gate_name} in its last {rule.windows} labelled windows: "
                                    + "; ".join(str(s) for s in shortfalls))
        if drift_fires:
            decision.reasons.append(f"version {version}: inputs drifted in each of its last {rule.drift_windows} "
                                    "windows")
    decision.retrain = bool(decision.reasons)
    return decision


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if str(version).isdigit() else (-1, str(version))


def references(tracking_uri: str | None, model_name: str, versions: list[str], gate_name: str,
               registry_uri: str | None = None, logged_name: str = "") -> dict[str, float]:
    """Each version's score at approval: its gate run's gate_challenger_<metric> (training/gate.py records it; a
    promotion copies it onto its own run, infra/promote.py). The registry is `registry_uri` where it is not the
    tracking store: on Databricks the runs are the workspace's (`databricks`) and the versions Unity Catalog's
    (`databricks-uc`). Where the log names another model (`logged_name`: a promotion target serves the source's image),
    `versions` are that model's and each is read from `model_name`'s copy of it (monitoring/lineage.py)."""
    if not tracking_uri:
        return {}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    copies = None
    if logged_name and logged_name != model_name:
        try:
            copies = lineage.copies_of(client, model_name, logged_name)
        except MlflowException:  # no such model in this registry: no references
            return {}
    found = {}
    for version in versions:
        number = version if copies is None else copies.get(str(version))
        if number is None:
            continue
        try:
            run_id = client.get_model_version(model_name, number).run_id
            value = client.get_run(run_id).data.metrics.get(f"gate_challenger_{gate_name}") if run_id else None
        except MlflowException:  # a version or run this store does not hold (a copy whose run is elsewhere): none
            value = None
        if value is not None:
            found[version] = float(value)
    return found


def drift_by_window(joined: pd.DataFrame, contract: Contract, baseline: dict | None, window: pd.Timedelta,
                    min_records: int, psi_threshold: float = 0.2, alpha: float = 0.01) -> dict[str, list[str]]:
    """Per version, each window's drift status (monitoring/drift_stats.py compare on that window's records, with the drift
    job's thresholds: the stack's drift.psiThreshold and drift.pValue)."""
    from monitoring import drift_stats, inference  # drift's own test; imported here: drift_stats imports nothing of this module
    if not baseline:
        return {}
    features = [name for name in contract.feature_names if name in joined.columns]
    outputs = [name for name in inference.OUTPUT_COLUMNS[contract.task] if name in joined.columns]
    frame = joined.assign(window=windows_of(joined["scored_at"], window))
    found: dict[str, list[str]] = {}
    for (version, _), group in frame.groupby(["model_version", "window"], sort=True):
        records = _plain(group[features].to_dict(orient="records"))
        answers = [{k: (json.loads(v) if k == "probabilities" and isinstance(v, str) else v) for k, v in row.items()}
                   for row in _plain(group[outputs].to_dict(orient="records"))]
        result = drift_stats.compare(baseline, records, answers, psi_threshold=psi_threshold, alpha=alpha,
                                min_records=min_records)
        found.setdefault(str(version), []).append(result["status"])
    return found


def _plain(rows: list[dict]) -> list[dict]:
    """Table rows as the log held them: NaN back to null."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
