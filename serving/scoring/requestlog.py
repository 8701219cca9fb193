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
from datetime import UTC, datetime

import msgspec
import orjson

LOG_TYPE = "prediction"
ERROR_LOG_TYPE = "error"
SCHEMA_VERSION = 1
MAX_LINE_BYTES = select.PIPE_BUF
# Room for what a part adds to the header: "part", "parts", "first_record", the slices' keys and brackets.
HEADER_RESERVE = 256
MAX_LOGGED_STRING = 256  # a longer string value is cut in the log (never in scoring): one record must fit a line


def prediction_lines(*, request_id: str, model_name: str, model_version: str, runtime: str, protocol: str,
                     inputs: list, outputs: list[dict], latency_ms: float) -> bytes:
    """The request's log line, or its parts when one line would exceed MAX_LINE_BYTES (joined, each ending in \\n).
    The bytes are those of orjson.dumps({**header, "part", "parts", "first_record", "inputs", "outputs"}), but
    inputs and outputs are serialised once, whether the request makes one line or several. `inputs` are dicts or
    msgspec Structs (scoring/fastpath.py's typed records: encoded by msgspec, no dict per record)."""
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
    records, results = (orjson.dumps if type(inputs[0]) is dict else _encode)(inputs), orjson.dumps(outputs)
    if len(head) + len(records) + len(results) + PART_KEYS_BYTES <= MAX_LINE_BYTES:
        return _line(head, 1, 1, 0, records, results)  # the common case
    budget = MAX_LINE_BYTES - HEADER_RESERVE - len(head)
    pieces, answers = _objects(records), _objects(results)
    if len(pieces) != len(inputs) or len(answers) != len(outputs):
        return _split(header, inputs, outputs)  # a string ending in `},{`: see SEPARATOR
    costs = [len(a) + len(b) + 2 * OBJECT_OVERHEAD + 2 for a, b in zip(pieces, answers, strict=True)]  # as _split's
    if max(costs) > budget:
        return _split(header, inputs, outputs)  # a record too big for a line (huge strings): cut, slowly
    return b"".join(_line(head, number, len(slices), lo, _array(pieces[lo:hi]), _array(answers[lo:hi]))
                    for slices in [_slices(costs, budget)] for number, (lo, hi) in enumerate(slices, start=1))


# What _line adds to the header's bytes, the numbers aside: "part", "parts", "first_record", the keys and "\n".
PART_KEYS_BYTES = len(b',"part":,"parts":,"first_record":,"inputs":,"outputs":}\n') + 3 * 20
# Between two objects of a JSON array of non-empty flat objects: `},{"`. Inside an object it occurs only in a
# string ending in `},{`; then the split yields more pieces than objects and _split's way is taken instead.
SEPARATOR = b'},{"'
OBJECT_OVERHEAD = len(b'{"}')  # what _objects strips from each object's bytes


def _line(head: bytes, part: int, parts: int, first: int, records: bytes, results: bytes) -> bytes:
    """orjson.dumps({**header, "part": part, ...}) + b"\\n", from the header's and the arrays' bytes."""
    return b"%s,\"part\":%d,\"parts\":%d,\"first_record\":%d,\"inputs\":%s,\"outputs\":%s}\n" % (
        head[:-1], part, parts, first, records, results)


def _objects(array: bytes) -> list[bytes]:
    """A JSON array of flat objects as each object's bytes without its leading `{"` and closing `}`."""
    return array[3:-2].split(SEPARATOR) if len(array) > 2 else []


def _array(pieces: list[bytes]) -> bytes:
    return b'[{"' + SEPARATOR.join(pieces) + b"}]"


def _slices(costs: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive records per line, each line filled until the next record would exceed the budget."""
    slices: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, cost in enumerate(costs):
        if size + cost > budget and index > start:
            slices.append((start, index))
            start, size = index, 0
        size += cost
    slices.append((start, len(costs)))
    return slices


_encode = msgspec.json.Encoder().encode  # compact like orjson, Structs as objects in field order (orjson: dicts, faster)


def _split(header: dict, inputs: list, outputs: list[dict]) -> bytes:
    budget = MAX_LINE_BYTES - HEADER_RESERVE - len(orjson.dumps(header))
    inputs = msgspec.to_builtins(inputs)  # dicts (a new list: a record cut for the log never touches the caller's)
    costs = []
    for index, (record, output) in enumerate(zip(inputs, outputs, strict=True)):
        cost = len(orjson.dumps(record)) + len(orjson.dumps(output)) + 2  # two commas
        if cost > budget:  # a record too big for any line: only possible with huge strings
            inputs[index] = record = {k: _cut(v) for k, v in record.items()}
            cost = len(orjson.dumps(record)) + len(orjson.dumps(output)) + 2
        costs.append(cost)
    slices = _slices(costs, budget)
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


_second: list = [-1, ""]  # the last whole second formatted, and its text up to the seconds


def _now() -> str:
    """datetime.now(UTC).isoformat(timespec="microseconds") with a Z, formatting the date once per second."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


def write_line(lines: bytes, fd: int = 1) -> None:
    """Each line (at most PIPE_BUF bytes) in one write(): whole on a pipe shared by several workers. A loop only for
    a short write, which a pipe never makes of a write this size (a file or a terminal may)."""
    start = 0
    while start < len(lines):
        end = lines.find(b"\n", start) + 1 or len(lines)
        view = memoryview(lines)[start:end]
        while view:
            view = view[os.write(fd, view):]
        start = end
