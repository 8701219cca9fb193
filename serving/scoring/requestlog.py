"""JSON lines on stdout: what Log Analytics ingests and the drift job reads.

Format (schema version 1), one object per line:
  {"log_type": "prediction", "schema_version": 1, "ts": "2026-11-23T16:20:15.123456Z",
   "request_id": "...", "model_name": "...", "model_version": "3", "runtime": "onnx", "protocol": "predict",
   "n_records": 1, "latency_ms": 0.41, "part": 1, "parts": 1, "first_record": 0,
   "inputs": [{"sex": "female", ..., "age": 34.0, ...}],
   "outputs": [{"probability": 0.1234, "label": 0}]}

No line is longer than MAX_LINE_BYTES (16 KiB, newline included): container runtimes (containerd,
CRI-O) split longer stdout lines into fragments that Log Analytics stores as separate rows. A larger
request is written as `parts` lines sharing its request id, numbered `part` 1..parts; each carries
the whole header and its own slice of inputs/outputs starting at record `first_record`, so each
part is self-describing and usable on its own, and the reader can reassemble the request.

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
MAX_LINE_BYTES = 16 * 1024
# Room for what a part adds to the header: "part", "parts", "first_record", the slices' keys and brackets.
HEADER_RESERVE = 256
MAX_LOGGED_STRING = 256  # a longer string value is cut in the log (never in scoring): one record must fit a line


def prediction_lines(*, request_id: str, model_name: str, model_version: str, runtime: str, protocol: str,
                     inputs: list[dict], outputs: list[dict], latency_ms: float) -> bytes:
    """The request's log line, or its parts when one line would exceed MAX_LINE_BYTES (joined, each ending in \\n)."""
    header = {
        "log_type": LOG_TYPE,
        "schema_version": SCHEMA_VERSION,
        "ts": _now(),
        "request_id": request_id,
        "model_name": model_name,
        "model_version": model_version,
        "runtime": runtime,
        "protocol": protocol,
        "n_records": len(inputs),
        "latency_ms": round(latency_ms, 3),
    }
    line = orjson.dumps({**header, "part": 1, "parts": 1, "first_record": 0, "inputs": inputs,
                         "outputs": outputs}) + b"\n"
    if len(line) <= MAX_LINE_BYTES:
        return line  # the common case: one serialisation, nothing else
    return _split(header, inputs, outputs)


def _split(header: dict, inputs: list[dict], outputs: list[dict]) -> bytes:
    budget = MAX_LINE_BYTES - HEADER_RESERVE - len(orjson.dumps(header))
    inputs = list(inputs)  # a record cut for the log is replaced in this copy, never in the caller's list
    slices: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, (record, output) in enumerate(zip(inputs, outputs, strict=True)):
        cost = len(orjson.dumps(record)) + len(orjson.dumps(output)) + 2  # two commas
        if cost > budget:  # a record too big for any line: only possible with huge strings
            inputs[index] = record = {k: _cut(v) for k, v in record.items()}
            cost = len(orjson.dumps(record)) + len(orjson.dumps(output)) + 2
        if size + cost > budget and index > start:
            slices.append((start, index))
            start, size = index, 0
        size += cost
    slices.append((start, len(inputs)))
    return b"".join(
        orjson.dumps({**header, "part": number, "parts": len(slices), "first_record": lo,
                      "inputs": inputs[lo:hi], "outputs": outputs[lo:hi]}) + b"\n"
        for number, (lo, hi) in enumerate(slices, start=1))


def _cut(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_LOGGED_STRING:
        return value[:MAX_LOGGED_STRING] + "…"
    return value


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
    """One write() per call (a loop only for short writes): the lines of one request stay together."""
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view):]
