"""docs/performance.md and its serving chart, written from the benchmarks' JSON results: `make bench` and
`make bench-spark` call `write()` when a full run ends, and `python -m bench.report` writes the page again from
bench/results/ (serving.json, spark.json). Nothing on the page is pasted by hand: the tables are the benchmarks' own
(bench/serving_report.py render_markdown, bench/spark.py report), the prose around them says how to read them. A part whose
JSON is missing says so; the Spark part then shows the figures recorded before this page was generated, marked as
such, until the next `make bench-spark` replaces them. tests/test_docs.py renders the page from fixture JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "performance.md"
SERVING_CHART = "serving_throughput.png"  # beside the page, in docs/
SPARK_CHART = "spark_scaling.png"  # bench/spark.py draws it from the same run's JSON

INTRO = """# Performance

Two benchmarks, each a `make` verb (never a test: they take minutes and want a quiet machine), each writing its
results as JSON under `bench/results/` and this page from that JSON (`python -m bench.report` writes it again).
The tables below are the latest full run's; the machine is a shared 2-core one, so absolute numbers move with the
neighbours' load and the ratios, measured in interleaved rounds, are what to read.
"""

SERVING_METHOD = """## The scoring service (`make bench`)

The same registered model version served by the image's app (`/predict`, `/invocations` and V2 infer on the same
process and the same records), by `mlflow models serve --env-manager local` (what a user would otherwise pick), and by
a bare FastAPI + uvicorn endpoint that reads the body and returns a constant (`bench/bare_app.py`: the framework's
speed limit), one worker each, on 127.0.0.1, loaded by wrk in interleaved rounds; medians. Beside them, the
**baseline**: another commit's whole path, the build context its own packaging makes of the same registered version
(its compiled graph, manifest and app; `BENCH_BASELINE=<checkout>`, else a worktree of `BENCH_BASELINE_REF` made
under `.local/`). A full run takes about 12 minutes (`QUICK=1`, or `DURATION=3 ROUNDS=1`,
for a short one, which does not rewrite this page).

**How the servers run.** Ours exactly as the image runs it: `python -m scoring.serve` from the build context (uvicorn
with `serving/scoring/serve.py`'s `UVICORN_FLAGS`: httptools sending a response's head and body in one write
(`scoring/wire.py`), `--loop uvloop --lifespan on`, no access log, no server header), with the request log on and
stdout a pipe another process drains, as a container runtime reads it. The bare endpoint runs with the same flags; the
baseline with its own commit's (httptools writing the head and the body apart). Besides req/s the report gives the
server's **CPU time per request**: on a shared machine a neighbour's load moves req/s far more than it moves what a
request costs the server.

**What makes a request fast.** The compiled graph is the estimator alone on one float32 matrix: the imputers' fill
values and the one-hot categories travel in the model's ONNX metadata and the scorer builds the matrix; a boosted
binary classifier's trees run as a one-target ensemble of the raw score, a logistic after (serving/graph_rewrite.py:
onnxruntime's two-class kernel took a third longer on 100 records); the session is
called at C level with one reusable `RunOptions`; `ScoringFront` is the outermost ASGI layer, so a scoring request
never enters FastAPI's middleware stack; `/predict` and `/invocations`' JSON forms are decoded and validated in one
msgspec pass into typed records (`scoring/fastpath.py`; a body it refuses is validated again by pydantic, for the full
report of every field), whose columns feed the matrix; the request log encodes each line's slice of those columns
once, by column, in lines of up to 16 KiB, and writes a request's lines in one `write()` (under a lock shared by the
workers when longer than PIPE_BUF: scoring/requestlog.py), and /predict answers the outputs as the log's lines encoded
them; V2's JSON form is decoded in one msgspec pass too (one record in the signature's order by types that leave
nothing to check afterwards); and a response's head and body leave in one write (`scoring/wire.py`).

**The ceiling**, printed beside each bare-endpoint target from the run's own measurements: the share of the bare
endpoint's throughput a server could reach here if it did nothing but what no scoring server can skip, by CPU per
request: the bare endpoint's own cost, parsing the body with the fastest parser available (msgspec) and running the
model. With 100 records the model dominates what is left, so the 30 % target is out of reach for this model on this
machine whatever the service does.
"""

SPARK_METHOD = """## Batch scoring and the search on Spark (`make bench-spark`)

On local Spark with 2 cores (`local[2]`, one thread per task) in `.venv-runtime` (the job cluster's stand-in), on
generated data: batch scoring with the job's path (`serving/batch.py`: the service's row checks, the image's ONNX
model in `mapInArrow`) against `mlflow.pyfunc.spark_udf` of the same version, both to Spark's `noop` sink in one
session; the same query with a model that takes no time, which bounds the ratio whatever scores the rows; and the
training search, one candidate after another against the candidates as Spark tasks. It prints the machine's load
during the run (`QUICK=1` for a smoke run, which does not rewrite this page).
"""

SPARK_RECORDED = """!!! note "Recorded, not generated"
    No `bench/results/spark.json` was on disk when this page was last written: the figures below are those of the
    last full run (24 Nov 2026, 1-minute load median 1.38) as they were recorded by hand before this page was
    generated. The next `make bench-spark` replaces them with its own tables.

| batch scoring, rows | ours: the image's ONNX in `mapInArrow` | `mlflow.pyfunc.spark_udf`, same version | ratio (target ≥ 3×) |
|---|---|---|---|
| 10⁵ | 0.93 s = 108,000 rows/s | 1.71 s = 58,500 rows/s | 1.8× (missed) |
| 10⁶ | 4.05 s = 246,800 rows/s | 10.7 s = 93,700 rows/s | 2.6× (missed) |

| search (4 candidates × 200 iterations), rows | one after another | as Spark tasks, 2 slots | speedup | same choice |
|---|---|---|---|---|
| 2·10⁴ | 7.2 s | 4.5 s | 1.60× | yes |
| 2·10⁵ | 64.1 s | 35.8 s | 1.79× | yes |
| 10⁶ | 324.9 s | 176.5 s | 1.84× | yes |

Probabilities agree: max |Δp| 3.7e-7 over the 10⁵ rows (tolerance 1e-5). With a model that takes no time the same
query was only 2.3-3.2× spark_udf at 10⁵ rows: reading the rows and handing them to Python and back is Spark's cost,
which spark_udf pays too; at 10⁶ rows the trees' CPU plus that query's, spread perfectly over the 2 cores, allow
3.1-3.2× at best, and ours reached 2.8×. So the ≥ 3× target is out of reach at 10⁵ and within ~10 % of the machine's
limit at 10⁶: closing it would take a faster model, not anything in the job.
"""

SPARK_READING = f"""![batch scoring and search time against rows]({SPARK_CHART})

**What the curves say (sizing).** Both are straight lines on the log-log chart: time grows in proportion to rows.

- *Batch scoring is not what needs a second node.* Its memory does not grow with the table: Arrow batches of 10,000
  rows stream through `mapInArrow` and nothing is collected on the driver. At the measured rows/s per core, one
  4-core job cluster node (Standard_DS3_v2) scores about 10⁸ rows in under 10 minutes; workers add throughput in
  proportion (partitions are independent) when the night is shorter than that.
- *Training is bounded by the driver.* On 2 shared slots the search gains 1.5-1.8× as Spark tasks; on a quiet node
  with a core per candidate it should take about its longest candidate instead of the sum (at most 4× less), which is
  what `--search spark` is for on a job cluster: not measured here, so not claimed. On one core the whole search takes
  about 330 s per 10⁶ rows, so the training job's 2-hour timeout (`databricks.timeoutSeconds`) is reached near 2·10⁷
  rows one after another. Memory comes first: the loader collects the table into pandas on the driver (about 1.4 KB
  per row on a 4-core node, counting the splits, the broadcast and a copy per concurrent task), so a
  Standard_DS3_v2 driver (14 GB) runs out near 10⁷ rows.
- So **one node handles a training table up to about 10⁷ rows**; beyond that, a bigger driver (Standard_DS4_v2, 28 GB,
  about 2·10⁷) and then a learner that trains across workers (scikit-learn's HistGradientBoosting fits in one
  process), rather than more workers for this search.
"""


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def serving_tables(results: dict) -> str:
    """bench/serving.py's own report, from its JSON (what it printed when the run ended)."""
    from bench import serving_report

    profile = {int(records): stages for records, stages in (results.get("profile_us") or {}).items()}
    return serving_report.render_markdown(results["summary"], results["cold_start_median_s"], results["rss_after_load"],
                                   [serving_report.Check(**c) for c in results["checks"]], results["meta"],
                                   (results.get("control_ours_health_c1") or {}).get("summary"), profile)


def spark_tables(results: dict) -> str:
    from bench import spark

    return spark.report(results).split("\n", 2)[2]  # without its title: the section has one


def serving_chart(results: dict, out: Path) -> None:
    """Requests per second by load: ours, mlflow models serve, the bare endpoint and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    servers = [(name, label) for name, label in (("ours", "ours /predict"), ("baseline", "baseline /predict"),
                                                 ("mlflow", "mlflow models serve"), ("bare", "bare FastAPI"))
               if name in summary]
    loads = list(summary["ours"])
    figure, axis = plt.subplots(figsize=(9, 4.4))
    width = 0.8 / len(servers)
    for index, (name, label) in enumerate(servers):
        axis.bar([i + index * width for i in range(len(loads))], [summary[name][load]["rps"] for load in loads],
                 width, label=label)
    axis.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(loads))],
                    [load.replace("rec_c", " record(s), ").replace("_", "") + " conn" for load in loads])
    axis.set(yscale="log", ylabel="requests/s (median, log scale)",
             title=f"One worker each, {results['meta']['cpus']} shared CPUs, {results['meta']['date']}")
    axis.grid(True, axis="y", which="both", alpha=0.3)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(servers), frameon=False)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)


def page(serving: dict | None, spark: dict | None) -> str:
    parts = [INTRO, SERVING_METHOD]
    if serving is None:
        parts.append("No `bench/results/serving.json` yet: run `make bench`.\n")
    else:
        parts += [f"### The latest run\n\n![requests per second by load]({SERVING_CHART})\n", serving_tables(serving)]
    parts.append(SPARK_METHOD)
    if spark is None or "batch" not in spark or "search" not in spark:
        parts.append(SPARK_RECORDED)
    else:
        parts += ["### The latest run\n", spark_tables(spark)]
    parts.append(SPARK_READING)
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def write(results: Path = RESULTS, out: Path = PAGE) -> Path:
    """Write the page (and the serving chart) from the JSON in `results`."""
    serving = read(results / "serving.json")
    if serving is not None:
        serving_chart(serving, out.parent / SERVING_CHART)
    out.write_text(page(serving, read(results / "spark.json")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where serving.json and spark.json are")
    parser.add_argument("--out", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    print(f"wrote {write(args.results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
