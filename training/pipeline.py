"""The model: a scikit-learn Pipeline, a small hyper-parameter search, and held-out metrics.

The pipeline is built from plain scikit-learn parts on purpose: every step has an ONNX
converter, so packaging can compile it (see serving/compile.py).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from training import schema

MISSING_CATEGORY = "missing"

# Small on purpose: a handful of fits keeps a training run to seconds on a laptop, and the
# grid still covers the two knobs that matter most for boosted trees.
SEARCH_SPACE: dict[str, list] = {
    "learning_rate": [0.05, 0.1],
    "max_leaf_nodes": [15, 31],
}
FIXED_PARAMS = {"max_iter": 200, "l2_regularization": 1.0, "early_stopping": False}


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class SearchResult:
    model: Pipeline
    params: dict
    candidates: list[dict]  # each: params + valid ROC-AUC + fit seconds


def build_pipeline(params: dict, seed: int = 0) -> Pipeline:
    categorical = Pipeline([
        ("impute", SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING_CATEGORY)),
        ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])
    features = ColumnTransformer([
        ("numeric", SimpleImputer(strategy="median"), list(schema.NUMERIC)),
        ("categorical", categorical, list(schema.CATEGORICAL)),
    ])
    classifier = HistGradientBoostingClassifier(random_state=seed, **FIXED_PARAMS, **params)
    return Pipeline([("features", features), ("classifier", classifier)])


def split(frame: pd.DataFrame) -> Splits:
    """60/20/20 by a hash of each row's features: fit on train, choose params and threshold on valid,
    report on test. A row lands in the same split in every run, so when a later run on grown data
    scores the current champion on its test rows, the champion has never trained on them."""
    bucket = pd.util.hash_pandas_object(features_of(frame), index=False).to_numpy() % 10
    parts = [frame[mask].reset_index(drop=True) for mask in (bucket >= 4, (bucket >= 2) & (bucket < 4), bucket < 2)]
    return Splits(*parts)


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(schema.FEATURES)]


Runner = Callable[[Callable[[dict], dict], list[dict]], list[dict]]


def grid() -> list[dict]:
    """The candidates, in one fixed order: ties are broken by it, whoever runs them."""
    return [dict(zip(SEARCH_SPACE, values, strict=True)) for values in itertools.product(*SEARCH_SPACE.values())]


def sequential(fit: Callable[[dict], dict], candidates: list[dict]) -> list[dict]:
    """One candidate after another in this process (a laptop, `make local`)."""
    return [fit(params) for params in candidates]


def fit_candidate(params: dict, splits: Splits, seed: int) -> dict:
    """Fit one candidate and score it on the validation split: the unit of work a Spark task runs."""
    started = time.perf_counter()
    model = build_pipeline(params, seed).fit(features_of(splits.train), splits.train[schema.TARGET])
    auc = float(roc_auc_score(splits.valid[schema.TARGET], positive_proba(model, splits.valid)))
    return {"params": params, "model": model, "valid_roc_auc": auc, "fit_seconds": time.perf_counter() - started,
            **where_it_ran()}


def where_it_ran() -> dict:
    """The Spark stage and task that ran this candidate (none when it ran outside a Spark task)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return {}
    task = TaskContext.get()
    return {"spark_stage_id": task.stageId(), "spark_task_attempt_id": task.taskAttemptId()} if task else {}


def search(splits: Splits, seed: int, progress: Callable[[str], None] = print, runner: Runner = sequential,
           fit: Callable[[dict], dict] | None = None) -> SearchResult:
    """Every candidate of the grid, fitted by `runner` (sequential, or as Spark tasks: training/tuning.py); the
    best validation ROC-AUC wins, the first in grid order on a tie, so the choice never depends on the runner."""
    candidates = grid()
    fitted = runner(fit or functools.partial(fit_candidate, splits=splits, seed=seed), candidates)
    for index, result in enumerate(fitted, start=1):
        progress(f"  [{index}/{len(fitted)}] {result['params']} valid ROC-AUC {result['valid_roc_auc']:.4f} "
                 f"({result['fit_seconds']:.1f}s)")
    best = choose(fitted)
    summaries = [{**r["params"], **{k: v for k, v in r.items() if k not in ("params", "model")}} for r in fitted]
    return SearchResult(model=best["model"], params=best["params"], candidates=summaries)


def choose(fitted: list[dict]) -> dict:
    """The highest validation ROC-AUC; the earliest candidate among equals."""
    if not fitted:
        raise ValueError("the search fitted no candidate")
    return max(enumerate(fitted), key=lambda item: (item[1]["valid_roc_auc"], -item[0]))[1]


def positive_proba(model, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(features_of(frame))[:, 1]


def choose_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut that maximises F1 on the validation split."""
    grid = np.linspace(0.05, 0.95, 91)
    scores = [f1_score(y_true, proba >= cut, zero_division=0) for cut in grid]
    return float(grid[int(np.argmax(scores))])


def evaluate(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Metrics computed on probabilities (and F1 at the chosen threshold)."""
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "pr_auc": float(average_precision_score(y_true, proba)),
        "log_loss": float(log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15))),
        "f1": float(f1_score(y_true, proba >= threshold, zero_division=0)),
        "threshold": float(threshold),
        "positive_rate": float(np.mean(y_true)),
    }
