"""The drift baseline: what the training data and the model's outputs looked like.

Numbers get quantile bins (edges from the training data, outer bins open-ended), categories get
frequencies, and every feature records its missing fraction. The predicted probability gets the
same treatment as a number. The drift job compares request-log windows against this file, so its
format is versioned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training import schema

BASELINE_FORMAT_VERSION = 1
QUANTILE_BINS = 10


def numeric_profile(values: np.ndarray, bins: int = QUANTILE_BINS) -> dict:
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    inner_edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else []
    return {
        "type": "numeric",
        "edges": [float(edge) for edge in inner_edges],
        "fractions": bin_fractions(present, inner_edges),
        "missing_fraction": float(1 - len(present) / max(len(values), 1)),
        "mean": float(present.mean()) if len(present) else None,
        "count": len(values),
    }


def bin_counts(present: np.ndarray, inner_edges) -> np.ndarray:
    """Values per bin: (-inf, e0), [e0, e1), ..., [e_last, inf). The drift job bins with this too."""
    return np.bincount(np.searchsorted(inner_edges, present, side="right"), minlength=len(inner_edges) + 1)


def bin_fractions(present: np.ndarray, inner_edges) -> list[float]:
    """Share of values per bin (see bin_counts)."""
    return [float(c) for c in bin_counts(present, inner_edges) / max(len(present), 1)]


def categorical_profile(values: pd.Series) -> dict:
    present = values.dropna()
    frequencies = present.value_counts(normalize=True).sort_index()
    return {
        "type": "categorical",
        "frequencies": {str(k): float(v) for k, v in frequencies.items()},
        "missing_fraction": float(1 - len(present) / max(len(values), 1)),
        "count": len(values),
    }


def build_baseline(features: pd.DataFrame, predicted_proba: np.ndarray) -> dict:
    profiles = {column: categorical_profile(features[column]) for column in schema.CATEGORICAL}
    profiles.update({column: numeric_profile(features[column].to_numpy()) for column in schema.NUMERIC})
    return {
        "format_version": BASELINE_FORMAT_VERSION,
        "rows": len(features),
        "features": profiles,
        "prediction": numeric_profile(predicted_proba),
    }
