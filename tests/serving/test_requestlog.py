"""The request log's split into lines the container runtime keeps whole, and the bulk metrics update."""

from __future__ import annotations

import fcntl
import json
import os
import random
import tempfile

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, Histogram

from monitoring import logformat
from serving.scoring import metrics, requestlog


def lines_for(records: list[dict], request_id: str = "r" * 128) -> list[bytes]:
    outputs = [{"probability": random.random(), "label": random.randint(0, 1)} for _ in records]
    columns = {name: tuple(record[name] for record in records) for name in records[0]}
    raw = requestlog.prediction_lines(request_id=request_id, model_name="my-model", model_version="12",
                                      runtime="onnx", protocol="mlflow", inputs=columns, outputs=outputs,
                                      latency_ms=1.5)
    return raw.splitlines(keepends=True)


def logged(lines: list[bytes]) -> list[dict]:
    """The records the lines hold, one dict each, in order."""
    parts = [json.loads(line) for line in lines]
    return [record for part in parts for record in logformat.records(part["inputs"], len(part["outputs"])) or []]


def test_a_small_request_is_one_line_and_a_large_one_parts_under_the_limit():
    rng = random.Random(3)
    records = [{"shape": rng.choice(["round", "square"]), "height": rng.uniform(18, 100), "note": "x" * rng.randint(0, 200)}
               for _ in range(3000)]
    [single] = lines_for(records[:5])
    assert json.loads(single)["parts"] == 1
    lines = lines_for(records)
    parts = [json.loads(line) for line in lines]
    assert max(len(line) for line in lines) <= requestlog.MAX_LINE_BYTES and len(lines) > 10
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert [p["part"] for p in parts] == list(range(1, len(parts) + 1)) and {p["parts"] for p in parts} == {len(parts)}
    assert logged(lines) == records and {p["n_records"] for p in parts} == {3000}
    assert all(list(p["inputs"]) == ["shape", "height", "note"] for p in parts)  # by column, each name once a line
    # Parts are filled (sized by the records before them, the last few spread evenly): not needlessly many lines.
    assert len(lines) <= sum(map(len, lines)) / (0.85 * requestlog.MAX_LINE_BYTES) + 1


def test_a_record_too_big_for_any_line_has_its_long_texts_cut_in_the_log():
    records = [{"shape": "round", "height": 30.0}, {"shape": "é" * 50_000, "height": 40.0}, {"shape": "square", "height": 50.0}]
    lines = lines_for(records)
    assert max(len(line) for line in lines) <= requestlog.MAX_LINE_BYTES
    found = logged(lines)
    assert found[1]["shape"] == "é" * requestlog.MAX_LOGGED_STRING + "…" and found[1]["height"] == 40.0
    assert found[0] == records[0] and found[2] == records[2]
    assert records[1]["shape"] == "é" * 50_000  # the caller's records (what was scored) are untouched


@pytest.mark.parametrize("count", [1, 2, 30, 100, 400])
def test_lines_are_the_bytes_of_one_dict_per_part(count):
    """Inputs and outputs are serialised once and the parts assembled from those bytes: the result must be the
    bytes orjson gives for each part's dict, strings that look like record boundaries included."""
    rng = random.Random(count)
    texts = ["round", "},{", 'a"},{"b', "é", "x" * 300]
    records = [{"shape": rng.choice(texts), "height": rng.choice([None, rng.uniform(0, 1e6), 1e-5])} for _ in range(count)]
    lines = lines_for(records, request_id='r"\\é')  # a request id JSON must escape
    for line in lines:
        part = json.loads(line)
        assert line == orjson.dumps(part) + b"\n"
        assert list(part) == ["log_type", "schema_version", "ts", "request_id", "model_name", "model_version", "runtime",
                              "protocol", "n_records", "latency_ms", "part", "parts", "first_record", "inputs", "outputs"]
        assert (part["log_type"], part["schema_version"], part["request_id"], part["model_name"], part["protocol"],
                part["n_records"], part["latency_ms"]) == ("prediction", 2, 'r"\\é', "my-model", "mlflow", count, 1.5)
    assert logged(lines) == records


@pytest.mark.parametrize(("count", "long_text"), [(1, 0), (30, 0), (400, 0), (3, 50_000), (2, 20_000)])
def test_the_outputs_json_given_with_the_lines_is_orjsons_whatever_the_split(count, long_text):
    """/predict answers the outputs as the log encoded them (not encoded twice): joined from the parts' slices, they
    must be exactly orjson.dumps(outputs), for one line, several, and the lines of records cut for the log."""
    rng = random.Random(count)
    outputs = [{"probability": rng.random(), "label": rng.choice([0, 1, "x},{y"])} for _ in range(count)]
    columns = {"note": tuple("é" * long_text if index == 1 else "short" for index in range(count)),
               "height": tuple(rng.uniform(0, 1e6) for _ in range(count))}
    lines, encoded = requestlog.prediction_log(request_id="r", model_name="m", model_version="1", runtime="onnx",
                                               protocol="predict", inputs=columns, outputs=outputs, latency_ms=1.0)
    assert encoded == orjson.dumps(outputs)
    assert [record for line in lines for record in json.loads(line)["outputs"]] == outputs
    assert (len(lines) > 1) == (count == 400 or long_text > 0)  # each case splits as meant


@pytest.mark.parametrize("count", [1, 3, 400])
def test_ids_are_sliced_with_the_records_of_each_part(count):
    """`ids` by id column, each part's slice beside its inputs (a whole request when it fits a line); an id no record
    had is one null a line; the bytes are still those of one dict per part, `ids` after `inputs`."""
    rng = random.Random(count)
    records = [{"shape": rng.choice(["round", "square"]), "height": rng.uniform(0, 100)} for _ in range(count)]
    order = [f"o-{i}" if i % 4 else None for i in range(count)]
    found = {"order": order, "account": None}
    raw = requestlog.prediction_lines(request_id="r", model_name="m", model_version="1", runtime="onnx",
                                      protocol="predict", inputs={n: [r[n] for r in records] for n in records[0]},
                                      outputs=[{"prediction": 1.0}] * count, latency_ms=1.0, ids=found)
    lines = raw.splitlines(keepends=True)
    assert (len(lines) > 1) == (count == 400) and max(len(line) for line in lines) <= requestlog.MAX_LINE_BYTES
    joined: list = []
    for line in lines:
        part = json.loads(line)
        assert line == orjson.dumps(part) + b"\n" and list(part)[-2:] == ["ids", "outputs"]
        assert part["ids"]["account"] is None
        size = len(part["outputs"])
        assert logformat.ids(part["ids"], size, ["order", "account"]) == {
            "order": order[part["first_record"]:part["first_record"] + size], "account": [None] * size}
        joined += part["ids"]["order"]
    assert joined == order and logged(lines) == records
    # A request without ids gives its ids' JSON once (ScoringPath): the same lines as from the columns of nulls.
    nulls = {"order": None, "account": None}
    by_columns, by_json = (requestlog.prediction_lines(
        request_id="r", model_name="m", model_version="1", runtime="onnx", protocol="predict",
        inputs={n: [r[n] for r in records] for n in records[0]}, outputs=[{"prediction": 1.0}] * count,
        latency_ms=1.0, ids=given).splitlines() for given in (nulls, orjson.dumps(nulls)))
    assert [line.split(b',"request_id"')[1] for line in by_json] == [line.split(b',"request_id"')[1] for line in
                                                                      by_columns]  # all but the time
    assert all(json.loads(line)["ids"] == nulls for line in by_json)
    without = requestlog.prediction_lines(request_id="r", model_name="m", model_version="1", runtime="onnx",
                                          protocol="predict", inputs={"shape": ["round"]}, outputs=[{"prediction": 1.0}],
                                          latency_ms=1.0)
    assert "ids" not in json.loads(without)  # a contract without ids: no key


def test_a_stream_writes_a_requests_lines_at_once_under_its_lock_or_each_whole_without_one(tmp_path, monkeypatch):
    """With a lock file (one per stream: every process writing to the same pipe finds the same one), lines of up to
    16 KiB go out in one write; without a writable temporary directory, lines are at most PIPE_BUF, each whole."""
    rng = random.Random(5)
    records = [{"shape": rng.choice(["round", "square"]), "height": rng.uniform(0, 100)} for _ in range(1500)]
    columns = {name: [record[name] for record in records] for name in records[0]}
    read_end, write_end = os.pipe()
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        locked, again = requestlog.Stream(write_end), requestlog.Stream(write_end)
        assert locked.max_line == requestlog.MAX_LINE_BYTES and os.path.samestat(
            os.fstat(locked.lock), os.fstat(again.lock))  # the same file for every writer of the stream
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
        unlocked = requestlog.Stream(write_end)
        assert unlocked.lock is None and unlocked.max_line == requestlog.ATOMIC_BYTES
        for stream in (locked, unlocked):
            writes: list[int] = []

            def write(fd: int, data: bytes, writes: list[int] = writes) -> int:
                writes.append(len(data))
                return len(data)
            monkeypatch.setattr(requestlog.os, "write", write)
            lines = requestlog.prediction_parts(request_id="r", model_name="m", model_version="1", runtime="onnx",
                                                protocol="predict", inputs=columns, outputs=[{"prediction": 1.0}] * 1500,
                                                latency_ms=1.0, max_line=stream.max_line)
            stream.write(lines)
            monkeypatch.undo()
            assert max(map(len, lines)) <= stream.max_line and logged(lines) == records
            assert writes == ([sum(map(len, lines))] if stream is locked else list(map(len, lines)))
        assert len(lines) > 3 * len(requestlog.prediction_parts(
            request_id="r", model_name="m", model_version="1", runtime="onnx", protocol="predict", inputs=columns,
            outputs=[{"prediction": 1.0}] * 1500, latency_ms=1.0))  # PIPE_BUF lines: over three times as many
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_forked_writer_takes_a_lock_of_its_own(tmp_path, monkeypatch):
    """Workers forked after the app was made (gunicorn's --preload) inherit its Stream: each must hold a lock of its
    own, or the parent's and the child's long writes would not exclude each other (an flock belongs to the open file
    description, which fork shares)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    read_end, write_end = os.pipe()
    parent = requestlog.Stream(write_end)
    assert parent.lock is not None
    fcntl.flock(parent.lock, fcntl.LOCK_EX)
    try:
        child = os.fork()
        if child == 0:  # the child: its lock is refused while the parent holds the stream's
            refused = False
            try:
                fcntl.flock(parent.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                refused = True
            os._exit(0 if refused else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child took the lock the parent holds"
    finally:
        fcntl.flock(parent.lock, fcntl.LOCK_UN)
        for fd in (read_end, write_end):
            os.close(fd)


def test_a_process_writing_alone_takes_no_lock_and_a_forked_child_takes_one(tmp_path, monkeypatch):
    """scoring/serve.py with one worker: the only process writing to its stdout writes without the lock (3 µs a write
    saved), its lines still up to MAX_LINE_BYTES in one write(); after a fork, child and parent have company: both lock."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(requestlog, "_sole_writer", False)  # put back after the test
    requestlog.sole_writer()
    read_end, write_end = os.pipe()
    try:
        alone = requestlog.Stream(write_end)
        assert alone.lock is None and alone.max_line == requestlog.MAX_LINE_BYTES
        lines = [b"a" * 9000 + b"\n", b"b" * 9000 + b"\n"]  # each past PIPE_BUF
        writes: list[int] = []
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            writes.append(len(data))
            return real_write(fd, data)
        monkeypatch.setattr(requestlog.os, "write", write)
        alone.write(lines)
        monkeypatch.setattr(requestlog.os, "write", real_write)
        assert writes == [18002] and os.read(read_end, 65536) == b"".join(lines)
        child = os.fork()
        if child == 0:  # the child: at fork it takes a lock of its own
            os._exit(0 if alone.lock is not None and not requestlog._sole_writer else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a forked child wrote without the lock"
        assert alone.lock is not None and not alone.alone, "the parent of a fork has company too: it locks"
    finally:
        for fd in (read_end, write_end):
            os.close(fd)


def test_one_observation_is_prometheus_clients_own():
    """metrics.observe (bisection) leaves a histogram exactly as Histogram.observe does, values on a bound and past the
    last finite one included (the latency histogram's, whose last bound is 2.5 s)."""
    values = [0.0, 0.0005, 0.0007, 0.001, 0.3, 2.5, 2.6, 40.0]
    registry = CollectorRegistry()
    buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
    theirs, ours = (Histogram(name, name, buckets=buckets, registry=registry) for name in ("a", "b"))
    for value in values:
        theirs.observe(value)
        metrics.observe(ours, value)
    assert [s.value for s in ours.collect()[0].samples if not s.name.endswith("_created")] == [
        s.value for s in theirs.collect()[0].samples if not s.name.endswith("_created")]


@pytest.mark.parametrize("count", [1, 5, 300])
def test_bulk_probability_observation_equals_one_observe_per_value(count):
    """metrics.observe_probabilities (numpy for large batches) must leave the histogram exactly as observe() does."""
    values = np.random.default_rng(count).random(count)
    values[0] = 0.3  # a value on a bucket's upper bound lands in that bucket
    registry = CollectorRegistry()
    one_by_one = Histogram("a", "a", buckets=metrics.PROBABILITY_BUCKETS, registry=registry)
    bulk = Histogram("b", "b", buckets=metrics.PROBABILITY_BUCKETS, registry=registry)
    for value in values:
        one_by_one.observe(value)
    metrics.observe_probabilities(bulk, values)
    expected, got = ([(s.name[1:], s.labels, s.value) for s in h.collect()[0].samples if not s.name.endswith("_created")]
                     for h in (one_by_one, bulk))
    assert [(name, labels) for name, labels, _ in got] == [(name, labels) for name, labels, _ in expected]
    assert [value for *_, value in got] == pytest.approx([value for *_, value in expected])
