"""A real scoring service (the session's build context) and windows of its request log.

The service writes its request log to a file; each traffic run is cut out of that file by byte
offsets, so every window below holds exactly the lines one run of monitoring.traffic produced."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from monitoring import traffic
from serving import smoke
from serving.localrun import free_port, start_service

RECORDS = 1000  # per window: 200 requests x 5 records
REQUESTS, BATCH = 200, 5


@pytest.fixture(scope="session")
def service(context, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    log = root / "requests.jsonl"
    port = free_port()
    with log.open("ab") as out:
        # Every feature logged, so every one is compared (test_drift_personal.py: the personal ones dropped or
        # pseudonymised).
        process = start_service(context.path, port, stdout=out, stderr=subprocess.DEVNULL,
                                extra_env={"REQUEST_LOG_PERSONAL": "keep"})
    url = f"http://127.0.0.1:{port}"
    try:
        smoke.wait_for(url, "/ready", 120)
        # free_port() can race with another process taking the port: then /ready answered for someone else.
        assert process.poll() is None, f"the scoring service exited (port {port} taken?)"
        yield {"url": url, "log": log, "root": root}
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def shifts(model) -> dict[str, tuple[str, str]]:
    """A shift of the contract's first number (x3) and of its first category (every record its first value): (the
    --shift text, the column it moves)."""
    number, category = model.contract.numbers[0], next(c for c in model.contract.categories if c.values)
    return {"numeric": (f"{number.name}=3", number.name), "categorical": (f"{category.name}={category.values[0]}",
                                                                          category.name)}


@pytest.fixture(scope="session")
def window(service, model):
    """window(name, *shifts) -> a log file holding the lines of one traffic run (cached per name)."""
    cache: dict[str, Path] = {}

    def make(name: str, *shifts: str, seed: int = 101) -> Path:
        if name not in cache:
            before = service["log"].stat().st_size
            summary = traffic.send(model, service["url"], REQUESTS, rate=0, batch=BATCH, seed=seed,
                                   shifts=[traffic.Shift.parse(s, model.contract) for s in shifts], progress=lambda _: None)
            assert summary["statuses"] == {200: REQUESTS}
            path = service["root"] / f"{name}.jsonl"
            for _ in range(50):  # the service writes the last line just after answering
                data = service["log"].read_bytes()[before:]
                if data.count(b"\n") >= REQUESTS:
                    break
                time.sleep(0.1)
            lines = data.count(b"\n")
            assert lines >= REQUESTS, f"only {lines} of {REQUESTS} log lines reached {service['log']}"
            path.write_bytes(data)
            cache[name] = path
        return cache[name]
    return make
