"""The servers `python -m bench.serving` measures, and what it prepares for them: the registry with the dev stack's
model and a fresh build context (prepare), each server's command line (servers: ours, its protocol routes, `mlflow
models serve`, the bare endpoint, a baseline checkout's), and what is read of a running one: readiness, responses,
RSS and CPU time from /proc.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.serving_report import BARE, BASELINE, NO_LOG, OURS_MLFLOW, OURS_V2, V2
from serving.localrun import free_port, stop_service

ROOT = Path(__file__).resolve().parent.parent


def model_name() -> str:
    """The model benchmarked: the dev stack's (its `name`), trained through its model module."""
    from infra import stack_files

    return stack_files.project("dev")


TRAIN_ROWS, TRAIN_SEED = 20_000, 7


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc/<n>/stat parent ids."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def rss_report(root_pid: int, worker_pid: int) -> dict:
    tree = process_tree(root_pid)
    processes = [{"pid": p, "cmd": process_name(p), "rss_mb": status_kb(p, "VmRSS") / 1024,
                  "hwm_mb": status_kb(p, "VmHWM") / 1024} for p in tree]
    return {"tree_mb": sum(p["rss_mb"] for p in processes), "worker_mb": status_kb(worker_pid, "VmRSS") / 1024,
            "worker_hwm_mb": status_kb(worker_pid, "VmHWM") / 1024, "processes": len(processes), "detail": processes}


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (not idle, not iowait), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def http_post(port: int, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        stop_service(process.pid)
    process.wait(timeout=5)


@dataclass
class Server:
    name: str
    ready_path: str
    predict_path: str
    envelope: str  # the JSON key the records go under
    launcher: Callable[[int, Path], subprocess.Popen] | None  # None: a route of another server's process
    log: Path
    cpus: set[int] | None
    process: subprocess.Popen | None = None
    port: int = 0

    def launch(self, timeout: float = 120.0) -> float:
        """Start on a free port; seconds from launch to the first 200 on the readiness route."""
        self.port = free_port()
        started = time.perf_counter()
        self.process = self.launcher(self.port, self.log)
        if self.cpus:
            os.sched_setaffinity(self.process.pid, self.cpus)  # inherited by what it starts later
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready; "
                                   f"log tail:\n{tail(self.log)}")
            try:
                if http_get(self.port, self.ready_path, timeout=1.0) == 200:
                    return time.perf_counter() - started
            except (ConnectionError, OSError, http.client.HTTPException):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.name}: no 200 on {self.ready_path} within {timeout:.0f}s; log tail:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def worker_pid(self) -> int:
        """The process that serves: the last leaf of the tree (ours: the only process; mlflow: uvicorn under the CLI)."""
        assert self.process is not None
        tree = process_tree(self.process.pid)
        leaves = [p for p in tree if process_tree(p) == [p]]
        return leaves[-1] if leaves else tree[0]

    def body(self, records: list[dict]) -> bytes:
        if self.envelope == V2:
            return json.dumps(v2_request(records), separators=(",", ":")).encode()
        return json.dumps({self.envelope: records}, separators=(",", ":")).encode()

    def route(self, name: str, path: str, envelope: str) -> Server:
        """Another protocol of this running process: loaded like a server, never launched or stopped by itself."""
        return dataclasses.replace(self, name=name, predict_path=path, envelope=envelope, launcher=None)


def v2_request(records: list[dict]) -> dict:
    """An Open Inference Protocol request: one tensor per column, BYTES for strings, FP64 for numbers."""
    names = list(records[0])
    tensors = []
    for name in names:
        values = [r[name] for r in records]
        text = any(isinstance(v, str) for v in values)
        tensors.append({"name": name, "datatype": "BYTES" if text else "FP64", "shape": [len(values)], "data": values})
    return {"inputs": tensors}


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def check_response(server: Server, status: int, raw: bytes, count: int) -> str | None:
    """None when the reply is a 200 with `count` probabilities, else what is wrong."""
    if status != 200:
        return f"status {status}: {raw[:300]!r}"
    if server.envelope == BARE:  # a constant answer: only the status says anything
        return None
    try:
        payload = json.loads(raw)
        if server.envelope == V2:
            predictions = next((o["data"] for o in payload["outputs"] if o["name"] == "probability"), [])
        else:
            predictions = payload["predictions"]
        if server.envelope in ("records", V2):  # ours: [{"probability": p, "label": 0|1}, ...] or an FP64 tensor
            probabilities = [p["probability"] if isinstance(p, dict) else p for p in predictions]
        else:  # pyfunc predict_fn=predict_proba: [[p0, p1], ...]
            probabilities = [row[1] if isinstance(row, list) else row for row in predictions]
    except (ValueError, KeyError, TypeError, IndexError) as error:
        return f"unexpected reply shape ({type(error).__name__}): {raw[:300]!r}"
    if len(probabilities) != count or not all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probabilities):
        return f"expected {count} probabilities in [0, 1], got {raw[:300]!r}"
    return None


@dataclass
class Prepared:
    tracking_uri: str
    version: str
    context: Path
    manifest: dict = field(repr=False)


def prepare(state: Path) -> Prepared:
    import mlflow

    from training.local_registry import ensure_champion

    name = model_name()
    tracking_uri, version = ensure_champion(state, name, rows=TRAIN_ROWS, seed=TRAIN_SEED, environment="bench",
                                            module=name, say=lambda text: say(f"prepare: {text}"))
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the mlflow server it launches resolves the model here
    mlflow.set_tracking_uri(tracking_uri)

    # Assembled afresh every run (a few seconds): a reused context would keep an old copy of the app.
    from serving.context import assemble_build_context

    context = state / "context"
    say(f"prepare: assembling the build context from models:/{name}@champion (current serving/scoring)")
    manifest = assemble_build_context(f"models:/{name}@champion", context, wheelhouse=False,
                                      progress=lambda text: say(f"prepare: {text}")).manifest
    return Prepared(tracking_uri, version, context, manifest)


def baseline_context(prepared: Prepared, checkout: Path, out: Path) -> Path:
    """The build context the baseline checkout's own packaging makes of the same registered version (its compiled
    graph and manifest, serving/context.py, and its app), as an image built from that commit would hold: the baseline
    is that commit's whole path, packaging included, not its app on our model directory."""
    if not (checkout / "serving" / "scoring" / "app.py").is_file():
        raise FileNotFoundError(f"{checkout} is not a checkout of this project: no serving/scoring/app.py")
    shutil.rmtree(out, ignore_errors=True)
    version_uri = f"models:/{prepared.manifest['model']['name']}/{prepared.version}"
    assemble = ("import sys; from pathlib import Path; from serving.context import assemble_build_context; "
                "assemble_build_context(sys.argv[1], Path(sys.argv[2]), wheelhouse=False, progress=lambda text: None)")
    # The checkout first on the path (`-c` puts the working directory there): its serving package, not ours.
    subprocess.run([sys.executable, "-c", assemble, version_uri, str(out)], cwd=checkout, check=True,
                   env={**os.environ, "MLFLOW_TRACKING_URI": prepared.tracking_uri, "PYTHONPATH": str(checkout)})
    return out


def servers(prepared: Prepared, logs: Path, cpus: set[int] | None, baseline: Path | None = None) -> dict[str, Server]:
    """Ours, mlflow, the bare endpoint and, given a baseline build context, the baseline (served as ours is)."""
    from serving.localrun import start_service

    bin_dir = Path(sys.executable).parent
    logs.mkdir(parents=True, exist_ok=True)
    reader_cpus = (os.sched_getaffinity(0) - cpus) if cpus else set()  # where the request log's reader runs

    def scoring_service(context: Path, request_log: bool = True) -> Callable[[int, Path], subprocess.Popen]:
        def launch(port: int, log: Path) -> subprocess.Popen:
            with log.open("wb") as out, log.with_suffix(".stderr.log").open("wb") as err:
                # stdout a pipe another process drains into the file, as a container runtime reads it: the log's
                # writes cost what they cost in production (a write to a regular file costs several times more).
                collector = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out, start_new_session=True)
                assert collector.stdin is not None
                if reader_cpus:  # the shim runs outside the pod's CPU: the reader never takes the server's
                    os.sched_setaffinity(collector.pid, reader_cpus)
                try:
                    return start_service(context, port, stdout=collector.stdin, stderr=err, workers=1,
                                         extra_env={"REQUEST_LOG": "true" if request_log else "false"})
                finally:
                    collector.stdin.close()  # the service holds the write end: cat ends when the service does
        return launch

    ours = scoring_service(prepared.context)

    def mlflow(port: int, log: Path) -> subprocess.Popen:
        env = {**os.environ, "MLFLOW_TRACKING_URI": prepared.tracking_uri,
               "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # it execs `uvicorn` from PATH
        command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{model_name()}/{prepared.version}",
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
        with log.open("wb") as out:
            return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def bare(port: int, log: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "bench.bare_app", "--port", str(port)]  # our service's uvicorn flags
        with log.open("wb") as out:
            return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    return {
        "ours": Server("ours", "/ready", "/predict", "records", ours, logs / "ours-requests.jsonl", cpus),
        "mlflow": Server("mlflow", "/ping", "/invocations", "dataframe_records", mlflow, logs / "mlflow-server.log", cpus),
        BARE: Server(BARE, "/ready", "/predict", BARE, bare, logs / "bare-server.log", cpus),
        **({BASELINE: Server(BASELINE, "/ready", "/predict", "records", scoring_service(baseline),
                             logs / "baseline-requests.jsonl", cpus),
            NO_LOG: Server(NO_LOG, "/ready", "/predict", "records", scoring_service(prepared.context, False),
                           logs / "ours-no-log.log", cpus)} if baseline is not None else {}),
    }


def protocol_routes(ours: Server, model_name: str) -> list[Server]:
    """Our other protocols, on the same process and the same records as /predict."""
    return [ours.route(OURS_MLFLOW, "/invocations", "dataframe_records"),
            ours.route(OURS_V2, f"/v2/models/{model_name}/infer", V2)]
