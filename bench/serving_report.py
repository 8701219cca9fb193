"""The serving benchmark's results: wrk's output parsed, the rounds aggregated, the targets checked and the tables
rendered (bench/serving.py prints them; bench/report.py renders them again from the JSON for docs/performance.md).
Pure functions of the measurements, tested by tests/test_bench_report.py.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

BATCH_SIZES = (1, 100)
CONCURRENCY = (1, 8)
VARIANTS = {1: 16, 100: 4}  # distinct request bodies per batch size, cycled by wrk
WRK_MARKER = "WRK_JSON "
BARE, V2 = "bare", "v2"  # the bare FastAPI endpoint; our Open Inference Protocol route
BASELINE = "baseline"  # /predict of the baseline checkout's code (--baseline), the same model
OURS_MLFLOW, OURS_V2 = "ours-invocations", "ours-v2"
NO_LOG = "ours-no-log"  # ours with REQUEST_LOG=false: the bound the request log's cost leaves


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
                "rps_rounds": [r.rps for r in results],  # in round order: paired with another server's (rps_ratio)
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


def rps_ratio(ours: dict, theirs: dict) -> float:
    """Two servers' req/s at one load, compared round by round: the median of each round's ratio. A round runs the
    servers one after another, so a slow spell of the shared machine (they last tens of seconds to minutes) lowers
    both sides of a round's ratio; the ratio of the two medians would take each side from a different round. With an
    even number of rounds, the middle pair's geometric mean, so that a/b is 1/(b/a) there too. A summary written
    before the rounds were kept (a local serving.json) gives the medians' ratio."""
    if "rps_rounds" not in ours or "rps_rounds" not in theirs:
        return ratio(ours["rps"], theirs["rps"])
    ratios = sorted(ratio(a, b) for a, b in zip(ours["rps_rounds"], theirs["rps_rounds"], strict=True))
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else math.sqrt(ratios[middle - 1] * ratios[middle])


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
        worst = min(rps_ratio(ours[load_key(records, c)], mlflow[load_key(records, c)]) for c in CONCURRENCY)
        per_c = ", ".join(f"c{c} {rps_ratio(ours[load_key(records, c)], mlflow[load_key(records, c)]):.1f}x"
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
        share = rps_ratio(ours[key], bare[key])
        checks.append(Check(f"/predict vs bare FastAPI endpoint, {records} record{'s' if records > 1 else ''}, {c8} conn",
                            f">= {target:.0%}", f"{share:.0%} (medians {ours[key]['rps']:,.0f} vs {bare[key]['rps']:,.0f} req/s)"
                            + ceiling(summary, profile or {}, records, c8), share >= target))
    for name, target, label in ((OURS_MLFLOW, TARGET_MLFLOW_OF_PREDICT, "/invocations"),
                                (OURS_V2, TARGET_V2_OF_PREDICT, "V2 infer")):
        shares = {key: rps_ratio(summary[name][key], ours[key]) for key in ours if key in summary[name]}
        checks.append(Check(f"{label} vs /predict, same records", f">= {target:.0%}",
                            ", ".join(f"{key} {share:.0%}" for key, share in shares.items()),
                            min(shares.values()) >= target))
    key = load_key(1, c8)
    versus = rps_ratio(summary[OURS_MLFLOW][key], summary["mlflow"][key])
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
        shares = {c: rps_ratio(summary["ours"][load_key(records, c)], summary[BASELINE][load_key(records, c)])
                  for c in CONCURRENCY}
        measured = ", ".join(f"c{c} {share:.2f}x" for c, share in shares.items())
        if NO_LOG in summary:
            measured += "; without the request log " + ", ".join(
                f"c{c} {rps_ratio(summary[NO_LOG][load_key(records, c)], summary[BASELINE][load_key(records, c)]):.2f}x"
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
    lines = ["", "Against the baseline (the same registered version, packaged and served by the baseline checkout's code):", "",
             "| load | /predict req/s | baseline req/s | **ours / baseline** | ours / bare | baseline / bare "
             "| CPU µs per request, ours / baseline |" + (" ours without the request log / baseline |" if no_log else ""),
             "|---|--:|--:|--:|--:|--:|--:|" + ("--:|" if no_log else "")]
    for records in BATCH_SIZES:
        for connections in CONCURRENCY:
            key = load_key(records, connections)
            ours, base, bare = (summary[n][key] for n in ("ours", BASELINE, BARE))
            lines.append(f"| {records} record{'s' if records > 1 else ''}, {connections} conn | {ours['rps']:,.0f} | "
                         f"{base['rps']:,.0f} | **{rps_ratio(ours, base):.2f}x** | "
                         f"{rps_ratio(ours, bare):.0%} | {rps_ratio(base, bare):.0%} | "
                         f"{ours.get('cpu_us', 0):,.0f} / {base.get('cpu_us', 0):,.0f} |"
                         + (f" {rps_ratio(summary[NO_LOG][key], base):.2f}x |" if no_log else ""))
    return lines


def render_protocols(summary: dict[str, dict[str, dict]]) -> list[str]:
    """Every load: each protocol's req/s, the bare endpoint's, and every ratio."""
    if not {BARE, OURS_MLFLOW, OURS_V2} <= set(summary):
        return []
    lines = ["", "| load | /predict | /invocations | V2 infer | bare FastAPI | /predict / bare | /invocations / /predict "
                 "| V2 / /predict | /invocations / mlflow |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for load, key, (ours, inv, v2, bare) in _protocol_rows(summary, "rps"):
        entry = {name: summary[name][key] for name in ("ours", OURS_MLFLOW, OURS_V2, BARE, "mlflow")}
        lines.append(f"| {load} | {ours:,.0f} | {inv:,.0f} | {v2:,.0f} | {bare:,.0f} | "
                     f"**{rps_ratio(entry['ours'], entry[BARE]):.0%}** | {rps_ratio(entry[OURS_MLFLOW], entry['ours']):.0%} | "
                     f"{rps_ratio(entry[OURS_V2], entry['ours']):.0%} | {rps_ratio(entry[OURS_MLFLOW], entry['mlflow']):.1f}x |")
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
        f"127.0.0.1, wrk -t1, {meta['duration']:g}s x {meta['rounds']} interleaved rounds, medians (a ratio of req/s: "
        f"the median of the rounds' ratios); "
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
                f"**{rps_ratio(a, b):.1f}x** | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | "
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
