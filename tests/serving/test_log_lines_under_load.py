"""The request log under load, as the image runs it: two uvicorn workers share one stdout pipe, and the reader on
the other end (the container runtime, Log Analytics' agent) is slow. A pipe write is atomic only up to PIPE_BUF
(4,096 bytes on Linux, pipe(7)): a longer line can be split by the kernel and another worker's bytes land inside
it, which the drift job would count as malformed; so can a short line written while another worker's long write is
half-way. Every line must arrive whole, and every answered request logged."""

from __future__ import annotations

import json
import os
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil

from monitoring import logformat
from serving import smoke
from serving.localrun import free_port, start_service, stop_service
from serving.scoring.model import Manifest

REQUESTS, RECORDS, CLIENTS = 160, 25, 8  # bounded: about 2,000 records from 8 threads


def size(request: int) -> int:
    """Records in request number `request`: every other one a single record, whose short line is atomic by itself and
    must still not land inside another worker's longer write."""
    return 1 if request % 2 else RECORDS


def slow_reader(fd: int, into: bytearray, stop: threading.Event) -> None:
    """Reads 512 bytes at a time with a pause: the pipe stays full and the workers' writes block in the middle."""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 512)
            if not chunk:
                return
            into.extend(chunk)
            time.sleep(0.001)
        elif stop.is_set():
            return


def test_two_workers_on_a_slow_pipe_write_only_whole_lines(context):
    manifest = Manifest.read(context.path / "model")
    records = [dict(manifest.input_example[i % len(manifest.input_example)]) for i in range(RECORDS)]
    read_end, write_end = os.pipe()
    port = free_port()
    process = start_service(context.path, port, stdout=write_end, workers=2)
    os.close(write_end)  # the service holds the only write end now: EOF when it exits
    received, stop = bytearray(), threading.Event()
    reader = threading.Thread(target=slow_reader, args=(read_end, received, stop), daemon=True)
    reader.start()
    answered: list[str] = []
    try:
        smoke.wait_for(f"http://127.0.0.1:{port}", "/ready", 120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            def call(i: int) -> str:  # long requests (one locked write of several KiB) and single records, mixed
                reply = client.post("/predict", json={"records": records[:size(i)]}, headers={"x-request-id": f"load-{i}"})
                assert reply.status_code == 200, reply.text
                return reply.headers["x-request-id"]
            with ThreadPoolExecutor(CLIENTS) as pool:
                answered = list(pool.map(call, range(REQUESTS)))
        locked = [child for child in psutil.Process(process.pid).children() if lock_files(child)]
        assert len(locked) == 2, "each worker writes under the lock"  # (multiprocessing's resource tracker: none)
    finally:
        stop_service(process.pid)
        stop.set()
        reader.join(timeout=60)
        os.close(read_end)
    lines = [line for line in bytes(received).split(b"\n") if line.startswith(b"{") or b'"log_type"' in line]
    broken = []
    logged: dict[str, int] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            broken.append(line[:120])
            continue
        if entry.get("log_type") == "prediction":
            records = logformat.records(entry["inputs"], len(entry["outputs"])) or []
            logged[entry["request_id"]] = logged.get(entry["request_id"], 0) + len(records)
    assert broken == [], f"{len(broken)} of {len(lines)} lines broken, e.g. {broken[:2]}"
    assert sorted(answered) == sorted(logged), "every answered request is in the log"
    assert logged == {f"load-{i}": size(i) for i in range(REQUESTS)}, "with all its records, across its parts"


def lock_files(process: psutil.Process) -> list[str]:
    return [f.path for f in process.open_files() if "scoring-request-log-" in f.path]


def test_one_worker_writes_alone_without_the_lock(live):
    """scoring/serve.py with one worker (the dev stack, the benchmark): uvicorn serves in the process it started, the
    only one writing to its stdout, which then opens no lock file (its lines still go out whole: test_requestlog.py)."""
    assert lock_files(psutil.Process(live.process.pid)) == []

