"""The benchmark's pure parts: request bodies, wrk output parsing, aggregation, targets and the report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench import servers, serving_report
from bench import serving as bench_serving
from bench.serving_report import BARE, BATCH_SIZES, CONCURRENCY, OURS_MLFLOW, OURS_V2, WrkResult

EXAMPLE = [
    {"sex": "male", "age": 43.0, "credit_limit": 100000.0, "flag": True},
    {"sex": "female", "age": 29.0, "credit_limit": 50000.0, "flag": False},
]

WRK_OUTPUT = """Running 8s test @ http://127.0.0.1:57691/predict
  1 threads and 8 connections
  Latency Distribution
     50%  397.00us
     99%    4.82ms
  16692 requests in 8.01s, 5.02MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   2083.03
WRK_JSON {"requests":16692,"duration_us":8013338,"bytes":5265281,"connect":0,"read":2,"write":1,"status":7,\
"timeout":3,"p50_us":397,"p90_us":1253,"p99_us":4820,"max_us":9293,"mean_us":697.0}
"""


def result(rps: float, p99_ms: float = 1.0, errors: int = 0, background: float = 0.0, p50_ms: float = 0.5) -> WrkResult:
    return WrkResult(requests=int(rps * 8), seconds=8.0, rps=rps, p50_ms=p50_ms, p90_ms=p99_ms / 2, p99_ms=p99_ms,
                     max_ms=p99_ms * 2, non_2xx=errors, socket_errors=0, server_cores=0.9, background_cores=background)


def summary_with(single_ratio: float, batch_ratio: float, p99_ms: float = 1.0, errors: int = 0) -> dict:
    runs: dict[str, dict[str, list[WrkResult]]] = {"ours": {}, "mlflow": {}}
    for records, ratio in ((1, single_ratio), (100, batch_ratio)):
        for connections in CONCURRENCY:
            key = serving_report.load_key(records, connections)
            runs["mlflow"][key] = [result(50.0)]
            runs["ours"][key] = [result(50.0 * ratio, p99_ms=p99_ms, errors=errors)]
    return serving_report.summarize(runs)


def test_make_records_cycles_the_example_and_nudges_only_numbers():
    records = bench_serving.make_records(EXAMPLE, 5, seed=3)
    assert len(records) == 5
    assert [r["sex"] for r in records] == ["male", "female", "male", "female", "male"]
    assert [r["flag"] for r in records] == [True, False, True, False, True]  # booleans are not numbers here
    for index, record in enumerate(records):
        source = EXAMPLE[index % 2]
        for name in ("age", "credit_limit"):
            assert isinstance(record[name], float)
            assert abs(record[name] - source[name]) <= 0.05 * source[name] + 0.05
    assert records[0]["credit_limit"] != records[2]["credit_limit"]  # varied, not copies
    assert bench_serving.make_records(EXAMPLE, 5, seed=3) == records
    assert bench_serving.make_records(EXAMPLE, 5, seed=4) != records


def test_make_records_needs_an_example():
    with pytest.raises(ValueError, match="no input example"):
        bench_serving.make_records([], 1, seed=0)


def test_parse_wrk_reads_the_json_summary():
    parsed = serving_report.parse_wrk(WRK_OUTPUT)
    assert parsed.requests == 16692
    assert parsed.seconds == pytest.approx(8.013338)
    assert parsed.rps == pytest.approx(16692 / 8.013338)
    assert (parsed.p50_ms, parsed.p90_ms, parsed.p99_ms, parsed.max_ms) == (0.397, 1.253, 4.82, 9.293)
    assert parsed.non_2xx == 7 and parsed.socket_errors == 6 and parsed.errors == 13


def test_parse_wrk_takes_errors_from_the_text_report_when_it_says_more():
    quiet_json = WRK_OUTPUT.replace('"read":2,"write":1,"status":7,', '"read":0,"write":0,"status":0,').replace(
        '"timeout":3,', '"timeout":0,')
    parsed = serving_report.parse_wrk(quiet_json)
    assert (parsed.non_2xx, parsed.socket_errors) == (7, 6)


def test_parse_wrk_without_the_summary_line_fails_loudly():
    with pytest.raises(ValueError, match="WRK_JSON"):
        serving_report.parse_wrk("Running 8s test @ http://127.0.0.1:1/\nRequests/sec: 10\n")


def test_summarize_takes_medians_sums_errors_and_finds_the_quietest_round():
    runs = {"ours": {"1rec_c1": [result(100, p99_ms=9.0, background=1.2), result(300, p99_ms=1.0, background=0.1),
                                 result(200, p99_ms=5.0, errors=2, background=0.8)]}}
    summary = serving_report.summarize(runs)["ours"]["1rec_c1"]
    assert summary["rps"] == 200 and summary["p99_ms"] == 5.0
    assert (summary["rps_min"], summary["rps_max"], summary["rounds"]) == (100, 300, 3)
    assert summary["errors"] == 2
    assert summary["quietest"] == {"rps": 300, "p50_ms": 0.5, "p99_ms": 1.0, "background_cores": 0.1}
    assert summary["background_cores_max"] == 1.2


def test_ratio():
    assert serving_report.ratio(1000, 50) == 20
    assert serving_report.ratio(1, 0) == float("inf")


def test_two_servers_are_compared_round_by_round():
    """A slow spell of the shared machine lowers both servers of a round: the ratio is the median of the rounds'
    ratios, not the ratio of two medians taken from different rounds."""
    runs = {"ours": {"1rec_c1": [result(rps) for rps in (100.0, 200.0, 300.0)]},
            "mlflow": {"1rec_c1": [result(rps) for rps in (90.0, 210.0, 250.0)]}}
    summary = serving_report.summarize(runs)
    assert summary["ours"]["1rec_c1"]["rps_rounds"] == [100.0, 200.0, 300.0]
    # Rounds: 1.11, 0.95, 1.2; median 1.11. The medians' ratio would say 200 / 210 = 0.95.
    assert serving_report.rps_ratio(summary["ours"]["1rec_c1"], summary["mlflow"]["1rec_c1"]) == pytest.approx(100 / 90)
    with pytest.raises(ValueError):  # rounds that do not pair up are a broken run, not a ratio
        serving_report.rps_ratio(summary["ours"]["1rec_c1"], {"rps": 1.0, "rps_rounds": [1.0]})
    # Four rounds: a/b is exactly 1/(b/a) (the middle pair's geometric mean, not its average).
    even = {"ours": {"k": [result(rps) for rps in (100.0, 200.0, 300.0, 400.0)]},
            "mlflow": {"k": [result(rps) for rps in (200.0, 100.0, 200.0, 100.0)]}}
    four = serving_report.summarize(even)
    there, back = (serving_report.rps_ratio(four[a]["k"], four[b]["k"]) for a, b in (("ours", "mlflow"), ("mlflow", "ours")))
    assert there == pytest.approx(1 / back) and there == pytest.approx((2.0 * 1.5) ** 0.5)
    # A summary written before the rounds were kept (a local serving.json): the medians' ratio.
    assert serving_report.rps_ratio({"rps": 300.0}, {"rps": 200.0}) == 1.5


def test_targets_pass_at_their_limits():
    checks = serving_report.check_targets(summary_with(20.0, 10.0, p99_ms=3.0), cold_start_s=1.5, rss_mb_per_worker=150,
                                 total_errors=0)
    assert [c.passed for c in checks] == [True] * 6
    assert checks[0].measured == "c1 20.0x, c8 20.0x"


def test_targets_fail_just_past_their_limits():
    checks = serving_report.check_targets(summary_with(19.9, 9.9, p99_ms=3.01), cold_start_s=1.51, rss_mb_per_worker=151,
                                 total_errors=1)
    assert [c.passed for c in checks] == [False] * 6
    assert "3.01 ms" in checks[2].measured


def test_the_worst_concurrency_decides_a_ratio_target():
    summary = summary_with(25.0, 12.0)
    key = serving_report.load_key(100, 8)
    summary["ours"][key] = scaled(summary["ours"][key], 9.0 / 12.0)
    checks = {c.name: c for c in serving_report.check_targets(summary, 0.5, 90, 0)}
    assert checks["100-record throughput vs mlflow"].passed is False
    assert checks["100-record throughput vs mlflow"].measured == "c1 12.0x, c8 9.0x"
    assert checks["single-record throughput vs mlflow"].passed is True


def test_render_markdown_has_every_load_the_ratios_and_the_verdicts():
    summary = summary_with(30.0, 8.0)
    checks = serving_report.check_targets(summary, 0.6, 97, 0)
    rss = {"ours": {"worker_mb": 97.0, "tree_mb": 97.0, "processes": 1},
           "mlflow": {"worker_mb": 280.0, "tree_mb": 520.0, "processes": 2}}
    meta = {"model": "credit-default", "version": "1", "runtime": "onnx", "duration": 8.0, "rounds": 3, "launches": 3,
            "pinning": "not pinned", "cpus": 2, "date": "2026-11-23"}
    control = {"rps": 5000.0, "p50_ms": 0.15, "p99_ms": 0.4, "errors": 0}
    markdown = serving_report.render_markdown(summary, {"ours": 0.6, "mlflow": 6.0}, rss, checks, meta, control)
    rows = [line for line in markdown.splitlines() if line.startswith("| 1") and "conn" in line]
    assert len(rows) == 4
    assert rows[0].startswith("| 1 record, 1 conn | 1,500 | 50 | **30.0x** |")
    assert "| 100 records, 8 conn | 400 | 50 | **8.0x** |" in markdown
    assert "| control: ours `GET /health`, 1 conn | 5,000 |" in markdown
    assert "| 0.60 s | 6.00 s |" in markdown and "| 97 MB | 280 MB |" in markdown
    assert "| 100-record throughput vs mlflow | >= 10x | c1 8.0x, c8 8.0x | **FAIL** |" in markdown
    assert "| single-record throughput vs mlflow | >= 20x | c1 30.0x, c8 30.0x | PASS |" in markdown


def test_lua_script_posts_each_body_or_sends_one_bodiless_request():
    post = bench_serving.lua_script("/invocations", Path("/tmp/x.bodies"))
    assert 'io.lines("/tmp/x.bodies")' in post
    assert 'wrk.format("POST", "/invocations",' in post and '"application/json"' in post
    assert serving_report.WRK_MARKER in post and "latency:percentile(99)" in post
    get = bench_serving.lua_script("/health", None, "GET")
    assert 'requests[1] = wrk.format("GET", "/health")' in get and "io.lines" not in get


@pytest.mark.parametrize(("envelope", "status", "payload", "count", "ok"), [
    ("records", 200, {"predictions": [{"probability": 0.2, "label": 0}, {"probability": 0.9, "label": 1}]}, 2, True),
    ("records", 200, {"predictions": [{"probability": 0.2, "label": 0}]}, 2, False),
    ("records", 200, {"predictions": [{"probability": 1.5, "label": 1}]}, 1, False),
    ("records", 503, {"error": "not ready"}, 1, False),
    ("dataframe_records", 200, {"predictions": [[0.8, 0.2], [0.1, 0.9]]}, 2, True),
    ("dataframe_records", 200, {"predictions": [[0.8, 0.2]]}, 2, False),
    ("dataframe_records", 200, {"something": "else"}, 1, False),
    ("v2", 200, {"outputs": [{"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.2, 0.9]},
                             {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]}]}, 2, True),
    ("v2", 200, {"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]}, 1, False),
    ("bare", 200, {"predictions": [{"probability": 0.5, "label": 0}]}, 100, True),
    ("bare", 500, {}, 1, False),
])
def test_check_response_wants_a_200_with_one_probability_per_record(envelope, status, payload, count, ok):
    server = servers.Server("x", "/ready", "/predict", envelope, launcher=None, log=Path("/dev/null"), cpus=None)
    problem = servers.check_response(server, status, json.dumps(payload).encode(), count)
    assert (problem is None) == ok
    if status != 200:
        assert problem.startswith(f"status {status}")


def test_server_body_uses_its_envelope():
    server = servers.Server("mlflow", "/ping", "/invocations", "dataframe_records", launcher=None, log=Path("/dev/null"),
                          cpus=None)
    assert json.loads(server.body(EXAMPLE[:1])) == {"dataframe_records": EXAMPLE[:1]}


def test_v2_body_has_one_typed_tensor_per_column():
    server = servers.Server("ours-v2", "/ready", "/v2/models/m/infer", serving_report.V2, launcher=None, log=Path("/dev/null"),
                          cpus=None)
    body = json.loads(server.body(EXAMPLE))
    assert [(t["name"], t["datatype"], t["shape"]) for t in body["inputs"]] == [
        ("sex", "BYTES", [2]), ("age", "FP64", [2]), ("credit_limit", "FP64", [2]), ("flag", "FP64", [2])]
    assert body["inputs"][0]["data"] == ["male", "female"]


def scaled(entry: dict, factor: float) -> dict:
    """A server's summary at one load with its req/s (the median and every round's) times `factor`."""
    return {**entry, "rps": entry["rps"] * factor, "rps_rounds": [rps * factor for rps in entry["rps_rounds"]]}


def with_protocols(summary: dict, predict_of_bare: float, invocations_of_predict: float, v2_of_predict: float) -> dict:
    """Add the bare endpoint and our other two protocols to a summary, at the given shares of /predict."""
    summary = json.loads(json.dumps(summary))
    for name, share in ((BARE, 1 / predict_of_bare), (OURS_MLFLOW, invocations_of_predict),
                        (OURS_V2, v2_of_predict)):
        summary[name] = {key: scaled(value, share) for key, value in summary["ours"].items()}
    return summary


def test_framework_targets_pass_at_their_limits_and_fail_past_them():
    passing = with_protocols(summary_with(30.0, 12.0), predict_of_bare=0.70, invocations_of_predict=0.90,
                             v2_of_predict=0.90)
    checks = {c.name: c for c in serving_report.framework_checks(passing)}
    assert len(checks) == 5 and all(c.passed for c in checks.values()), checks
    assert checks["/predict vs bare FastAPI endpoint, 1 record, 8 conn"].measured.startswith("70% (medians 1,500 vs 2,143 req/s)")
    assert checks["/invocations vs mlflow models serve, 1 record, 8 conn"].measured == "27.0x"
    failing = with_protocols(summary_with(21.0, 12.0), predict_of_bare=0.29, invocations_of_predict=0.89,
                             v2_of_predict=0.89)
    assert [c.passed for c in serving_report.framework_checks(failing)] == [False] * 5
    assert serving_report.framework_checks(summary_with(30.0, 12.0)) == []  # a run without those servers has no such checks


def test_cpu_per_request_compares_protocols_by_what_a_request_costs_the_server():
    runs = {name: {serving_report.load_key(n, c): [dataclasses.replace(result(rps), server_cores=cores)]
                   for n in BATCH_SIZES for c in CONCURRENCY}
            for name, rps, cores in (("ours", 1000.0, 0.5), (OURS_MLFLOW, 1000.0, 0.55),
                                     (OURS_V2, 500.0, 0.3), (BARE, 2000.0, 0.6), ("mlflow", 50.0, 1.0))}
    summary = serving_report.summarize(runs)
    assert summary["ours"]["1rec_c8"]["cpu_us"] == pytest.approx(500.0)  # 0.5 cores / 1000 req/s
    rows = [line for line in serving_report.render_cpu(summary) if line.startswith("| 1 record, 8 conn")]
    # bare 300 µs vs ours 500: 60 %; /invocations 550 µs: 91 %; V2 600 µs: 83 %.
    assert rows == ["| 1 record, 8 conn | 500 | 550 | 600 | 300 | **60%** | 91% | 83% |"]


def test_render_markdown_prints_every_protocol_ratio_and_the_profile():
    summary = with_protocols(summary_with(30.0, 12.0), predict_of_bare=0.5, invocations_of_predict=0.95,
                             v2_of_predict=0.9)
    profile = {1: {"score (onnxruntime)": 100.0, "metrics": 50.0}, 100: {"score (onnxruntime)": 500.0, "metrics": 100.0}}
    rss = {"ours": {"worker_mb": 97.0, "tree_mb": 97.0, "processes": 1},
           "mlflow": {"worker_mb": 280.0, "tree_mb": 520.0, "processes": 2}}
    meta = {"model": "credit-default", "version": "1", "runtime": "onnx", "duration": 8.0, "rounds": 3, "launches": 3,
            "pinning": "not pinned", "cpus": 2, "date": "2026-11-23"}
    checks = serving_report.check_targets(summary, 0.6, 97, 0)
    markdown = serving_report.render_markdown(summary, {"ours": 0.6, "mlflow": 6.0}, rss, checks, meta, None, profile)
    assert "| 1 record, 8 conn | 1,500 | 1,425 | 1,350 | 3,000 | **50%** | 95% | 90% | 28.5x |" in markdown
    # 1,500 req/s at 1 connection = 667 µs per request: score 100 µs (15%), metrics 50 (7.5%), the rest the framework.
    assert "| score (onnxruntime) | 100 (15%) | 500 (" in markdown
    assert "| framework: HTTP, uvicorn, ScoringFront | 517 (78%) |" in markdown


def test_the_bare_endpoint_checks_say_the_ceiling_a_server_could_reach_here():
    """The ceiling: the bare endpoint's CPU per request + parsing the body + the model, nothing else."""
    runs = {name: {serving_report.load_key(n, c): [dataclasses.replace(result(rps), server_cores=cores)]
                   for n in BATCH_SIZES for c in CONCURRENCY}
            for name, rps, cores in (("ours", 1000.0, 0.5), (OURS_MLFLOW, 1000.0, 0.5),
                                     (OURS_V2, 1000.0, 0.5), (BARE, 5000.0, 0.5), ("mlflow", 50.0, 1.0))}
    summary = serving_report.summarize(runs)  # bare: 0.5 cores / 5000 req/s = 100 µs of CPU per request
    profile = {1: {serving_report.PARSE_ONLY: 5.0, serving_report.SCORE: 20.0, "metrics": 3.0},
               100: {serving_report.PARSE_ONLY: 120.0, serving_report.SCORE: 230.0, "metrics": 30.0}}
    checks = {c.name: c for c in serving_report.framework_checks(summary, profile)}
    batch = checks["/predict vs bare FastAPI endpoint, 100 records, 8 conn"]
    # 100 / (100 + 120 + 230) = 22 %: below a 30 % target whatever the server does besides.
    assert batch.measured == ("20% (medians 1,000 vs 5,000 req/s); ceiling here 22%: the bare endpoint's 100 µs of CPU + "
                              "parsing the body 120 + the model 230, nothing else")
    assert "ceiling here 80%" in checks["/predict vs bare FastAPI endpoint, 1 record, 8 conn"].measured
    assert "ceiling" not in serving_report.framework_checks(summary)[0].measured  # no profile, no ceiling
    # The parse-only reference is part of parse + validate: not a row of the profile, not in its sum.
    profile_rows = serving_report.render_profile(profile, summary)
    assert not any(serving_report.PARSE_ONLY in line for line in profile_rows)
    assert "| framework: HTTP, uvicorn, ScoringFront | 977 (98%) | 740 (74%) |" in profile_rows


def test_baseline_targets_and_table_compare_our_predict_with_the_baselines():
    """Issue 21: 100 records at least 1.8x the baseline's req/s, one record not slower; the worst connection count
    decides; the table gives each ratio and both against the bare endpoint."""
    summary = with_protocols(summary_with(30.0, 12.0), predict_of_bare=0.5, invocations_of_predict=0.95,
                             v2_of_predict=0.9)
    assert serving_report.baseline_checks(summary) == []  # a run without a baseline has no such checks
    for single, batch, passed in ((1.0, 1.8, [True, True]), (0.99, 1.79, [False, False])):
        factor = {key: single if key.startswith("1rec") else batch for key in summary["ours"]}
        with_base = {**summary, serving_report.BASELINE: {key: {**value, "rps": value["rps"] / factor[key],
                                                       "rps_rounds": [rps / factor[key] for rps in value["rps_rounds"]],
                                                       "cpu_us": value["cpu_us"] * factor[key]}
                                                 for key, value in summary["ours"].items()}}
        checks = serving_report.baseline_checks(with_base)
        assert [c.passed for c in checks] == passed, checks
    assert checks[1].measured == "c1 1.79x, c8 1.79x"
    rows = [line for line in serving_report.render_baseline(with_base) if line.startswith("| 100 records, 8 conn")]
    # ours 600 req/s (12x mlflow's 50), the baseline 600 / 1.79 = 335, bare 1,200.
    assert rows == ["| 100 records, 8 conn | 600 | 335 | **1.79x** | 50% | 28% | 1,500 / 2,685 |"], rows


def test_the_run_without_the_request_log_is_reported_beside_the_baseline_ratios():
    """The bound the request log's cost leaves: ours with REQUEST_LOG=false against the baseline, in the check's
    measured text and as the table's last column; it decides no target."""
    summary = with_protocols(summary_with(30.0, 12.0), predict_of_bare=0.5, invocations_of_predict=0.95,
                             v2_of_predict=0.9)
    with_base = {**summary, serving_report.BASELINE: {key: scaled(value, 1 / 1.5) for key, value in summary["ours"].items()},
                 serving_report.NO_LOG: {key: scaled(value, 1.2) for key, value in summary["ours"].items()}}
    checks = serving_report.baseline_checks(with_base)
    assert checks[1].measured == "c1 1.50x, c8 1.50x; without the request log c1 1.80x, c8 1.80x"
    assert [c.passed for c in checks] == [True, False]  # the bound is reported, not counted
    rows = [line for line in serving_report.render_baseline(with_base) if line.startswith("| 100 records, 8 conn")]
    assert rows == ["| 100 records, 8 conn | 600 | 400 | **1.50x** | 50% | 33% | 1,500 / 1,500 | 1.80x |"], rows


def test_the_baseline_is_served_from_its_own_packaging_of_the_same_version(tmp_path):
    """The baseline checkout's serving/context.py packages the version (its compiled graph, manifest and app), not
    ours: a checkout whose packaging writes down what it was asked for."""
    checkout = tmp_path / "checkout"
    (checkout / "serving" / "scoring").mkdir(parents=True)
    (checkout / "serving" / "__init__.py").write_text("")
    (checkout / "serving" / "scoring" / "app.py").write_text("baseline")
    (checkout / "serving" / "context.py").write_text(
        "import json, os\n"
        "def assemble_build_context(model_uri, out_dir, *, wheelhouse=True, progress=print):\n"
        "    (out_dir / 'model').mkdir(parents=True)\n"
        "    made_by = [model_uri, wheelhouse, os.environ['MLFLOW_TRACKING_URI'], __file__]\n"
        "    (out_dir / 'model' / 'made-by.json').write_text(json.dumps(made_by))\n")
    prepared = servers.Prepared("sqlite:///registry.db", "7", tmp_path / "ours", {"model": {"name": "credit-default"}})
    out = servers.baseline_context(prepared, checkout, tmp_path / "out")
    made_by = json.loads((out / "model" / "made-by.json").read_text())
    assert made_by == ["models:/credit-default/7", False, "sqlite:///registry.db", str(checkout / "serving" / "context.py")]
    with pytest.raises(FileNotFoundError, match="not a checkout"):
        servers.baseline_context(prepared, tmp_path / "nowhere", tmp_path / "out2")
