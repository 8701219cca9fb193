"""The model: a scikit-learn Pipeline, a small hyper-parameter search, and held-out metrics.

The pipeline is built from plain scikit-learn parts on purpose: every step has an ONNX
converter, so packaging can compile it (see serving/compile.py).
"""

from __future__ import annotations

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


def search(splits: Splits, seed: int, progress: Callable[[str], None] = print) -> SearchResult:
    grid = [dict(zip(SEARCH_SPACE, values, strict=False)) for values in itertools.product(*SEARCH_SPACE.values())]
    candidates, best, best_auc = [], None, -np.inf
    for index, params in enumerate(grid, start=1):
        started = time.perf_counter()
        model = build_pipeline(params, seed).fit(features_of(splits.train), splits.train[schema.TARGET])
        auc = roc_auc_score(splits.valid[schema.TARGET], positive_proba(model, splits.valid))
        seconds = time.perf_counter() - started
        candidates.append({**params, "valid_roc_auc": auc, "fit_seconds": seconds})
        progress(f"  [{index}/{len(grid)}] {params} valid ROC-AUC {auc:.4f} ({seconds:.1f}s)")
        if auc > best_auc:
            best, best_auc = (model, params), auc
    assert best is not None
    return SearchResult(model=best[0], params=best[1], candidates=candidates)


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
