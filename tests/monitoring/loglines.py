"""Request-log lines as the service writes them (serving/scoring/requestlog.py), for the quality loop's tests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from serving.scoring import requestlog


def log_lines(model, rows: pd.DataFrame, request_id: str, ids_column: str | None = None, version: str = "1",
              probabilities: np.ndarray | None = None, scored_at: str | None = None) -> bytes:
    """The request's log lines as the service writes them, with the contract's ids (as `ids`, by column): a binary
    model's outputs (`probabilities`, else evenly spread), written at `scored_at` (ISO 8601; default: now)."""
    contract = model.contract
    negative, positive = contract.target.classes
    columns = {name: list(rows[name].astype(object).where(rows[name].notna(), None)) for name in contract.feature_names}
    spread = np.linspace(0.05, 0.95, len(rows)) if probabilities is None else probabilities
    outputs = [{"probability": float(p), "label": positive if p >= 0.5 else negative} for p in spread]
    parts = requestlog.prediction_parts(request_id=request_id, model_name="m", model_version=version, runtime="onnx",
                                        protocol="predict", inputs=columns, outputs=outputs, latency_ms=1.0)
    lines = []
    for raw in parts:
        entry = json.loads(raw)
        first, count = entry["first_record"], len(entry["outputs"])
        name = ids_column or contract.ids[0]
        entry["ids"] = {name: [int(v) for v in rows[contract.ids[0]].iloc[first:first + count]]}
        if scored_at is not None:
            entry["ts"] = scored_at
        lines.append(json.dumps(entry).encode() + b"\n")
    return b"".join(lines)
