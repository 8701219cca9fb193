"""Run a build context's scoring service as a local process on 127.0.0.1 (no container engine).

Used by `make local`, `make serve` (serving/serve_model.py), the end-to-end tests and the benchmark, so all start
the service the same way: the context's own copy of the app, the context's model, loopback only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_env(context: Path, port: int, workers: int = 1, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the image's CMD runs with, for a context on this machine: its own copy of the app first on
    the path, its model, loopback only (serving/serve_model.py serves `make serve` with it too)."""
    return {**os.environ, "PYTHONPATH": str(context), "MODEL_DIR": str(context / "model"),
            "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers), **(extra_env or {})}


def start_service(context: Path, port: int, stdout: IO | int | None = subprocess.DEVNULL,
                  stderr: IO | int | None = subprocess.DEVNULL, workers: int = 1,
                  extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = service_env(context, port, workers, extra_env)
    return subprocess.Popen([sys.executable, "-m", "scoring.serve"], cwd=context, env=env,
                            stdout=stdout, stderr=stderr, start_new_session=True)


def stop_service(pid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM the service's process group (start_new_session made its pid the group id), SIGKILL what
    outlives the grace period. False when nothing was running."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return sig == signal.SIGKILL  # already gone: stopped by the SIGTERM, or never running
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status, so it does not linger as a zombie the group check still sees."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
