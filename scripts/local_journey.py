"""`make local`: the model's whole journey on this machine, with the same code the cloud path runs.

    data -> train + register (MLflow, sqlite) -> gate -> build context -> serve on 127.0.0.1 -> smoke

    python -m scripts.local_journey            # run (again: a new version is gated against the champion)
    python -m scripts.local_journey stop       # stop the service it started

State lives in .local/ (data, mlflow.db, artifacts, context, logs). The service runs in a container
(buildah build, podman run on the host network, 127.0.0.1) when those tools work here and the base
image exists (`make image-test` builds it), else as a local process; --mode forces either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serving import smoke
from serving.context import assemble_build_context
from serving.localrun import start_service, stop_service

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_NAME = "credit-default-local"


@dataclass(frozen=True)
class Layout:
    state: Path

    @property
    def data(self) -> Path:
        return self.state / "data" / "credit.parquet"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.state / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.state / "mlartifacts").as_uri()

    @property
    def context(self) -> Path:
        return self.state / "context"

    @property
    def request_log(self) -> Path:
        return self.state / "logs" / "requests.jsonl"

    @property
    def server_log(self) -> Path:
        return self.state / "logs" / "server.log"

    @property
    def service_file(self) -> Path:
        return self.state / "service.json"


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def ensure_data(layout: Layout, rows: int, seed: int) -> None:
    if layout.data.exists():
        print(f"using existing data {layout.data} (delete it to regenerate)")
        return
    from training import data

    data.main(["--rows", str(rows), "--seed", str(seed), "--out", str(layout.data)])


def train(layout: Layout, model_name: str, seed: int) -> dict:
    from training import train as training

    os.environ["MLFLOW_TRACKING_URI"] = layout.tracking_uri
    return training.main([
        "--data", str(layout.data), "--tracking-uri", layout.tracking_uri, "--model-name", model_name,
        "--artifact-root", layout.artifact_root, "--environment", "local", "--seed", str(seed),
        "--summary-out", str(layout.state / "last_training.json"),
    ])


def stop_recorded_service(layout: Layout) -> bool:
    """Stop what the last run started: a local process group or a container."""
    if not layout.service_file.exists():
        return False
    service = json.loads(layout.service_file.read_text())
    layout.service_file.unlink()
    if service["kind"] == "container":
        from serving import container

        container.stop_container(service["name"])
        print(f"stopped the scoring container {service['name']}")
        return True
    if not stop_service(service["pid"]):
        return False
    print(f"stopped the scoring service (pid {service['pid']})")
    return True


def start_process(layout: Layout, port: int) -> str:
    """The context's own app and model, as a local uvicorn process bound to 127.0.0.1 only."""
    layout.request_log.parent.mkdir(parents=True, exist_ok=True)
    with layout.request_log.open("ab") as out, layout.server_log.open("ab") as err:
        process = start_service(layout.context, port, stdout=out, stderr=err)
    layout.service_file.write_text(json.dumps({"kind": "process", "pid": process.pid}))
    return f"as a local process (pid {process.pid}); request log {layout.request_log}"


def start_container(layout: Layout, port: int, model_version: str) -> str:
    """Build the context into an image (buildah) and run it (podman, host network, 127.0.0.1)."""
    from serving import container

    container.ensure_base_image()
    tag = f"localhost/credit-default-scoring:v{model_version}"
    container.build_image(layout.context, tag)
    container.run_container(tag, port, CONTAINER_NAME)
    layout.service_file.write_text(json.dumps({"kind": "container", "name": CONTAINER_NAME, "image": tag}))
    return f"in container {CONTAINER_NAME} from image {tag}; request log: podman logs {CONTAINER_NAME}"


def container_mode(requested: str) -> bool:
    """auto: a container when an engine works here and the base image is already built."""
    if requested == "process":
        return False
    from serving import container

    usable = container.engine_available() and (requested == "container" or container.image_exists(container.BASE_IMAGE))
    if requested == "container" and not usable:
        raise SystemExit("--mode container: buildah/podman are not usable here (run `make image-test` to set them up)")
    return usable


def run(args: argparse.Namespace) -> int:
    layout = Layout(args.state.resolve())
    layout.state.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    banner("1/5 data")
    ensure_data(layout, args.rows, args.seed)
    banner("2/5 train, register and gate")
    summary = train(layout, args.model_name, args.seed)
    in_container = container_mode(args.mode)
    banner(f"3/5 build context from models:/{args.model_name}@champion")
    context = assemble_build_context(f"models:/{args.model_name}@champion", layout.context, wheelhouse=in_container)
    banner(f"4/5 serve on 127.0.0.1:{args.port}")
    stop_recorded_service(layout)
    where = start_container(layout, args.port, context.model_version) if in_container else start_process(layout, args.port)
    print(f"started the scoring service {where}")
    banner("5/5 smoke test")
    url = f"http://127.0.0.1:{args.port}"
    try:
        smoke.run(url, layout.context / "model" / "manifest.json", expect_version=context.model_version)
    except smoke.SmokeFailure as failure:
        print(f"FAIL {failure}\nserver log: {layout.server_log}", file=sys.stderr)
        stop_recorded_service(layout)
        return 1
    gate = summary.get("gate", {})
    print(f"""
journey complete in {time.perf_counter() - started:.0f}s
  trained     {args.model_name} v{summary['version']} (test ROC-AUC {summary['metrics']['roc_auc']:.4f}); \
gate {'promoted it' if gate.get('promoted') else 'kept the champion'}
  serving     {args.model_name} v{context.model_version} (@champion, {context.manifest['runtime']} runtime) at {url}
  docs        {url}/docs
  try         curl -s -X POST {url}/predict -H 'content-type: application/json' \\
                -d @{layout.state / 'example_request.json'}
  runs        {where}
  MLflow UI   .venv/bin/mlflow ui --backend-store-uri {layout.tracking_uri} --host 127.0.0.1
  stop        make stop
  cloud       a deployed endpoint wants an Entra token (README "Security"):
                python -m serving.smoke <endpoint_url> --token-from-azure-cli <auth_audience>
""")
    (layout.state / "example_request.json").write_text(json.dumps({"records": context.manifest["input_example"][:1]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "stop"])
    parser.add_argument("--state", type=Path, default=ROOT / ".local")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model-name", default="credit-default")
    parser.add_argument("--mode", choices=["auto", "process", "container"], default=os.environ.get("SERVE_MODE", "auto"),
                        help="auto: a container when buildah/podman work and the base image exists, else a process")
    args = parser.parse_args(argv)
    if args.command == "stop":
        if not stop_recorded_service(Layout(args.state.resolve())):
            print("no scoring service was running")
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
