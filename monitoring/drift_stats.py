"""The drift statistics and the report they make: per column, PSI and a chi-square test of the window's buckets
against the baseline's (monitoring/drift.py's docstring says how), the HTML report with a chart per drifted column,
and the drift record the stack's alert reads. Functions of the window and the baseline only: no I/O.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
from typing import Any

import numpy as np
from scipy import stats

from training.baseline import bin_counts

EPSILON = 1e-4
PREDICTION = "prediction"
MISSING, UNSEEN = "missing", "unseen"


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
