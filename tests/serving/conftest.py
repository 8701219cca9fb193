"""Real uvicorn processes started from the session's build context (the app as the image runs it),
their request log (stdout) going to a file the tests read."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving import smoke
from serving.localrun import free_port, start_service, stop_service


@dataclass
class LiveService:
    url: str
    log: Path
    process: subprocess.Popen

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def log_lines(self, since: int, count: int, timeout: float = 10.0) -> list[bytes]:
        """The raw JSON lines written after byte `since`, waiting until at least `count` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log.read_bytes()[since:].splitlines(keepends=True) if line.startswith(b"{")]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines

    def log_entries(self, since: int, count: int) -> list[dict]:
        return [json.loads(line) for line in self.log_lines(since, count)]


def launch(context_path: Path, log: Path, extra_env: dict[str, str] | None = None, ready: bool = True) -> LiveService:
    port = free_port()
    # The tests compare the logged inputs with what they sent: the personal columns kept (test_privacy.py: the rest).
    env = {"REQUEST_LOG_PERSONAL": "keep", **(extra_env or {})}
    with log.open("ab") as out:
        process = start_service(context_path, port, stdout=out, stderr=subprocess.DEVNULL, extra_env=env)
    service = LiveService(f"http://127.0.0.1:{port}", log, process)
    smoke.wait_for(service.url, "/ready" if ready else "/health", 120)
    # free_port() can race with another process taking the port: then /ready answered for someone else.
    assert process.poll() is None, f"the scoring service exited (port {port} taken?)"
    return service


@pytest.fixture(scope="module")
def live(context, tmp_path_factory):
    """The service with the default MAX_RECORDS (1000)."""
    service = launch(context.path, tmp_path_factory.mktemp("live") / "requests.jsonl")
    yield service
    stop_service(service.process.pid)


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client
