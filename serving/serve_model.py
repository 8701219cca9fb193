"""Serve any MLflow model on this machine, exactly as the image runs it: `make serve MODEL_URI=...`.

    python -m serving.serve_model models:/my-model@champion [--port 8000] [--workers 1] [--out .local/serve]
    python -m serving.serve_model runs:/<run id>/model
    python -m serving.serve_model path/to/an/mlflow/model/directory

The model is packaged by serving/context.py (the build context without its wheelhouse) into
<out>/<name>-<version>, then served in the foreground by the context's own copy of the app, `python -m
scoring.serve` with PYTHONPATH=<context>, MODEL_DIR, HOST=127.0.0.1, PORT and WEB_CONCURRENCY: what the image's
CMD runs. The tracking and registry stores are MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI when set, else the local
store .local/mlflow.db (what `make local` trains into).

stdout carries the request log and nothing else (one JSON line per request, as in the container); packaging
progress and the server's own messages go to stderr. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from serving.localrun import service_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = ROOT / ".local" / "mlflow.db"
DEFAULT_OUT = ROOT / ".local" / "serve"


def tracking_uris(environ: dict[str, str] | os._Environ = os.environ) -> tuple[str, str]:
    """(tracking URI, registry URI): the environment's, else the local store."""
    tracking = environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE}"
    return tracking, environ.get("MLFLOW_REGISTRY_URI") or tracking


def context_dir(out: Path, name: str, version: str) -> Path:
    return out / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-{version}")


def package(model_uri: str, out: Path, progress: Callable[[str], None]) -> Path:
    """The model's build context (no wheelhouse) under `out`; every line of progress to `progress`. stdout is the
    request log's, so anything a library prints to it while packaging goes to stderr instead (file descriptor 1
    points at 2 until packaging is done)."""
    import mlflow

    from serving.context import assemble_build_context, resolve_model

    tracking, registry = tracking_uris()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        resolved = resolve_model(model_uri)
        target = context_dir(out, resolved.name, resolved.version)
        context = assemble_build_context(model_uri, target, wheelhouse=False, progress=progress)
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return context.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_uri", help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or "
                                          "a local MLflow model directory")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the build context is written")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from mlflow.exceptions import MlflowException

    from serving.compile import EquivalenceError
    from serving.context import PackagingError

    try:
        context = package(args.model_uri, args.out, progress)
    except (PackagingError, EquivalenceError, MlflowException) as error:
        print(f"serve: cannot package {args.model_uri}: {error}", file=sys.stderr)
        return 1
    progress(f"serve: http://127.0.0.1:{args.port} (docs at /docs); the request log follows on stdout")
    env = service_env(context, args.port, args.workers)
    os.chdir(context)
    os.execve(sys.executable, [sys.executable, "-m", "scoring.serve"], env)  # the server replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
