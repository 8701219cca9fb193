"""Start the scoring service: `python -m scoring.serve`.

HOST (default 0.0.0.0 in the image; 127.0.0.1 for local runs), PORT (8000), WEB_CONCURRENCY
(uvicorn workers, 1). The body's size and pace, and how many scoring requests a worker takes at once
(MAX_IN_FLIGHT), are bounded by scoring/front.py, not by uvicorn's limit_concurrency: that one also answers the
health probes 503 under load, and the platform would restart a busy replica. What uvicorn bounds by itself: an idle
keep-alive connection after an answer (KEEP_ALIVE_S, 300 s, settings.py; not one after a 413, nor one that never
sent a request: the proxy in front closes those); not the size or pace of the request line and headers
(httptools has no limit): Container Apps' Envoy ingress receives those first, and on AKS the service is internal
only. With several workers, Prometheus metrics are aggregated through a multiprocess directory under /tmp (writable
even with a read-only root filesystem and an emptyDir on /tmp).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Literal, TypedDict

import uvicorn

from . import requestlog
from .settings import ServerSettings, Settings, SettingsError


class UvicornFlags(TypedDict):
    http: str
    loop: str
    lifespan: Literal["auto", "on", "off"]
    access_log: bool
    server_header: bool
    log_level: str


# Named, not left to uvicorn's "auto" (which silently falls back to asyncio and h11 when uvloop or httptools
# is missing: slower): httptools, sending a response's head and body in one write (scoring/wire.py). No access log:
# the request log (scoring/requestlog.py) is ours. bench/bare_app.py runs the benchmark's bare FastAPI endpoint with
# these same flags.
UVICORN_FLAGS: UvicornFlags = {"http": f"{__package__}.wire:HttpToolsHeldWrites", "loop": "uvloop", "lifespan": "on",
                               "access_log": False, "server_header": False, "log_level": "info"}


def main() -> int:
    try:
        server = ServerSettings.from_env()
        Settings.from_env()  # fail fast, before forking workers, on a bad value
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if server.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-")
    if server.workers == 1:  # uvicorn serves in this process, the only one writing to its stdout
        requestlog.sole_writer()
    uvicorn.run(f"{__package__}.app:create_app", factory=True, host=server.host, port=server.port,
                workers=server.workers, timeout_keep_alive=server.keep_alive_s, **UVICORN_FLAGS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
