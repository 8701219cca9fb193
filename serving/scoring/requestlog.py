"""One JSON line per scored request on stdout: what Log Analytics ingests and the drift job reads.

Format (version 1), one object per line:
  {"log_type": "prediction", "schema_version": 1, "ts": "2026-11-23T16:20:15.123456Z",
   "request_id": "...", "model_name": "...", "model_version": "3", "runtime": "onnx",
   "n_records": 1, "latency_ms": 0.41,
   "inputs": [{"sex": "female", ..., "age": 34.0, ...}],
   "outputs": [{"probability": 0.1234, "label": 0}]}
A request the service fails to answer (5xx) gets an error line instead, for the error-rate alert:
  {"log_type": "error", "schema_version": 1, "ts": "...", "request_id": "...", "model_name": "...",
   "model_version": "3", "route": "/predict", "status": 503, "error": "not ready: ..."}
Each line is written with a single write() so lines from concurrent requests never interleave
within one process.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import orjson

LOG_TYPE = "prediction"
ERROR_LOG_TYPE = "error"
SCHEMA_VERSION = 1


def prediction_line(*, request_id: str, model_name: str, model_version: str, runtime: str,
                    inputs: list[dict], outputs: list[dict], latency_ms: float) -> bytes:
    return orjson.dumps({
        "log_type": LOG_TYPE,
        "schema_version": SCHEMA_VERSION,
        "ts": _now(),
        "request_id": request_id,
        "model_name": model_name,
        "model_version": model_version,
        "runtime": runtime,
        "n_records": len(inputs),
        "latency_ms": round(latency_ms, 3),
        "inputs": inputs,
        "outputs": outputs,
    }) + b"\n"


def error_line(*, request_id: str | None, model_name: str, model_version: str, route: str, status: int,
               error: str) -> bytes:
    return orjson.dumps({
        "log_type": ERROR_LOG_TYPE,
        "schema_version": SCHEMA_VERSION,
        "ts": _now(),
        "request_id": request_id,
        "model_name": model_name,
        "model_version": model_version,
        "route": route,
        "status": status,
        "error": error[:500],
    }) + b"\n"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_line(line: bytes, fd: int = 1) -> None:
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view):]
