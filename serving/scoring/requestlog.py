"""JSON lines on stdout: what Log Analytics ingests and the drift job reads.

Format (schema version 2), one object per line:
  {"log_type": "prediction", "schema_version": 2, "ts": "2026-11-23T16:20:15.123456Z",
   "request_id": "...", "model_name": "...", "model_version": "3", "runtime": "onnx", "protocol": "predict",
   "n_records": 2, "latency_ms": 0.41, "part": 1, "parts": 1, "first_record": 0,
   "inputs": {"colour": ["red", null], ..., "size": [34.0, 12.5], ...},
   "ids": {"order_id": ["A-17", null], "account_id": null},
   "outputs": [{"probability": 0.1234, "label": 0}, {"probability": 0.8, "label": 1}]}
`inputs` holds the line's records by column (the signature's columns the log keeps, each a list of one value per
record): a column's name once per line instead of once per record, under half of version 1's bytes (44 % for the
example model; its `inputs` were a list of records), and so of the lines written and ingested. `outputs` stays a list
per record (the KQL expands it): /predict's outputs by the model's task (scoring/core.py Outputs), the fields the drift job reads:
  binary {"probability", "label"}, multiclass {"label", "probabilities": {"<class>": p}}, regression {"prediction"}.
`ids` is there whenever the model's contract names ids (scoring/ids.py; absent otherwise): by id column, the line's
records' ids sliced as `inputs` is (a value or null per record), or a single null for an id no record of the request
had (not a null per record: most clients send none). What joins labels to predictions; personal ids as
scoring/privacy.py says (kept, left out, or `<id>#hmac`). Readers take both versions (monitoring/logformat.py).

No line is longer than MAX_LINE_BYTES (16 KiB, newline included): container runtimes (containerd, CRI-O) split
a longer stdout line into fragments that Log Analytics stores as separate rows. A larger request is written as `parts`
lines sharing its request id, numbered `part` 1..parts; each carries the whole header and its own slice of every
column and of the outputs, starting at record `first_record`, so each part is self-describing and usable on its own,
and the reader can reassemble the request.

All of a request's lines go out in one write(), under load with those of the other requests its worker took in the
same turn of the event loop (Turn, below: they are answered after it). The workers of a service share one stdout
pipe, and a pipe write is atomic only up to PIPE_BUF (4,096 bytes, pipe(7)): a longer one, while the reader is slow,
is split and another worker's bytes land inside it, a short atomic write too. So every write is made holding an
exclusive flock() (about 3 µs a write: lock and unlock) on a lock file named after the stream (its device and inode,
in the temporary directory), which every process writing to that pipe opens (a forked worker opens its own: an flock
belongs to the open file description): one writer at a time, whatever started the workers, and the kernel lets go of
a lock whose holder dies. A process that writes alone (scoring/serve.py with one worker: sole_writer) takes none.
Where no lock file can be made (no writable temporary directory), lines are at most PIPE_BUF bytes, each its own
write(): whole without a lock, at the cost of more lines and writes (should one worker fail to open the file that
another opened, its short lines could still land inside the other's longer writes).

A request the service fails to answer (5xx) gets an error line instead, for the error-rate alert:
  {"log_type": "error", "schema_version": 2, "ts": "...", "request_id": "...", "model_name": "...",
   "model_version": "3", "route": "/predict", "status": 503, "error": "not ready: ..."}
An error line goes out the same way.

Why one module: how long a line may be is decided by how it is written (MAX_LINE_BYTES under the lock or writing
alone, PIPE_BUF without), and the lines are cut to that length; the format and the writing are read together.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import select
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

LOG_TYPE = "prediction"
ERROR_LOG_TYPE = "error"
SCHEMA_VERSION = 2
MAX_LINE_BYTES = 16 * 1024  # container runtimes split a longer stdout line
ATOMIC_BYTES = select.PIPE_BUF  # a longer write to a pipe may be interleaved with another process's (pipe(7))
MAX_LOGGED_STRING = 256  # a longer string value is cut in the log (never in scoring): one record must fit a line

Columns = Mapping[str, Sequence[Any]]  # column name -> one value per record, every column as long
Ids = Mapping[str, Sequence[Any] | None]  # id column -> one value per record, or None: no record had one


def prediction_lines(**request: Any) -> bytes:
    """prediction_parts' lines joined (the arguments are the same)."""
    return b"".join(prediction_parts(**request))


def prediction_parts(**request: Any) -> list[bytes]:
    """The request's log line, or its parts (prediction_log's lines; the arguments are the same)."""
    return prediction_log(**request)[0]


def prediction_log(*, request_id: str, model_name: str, model_version: str, runtime: str, protocol: str,
                   inputs: Columns, outputs: list[dict], latency_ms: float,
                   ids: Ids | bytes | None = None, max_line: int = MAX_LINE_BYTES) -> tuple[list[bytes], bytes]:
    """(the request's log line, or its parts when one line would exceed `max_line` bytes, each ending in \\n and kept
    apart: Stream.write writes them whole; orjson.dumps(outputs), from the lines' own slices: what /predict answers,
    not encoded twice). `inputs` are the logged columns, in the order the line lists them (lists or tuples of JSON
    values); `outputs` one dict per record; `ids` the logged ids (a column None when no record had one), or their JSON
    object when it is every part's (no record had one: encoded once, not per part), None when the contract names none
    (no `ids` key).
    The bytes are those of orjson.dumps({**header, "part", "parts", "first_record", "inputs", "ids", "outputs"}),
    each part's slice of the columns encoded once (a few records more to size the lines)."""
    count = len(outputs)
    head = b"%s%s\",\"request_id\":%s%s%d,\"latency_ms\":%s}" % (
        HEAD_START, _now().encode(), orjson.dumps(request_id), _head_middle(model_name, model_version, runtime, protocol),
        count, orjson.dumps(round(latency_ms, 3)))
    budget = max_line - PART_KEYS_BYTES - len(head)
    sampled = count > SAMPLE_RECORDS
    if sampled:  # a sample's bytes say whether the whole most likely fits a line, or how many records a line takes
        names = _names_bytes(inputs, ids)
        sample = len(_encode(inputs, ids, 0, SAMPLE_RECORDS)) + len(orjson.dumps(outputs[:SAMPLE_RECORDS]))
        per_record = (sample - names) / SAMPLE_RECORDS
    if not sampled or names + per_record * count <= budget * 0.9:  # a few records, or most likely one line
        records, results = _whole(inputs, ids), orjson.dumps(outputs)
        if len(records) + len(results) <= budget:
            return [_line(head, 1, 1, 0, records, results)], results  # the common case: one line
        names = _names_bytes(inputs, ids)
        per_record = (len(records) + len(results) - names) / count
    parts = _parts(inputs, ids, outputs, budget, _even(count, int((budget - names) // (per_record * 1.05))))
    if parts is None:  # a record too big for a line (huge strings): cut, slowly
        parts = _split(inputs, ids, outputs, budget)
    return _lines(head, parts), _joined(parts)


# The header's bytes are orjson.dumps of {"log_type", "schema_version", "ts", "request_id", "model_name",
# "model_version", "runtime", "protocol", "n_records", "latency_ms"} (tests/serving/test_requestlog.py compares), the
# keys and the service's constants encoded once.
HEAD_START = b'{"log_type":"%s","schema_version":%d,"ts":"' % (LOG_TYPE.encode(), SCHEMA_VERSION)


@functools.cache
def _head_middle(model_name: str, model_version: str, runtime: str, protocol: str) -> bytes:
    """The header's bytes from after the request id to the record count: the same for every line of a route."""
    return b',"model_name":%s,"model_version":%s,"runtime":%s,"protocol":%s,"n_records":' % tuple(
        map(orjson.dumps, (model_name, model_version, runtime, protocol)))


# What _line adds to the header's bytes, the numbers aside: "part", "parts", "first_record", the keys and "\n".
PART_KEYS_BYTES = len(b',"part":,"parts":,"first_record":,"inputs":,"outputs":}\n') + 3 * 20
SAMPLE_RECORDS = 4  # records encoded to estimate a record's bytes (and so how many fit a line)


def _names_bytes(inputs: Columns, ids: Ids | bytes | None) -> int:
    """What a line's `inputs` (and `ids`) cost besides the values: each column's quoted name, colon, brackets and
    commas."""
    names = sum(map(len, inputs)) + 6 * len(inputs) + 2  # map in C: a generator per call cost a microsecond
    if ids is None:
        return names
    if isinstance(ids, bytes):
        return names + len(ids) + 7
    return names + sum(map(len, ids)) + 6 * len(ids) + 9


def _encode(inputs: Columns, ids: Ids | bytes | None, first: int, end: int) -> bytes:
    """The columns' records first..end-1 as JSON: {"<column>": [values], ...}, then `,"ids":{...}` the same way."""
    records = orjson.dumps({name: values[first:end] for name, values in inputs.items()})
    if ids is None:
        return records
    if isinstance(ids, bytes):
        return b'%s,"ids":%s' % (records, ids)
    return b'%s,"ids":%s' % (records, orjson.dumps(
        {name: None if values is None else values[first:end] for name, values in ids.items()}))


def _whole(inputs: Columns, ids: Ids | bytes | None) -> bytes:
    """_encode of every record, without slicing."""
    if ids is None:
        return orjson.dumps(inputs)
    return b'%s,"ids":%s' % (orjson.dumps(inputs), ids if isinstance(ids, bytes) else orjson.dumps(ids))


def _line(head: bytes, part: int, parts: int, first: int, records: bytes, results: bytes) -> bytes:
    """orjson.dumps({**header, "part": part, ...}) + b"\\n", from the header's and the inputs' (and ids') and outputs'
    bytes."""
    return b"%s,\"part\":%d,\"parts\":%d,\"first_record\":%d,\"inputs\":%s,\"outputs\":%s}\n" % (
        head[:-1], part, parts, first, records, results)


def _parts(inputs: Columns, ids: Ids | bytes | None, outputs: list[dict], budget: int,
           size: int) -> list[tuple[int, bytes, bytes]] | None:
    """(first record, its slice's inputs and outputs as JSON) per line: `size` records at a time, each slice encoded on
    its own (no encoding of the whole request to cut afterwards); a slice over the budget (records larger than the
    estimate) is cut in proportion until it fits, and each slice's bytes per record size the next. None when a single
    record does not fit a line."""
    parts, first, count = [], 0, len(outputs)
    while first < count:
        end = min(count, first + size)
        while True:
            records, results = _encode(inputs, ids, first, end), orjson.dumps(outputs[first:end])
            used = len(records) + len(results)
            if used <= budget:
                break
            if end - first == 1:
                return None
            end = first + max(1, min(end - first - 1, int((end - first) * budget / used)))
        parts.append((first, records, results))
        first = end
        size = _even(count - first, int((end - parts[-1][0]) * budget / used * 0.97))  # by this slice's bytes a record
    return parts


def _even(count: int, most: int) -> int:
    """Records per line for `count` records at most `most` a line, spread evenly over as few lines (no short last
    line): 100 records at most 15 a line make 7 lines of 15 or 14, not 6 of 15 and one of 10."""
    most = max(1, most)
    lines = -(-count // most)
    return -(-count // lines) if lines else most


def _split(inputs: Columns, ids: Ids | bytes | None, outputs: list[dict], budget: int) -> list[tuple[int, bytes, bytes]]:
    """The parts of a request with a record too big for a line (huge strings): its long strings cut for the log (a
    copy: never the caller's columns), then as many records per line as fit (one per line if even a cut one does
    not fit: that line is longer, rather than the record lost)."""
    cut = {name: [_cut(value) for value in values] for name, values in inputs.items()}
    return _parts(cut, ids, outputs, budget, 1) or [
        (index, _encode(cut, ids, index, index + 1), orjson.dumps(outputs[index:index + 1]))
        for index in range(len(outputs))]


def _lines(head: bytes, parts: list[tuple[int, bytes, bytes]]) -> list[bytes]:
    return [_line(head, number, len(parts), first, records, results)
            for number, (first, records, results) in enumerate(parts, start=1)]


def _joined(parts: list[tuple[int, bytes, bytes]]) -> bytes:
    """The whole request's outputs as JSON, from its parts' slices (each a non-empty JSON list)."""
    if len(parts) == 1:
        return parts[0][2]
    return b"[%s]" % b",".join([results[1:-1] for _, _, results in parts])


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


_sole_writer = False  # set by scoring/serve.py when it serves in one process: no other process writes to its stdout


def sole_writer() -> None:
    """This process is the only one writing to its stdout (scoring/serve.py with one worker: uvicorn serves in the
    process it started): its writes need no lock, which costs about 3 µs a write (flock and unlock), 2 % of a
    single-record request. Streams made after this call take no lock file; after a fork, child and parent take one."""
    global _sole_writer
    _sole_writer = True


class Stream:
    """Where the log goes (a file descriptor: stdout), and how long its lines may be: MAX_LINE_BYTES when the lock
    file serialises the writes or this process writes alone, ATOMIC_BYTES when no lock file could be made (see the
    module's docstring)."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self._open()
        _opened.add(self)

    def _open(self) -> None:
        self.alone = _sole_writer
        self.lock = None if self.alone else _lock_file(self.fd)
        self.max_line = MAX_LINE_BYTES if self.alone or self.lock is not None else ATOMIC_BYTES

    def reopen(self) -> None:
        """A lock of the process's own, in a forked child (workers forked after the app was made: gunicorn's
        --preload). An flock belongs to the open file description, which fork shares, so a parent's and a child's
        writes would not exclude each other; and a process that wrote alone has company after a fork."""
        if self.lock is not None:
            os.close(self.lock)
        self._open()

    def write(self, lines: Sequence[bytes]) -> None:
        """The lines (each at most max_line bytes) in one write(), whole among every process writing to the stream."""
        if self.lock is None and not self.alone:
            for line in lines:  # each at most ATOMIC_BYTES: each whole
                _write_all(self.fd, line)
            return
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        if self.lock is None:  # alone
            _write_all(self.fd, data)
        else:  # every write, a short one too: an atomic write would land inside another worker's longer one
            fcntl.flock(self.lock, fcntl.LOCK_EX)
            try:
                _write_all(self.fd, data)
            finally:
                fcntl.flock(self.lock, fcntl.LOCK_UN)


def _lock_file(fd: int) -> int | None:
    """The descriptor of the stream's lock file, the same file for every process writing to the stream (named by its
    device and inode), or None when there is no stream or no writable temporary directory."""
    try:
        status = os.fstat(fd)
        path = os.path.join(tempfile.gettempdir(), f"scoring-request-log-{status.st_dev}-{status.st_ino}.lock")
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:  # gettempdir's FileNotFoundError too: no writable directory
        return None


_streams: dict[int, Stream] = {}
_opened: weakref.WeakSet[Stream] = weakref.WeakSet()  # every Stream of the process, reopened in a forked child


def _after_fork(child: bool) -> None:
    """After a fork both processes have company: the child takes a lock of its own for every stream, the parent one
    for each stream that wrote alone (one that held a lock keeps it)."""
    global _sole_writer
    _sole_writer = False
    for opened in list(_opened):
        if child or opened.alone:
            opened.reopen()


os.register_at_fork(after_in_child=functools.partial(_after_fork, True),
                    after_in_parent=functools.partial(_after_fork, False))


def stream(fd: int = 1) -> Stream:
    """This process's Stream for `fd` (its lock file opened once)."""
    found = _streams.get(fd)
    if found is None:
        found = _streams[fd] = Stream(fd)
    return found


class Turn:
    """A Stream's writes gathered per turn of the event loop, when the worker is busy: their lines go out in one
    write() queued behind them, and they are answered after it (scoring/front.py awaits `written`): logged before
    answered, still.

    Why: the reader of stdout (the container runtime's shim) sleeps between writes, and waking it costs the writer
    about 8 µs a write(), as much as building a one-record line. Under load a worker's requests share one write and
    one wake-up. A request alone (a light load) is not made to wait a turn for company that does not come: its lines
    go out at once.
    Busy is read from the turns that write, each time: a turn with more than one request writing, or one right after
    another turn that wrote (the loop went from one request to the next without waiting for the network). Both
    matter: gathering makes answers leave together, so the next requests come together (several a turn); writing at
    once spreads them out, one a turn, every turn. Reading only the first, a worker at 8 connections could stay in
    whichever state it started in. A turn that writes after a quiet one, with a single request, switches back to
    writing at once (that request's own lines are still gathered when the turns before the quiet one were busy).
    Watching a turn costs a callback, which shares a pass of the loop with what uvicorn schedules after an answer,
    and the turn after it one more pass (0.7 µs). Not read from the thread's CPU time against the
    clock: a worker sharing its core (two workers on one CPU, a throttled container) would never look busy.
    Large requests' lines are gathered too: fewer, larger writes cost less CPU (100 records at 8 connections: 614 µs a
    request against 645 µs with them written at once), and a slow reader holds the worker as long either way (the
    same bytes to take).
    Outside a running event loop (a script, a test calling a handler), a write goes out at once."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.lines: list[bytes] = []
        self.written: asyncio.Future | None = None  # the gathered write queued this turn, done once the lines are out
        self.writers = 0  # requests that wrote this turn (gathered or at once); end_turn, queued by the first, resets it
        self.followed = False  # whether this turn's writes came right after a turn that wrote
        self.after_write = False  # set by end_turn for the turn after one that wrote, until that turn ends
        self.gathering = False  # whether the last turn that wrote was busy

    @property
    def max_line(self) -> int:
        return self.stream.max_line

    def write(self, lines: Sequence[bytes]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.stream.write(lines)
            return
        self.writers += 1
        if self.writers == 1:  # queued before any write, which may raise: the turn is read whatever happens
            self.followed = self.after_write
            loop.call_soon(self.end_turn)
        if self.written is not None:  # joins this turn's write
            self.lines += lines
        elif self.gathering:
            self.lines, self.written = list(lines), loop.create_future()
            loop.call_soon(self.flush)
        else:
            self.stream.write(lines)

    def end_turn(self) -> None:
        """Runs in the turn after one that wrote: was that turn busy? Writes of this turn see after_write."""
        self.gathering = self.writers > 1 or self.followed
        self.writers, self.after_write = 0, True
        asyncio.get_running_loop().call_soon(self.end_after)

    def end_after(self) -> None:
        self.after_write = False

    def flush(self) -> None:
        lines, written = self.lines, self.written
        assert written is not None
        self.lines, self.written = [], None
        try:
            self.stream.write(lines)
        except Exception as error:  # a broken stdout: each request waiting answers 500 (scoring/front.py)
            written.set_exception(error)
            written.exception()  # read here: with no request waiting (each failed or was cancelled), asyncio need not
            return  # report it as never retrieved
        written.set_result(None)


def write_line(line: bytes, fd: int = 1) -> None:
    """One line (an error line) in one write(), as Stream.write makes it."""
    stream(fd).write((line,))


def _write_all(fd: int, data: bytes) -> None:
    """A loop only for a short write, which a blocking pipe never makes (a file or a terminal may)."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]
