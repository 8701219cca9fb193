"""Benchmark: our scoring service vs `mlflow models serve` and a bare FastAPI endpoint, one worker each.

    make bench                                   # = bash scripts/install_bench_tools.sh; python -m bench.serving
    python -m bench.serving --quick              # a short smoke of the benchmark itself
    python -m bench.serving --duration 8 --rounds 3 --state .local/bench
    python -m bench.serving --baseline ../checkout-of-an-older-commit   # or BENCH_BASELINE=<path>

What it does, all on 127.0.0.1:
1. prepares (or reuses) a sqlite registry under --state: 20000 rows of the dev stack's model's example data, that
   model trained, registered and promoted to @champion; assembles a build context from models:/<name>@champion
   afresh every run, so what is measured is the current serving/scoring;
2. cold start of each server (launch -> first 200 on /ready, or /ping for mlflow), median of --launches;
3. checks one request of every body it will send gets a 200 with one prediction per record;
4. loads, with wrk (-t1, keep-alive) for {1, 100} records x {1, 8} connections, interleaved (and reversed
   every other round) for --rounds rounds, medians: our /predict, our /invocations and our V2 infer (the
   same process, the same records), `mlflow models serve`, and the bare endpoint (bench/bare_app.py:
   FastAPI + uvicorn reading the body and returning a constant: the framework's speed limit), and, given a
   baseline checkout (--baseline or BENCH_BASELINE; `make bench` makes a worktree of BENCH_BASELINE_REF), that
   code's /predict: the build context the checkout's own packaging makes of the same registered version (its
   compiled graph, manifest and app), launched the same way, in the same interleaved rounds;
5. RSS of each server's process tree after the load (from /proc), every ratio, and the targets, PASS/FAIL: a ratio
   of two servers' req/s is the median of the rounds' ratios (a round runs them one after another, so a slow
   spell of the shared machine lowers both sides of the same round);
6. a profile of one /predict request (parse + validate, score, log, metrics, respond), timed in-process
   with the service's own code; the rest of 1 / req/s at one connection is the framework's.

Our service runs with REQUEST_LOG=true and its stdout a pipe, read by another process that writes the file (as
a container runtime reads a container's stdout: containerd's shim, outside the pod's CPU, so the reader is pinned
off the server's CPU): it writes its request log as in production, lines of at most 16 KiB, a request's in one
write(), and the benchmark checks the file has a line per answered request. MLflow's uvicorn writes its access log
line per request to a file. Given a baseline, ours is also run with REQUEST_LOG=false (`ours-no-log`): how fast
/predict would be with a request log that cost nothing, the bound of what making the log cheaper can give.

By default the server is pinned to one CPU and wrk to another (a worker is one core in the cluster
too, and the load generator then does not steal the server's CPU); --no-pin turns that off.

Results: bench/results/serving.json (everything, per round) and bench/results/serving.md (tables); a full run
then writes docs/performance.md and its chart (bench/report.py).

Here: one run read top to bottom (launch, load, profile, write the results). The servers it prepares and starts are
bench/servers.py; the results' aggregation, targets and tables are bench/serving_report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import servers, serving_report
from bench.servers import ROOT, Server, busy_seconds, children_cpu_seconds, model_name, say, tree_cpu_seconds
from bench.serving_report import BARE, BASELINE, BATCH_SIZES, CONCURRENCY, NO_LOG, OURS_MLFLOW, OURS_V2, WRK_MARKER, WrkResult

RESULTS = ROOT / "bench" / "results"


def make_records(example: list[dict], count: int, seed: int) -> list[dict]:
    """`count` records cycling the example rows, each number nudged by up to +-5% (rounded, kept a float)."""
    if not example:
        raise ValueError("the manifest has no input example to build requests from")
    rng = random.Random(seed)
    records = []
    for index in range(count):
        record = {}
        for name, value in example[index % len(example)].items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                record[name] = value
            else:
                record[name] = float(round(value * (1 + rng.uniform(-0.05, 0.05)), 1))
        records.append(record)
    return records


def lua_script(path: str, bodies_file: Path | None, method: str = "POST") -> str:
    """wrk script: send the bodies (one JSON document per line) in turn, or one bodiless request when there is no
    bodies file; print the summary as one JSON line (exact percentiles, error counts)."""
    if bodies_file is None:
        load = f"requests[1] = wrk.format({json.dumps(method)}, {json.dumps(path)})"
    else:
        load = f"""for line in io.lines({json.dumps(str(bodies_file))}) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format({json.dumps(method)}, {json.dumps(path)},
        {{["Content-Type"] = "application/json"}}, line)
    end
  end"""
    return f"""
local requests = {{}}
local index = 0

init = function(args)
  {load}
end

request = function()
  index = index % #requests + 1
  return requests[index]
end

done = function(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARKER}{{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def run_wrk(server: Server, script: Path, connections: int, duration: float, cpus: set[int] | None,
            raw_dir: Path, label: str) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s", "--latency",
               "-s", str(script), f"http://127.0.0.1:{server.port}{server.predict_path}"]
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    assert server.process is not None
    before = (time.perf_counter(), busy_seconds(), tree_cpu_seconds(server.process.pid), children_cpu_seconds())
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, preexec_fn=preexec)
    after = (time.perf_counter(), busy_seconds(), tree_cpu_seconds(server.process.pid), children_cpu_seconds())
    (raw_dir / f"{label}.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    elapsed, busy, served, wrk_cpu = (b - a for a, b in zip(before, after, strict=True))
    return dataclasses.replace(serving_report.parse_wrk(done.stdout), server_cores=served / elapsed,
                               background_cores=max(0.0, busy - served - wrk_cpu) / elapsed)


def write_bodies(server: Server, records_per_request: int, example: list[dict], work: Path) -> tuple[Path, list[bytes]]:
    bodies = [server.body(make_records(example, records_per_request, seed=1000 * records_per_request + i))
              for i in range(serving_report.VARIANTS[records_per_request])]
    path = work / f"{server.name}-{records_per_request}.bodies"
    path.write_bytes(b"\n".join(bodies) + b"\n")
    script = work / f"{server.name}-{records_per_request}.lua"
    script.write_text(lua_script(server.predict_path, path))
    return script, bodies


def progress(round_index: int, rounds: int, server: str, load: str, result: WrkResult) -> None:
    say(f"round {round_index + 1}/{rounds} {server:6} {load:14} {result.rps:7.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  server {result.server_cores:.2f} cores, "
        f"others {result.background_cores:.2f}")


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def pick_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None, str]:
    allowed = sorted(os.sched_getaffinity(0))
    if not pin or len(allowed) < 2:
        return None, None, "not pinned"
    return {allowed[-1]}, {allowed[0]}, f"server pinned to CPU {allowed[-1]}, wrk to CPU {allowed[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=ROOT / ".local" / "bench", help="registry, context, logs")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per load")
    parser.add_argument("--launches", type=int, default=3, help="cold starts per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per server and body")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and wrk to separate CPUs")
    parser.add_argument("--quick", action="store_true", help="short run: 2s, 1 round, 1 launch, 1s warm-up")
    parser.add_argument("--context", type=Path, help="serve this build context (same model version) instead of the one "
                        "under --state: to measure a change to the scoring app on a copy")
    parser.add_argument("--baseline", type=Path, default=os.environ.get("BENCH_BASELINE") or None,
                        help="a checkout of an older commit (default $BENCH_BASELINE): its /predict is loaded too, "
                        "on the same model, and compared (`make bench` makes a worktree of BENCH_BASELINE_REF)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.launches, args.warmup = 2.0, 1, 1, 1.0
    if shutil.which("wrk") is None:
        print("wrk is not installed: run bash scripts/install_bench_tools.sh", file=sys.stderr)
        return 2

    started = time.perf_counter()
    state = args.state.resolve()
    out = args.out.resolve()
    raw_dir = out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    server_cpus, wrk_cpus, pinning = pick_cpus(not args.no_pin)
    say(f"{pinning}; {args.duration:g}s x {args.rounds} rounds; state {state}")

    prepared = servers.prepare(state)
    if args.context:
        manifest = json.loads((args.context / "model" / "manifest.json").read_text())
        if str(manifest["model"]["version"]) != prepared.version:
            print(f"--context serves v{manifest['model']['version']}, the registry's champion is v{prepared.version}",
                  file=sys.stderr)
            return 2
        prepared = servers.Prepared(prepared.tracking_uri, prepared.version, args.context.resolve(), manifest)
        say(f"serving the build context {prepared.context}")
    example = prepared.manifest["input_example"]
    baseline = None
    if args.baseline:
        baseline = servers.baseline_context(prepared, args.baseline.resolve(), state / "baseline-context")
        say(f"baseline: {args.baseline} ({git_describe(args.baseline)}) served from {baseline}")
    all_servers = servers.servers(prepared, state / "logs", server_cpus, baseline)
    order = list(all_servers.values())  # processes: launched, measured and stopped
    cold: dict[str, list[float]] = {name: [] for name in all_servers}
    runs: dict[str, dict[str, list[WrkResult]]] = {name: {} for name in all_servers}
    control: list[WrkResult] = []
    try:
        # Cold starts, interleaved; the last launch of each is the one that gets loaded.
        for launch in range(args.launches):
            for server in order:
                seconds = server.launch()
                cold[server.name].append(seconds)
                say(f"cold start {launch + 1}/{args.launches}: {server.name} ready in {seconds:.2f}s (port {server.port})")
                if launch < args.launches - 1:
                    server.stop()
        idle_rss = {s.name: servers.rss_report(s.process.pid, s.worker_pid()) for s in order}
        loaded = [all_servers["ours"], *servers.protocol_routes(all_servers["ours"], model_name()), all_servers["mlflow"],
                  all_servers[BARE], *(all_servers[name] for name in (BASELINE, NO_LOG) if name in all_servers)]
        runs = {server.name: {} for server in loaded}

        scripts: dict[tuple[str, int], Path] = {}
        for server in loaded:
            for records in BATCH_SIZES:
                script, bodies = write_bodies(server, records, example, raw_dir)
                for body in bodies:
                    problem = servers.check_response(server, *servers.http_post(server.port, server.predict_path, body), records)
                    if problem:
                        raise RuntimeError(f"{server.name} {server.predict_path} with {records} record(s): {problem}")
                scripts[(server.name, records)] = script
            say(f"verified: {server.name} answers every body with a 200 and one probability per record")
            for records in BATCH_SIZES:
                run_wrk(server, scripts[(server.name, records)], max(CONCURRENCY), args.warmup, wrk_cpus, raw_dir,
                        f"warmup-{server.name}-{records}")
        ours = all_servers["ours"]
        control_script = raw_dir / "ours-health.lua"  # the framework and the machine, no model: the floor of p99
        control_script.write_text(lua_script("/health", None, "GET"))
        log_lines_before = count_lines(ours.log)

        for round_index in range(args.rounds):
            sequence = loaded if round_index % 2 == 0 else loaded[::-1]
            for records in BATCH_SIZES:
                for connections in CONCURRENCY:
                    key = serving_report.load_key(records, connections)
                    for server in sequence:
                        result = run_wrk(server, scripts[(server.name, records)], connections, args.duration, wrk_cpus,
                                         raw_dir, f"r{round_index + 1}-{server.name}-{key}")
                        runs[server.name].setdefault(key, []).append(result)
                        progress(round_index, args.rounds, server.name, key, result)
            result = run_wrk(ours, control_script, 1, args.duration, wrk_cpus, raw_dir, f"r{round_index + 1}-ours-health_c1")
            control.append(result)
            progress(round_index, args.rounds, "ours", "GET /health c1", result)

        rss = {s.name: servers.rss_report(s.process.pid, s.worker_pid()) for s in order}
        log_lines = count_lines(all_servers["ours"].log) - log_lines_before
    finally:
        for server in order:
            server.stop()

    answered = sum(r.requests for name in ("ours", OURS_MLFLOW, OURS_V2) for r in _flatten(runs[name].values()))
    if log_lines < answered:
        say(f"WARNING: our request log has {log_lines} lines for {answered} answered requests")
    else:
        say(f"request log: {log_lines} JSON lines for {answered} answered requests (in-flight ones at each run end too)")

    summary = serving_report.summarize(runs)
    control_summary = serving_report.summarize({"ours": {"health_c1": control}})["ours"]["health_c1"]
    cold_median = {name: statistics.median(values) for name, values in cold.items()}
    total_errors = sum(v["errors"] for by_load in summary.values() for v in by_load.values()) + control_summary["errors"]
    profile = {n: profile_request(prepared.context / "model", example, n) for n in BATCH_SIZES}
    checks = serving_report.check_targets(summary, cold_median["ours"], rss["ours"]["worker_mb"], total_errors, profile)
    import mlflow

    meta = {"model": model_name(), "version": prepared.version, "runtime": prepared.manifest.get("runtime"),
            "duration": args.duration, "rounds": args.rounds, "launches": args.launches, "pinning": pinning,
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "mlflow": mlflow.__version__,
            "python": sys.version.split()[0], "request_log": "REQUEST_LOG=true, stdout a pipe another process drains to a file",
            "context": str(prepared.context),
            "baseline": f"{args.baseline} ({git_describe(args.baseline)})" if args.baseline else None}
    markdown = serving_report.render_markdown(summary, cold_median, rss, checks, meta, control_summary, profile)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.md").write_text(markdown)
    (out / "serving.json").write_text(json.dumps({
        "meta": meta, "summary": summary, "cold_start_s": cold, "cold_start_median_s": cold_median,
        "rss_after_load": rss, "rss_after_ready": idle_rss,
        "runs": {name: {key: [vars(r) for r in results] for key, results in by_load.items()}
                 for name, by_load in runs.items()},
        "control_ours_health_c1": {"summary": control_summary, "runs": [vars(r) for r in control]},
        "request_log": {"lines": log_lines, "answered": answered},
        "checks": [vars(c) for c in checks],
        "profile_us": profile,
    }, indent=2))
    print("\n" + markdown, flush=True)
    say(f"wrote {out / 'serving.md'} and {out / 'serving.json'} in {time.perf_counter() - started:.0f}s")
    if not args.quick and out == RESULTS:  # a full run of the default results: the documentation's page follows it
        from bench import report as page

        say(f"wrote {page.write(out)}")
    return 1 if args.strict and not all(c.passed for c in checks) else 0


def profile_request(model_dir: Path, example: list[dict], records: int, iterations: int = 300) -> dict[str, float]:
    """Median microseconds of each stage of one /predict request, run with the service's own code (the steps
    of the /predict handler and ScoringPath.score, each timed on its own)."""
    import orjson

    from serving.scoring import metrics, requestlog
    from serving.scoring.core import ScoringPath
    from serving.scoring.model import Manifest, load_scorer
    from serving.scoring.schemas import records_adapter
    from serving.scoring.settings import Settings

    manifest = Manifest.read(model_dir)
    scorer = load_scorer(model_dir, manifest)
    path = ScoringPath(Settings(model_dir, 1000, True), manifest, records_adapter(manifest, 1000))
    body = json.dumps({"records": make_records(example, records, seed=records)}).encode()
    histogram, counter = metrics.PROBABILITY.labels("profile", "0"), metrics.RECORDS.labels("profile", "0", "predict")
    sink = os.open(os.devnull, os.O_WRONLY)
    timings: dict[str, list[float]] = {}

    def timed(stage: str, work: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        value = work(*args)
        timings.setdefault(stage, []).append((time.perf_counter() - started) * 1e6)
        return value

    def outputs_of(array: Any) -> list[dict]:
        return path.outputs.build(array)[2]  # the service's own outputs by task (scoring/core.py Outputs)

    def observe(array: Any, outputs: list[dict]) -> None:
        metrics.observe_probabilities(histogram, array[:, 1])
        counter.inc(len(outputs))

    log_stream = requestlog.Stream(sink)

    def log(columns: Any, outputs: list[dict]) -> None:  # as ScoringPath.score logs
        log_stream.write(requestlog.prediction_parts(
            request_id="x" * 32, model_name="m", model_version="1", runtime="onnx", protocol="predict",
            inputs=path.logged(columns), outputs=outputs, latency_ms=0.5, max_line=log_stream.max_line))

    try:
        for _ in range(iterations):
            timed(serving_report.PARSE_ONLY, path.fast.decoders[0].decode, body)  # the decoder a body without ids meets
            parsed = timed("parse + validate (msgspec, one pass)", path.fast.decode, body)
            columns = timed("records to columns", path.columns_of, parsed)
            feeds = timed("features (one float32 matrix)", scorer.feeds, columns)
            array = timed(serving_report.SCORE, scorer.run, feeds)
            outputs = timed("outputs (probability, label)", outputs_of, array)
            timed("metrics", observe, array, outputs)
            timed("request log (serialise + write)", log, columns, outputs)
            timed("respond (serialise)", orjson.dumps, {"request_id": "x" * 32, "predictions": outputs})
    finally:
        os.close(sink)
    return {stage: statistics.median(values) for stage, values in timings.items()}


def git_describe(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return done.stdout.strip()[:80] if done.returncode == 0 else "not a git checkout"


def _flatten(items: Iterable[Iterable]) -> list:
    return [x for group in items for x in group]


if __name__ == "__main__":
    raise SystemExit(main())
