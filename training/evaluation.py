"""What a trained model's outputs are, and how good they are on held-out rows, by the kind of model.

binary      the probability of the positive class; a label where it reaches the decision threshold, the cut that
            maximises F1 on the validation rows. Metrics: ROC-AUC, PR-AUC, log-loss, F1 at the threshold, the
            threshold, the positive rate.
multiclass  a probability per class; the label is the likeliest class. Metrics: accuracy, macro F1, log-loss,
            one-vs-rest ROC-AUC.
regression  the predicted value. Metrics: RMSE, MAE, R², bias (mean prediction minus mean target).

The gate's own metric is logged beside these (training/train.py), whatever the model module chose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from training.contract import Contract


def predictions(model: Any, features: Any, contract: Contract) -> np.ndarray:
    """What the drift baseline profiles: the positive class's probability (binary), the predicted label
    (multiclass) or the predicted value (regression)."""
    if contract.task == "binary":
        return positive_proba(model, features)
    return np.asarray(model.predict(features))


def positive_proba(model: Any, features: Any) -> np.ndarray:
    return model.predict_proba(features)[:, 1]


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, positive: Any = 1) -> float:
    """The probability cut that maximises F1 on the validation split."""
    grid = np.linspace(0.05, 0.95, 91)
    positives = np.asarray(y_true) == positive
    scores = [f1_score(positives, proba >= cut, zero_division=0) for cut in grid]
    return float(grid[int(np.argmax(scores))])


def decision_threshold(model: Any, features: Any, target: Any, contract: Contract) -> float | None:
    """A binary model's threshold, chosen on the validation rows; none for the other kinds."""
    if contract.task != "binary":
        return None
    return choose_threshold(np.asarray(target), positive_proba(model, features), contract.target.positive)


def evaluate(model: Any, features: Any, target: Any, contract: Contract, threshold: float | None) -> dict[str, float]:
    y = np.asarray(target)
    if contract.task == "binary":
        proba = positive_proba(model, features)
        positives = y == contract.target.positive
        return {
            "roc_auc": float(roc_auc_score(positives, proba)),
            "pr_auc": float(average_precision_score(positives, proba)),
            "log_loss": float(log_loss(positives, np.clip(proba, 1e-15, 1 - 1e-15), labels=[False, True])),
            "f1": float(f1_score(positives, proba >= (threshold if threshold is not None else 0.5), zero_division=0)),
            "threshold": float(threshold if threshold is not None else 0.5),
            "positive_rate": float(np.mean(positives)),
        }
    if contract.task == "multiclass":
        proba = model.predict_proba(features)
        labels = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
        metrics = {"accuracy": float(accuracy_score(y, labels)),
                   "f1_macro": float(f1_score(y, labels, average="macro", zero_division=0)),
                   "log_loss": float(log_loss(y, proba, labels=list(model.classes_)))}
        if len(np.unique(y)) == len(model.classes_):  # one-vs-rest AUC needs every class among the rows
            metrics["roc_auc_ovr"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=list(model.classes_)))
        return metrics
    predicted = np.asarray(model.predict(features), dtype=np.float64)
    return {"rmse": float(root_mean_squared_error(y, predicted)), "mae": float(mean_absolute_error(y, predicted)),
            "r2": float(r2_score(y, predicted)), "bias": float(np.mean(predicted) - np.mean(y))}
