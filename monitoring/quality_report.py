"""The quality report a person reads: one chart per metric over time (a line per model version, its 95 % interval
shaded, the gate's floor and each version's score at approval drawn across), the calibration by decile per version,
the rule's verdict, and the tables behind them."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd

from monitoring.quality import ALL, Decision, QualityRule

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _figure(width: float = 7.5, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def metric_chart(table: pd.DataFrame, metric: str, floor: float | None, references: dict[str, float]) -> str:
    """A metric over the windows, a line per version (every prediction's slice), interval shaded."""
    fig, ax = _figure()
    rows = table[(table["slice"] == ALL) & (table["metric"] == metric) & table["value"].notna()]
    for index, (key, group) in enumerate(rows.groupby("model_version", sort=True)):
        version = str(key)
        colour = COLOURS[index % len(COLOURS)]
        group = group.sort_values("window")
        ax.plot(group["window"], group["value"], marker="o", color=colour, label=f"version {version}")
        ax.fill_between(group["window"], group["low"], group["high"], color=colour, alpha=0.15, linewidth=0)
        if version in references:
            ax.axhline(references[version], color=colour, linestyle=":", linewidth=1,
                       label=f"version {version} at approval")
    if floor is not None:
        ax.axhline(floor, color="#555", linestyle="--", linewidth=1, label="gate floor")
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel("window start (UTC)")
    ax.legend(fontsize=7, frameon=False)
    fig.autofmt_xdate()
    return _png(fig)


def calibration_chart(calibration: dict[str, list[dict]]) -> str:
    """Observed positive rate against mean predicted probability, per decile, a line per version."""
    fig, ax = _figure(4.5, 4.0)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect")
    for index, (version, table) in enumerate(sorted(calibration.items())):
        ax.plot([r["predicted"] for r in table], [r["observed"] for r in table], marker="o",
                color=COLOURS[index % len(COLOURS)], label=f"version {version}")
    ax.set_xlabel("mean predicted probability (decile)")
    ax.set_ylabel("observed positive rate")
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def render(report: dict, table: pd.DataFrame, decision: Decision, rule: QualityRule) -> str:
    references = report["references"]
    gate = report["gate"]
    verdict = ("RETRAIN: " + "; ".join(decision.reasons)) if decision.retrain else "no retraining: the rule holds"
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Model quality</title><style>"
             "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}.retrain{color:#b00;font-weight:bold}"
             "</style></head><body>",
             f"<h1>Model quality: {html.escape(report['model_name'])}</h1>",
             f"<p class='{'retrain' if decision.retrain else ''}'>{html.escape(verdict)}</p>",
             f"<p>Labels known at {html.escape(report['as_of'])}; windows of {html.escape(report['window'])}; "
             f"the rule: {html.escape(gate)} below the floor {rule.floor:g}"
             + (f" or worse than at approval by more than {rule.margin:g}" if rule.margin is not None else "")
             + f" in {rule.windows} labelled window(s) (at least {rule.min_labelled} labels each), or drift in "
             f"{rule.drift_windows} window(s) in a row.</p>",
             f"<p>Predictions {report['predictions']}, labelled {report['labelled']} "
             f"({report['coverage']:.0%}); lines read {html.escape(str(report['lines']))}.</p>"]
    for metric in sorted(table.loc[table["value"].notna(), "metric"].unique(), key=lambda m: (m != gate, m)):
        is_gate = metric == gate
        chart = metric_chart(table, metric, rule.floor if is_gate else None, references if is_gate else {})
        parts.append(f"<h2>{html.escape(metric)}</h2><img alt='{html.escape(metric)} over time' "
                     f"src='data:image/png;base64,{chart}'>")
    if report.get("calibration"):
        parts.append("<h2>Calibration by decile</h2><img alt='calibration by decile' src='data:image/png;base64,"
                     f"{calibration_chart(report['calibration'])}'>")
    parts.append("<h2>Per version, window and slice</h2>" + _table(table))
    parts.append("</body></html>")
    return "".join(parts)


def _table(table: pd.DataFrame) -> str:
    shown = table.assign(window=table["window"].astype(str))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4f}"
    return str(value)
