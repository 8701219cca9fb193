"""JSON lines on stdout: what Log Analytics ingests and the drift job reads.

Format (schema version 1), one object per line:
  {"log_type": "prediction", "schema_version": 1, "ts": "2026-11-23T16:20:15.123456Z",
   "request_id": "...", "model_name": "...", "model_version": "3", "runtime": "onnx", "protocol": "predict",
   "n_records": 1, "latency_ms": 0.41, "part": 1, "parts": 1, "first_record": 0,
   "inputs": [{"colour": "red", ..., "size": 34.0, ...}],
   "outputs": [{"probability": 0.1234, "label": 0}]}
`outputs` holds /predict's outputs by the model's task (scoring/core.py Outputs), the fields the drift job reads:
  binary {"probability", "label"}, multiclass {"label", "probabilities": {"<class>": p}}, regression {"prediction"}.

No line is longer than MAX_LINE_BYTES (PIPE_BUF, 4,096 bytes on Linux, newline included), and each line is one
write(): the workers of a service share one stdout pipe, and only a write of at most PIPE_BUF bytes to a pipe is
atomic (pipe(7)); a longer one, while the reader is slow, is split and another worker's bytes land inside it. (Container
runtimes also split stdout lines over 16 KiB into fragments that Log Analytics stores as separate rows.) A larger
request is written as `parts` lines sharing its request id, numbered `part` 1..parts; each carries
the whole header and its own slice of inputs/outputs starting at record `first_record`, so each
part is self-describing and usable on its own, and the reader can reassemble the request.

A request the service fails to answer (5xx) gets an error line instead, for the error-rate alert:
  {"log_type": "error", "schema_version": 1, "ts": "...", "request_id": "...", "model_name": "...",
   "model_version": "3", "route": "/predict", "status": 503, "error": "not ready: ..."}
Each line is written with its own single write(), so lines from concurrent requests and workers never
interleave.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

LOG_TYPE = "prediction"
ERROR_LOG_TYPE = "error"
SCHEMA_VERSION = 1
MAX_LINE_BYTES = select.PIPE_BUF
MAX_LOGGED_STRING = 256  # a longer string value is cut in the log (never in scoring): one record must fit a line


def prediction_lines(**request: Any) -> bytes:
    """prediction_parts' lines joined (the arguments are the same)."""
    return b"".join(prediction_parts(**request))


def prediction_parts(*, request_id: str, model_name: str, model_version: str, runtime: str, protocol: str,
                     inputs: list, outputs: list[dict], latency_ms: float) -> list[bytes]:
    """The request's log line, or its parts when one line would exceed MAX_LINE_BYTES (each ending in \\n; kept
    apart: write_lines writes each as it is, no copy of the whole request joined and split again).
    The bytes are those of orjson.dumps({**header, "part", "parts", "first_record", "inputs", "outputs"}), but
    each record is serialised once (a few more to size the lines), whether the request makes one line or several.
    `inputs` are dicts or msgspec Structs (scoring/fastpath.py's typed records: encoded by msgspec, no dict per record)."""
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
    head = orjson.dumps(header)
    encode = orjson.dumps if type(inputs[0]) is dict else _encode
    budget = MAX_LINE_BYTES - PART_KEYS_BYTES - len(head)
    records, results = encode(inputs[:SAMPLE_RECORDS]), orjson.dumps(outputs[:SAMPLE_RECORDS])
    sample = min(len(inputs), SAMPLE_RECORDS)
    per_record = (len(records) + len(results)) / sample
    if sample < len(inputs) and per_record * len(inputs) <= budget * 0.9:  # one line, most likely: checked below
        records, results = encode(inputs), orjson.dumps(outputs)
    if per_record * len(inputs) <= budget * 0.9 and len(records) + len(results) <= budget:
        return [_line(head, 1, 1, 0, records, results)]  # the common case: one line
    parts = _parts(inputs, outputs, encode, budget, max(1, int(budget // (per_record * 1.05))))
    if parts is None:
        return _split(head, inputs, outputs, budget)  # a record too big for a line (huge strings): cut, slowly
    return _lines(head, parts)


# What _line adds to the header's bytes, the numbers aside: "part", "parts", "first_record", the keys and "\n".
PART_KEYS_BYTES = len(b',"part":,"parts":,"first_record":,"inputs":,"outputs":}\n') + 3 * 20
SAMPLE_RECORDS = 4  # records encoded to estimate a record's bytes (and so how many fit a line)


def _line(head: bytes, part: int, parts: int, first: int, records: bytes, results: bytes) -> bytes:
    """orjson.dumps({**header, "part": part, ...}) + b"\\n", from the header's and the arrays' bytes."""
    return b"%s,\"part\":%d,\"parts\":%d,\"first_record\":%d,\"inputs\":%s,\"outputs\":%s}\n" % (
        head[:-1], part, parts, first, records, results)


def _parts(inputs: list, outputs: list[dict], encode: Callable[[Any], bytes], budget: int,
           size: int) -> list[tuple[int, bytes, bytes]] | None:
    """(first record, its slice's inputs and outputs as JSON) per line: `size` records at a time, each slice encoded on
    its own (no encoding of the whole request to cut afterwards); a slice over the budget (records larger than the
    estimate) is cut in proportion until it fits, and each slice's bytes per record size the next. None when a single
    record does not fit a line."""
    parts, first, count = [], 0, len(inputs)
    while first < count:
        end = min(count, first + size)
        while True:
            records, results = encode(inputs[first:end]), orjson.dumps(outputs[first:end])
            used = len(records) + len(results)
            if used <= budget:
                break
            if end - first == 1:
                return None
            end = first + max(1, min(end - first - 1, int((end - first) * budget / used)))
        parts.append((first, records, results))
        size = max(1, int((end - first) * budget / used * 0.97))  # the next slice sized by this one's bytes per record
        first = end
    return parts


_encode = msgspec.json.Encoder().encode  # compact like orjson, Structs as objects in field order (orjson: dicts, faster)


def _split(head: bytes, inputs: list, outputs: list[dict], budget: int) -> list[bytes]:
    """The lines of a request with a record too big for a line (huge strings): its long strings cut for the log (a
    copy: never the caller's records), then as many records per line as fit (one per line if even a cut one does
    not fit: that line is longer, rather than the record lost)."""
    records = [{key: _cut(value) for key, value in record.items()} for record in msgspec.to_builtins(inputs)]
    parts = _parts(records, outputs, orjson.dumps, budget, 1) or [
        (index, orjson.dumps([record]), orjson.dumps([output]))
        for index, (record, output) in enumerate(zip(records, outputs, strict=True))]
    return _lines(head, parts)


def _lines(head: bytes, parts: list[tuple[int, bytes, bytes]]) -> list[bytes]:
    return [_line(head, number, len(parts), first, records, results)
            for number, (first, records, results) in enumerate(parts, start=1)]


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


_second: list = [-1, ""]  # the last whole second formatted, and its text up to the seconds


def _now() -> str:
    """datetime.now(UTC).isoformat(timespec="microseconds") with a Z, formatting the date once per second."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


def write_line(line: bytes, fd: int = 1) -> None:
    """One line (an error line, or a few that fit PIPE_BUF together) in one write(): see write_lines."""
    write_lines((line,), fd)


def write_lines(lines: Iterable[bytes], fd: int = 1) -> None:
    """Each line (at most PIPE_BUF bytes) in one write(): whole on a pipe shared by several workers. A loop only for
    a short write, which a pipe never makes of a write this size (a file or a terminal may)."""
    for line in lines:
        written = os.write(fd, line)
        if written < len(line):
            view = memoryview(line)[written:]
            while view:
                view = view[os.write(fd, view):]
