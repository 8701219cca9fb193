"""`make local`: the model's whole journey on this machine, with the same code the cloud path runs.

    data -> train + register (MLflow, sqlite) -> gate -> build the candidate -> serve it beside the champion
         -> smoke-test the candidate -> switch 127.0.0.1:<port> to it

The release goes as it goes on Container Apps: the candidate is served on a port of its own (a revision
with 0 % traffic and a label URL) while the champion keeps serving the main port; only a candidate that
passed the smoke test takes the main port (here a restart on it; Container Apps moves the traffic), and
a failed one leaves the champion serving.

    python -m scripts.local_journey            # run (again: a new version is gated against the champion)
    python -m scripts.local_journey --model house-prices     # another model module (default: the dev stack's name)
    python -m scripts.local_journey --data my_table.parquet  # train on your own table (default: the module's example)
    python -m scripts.local_journey stop       # stop the service it started
    python -m scripts.local_journey logs       # the container's request log into .local/logs/requests.jsonl

State lives in .local/ (data, mlflow.db, artifacts, context, logs). The service runs in a container
(buildah build, podman run on the host network, 127.0.0.1) when those tools work here and the base
image exists (`make image-test` builds it), else as a local process; --mode forces either.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serving import smoke
from serving.context import assemble_build_context
from serving.localrun import free_port, start_service, stop_service

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layout:
    state: Path
    name: str  # the project's name: the registered model's locally, and the generated table's

    @property
    def data(self) -> Path:
        return self.state / "data" / f"{self.name}.parquet"

    @property
    def container(self) -> str:
        return f"{self.name}-local"

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
    def candidate(self) -> Path:
        return self.state / "candidate"

    @property
    def request_log(self) -> Path:
        return self.state / "logs" / "requests.jsonl"

    @property
    def server_log(self) -> Path:
        return self.state / "logs" / "server.log"

    @property
    def service_file(self) -> Path:
        return self.state / "service.json"

    @property
    def pseudonym_key(self) -> Path:
        return self.state / "pseudonym.key"


def request_log_env(layout: Layout) -> dict[str, str]:
    """The service pseudonymises the contract's personal columns and ids in its log, as a stack does (the drift job
    compares the rest; `make quality` joins the labels by the ids' pseudonyms), with a key made once for this
    machine (.local/pseudonym.key, readable by its owner only; never in the repository)."""
    if not layout.pseudonym_key.exists():
        layout.state.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(layout.pseudonym_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    return {"REQUEST_LOG_PERSONAL": "pseudonymise", "REQUEST_LOG_PSEUDONYM_KEY": layout.pseudonym_key.read_text()}


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def ensure_data(layout: Layout, module: str, given: Path | None, rows: int, seed: int) -> Path:
    """The table to train on: the one given, else the model module's example data (generated once)."""
    if given is not None:
        print(f"training on {given}")
        return given
    if layout.data.exists():
        print(f"using existing data {layout.data} (delete it to regenerate)")
        return layout.data
    from training import data

    data.main(["--model", module, "--rows", str(rows), "--seed", str(seed), "--out", str(layout.data)])
    return layout.data


def use_local_registry(layout: Layout) -> None:
    """Both of MLflow's global URIs at .local's store: a registry URI set earlier in the process (a test, a
    notebook) would otherwise register and resolve the model somewhere else."""
    import mlflow

    mlflow.set_tracking_uri(layout.tracking_uri)
    mlflow.set_registry_uri(layout.tracking_uri)


def train(layout: Layout, module: str, table: Path, seed: int) -> dict:
    from training import train as training

    os.environ["MLFLOW_TRACKING_URI"] = layout.tracking_uri
    use_local_registry(layout)
    return training.main([
        "--model-module", module, "--data", str(table), "--tracking-uri", layout.tracking_uri,
        "--registry-uri", layout.tracking_uri, "--model-name", layout.name,
        "--artifact-root", layout.artifact_root, "--environment", "local", "--seed", str(seed),
        "--summary-out", str(layout.state / "last_training.json"),
    ])


def collect_logs(layout: Layout) -> None:
    """A container's request log (its stdout) into the file a local process writes, where `make drift` reads it; a
    local process has written it there already."""
    if not layout.service_file.exists():
        return
    service = json.loads(layout.service_file.read_text())
    if service["kind"] != "container":
        return
    from serving import container

    layout.request_log.parent.mkdir(parents=True, exist_ok=True)
    layout.request_log.write_text(container.container_logs(service["name"]).stdout)
    print(f"the request log of container {service['name']} is in {layout.request_log}")


def has_champion(layout: Layout) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=layout.tracking_uri, registry_uri=layout.tracking_uri)
    try:
        client.get_model_version_by_alias(layout.name, "champion")
    except MlflowException:
        return False
    return True


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


def start_process(layout: Layout, context: Path, port: int, log: Path) -> dict:
    """The context's own app and model, as a local uvicorn process bound to 127.0.0.1 only."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, layout.server_log.open("ab") as err:
        process = start_service(context, port, stdout=out, stderr=err, extra_env=request_log_env(layout))
    return {"kind": "process", "pid": process.pid, "where": f"as a local process (pid {process.pid}); request log {log}"}


def start_container(context: Path, port: int, model_version: str, name: str, build: bool, project: str,
                    env: dict[str, str]) -> dict:
    """Build the context into an image (buildah) and run it (podman, host network, 127.0.0.1)."""
    from serving import container

    tag = f"localhost/{project}-scoring:v{model_version}"
    if build:
        container.ensure_base_image()
        container.build_image(context, tag)
    container.run_container(tag, port, name, env)
    return {"kind": "container", "name": name, "image": tag,
            "where": f"in container {name} from image {tag}; request log: podman logs {name}"}


def stop(service: dict) -> None:
    if service["kind"] == "container":
        from serving import container

        container.stop_container(service["name"])
    else:
        stop_service(service["pid"])


def serve(layout: Layout, context: Path, port: int, version: str, in_container: bool, name: str, log: Path,
          build: bool = True) -> dict:
    """The context on `port`: its image (built unless `build` is False: the switch runs the image it tested)."""
    return (start_container(context, port, version, name, build, layout.name, request_log_env(layout)) if in_container
            else start_process(layout, context, port, log))


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
    from training import contract

    model = contract.load(args.model)
    layout = Layout(args.state.resolve(), model.module.split(".")[-1].replace("_", "-"))
    layout.state.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    banner(f"1/6 data for {model.module} ({model.contract.task}: {model.contract.target.name})")
    table = ensure_data(layout, model.module, args.data, args.rows, args.seed)
    banner("2/6 train, register and gate")
    summary = train(layout, model.module, table, args.seed)
    if not has_champion(layout):
        reason = summary.get("gate", {}).get("reason", "the gate did not run")
        print(f"\nno champion to serve: the gate rejected {layout.name} v{summary['version']} ({reason}) and no earlier "
              f"version is champion. Change the model or its GATE in {model.module}, or train on other data, and run "
              "`make local` again.", file=sys.stderr)
        return 1
    in_container = container_mode(args.mode)
    banner(f"3/6 build the candidate from models:/{layout.name}@champion")
    use_local_registry(layout)
    context = assemble_build_context(f"models:/{layout.name}@champion", layout.candidate, wheelhouse=in_container)
    version, url = context.model_version, f"http://127.0.0.1:{args.port}"
    candidate_url = f"http://127.0.0.1:{(candidate_port := free_port())}"
    banner(f"4/6 serve the candidate v{version} at {candidate_url}, beside the champion")
    candidate = serve(layout, layout.candidate, candidate_port, version, in_container, f"{layout.container}-candidate",
                      layout.request_log.with_name("candidate.jsonl"))
    banner("5/6 smoke-test the candidate")
    try:
        smoke.run(candidate_url, layout.candidate / "model" / "manifest.json", expect_version=version)
    except smoke.SmokeFailure as failure:
        stop(candidate)
        serving = "the champion keeps serving " + url if layout.service_file.exists() else "nothing was serving"
        print(f"FAIL {failure}\nthe candidate is stopped and {serving}; server log: {layout.server_log}", file=sys.stderr)
        return 1
    banner(f"6/6 switch {url} to the candidate v{version}")
    stop(candidate)
    stop_recorded_service(layout)
    shutil.rmtree(layout.context, ignore_errors=True)
    layout.candidate.rename(layout.context)
    service = serve(layout, layout.context, args.port, version, in_container, layout.container, layout.request_log,
                    build=False)
    where = service.pop("where")
    layout.service_file.write_text(json.dumps({**service, "model": model.module}))
    print(f"the scoring service runs {where}")
    smoke.run(url, layout.context / "model" / "manifest.json", expect_version=version)
    gate, metric = summary.get("gate", {}), summary["metric"]
    print(f"""
journey complete in {time.perf_counter() - started:.0f}s
  trained     {layout.name} v{summary['version']} (test {metric} {summary['metrics'][metric]:.4f}); \
gate {'promoted it' if gate.get('promoted') else 'kept the champion'}
  serving     {layout.name} v{context.model_version} (@champion, {context.manifest['runtime']} runtime) at {url}
  docs        {url}/docs
  try         curl -s -X POST {url}/predict -H 'content-type: application/json' \\
                -d @{layout.state / 'example_request.json'}
  runs        {where}
  MLflow UI   .venv/bin/mlflow ui --backend-store-uri {layout.tracking_uri} --host 127.0.0.1
  watch       make traffic && make drift       (inputs against the training baseline)
              make traffic DEGRADE=0.6 && make quality   (the answers against their labels; exit 3: retrain)
  stop        make stop
  cloud       a deployed endpoint wants an Entra token (docs/design/security.md):
                python -m serving.smoke <endpoint_url> --token-from-azure-cli <auth_audience>
""")
    (layout.state / "example_request.json").write_text(json.dumps({"records": context.manifest["input_example"][:1]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "stop", "logs"])
    parser.add_argument("--state", type=Path, default=ROOT / ".local")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", help="the project name or model module (default: the dev stack's name)")
    parser.add_argument("--data", type=Path, help="your own training table, .csv or .parquet (default: the module's "
                                                  "example_data)")
    parser.add_argument("--mode", choices=["auto", "process", "container"], default=os.environ.get("SERVE_MODE", "auto"),
                        help="auto: a container when buildah/podman work and the base image exists, else a process")
    args = parser.parse_args(argv)
    if args.command == "stop":
        if not stop_recorded_service(Layout(args.state.resolve(), "")):
            print("no scoring service was running")
        return 0
    if args.command == "logs":
        collect_logs(Layout(args.state.resolve(), ""))
        return 0
    if args.model is None:
        from infra import stack_files

        args.model = stack_files.project("dev")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
