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
   code's /predict: the same model directory and build context with the checkout's serving/scoring, launched
   the same way, in the same interleaved rounds;
5. RSS of each server's process tree after the load (from /proc), every ratio, and the targets, PASS/FAIL;
6. a profile of one /predict request (parse + validate, score, log, metrics, respond), timed in-process
   with the service's own code; the rest of 1 / req/s at one connection is the framework's.

Our service runs with REQUEST_LOG=true and its stdout a pipe, read by another process that writes the file (as
a container runtime reads a container's stdout: containerd's shim, outside the pod's CPU): it writes its request
log as in production, lines of at most PIPE_BUF bytes each in one write(), and the benchmark checks the file has a
line per answered request. MLflow's uvicorn writes its access log line per request to a file. Given a baseline, ours
is also run with REQUEST_LOG=false (`ours-no-log`): how fast /predict would be with a request log that cost nothing,
the bound of what making the log cheaper can give.

By default the server is pinned to one CPU and wrk to another (a worker is one core in the cluster
too, and the load generator then does not steal the server's CPU); --no-pin turns that off.

Results: bench/results/serving.json (everything, per round) and bench/results/serving.md (tables); a full run
then writes docs/performance.md and its chart (bench/report.py).

Why one module: one run read top to bottom (prepare, launch, load, profile, report), each step a section; the
report's tables are plain functions, tested by tests/test_bench_report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.localrun import free_port, stop_service

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def model_name() -> str:
    """The model benchmarked: the dev stack's (its `name`), trained through its model module."""
    from infra import stack_files

    return stack_files.project("dev")
TRAIN_ROWS, TRAIN_SEED = 20_000, 7
BATCH_SIZES = (1, 100)
CONCURRENCY = (1, 8)
VARIANTS = {1: 16, 100: 4}  # distinct request bodies per batch size, cycled by wrk
WRK_MARKER = "WRK_JSON "
BARE, V2 = "bare", "v2"  # the bare FastAPI endpoint; our Open Inference Protocol route
BASELINE = "baseline"  # /predict of the baseline checkout's code (--baseline), the same model
OURS_MLFLOW, OURS_V2 = "ours-invocations", "ours-v2"
NO_LOG = "ours-no-log"  # ours with REQUEST_LOG=false: the bound the request log's cost leaves
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Profile stages the ceiling is made of (profile_request): parsing alone is a reference, not a stage of its own.
PARSE_ONLY, SCORE = "parse (msgspec into the records, the fastest parser here; for reference)", "score (onnxruntime)"

# Targets: (key, description). Checked by check_targets().
TARGET_SINGLE_RATIO = 20.0
TARGET_BATCH_RATIO = 10.0
TARGET_P99_MS = 3.0
TARGET_COLD_START_S = 1.5
TARGET_RSS_MB = 150.0
# The framework's limit (issue 11): ours vs the bare endpoint at 8 connections, protocols vs /predict.
TARGET_SINGLE_OF_BARE = 0.70
TARGET_BATCH_OF_BARE = 0.30
TARGET_MLFLOW_OF_PREDICT = 0.90
TARGET_MLFLOW_ROUTE_VS_MLFLOW = 20.0
TARGET_V2_OF_PREDICT = 0.90
# Issue 21: /predict against the code the issue started from (the baseline), worst of the connection counts.
TARGET_BATCH_OF_BASELINE = 1.8
TARGET_SINGLE_OF_BASELINE = 1.0


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# --------------------------------------------------------------------------------------------------
# Pure helpers: request bodies, wrk output, aggregation, report. Tested in tests/test_bench_report.py.
# --------------------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    server_cores: float = 0.0  # CPU the server's process tree used during the run, in cores
    background_cores: float = 0.0  # CPU used by everything else but the server and wrk: the machine's noise

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def parse_wrk(output: str) -> WrkResult:
    """The JSON line our Lua done() prints; cross-checked against wrk's own 'Non-2xx' / 'Socket errors' lines."""
    line = next((ln for ln in output.splitlines() if ln.startswith(WRK_MARKER)), None)
    if line is None:
        raise ValueError(f"no {WRK_MARKER.strip()} line in wrk output:\n{output[-2000:]}")
    raw = json.loads(line[len(WRK_MARKER):])
    seconds = raw["duration_us"] / 1e6
    non_2xx = raw["status"]
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    for text_line in output.splitlines():  # wrk's text report, when present, must agree
        text_line = text_line.strip()
        if text_line.startswith("Non-2xx or 3xx responses:"):
            non_2xx = max(non_2xx, int(text_line.split(":")[1]))
        elif text_line.startswith("Socket errors:"):
            counts = [int(part.split()[-1]) for part in text_line.split(":", 1)[1].split(",")]
            socket_errors = max(socket_errors, sum(counts))
    return WrkResult(requests=raw["requests"], seconds=seconds, rps=raw["requests"] / seconds if seconds else 0.0,
                     p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
                     max_ms=raw["max_us"] / 1000, non_2xx=non_2xx, socket_errors=socket_errors)


def load_key(records: int, connections: int) -> str:
    return f"{records}rec_c{connections}"


def summarize(runs: dict[str, dict[str, list[WrkResult]]]) -> dict[str, dict[str, dict]]:
    """server -> load key -> per-round results  =>  server -> load key -> medians (errors summed)."""
    summary: dict[str, dict[str, dict]] = {}
    for server, by_load in runs.items():
        summary[server] = {}
        for key, results in by_load.items():
            summary[server][key] = {
                "rounds": len(results),
                "rps": statistics.median(r.rps for r in results),
                "p50_ms": statistics.median(r.p50_ms for r in results),
                "p99_ms": statistics.median(r.p99_ms for r in results),
                "rps_min": min(r.rps for r in results),
                "rps_max": max(r.rps for r in results),
                "requests": sum(r.requests for r in results),
                "errors": sum(r.errors for r in results),
                "server_cores": statistics.median(r.server_cores for r in results),
                "cpu_us": statistics.median(cpu_us_per_request(r) for r in results),
                "background_cores_max": max(r.background_cores for r in results),
                "quietest": quietest(results),
            }
    return summary


def cpu_us_per_request(result: WrkResult) -> float:
    """The server's CPU time per answered request. On a shared machine a neighbour's load lowers req/s (and
    the load generator's share) from run to run; the CPU a request costs the server moves much less."""
    return result.server_cores / result.rps * 1e6 if result.rps else 0.0


def quietest(results: list[WrkResult]) -> dict:
    """The round with the least background load: what the service does when the neighbours are quiet."""
    best = min(results, key=lambda r: r.background_cores)
    return {"rps": best.rps, "p50_ms": best.p50_ms, "p99_ms": best.p99_ms, "background_cores": best.background_cores}


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else float("inf")


@dataclass
class Check:
    name: str
    target: str
    measured: str
    passed: bool


def check_targets(summary: dict[str, dict[str, dict]], cold_start_s: float, rss_mb_per_worker: float,
                  total_errors: int, profile: dict[int, dict[str, float]] | None = None) -> list[Check]:
    ours, mlflow = summary["ours"], summary["mlflow"]
    checks = []
    for records, target in ((1, TARGET_SINGLE_RATIO), (100, TARGET_BATCH_RATIO)):
        worst = min(ratio(ours[load_key(records, c)]["rps"], mlflow[load_key(records, c)]["rps"]) for c in CONCURRENCY)
        per_c = ", ".join(f"c{c} {ratio(ours[load_key(records, c)]['rps'], mlflow[load_key(records, c)]['rps']):.1f}x"
                          for c in CONCURRENCY)
        label = "single-record" if records == 1 else f"{records}-record"
        checks.append(Check(f"{label} throughput vs mlflow", f">= {target:g}x", per_c, worst >= target))
    single = ours[load_key(1, 1)]
    p99, quiet = single["p99_ms"], single["quietest"]
    checks.append(Check("p99 latency, 1 record, 1 connection", f"<= {TARGET_P99_MS:g} ms",
                        f"{p99:.2f} ms (median; {quiet['p99_ms']:.2f} ms in the quietest round, "
                        f"others using {quiet['background_cores']:.2f} cores)", p99 <= TARGET_P99_MS))
    checks.append(Check("cold start (launch to /ready 200)", f"<= {TARGET_COLD_START_S:g} s", f"{cold_start_s:.2f} s",
                        cold_start_s <= TARGET_COLD_START_S))
    checks.append(Check("RSS per worker after load", f"<= {TARGET_RSS_MB:g} MB", f"{rss_mb_per_worker:.0f} MB",
                        rss_mb_per_worker <= TARGET_RSS_MB))
    checks += framework_checks(summary, profile)
    checks += baseline_checks(summary)
    checks.append(Check("errors (non-2xx + socket) under load", "0", str(total_errors), total_errors == 0))
    return checks


def ceiling(summary: dict[str, dict[str, dict]], profile: dict[int, dict[str, float]], records: int,
            connections: int) -> str:
    """The most of the bare endpoint's throughput a server answering these records could reach on this machine if
    it did nothing but the two steps no scoring server can skip, by CPU per request: the bare endpoint's own cost,
    parsing the body (msgspec straight into the records, the fastest JSON parser for Python: faster than orjson's
    dicts) and running the model (onnxruntime), with nothing else encoded, logged or counted. "" without a profile
    of that many records."""
    stages = profile.get(records, {})
    if PARSE_ONLY not in stages or SCORE not in stages or "cpu_us" not in summary[BARE][load_key(records, connections)]:
        return ""
    bare = summary[BARE][load_key(records, connections)]["cpu_us"]
    share = bare / (bare + stages[PARSE_ONLY] + stages[SCORE])
    return (f"; ceiling here {share:.0%}: the bare endpoint's {bare:,.0f} µs of CPU + parsing the body "
            f"{stages[PARSE_ONLY]:,.0f} + the model {stages[SCORE]:,.0f}, nothing else")


def framework_checks(summary: dict[str, dict[str, dict]], profile: dict[int, dict[str, float]] | None = None
                     ) -> list[Check]:
    """Issue 11's targets: /predict against the bare FastAPI endpoint at 8 connections (with the ceiling, given
    the profile), and each other protocol against /predict on the same records (and
    /invocations against `mlflow models serve`)."""
    if not {BARE, OURS_MLFLOW, OURS_V2} <= set(summary):
        return []
    ours, bare, c8 = summary["ours"], summary[BARE], max(CONCURRENCY)
    checks = []
    for records, target in ((1, TARGET_SINGLE_OF_BARE), (100, TARGET_BATCH_OF_BARE)):
        key = load_key(records, c8)
        share = ratio(ours[key]["rps"], bare[key]["rps"])
        checks.append(Check(f"/predict vs bare FastAPI endpoint, {records} record{'s' if records > 1 else ''}, {c8} conn",
                            f">= {target:.0%}", f"{share:.0%} ({ours[key]['rps']:,.0f} vs {bare[key]['rps']:,.0f} req/s)"
                            + ceiling(summary, profile or {}, records, c8), share >= target))
    for name, target, label in ((OURS_MLFLOW, TARGET_MLFLOW_OF_PREDICT, "/invocations"),
                                (OURS_V2, TARGET_V2_OF_PREDICT, "V2 infer")):
        shares = {key: ratio(summary[name][key]["rps"], ours[key]["rps"]) for key in ours if key in summary[name]}
        checks.append(Check(f"{label} vs /predict, same records", f">= {target:.0%}",
                            ", ".join(f"{key} {share:.0%}" for key, share in shares.items()),
                            min(shares.values()) >= target))
    key = load_key(1, c8)
    versus = ratio(summary[OURS_MLFLOW][key]["rps"], summary["mlflow"][key]["rps"])
    checks.append(Check(f"/invocations vs mlflow models serve, 1 record, {c8} conn",
                        f">= {TARGET_MLFLOW_ROUTE_VS_MLFLOW:g}x", f"{versus:.1f}x", versus >= TARGET_MLFLOW_ROUTE_VS_MLFLOW))
    return checks


def baseline_checks(summary: dict[str, dict[str, dict]]) -> list[Check]:
    """Issue 21's targets against the baseline checkout's /predict: the worst of the connection counts; with ours
    run without its request log too, that run's ratios beside them (the bound the log's cost leaves)."""
    if BASELINE not in summary:
        return []
    checks = []
    for records, target in ((1, TARGET_SINGLE_OF_BASELINE), (100, TARGET_BATCH_OF_BASELINE)):
        shares = {c: ratio(summary["ours"][load_key(records, c)]["rps"], summary[BASELINE][load_key(records, c)]["rps"])
                  for c in CONCURRENCY}
        measured = ", ".join(f"c{c} {share:.2f}x" for c, share in shares.items())
        if NO_LOG in summary:
            measured += "; without the request log " + ", ".join(
                f"c{c} {ratio(summary[NO_LOG][load_key(records, c)]['rps'], summary[BASELINE][load_key(records, c)]['rps']):.2f}x"
                for c in CONCURRENCY)
        checks.append(Check(f"/predict vs the baseline's, {records} record{'s' if records > 1 else ''}",
                            f">= {target:g}x", measured, min(shares.values()) >= target))
    return checks


def render_baseline(summary: dict[str, dict[str, dict]]) -> list[str]:
    """/predict now against the baseline's, by req/s and by the server's CPU per request, and both against the
    bare endpoint; given the run without the request log, its ratio to the baseline."""
    if BASELINE not in summary or BARE not in summary:
        return []
    no_log = NO_LOG in summary
    lines = ["", "Against the baseline (the same model and build context, the baseline checkout's serving/scoring):", "",
             "| load | /predict req/s | baseline req/s | **ours / baseline** | ours / bare | baseline / bare "
             "| CPU µs per request, ours / baseline |" + (" ours without the request log / baseline |" if no_log else ""),
             "|---|--:|--:|--:|--:|--:|--:|" + ("--:|" if no_log else "")]
    for records in BATCH_SIZES:
        for connections in CONCURRENCY:
            key = load_key(records, connections)
            ours, base, bare = (summary[n][key] for n in ("ours", BASELINE, BARE))
            lines.append(f"| {records} record{'s' if records > 1 else ''}, {connections} conn | {ours['rps']:,.0f} | "
                         f"{base['rps']:,.0f} | **{ratio(ours['rps'], base['rps']):.2f}x** | "
                         f"{ratio(ours['rps'], bare['rps']):.0%} | {ratio(base['rps'], bare['rps']):.0%} | "
                         f"{ours.get('cpu_us', 0):,.0f} / {base.get('cpu_us', 0):,.0f} |"
                         + (f" {ratio(summary[NO_LOG][key]['rps'], base['rps']):.2f}x |" if no_log else ""))
    return lines


def render_protocols(summary: dict[str, dict[str, dict]]) -> list[str]:
    """Every load: each protocol's req/s, the bare endpoint's, and every ratio."""
    if not {BARE, OURS_MLFLOW, OURS_V2} <= set(summary):
        return []
    lines = ["", "| load | /predict | /invocations | V2 infer | bare FastAPI | /predict / bare | /invocations / /predict "
                 "| V2 / /predict | /invocations / mlflow |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for load, key, (ours, inv, v2, bare) in _protocol_rows(summary, "rps"):
        lines.append(f"| {load} | {ours:,.0f} | {inv:,.0f} | {v2:,.0f} | {bare:,.0f} | **{ratio(ours, bare):.0%}** | "
                     f"{ratio(inv, ours):.0%} | {ratio(v2, ours):.0%} | {ratio(inv, summary['mlflow'][key]['rps']):.1f}x |")
    return lines + render_cpu(summary)


def _protocol_rows(summary: dict[str, dict[str, dict]], metric: str):
    """(load label, load key, (ours, /invocations, V2, bare)) of `metric`, for every load in report order."""
    for records in BATCH_SIZES:
        for connections in CONCURRENCY:
            key = load_key(records, connections)
            yield (f"{records} record{'s' if records > 1 else ''}, {connections} conn", key,
                   tuple(summary[n][key][metric] for n in ("ours", OURS_MLFLOW, OURS_V2, BARE)))


def render_cpu(summary: dict[str, dict[str, dict]]) -> list[str]:
    """The same comparisons by the server's CPU time per request (median over rounds): what a request costs,
    whatever share of the machine the neighbours left to the server and to wrk during each run."""
    if not all("cpu_us" in v for n in ("ours", OURS_MLFLOW, OURS_V2, BARE) for v in summary[n].values()):
        return []
    lines = ["", "Server CPU per request (µs; ratios are requests per CPU-second: less moved by the neighbours' load than "
                 "req/s, not unmoved (they share caches and cores)):", "",
             "| load | /predict | /invocations | V2 infer | bare FastAPI | /predict / bare | /invocations / /predict "
             "| V2 / /predict |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for load, _key, (ours, inv, v2, bare) in _protocol_rows(summary, "cpu_us"):
        lines.append(f"| {load} | {ours:,.0f} | {inv:,.0f} | {v2:,.0f} | {bare:,.0f} | **{ratio(bare, ours):.0%}** | "
                     f"{ratio(ours, inv):.0%} | {ratio(ours, v2):.0%} |")
    return lines


def render_profile(profile: dict[int, dict[str, float]], summary: dict[str, dict[str, dict]]) -> list[str]:
    """Where one request's time goes: the stages timed in-process, the rest (HTTP, uvicorn, Starlette)
    from the measured 1-connection throughput (one request at a time: 1/rps is its server time)."""
    if not profile:
        return []
    lines = ["", "Where the time of one /predict request goes (stages timed in-process with the service's own "
                 "code, median of many; framework = 1 / req/s at 1 connection minus the stages):", "",
             "| stage | " + " | ".join(f"{n} record{'s' if n > 1 else ''} µs" for n in profile) + " |",
             "|---|" + "--:|" * len(profile)]
    stages = [stage for stage in next(iter(profile.values())) if stage != PARSE_ONLY]  # part of parse + validate
    totals = {n: 1e6 / summary["ours"][load_key(n, 1)]["rps"] for n in profile}
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(f"{profile[n][stage]:.0f} ({profile[n][stage] / totals[n]:.0%})"
                                                  for n in profile) + " |")
    rest = {n: totals[n] - sum(profile[n][stage] for stage in stages) for n in profile}
    lines.append("| framework: HTTP, uvicorn, ScoringFront | "
                 + " | ".join(f"{rest[n]:.0f} ({rest[n] / totals[n]:.0%})" for n in profile) + " |")
    lines.append("| whole request (1 / req/s, 1 conn) | " + " | ".join(f"{totals[n]:.0f}" for n in profile) + " |")
    return lines


def background(summary: dict[str, dict[str, dict]]) -> float:
    """The worst background load (cores used by other processes) seen during any measured run."""
    return max((v["background_cores_max"] for by_load in summary.values() for v in by_load.values()), default=0.0)


def render_markdown(summary: dict[str, dict[str, dict]], cold: dict[str, float], rss: dict[str, dict],
                    checks: list[Check], meta: dict, control: dict | None = None,
                    profile: dict[int, dict[str, float]] | None = None) -> str:
    ours, mlflow = summary["ours"], summary["mlflow"]
    lines = [
        f"Model `{meta['model']}` v{meta['version']} ({meta['runtime']} runtime in ours), one worker each, "
        f"127.0.0.1, wrk -t1, {meta['duration']:g}s x {meta['rounds']} interleaved rounds, medians; "
        f"{meta['pinning']}; {meta['cpus']} CPUs, {meta['date']}. Other processes used up to "
        f"{background(summary):.2f} cores during the measured runs (the machine is shared)."
        + (f" Baseline: {meta['baseline']}." if meta.get("baseline") else ""),
        "",
        "| load | ours req/s | mlflow req/s | ours / mlflow | ours p50 / p99 ms | mlflow p50 / p99 ms | errors (ours, mlflow) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for records in BATCH_SIZES:
        for connections in CONCURRENCY:
            key = load_key(records, connections)
            a, b = ours[key], mlflow[key]
            lines.append(
                f"| {records} record{'s' if records > 1 else ''}, {connections} conn | {a['rps']:,.0f} | {b['rps']:,.0f} | "
                f"**{ratio(a['rps'], b['rps']):.1f}x** | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | "
                f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {a['errors']}, {b['errors']} |")
    if control:
        lines.append(f"| control: ours `GET /health`, 1 conn | {control['rps']:,.0f} | | | "
                     f"{control['p50_ms']:.2f} / {control['p99_ms']:.2f} | | {control['errors']} |")
    lines += render_protocols(summary)
    lines += render_baseline(summary)
    lines += render_profile(profile or {}, summary)
    lines += [
        "",
        "| | ours | mlflow models serve |",
        "|---|--:|--:|",
        f"| cold start, launch to first ready 200 (median of {meta['launches']}) | {cold['ours']:.2f} s | "
        f"{cold['mlflow']:.2f} s |",
        f"| RSS after load, serving process | {rss['ours']['worker_mb']:.0f} MB | {rss['mlflow']['worker_mb']:.0f} MB |",
        f"| RSS after load, whole process tree | {rss['ours']['tree_mb']:.0f} MB ({rss['ours']['processes']} proc) | "
        f"{rss['mlflow']['tree_mb']:.0f} MB ({rss['mlflow']['processes']} proc) |",
        "",
        "| target | goal | measured | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c.name} | {c.target} | {c.measured} | {'PASS' if c.passed else '**FAIL**'} |" for c in checks]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Processes: launch, readiness, RSS, stop.
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Preparation: registry + context, reused across runs.
# --------------------------------------------------------------------------------------------------

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


def baseline_context(context: Path, checkout: Path, out: Path) -> Path:
    """Our build context (the same model directory) with the baseline checkout's app (its serving/scoring)."""
    app = checkout / "serving" / "scoring"
    if not (app / "app.py").is_file():
        raise FileNotFoundError(f"{checkout} is not a checkout of this project: no serving/scoring/app.py")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(context, out, ignore=shutil.ignore_patterns("scoring", "wheels", "__pycache__"))
    shutil.copytree(app, out / "scoring", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out


def servers(prepared: Prepared, logs: Path, cpus: set[int] | None, baseline: Path | None = None) -> dict[str, Server]:
    """Ours, mlflow, the bare endpoint and, given a baseline build context, the baseline (served as ours is)."""
    from serving.localrun import start_service

    bin_dir = Path(sys.executable).parent
    logs.mkdir(parents=True, exist_ok=True)

    def scoring_service(context: Path, request_log: bool = True) -> Callable[[int, Path], subprocess.Popen]:
        def launch(port: int, log: Path) -> subprocess.Popen:
            with log.open("wb") as out, log.with_suffix(".stderr.log").open("wb") as err:
                # stdout a pipe another process drains into the file, as a container runtime reads it: the log's
                # writes cost what they cost in production (a write to a regular file costs several times more).
                collector = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out, start_new_session=True)
                assert collector.stdin is not None
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


# --------------------------------------------------------------------------------------------------
# Load.
# --------------------------------------------------------------------------------------------------

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
    return dataclasses.replace(parse_wrk(done.stdout), server_cores=served / elapsed,
                               background_cores=max(0.0, busy - served - wrk_cpu) / elapsed)


def write_bodies(server: Server, records_per_request: int, example: list[dict], work: Path) -> tuple[Path, list[bytes]]:
    bodies = [server.body(make_records(example, records_per_request, seed=1000 * records_per_request + i))
              for i in range(VARIANTS[records_per_request])]
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

    prepared = prepare(state)
    if args.context:
        manifest = json.loads((args.context / "model" / "manifest.json").read_text())
        if str(manifest["model"]["version"]) != prepared.version:
            print(f"--context serves v{manifest['model']['version']}, the registry's champion is v{prepared.version}",
                  file=sys.stderr)
            return 2
        prepared = Prepared(prepared.tracking_uri, prepared.version, args.context.resolve(), manifest)
        say(f"serving the build context {prepared.context}")
    example = prepared.manifest["input_example"]
    baseline = None
    if args.baseline:
        baseline = baseline_context(prepared.context, args.baseline.resolve(), state / "baseline-context")
        say(f"baseline: {args.baseline} ({git_describe(args.baseline)}) served from {baseline}")
    all_servers = servers(prepared, state / "logs", server_cpus, baseline)
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
        idle_rss = {s.name: rss_report(s.process.pid, s.worker_pid()) for s in order}
        loaded = [all_servers["ours"], *protocol_routes(all_servers["ours"], model_name()), all_servers["mlflow"],
                  all_servers[BARE], *(all_servers[name] for name in (BASELINE, NO_LOG) if name in all_servers)]
        runs = {server.name: {} for server in loaded}

        scripts: dict[tuple[str, int], Path] = {}
        for server in loaded:
            for records in BATCH_SIZES:
                script, bodies = write_bodies(server, records, example, raw_dir)
                for body in bodies:
                    problem = check_response(server, *http_post(server.port, server.predict_path, body), records)
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
                    key = load_key(records, connections)
                    for server in sequence:
                        result = run_wrk(server, scripts[(server.name, records)], connections, args.duration, wrk_cpus,
                                         raw_dir, f"r{round_index + 1}-{server.name}-{key}")
                        runs[server.name].setdefault(key, []).append(result)
                        progress(round_index, args.rounds, server.name, key, result)
            result = run_wrk(ours, control_script, 1, args.duration, wrk_cpus, raw_dir, f"r{round_index + 1}-ours-health_c1")
            control.append(result)
            progress(round_index, args.rounds, "ours", "GET /health c1", result)

        rss = {s.name: rss_report(s.process.pid, s.worker_pid()) for s in order}
        log_lines = count_lines(all_servers["ours"].log) - log_lines_before
    finally:
        for server in order:
            server.stop()

    answered = sum(r.requests for name in ("ours", OURS_MLFLOW, OURS_V2) for r in _flatten(runs[name].values()))
    if log_lines < answered:
        say(f"WARNING: our request log has {log_lines} lines for {answered} answered requests")
    else:
        say(f"request log: {log_lines} JSON lines for {answered} answered requests (in-flight ones at each run end too)")

    summary = summarize(runs)
    control_summary = summarize({"ours": {"health_c1": control}})["ours"]["health_c1"]
    cold_median = {name: statistics.median(values) for name, values in cold.items()}
    total_errors = sum(v["errors"] for by_load in summary.values() for v in by_load.values()) + control_summary["errors"]
    profile = {n: profile_request(prepared.context / "model", example, n) for n in BATCH_SIZES}
    checks = check_targets(summary, cold_median["ours"], rss["ours"]["worker_mb"], total_errors, profile)
    import mlflow

    meta = {"model": model_name(), "version": prepared.version, "runtime": prepared.manifest.get("runtime"),
            "duration": args.duration, "rounds": args.rounds, "launches": args.launches, "pinning": pinning,
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "mlflow": mlflow.__version__,
            "python": sys.version.split()[0], "request_log": "REQUEST_LOG=true, stdout a pipe another process drains to a file",
            "context": str(prepared.context),
            "baseline": f"{args.baseline} ({git_describe(args.baseline)})" if args.baseline else None}
    markdown = render_markdown(summary, cold_median, rss, checks, meta, control_summary, profile)
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

    def log(columns: Any, outputs: list[dict]) -> None:
        requestlog.write_lines(requestlog.prediction_parts(
            request_id="x" * 32, model_name="m", model_version="1", runtime="onnx", protocol="predict",
            inputs=path.logged(columns), outputs=outputs, latency_ms=0.5), sink)

    try:
        for _ in range(iterations):
            timed(PARSE_ONLY, path.fast.decoders[0].decode, body)  # the decoder a body without ids meets
            parsed = timed("parse + validate (msgspec, one pass)", path.fast.decode, body)
            columns = timed("records to columns", path.columns_of, parsed)
            feeds = timed("features (one float32 matrix)", scorer.feeds, columns)
            array = timed(SCORE, scorer.run, feeds)
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
