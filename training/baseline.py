"""The drift baseline: what the training data and the model's outputs looked like.

Numbers get quantile bins (edges from the training data, outer bins open-ended), categories get
frequencies, and every feature records its missing fraction, in the contract's column order. The
model's output gets the same treatment: a binary model's probability and a regressor's value as a
number, a multiclass model's label as a category; `prediction.output` names the request log's output
field it was made from. The drift job compares request-log windows against this file, so its format
is versioned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.contract import Category, Contract

BASELINE_FORMAT_VERSION = 1
BASELINE_FILE = "drift_baseline.json"  # in each version's extra_files/
QUANTILE_BINS = 10


def numeric_profile(values: np.ndarray, bins: int = QUANTILE_BINS) -> dict:
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    inner_edges: np.ndarray | list[float] = (np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
                                             if len(present) else [])
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


# The request log's output field each kind of model's baseline profiles (serving/scoring: the /predict outputs).
PREDICTION_OUTPUT = {"binary": "probability", "multiclass": "label", "regression": "prediction"}


def build_baseline(features: pd.DataFrame, predicted: np.ndarray, contract: Contract) -> dict:
    profiles = {f.name: categorical_profile(features[f.name]) if isinstance(f, Category)
                else numeric_profile(features[f.name].to_numpy()) for f in contract.features}
    output = PREDICTION_OUTPUT[contract.task]
    prediction = (categorical_profile(pd.Series(predicted, dtype=object).map(str)) if contract.task == "multiclass"
                  else numeric_profile(np.asarray(predicted, dtype=np.float64)))
    return {
        "format_version": BASELINE_FORMAT_VERSION,
        "rows": len(features),
        "features": profiles,
        "prediction": {**prediction, "output": output},
    }


# ---- synthetic records: what checks need instead of rows of real people ----
#
# A model version carries no training or held-out row (personal data: sex, age, finances). The checks that
# used such rows draw records from the baseline's per-feature aggregates instead: every value is a quantile
# edge, a draw inside a quantile bin, or a category's name, and no row is any person's (features are drawn
# independently, so no record reproduces a person's combination of values).

def _numeric_span(edges: list[float]) -> float:
    """A finite width for the open outer bins: the mean inner-bin width (or a unit on the edge's scale)."""
    if len(edges) >= 2:
        return (edges[-1] - edges[0]) / (len(edges) - 1)
    return max(abs(edges[0]), 1.0) * 0.5 if edges else 1.0


def _numeric_draws(profile: dict, rows: int, rng: np.random.Generator) -> np.ndarray:
    edges = profile["edges"]
    if not edges:
        return np.full(rows, profile["mean"] if profile["mean"] is not None else 0.0)
    span = _numeric_span(edges)
    lows = np.array([edges[0] - span, *edges])
    highs = np.array([*edges, edges[-1] + span])
    fractions = np.asarray(profile["fractions"], dtype=np.float64)
    bins = rng.choice(len(fractions), size=rows, p=fractions / fractions.sum())
    return lows[bins] + rng.random(rows) * (highs[bins] - lows[bins])


def _categorical_draws(profile: dict, rows: int, rng: np.random.Generator) -> np.ndarray:
    categories = list(profile["frequencies"])
    if not categories:
        return np.full(rows, None, dtype=object)
    weights = np.asarray(list(profile["frequencies"].values()), dtype=np.float64)
    return rng.choice(np.asarray(categories, dtype=object), size=rows, p=weights / weights.sum())


def synthetic_records(baseline: dict, rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` records drawn feature by feature from the baseline's bins, categories and missing fractions."""
    rng = np.random.default_rng(seed)
    columns = {}
    for name, profile in baseline["features"].items():
        numeric = profile["type"] == "numeric"
        values = (_numeric_draws if numeric else _categorical_draws)(profile, rows, rng).astype(np.float64 if numeric else object)
        values[rng.random(rows) < profile["missing_fraction"]] = np.nan if numeric else None
        columns[name] = values
    return pd.DataFrame(columns)


def typical_records(baseline: dict, rows: int = 3) -> pd.DataFrame:
    """Complete, plausible records for examples (docs, smoke test): the i-th quartile edge of every number and
    the i-th most frequent category, so each value lies inside the training data's range."""
    records = []
    for i in range(rows):
        record: dict[str, object] = {}
        for name, profile in baseline["features"].items():
            if profile["type"] == "numeric":
                edges = profile["edges"] or [profile["mean"] or 0.0]
                record[name] = float(edges[min(len(edges) - 1, (i + 1) * len(edges) // (rows + 1))])
            else:
                ranked = sorted(profile["frequencies"], key=lambda c: -profile["frequencies"][c])
                record[name] = ranked[i % len(ranked)] if ranked else None
        records.append(record)
    return pd.DataFrame(records, columns=list(baseline["features"]))


def equivalence_records(baseline: dict, rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    """What the compiled model is checked against: random synthetic records, plus, from a typical record,
    every quantile edge of each number and the float just below it (where a tree's thresholds sit and where
    float32 rounding misroutes a record), each category, an unseen category and a missing value per feature."""
    base = typical_records(baseline, 1).iloc[0].to_dict()
    probes = []
    for name, profile in baseline["features"].items():
        if profile["type"] == "numeric":
            values: list[object] = [v for edge in profile["edges"] for v in (edge, float(np.nextafter(edge, -np.inf)))]
            values.append(np.nan)
        else:
            values = [*profile["frequencies"], "__unseen__", None]
        probes += [{**base, name: value} for value in values]
    columns = list(baseline["features"])
    frame = pd.concat([synthetic_records(baseline, rows, seed), pd.DataFrame(probes, columns=columns)], ignore_index=True)
    for name, profile in baseline["features"].items():
        if profile["type"] == "numeric":
            frame[name] = frame[name].astype(np.float64)
    return frame
