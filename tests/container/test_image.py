"""The real image: built by buildah from serving/Dockerfile on the local Debian base, run by podman on the
host's network bound to 127.0.0.1, smoke-tested with the same program as staging. `make image-test`.

Needs root, buildah, podman and runc (scripts/install_container_tools.sh installs them); fails, rather
than skips, when they are missing, so a green `make image-test` always means the image was really built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from serving import container, smoke
from serving.context import DOCKERFILE, BuildContext, assemble_build_context
from serving.localrun import free_port

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / ".local" / "image-report.json"
IMAGE_TAG = "localhost/mlops-scoring:image-test"
IMAGE_SIZE_BUDGET_MB = 400  # 314 MB measured: 121 MB Debian base + onnxruntime, numpy, fastapi & co.
UID = 10001
LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-gcc-12")
TRAINING_PACKAGES = ("mlflow", "sklearn", "pandas", "scipy", "skops")


@dataclass(frozen=True)
class Image:
    tag: str
    image_id: str
    context: BuildContext
    build_seconds: float
    base: container.BaseImage

    @property
    def manifest_path(self) -> Path:
        return self.context.path / "model" / "manifest.json"


@dataclass(frozen=True)
class Running:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> container.ContainerLogs:
        return container.container_logs(self.name)

    def diagnosis(self, lines: int = 15) -> str:
        logs = self.logs()
        tail = {name: "\n".join(line[:300] for line in text.splitlines()[-lines:])
                for name, text in (("stdout", logs.stdout), ("stderr", logs.stderr))}
        return f"\n--- container stdout ---\n{tail['stdout']}\n--- container stderr ---\n{tail['stderr']}"


@pytest.fixture(scope="module")
def image(registry, tmp_path_factory) -> Image:
    if os.geteuid() != 0 or not container.engine_available():
        pytest.fail("the image tests need root and a usable buildah/podman/runc: run `make image-test`, which "
                    "installs them (scripts/install_container_tools.sh)")
    base = container.ensure_base_image()
    mlflow.set_tracking_uri(registry["tracking_uri"])
    context = assemble_build_context(f"models:/{registry['model_name']}@champion",
                                     tmp_path_factory.mktemp("image") / "context", wheelhouse=True)
    started = time.monotonic()
    image_id = container.build_image(context.path, IMAGE_TAG, container.BASE_IMAGE)
    built = Image(IMAGE_TAG, image_id, context, time.monotonic() - started, base)
    _write_report(built)
    yield built
    container.remove_image(IMAGE_TAG)


@pytest.fixture(scope="module")
def running(image: Image) -> Running:
    service = Running(name=f"scoring-image-test-{os.getpid()}", port=free_port())
    # Read-only root filesystem, as Kubernetes will run it: the image must not need to write outside /tmp.
    container.run_container(image.tag, service.port, service.name, read_only=True)
    try:
        smoke.wait_for(service.url, "/ready", 60)
    except smoke.SmokeFailure as failure:
        container.stop_container(service.name)
        pytest.fail(f"the container never became ready: {failure}{service.diagnosis()}")
    yield service
    container.stop_container(service.name)


def _write_report(image: Image) -> None:
    size = container.image_size_bytes(image.tag)
    report = {
        "image": image.tag,
        "image_id": image.image_id,
        "size_bytes": size,
        "size_mb": round(size / 1e6, 1),
        "build_seconds": round(image.build_seconds, 1),
        "base_image": image.base.tag,
        "base_size_mb": round(container.image_size_bytes(image.base.tag) / 1e6, 1),
        "base_built_seconds": round(image.base.seconds, 1) if image.base.built else None,  # None: it was cached
        "base_created": container.image_inspect(image.base.tag)["Created"],
        "storage_driver": container.storage_driver(),
        "model_version": image.context.model_version,
        "runtime": image.context.manifest["runtime"],
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nimage report ({REPORT.relative_to(ROOT)}): {json.dumps(report)}")


def _listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port` in the process's network namespace (the host's)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_image_builds_from_the_dockerfile_on_the_local_base(image: Image) -> None:
    assert (image.context.path / "Dockerfile").read_bytes() == DOCKERFILE.read_bytes()
    inspected = container.image_inspect(image.tag)
    assert inspected["Id"].removeprefix("sha256:") == image.image_id
    base_layers = container.image_inspect(image.base.tag)["RootFS"]["Layers"]
    assert inspected["RootFS"]["Layers"][:len(base_layers)] == base_layers, "the image is not built on the local base"
    assert inspected["Labels"].get("org.opencontainers.image.title") == "MLflow model scoring API"


def test_container_on_host_network_passes_the_smoke_test(image: Image, running: Running) -> None:
    assert container.container_inspect(running.name)["HostConfig"]["NetworkMode"] == "host"
    try:
        smoke.run(running.url, image.manifest_path, expect_version=image.context.model_version)
    except smoke.SmokeFailure as failure:
        pytest.fail(f"smoke test failed: {failure}{running.diagnosis()}")
    listening = _listening_addresses(container.container_pid(running.name), running.port)
    assert listening == {LOOPBACK_HEX}, f"the service must listen on 127.0.0.1 only, found {listening}"


def test_service_runs_as_uid_10001(image: Image, running: Running) -> None:
    assert container.image_inspect(image.tag)["Config"]["User"] == f"{UID}:{UID}"
    status = Path(f"/proc/{container.container_pid(running.name)}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(UID)] * 4, f"the container's main process runs as uids {uids}"
    assert container.exec_in(running.name, "id", "-u").strip() == str(UID)


def test_image_config_has_healthcheck_command_and_environment(image: Image, running: Running) -> None:
    config = container.image_inspect(image.tag)
    healthcheck = config.get("Healthcheck") or config["Config"].get("Healthcheck")
    assert healthcheck and "/health" in " ".join(healthcheck["Test"]), f"no HEALTHCHECK on /health: {healthcheck}"
    assert config["Config"]["Cmd"] == ["python3", "-m", "scoring.serve"]
    env = dict(item.split("=", 1) for item in config["Config"]["Env"])
    assert env["WEB_CONCURRENCY"] == re.search(r"WEB_CONCURRENCY=(\d+)", DOCKERFILE.read_text())[1]
    assert env["MODEL_DIR"] == "/opt/model" and env["PYTHONPATH"] == "/app"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert "8000/tcp" in config["Config"].get("ExposedPorts", {})
    assert container.healthcheck(running.name), f"the image's HEALTHCHECK fails in the running container{running.diagnosis()}"


def test_image_has_no_compiler_pip_wheels_or_training_libraries(image: Image) -> None:
    with container.mounted_image(image.tag) as rootfs:
        site_packages = rootfs / "opt/venv/lib/python3.11/site-packages"
        installed = {path.name.split("-")[0].lower() for path in site_packages.iterdir()}
        assert {"onnxruntime", "fastapi", "uvicorn", "numpy"} <= installed, f"site-packages looks wrong: {installed}"
        assert not installed & set(TRAINING_PACKAGES), f"training libraries in the image: {installed & set(TRAINING_PACKAGES)}"
        assert "pip" not in installed, "pip was installed into the venv"
        compilers = [f"{bin_dir}/{name}" for bin_dir in ("usr/bin", "usr/sbin", "usr/local/bin") for name in COMPILERS
                     if (rootfs / bin_dir / name).exists()]
        assert not compilers, f"compilers in the image: {compilers}"
        assert not list(rootfs.glob("usr/lib/gcc/*/*/cc1")), "gcc's cc1 is in the image"
        assert not (rootfs / "build").exists(), "the build stage's wheelhouse leaked into the image"
        assert (rootfs / "opt/model/manifest.json").is_file()


def test_prediction_log_line_on_container_stdout(image: Image, running: Running) -> None:
    request_id = f"image-test-{uuid.uuid4().hex}"
    records = json.loads(image.manifest_path.read_text())["input_example"]
    request = urllib.request.Request(f"{running.url}/predict", data=json.dumps({"records": records}).encode(),
                                     headers={"content-type": "application/json", "x-request-id": request_id})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    deadline, line = time.monotonic() + 10, None
    while line is None and time.monotonic() < deadline:
        line = next((json.loads(text) for text in running.logs().stdout.splitlines()
                     if request_id in text and text.startswith("{")), None)
        time.sleep(0.2)
    assert line is not None, f"no request log line for {request_id} on the container's stdout{running.diagnosis()}"
    assert line["log_type"] == "prediction"
    assert line["model_version"] == image.context.model_version
    assert line["n_records"] == len(records) == len(line["outputs"])


def test_image_size_is_recorded_and_within_budget(image: Image) -> None:
    report = json.loads(REPORT.read_text())
    assert report["image_id"] == image.image_id
    print(f"\nimage {report['image']}: {report['size_mb']} MB (base {report['base_size_mb']} MB), "
          f"built in {report['build_seconds']} s"
          + (f", base built in {report['base_built_seconds']} s" if report["base_built_seconds"] else ", base cached"))
    assert report["size_mb"] < IMAGE_SIZE_BUDGET_MB, f"the image grew to {report['size_mb']} MB"


@pytest.mark.container
def test_make_local_serves_from_a_container(tmp_path):
    """`make local --mode container`: the journey builds the image and serves it with podman; `make drift` gets the
    container's request log."""
    from scripts import local_journey

    state, port = tmp_path / "state", free_port()
    try:
        assert local_journey.main(["--state", str(state), "--port", str(port), "--rows", "2000", "--mode", "container"]) == 0
        service = json.loads((state / "service.json").read_text())
        assert service["kind"] == "container" and container.container_running(service["name"])
        smoke.run(f"http://127.0.0.1:{port}", expect_version="1", say=lambda _: None)
        assert local_journey.main(["logs", "--state", str(state)]) == 0  # what `make drift` reads, from the container
        logged = [json.loads(line) for line in (state / "logs" / "requests.jsonl").read_text().splitlines()
                  if line.startswith("{")]
        assert logged and {entry["log_type"] for entry in logged} == {"prediction"}  # the smoke test's requests
    finally:
        local_journey.main(["stop", "--state", str(state)])
    gone = subprocess.run(container.podman_cmd("container", "exists", service["name"]), check=False)
    assert gone.returncode == 1  # stopped and removed


def test_a_1000_record_request_is_logged_in_whole_lines_under_16_kib(image: Image, running: Running) -> None:
    """Container runtimes split stdout lines over 16 KiB: the service must never write one, and the drift
    job must get the whole request back from the container's log."""
    from monitoring import drift

    request_id = f"image-test-large-{uuid.uuid4().hex}"
    example = json.loads(image.manifest_path.read_text())["input_example"]
    number = next(f["name"] for f in json.loads(image.manifest_path.read_text())["inputs"] if f["type"] != "string")
    records = [dict(example[i % len(example)], **{number: float(1000 + i)}) for i in range(1000)]
    request = urllib.request.Request(f"{running.url}/predict", data=json.dumps({"records": records}).encode(),
                                     headers={"content-type": "application/json", "x-request-id": request_id})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        probabilities = [p["probability"] for p in json.loads(response.read())["predictions"]]
    deadline, lines = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        lines = [text for text in running.logs().stdout.splitlines() if request_id in text]
        if lines and len(lines) == json.loads(lines[0])["parts"]:
            break
        time.sleep(0.2)
    assert len(lines) > 1, f"expected the request in several parts, got {len(lines)} lines{running.diagnosis()}"
    assert max(len(text.encode()) + 1 for text in lines) <= 16 * 1024
    parts = [json.loads(text) for text in lines]
    assert sorted(p["part"] for p in parts) == list(range(1, len(parts) + 1))
    window = drift.read_window(lines)
    assert window.counts["predictions"] == 1 and window.counts.get("malformed", 0) == 0
    [key] = window.records
    assert key[1] == image.context.model_version
    assert [r[number] for r in window.records[key]] == [float(1000 + i) for i in range(1000)]
    assert [o["probability"] for o in window.outputs[key]] == probabilities


class _Doubler(mlflow.pyfunc.PythonModel):
    """A model of a team's own with no scikit-learn flavor: the pyfunc runtime serves it, MLflow inside the image."""

    def predict(self, context, model_input, params=None):
        return model_input["x1"].to_numpy() * 2.0 + model_input["x2"].to_numpy()


def test_a_pyfunc_model_is_served_from_its_image_by_mlflow_skinny(tmp_path):
    """The pyfunc runtime's image: mlflow-skinny at the model's MLflow version and the model's own requirements,
    hashed from the wheels downloaded for them; read-only root filesystem; the same smoke test."""
    import sys

    import cloudpickle
    import pandas as pd

    if os.geteuid() != 0 or not container.engine_available():
        pytest.fail("the image tests need root and a usable buildah/podman/runc: run `make image-test`")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the class travels inside the model
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("pyfunc-image")
    frame = pd.DataFrame({"x1": [1.0, 2.5], "x2": [0.5, -1.0]})
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=_Doubler(), input_example=frame)
    context = assemble_build_context(f"runs:/{run.info.run_id}/model", tmp_path / "context", wheelhouse=True)
    assert context.manifest["runtime"] == "pyfunc"
    pins = (context.path / "requirements.txt").read_text()
    assert f"mlflow-skinny=={mlflow.__version__} --hash=sha256:" in pins
    tag, name, port = "localhost/mlops-scoring:pyfunc-image-test", f"scoring-pyfunc-test-{os.getpid()}", free_port()
    container.build_image(context.path, tag, container.BASE_IMAGE)
    try:
        container.run_container(tag, port, name, read_only=True)
        url = f"http://127.0.0.1:{port}"
        smoke.wait_for(url, "/ready", 90)
        smoke.run(url, context.path / "model" / "manifest.json")
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"dataframe_split": json.loads(
            frame.to_json(orient="split", index=False))}).encode(), headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["predictions"] == [2.5, 4.0]
        with container.mounted_image(tag) as rootfs:
            installed = {p.name.split("-")[0].lower() for p in (rootfs / "opt/venv/lib/python3.11/site-packages").iterdir()}
        assert "mlflow_skinny" in installed and "sklearn" not in installed
    finally:
        container.stop_container(name)
        container.remove_image(tag)
