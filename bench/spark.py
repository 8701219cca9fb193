"""Benchmark: batch scoring and the hyper-parameter search on local Spark with 2 cores (a benchmark, not a test).

    make bench-spark                      # = .venv-runtime/bin/python -m bench.spark
    python -m bench.spark --quick         # a short smoke of the benchmark itself (small tables, one round)
    python -m bench.spark --only batch    # the batch comparison alone (skips the minutes-long search)

It runs in the job cluster's stand-in (.venv-runtime: the runtime's MLflow 3.8.1 and Spark 4.1), on
`local[2]`, one Python thread per Spark task (OMP_NUM_THREADS=1, onnxruntime's one thread):

1. trains (or reuses) the dev stack's model (--model: another binary model module) on 20,000 rows of its example
   data in a sqlite registry under --state;
2. batch scoring of 10⁵ and 10⁶ generated rows (Parquet, 4 files, 2 input partitions for both methods):
   serving/batch.py's path (the service's row checks, the image's ONNX model in mapInArrow) against
   `mlflow.pyfunc.spark_udf` of the same registered version on the same rows, both written to Spark's
   `noop` sink, in one session (serving.batch.SESSION_CONF, the job's own settings, applies to both); rows/s as
   the median of --rounds, and the CPU seconds of the JVM and the Python workers per round (psutil, which the
   runtime's requirements bring); probabilities compared on the 10⁵ table; one executor's work per
   10,000-row batch, stage by stage, without Spark (profile_batch); and how far the ratio could go here (bounds):
   spark_udf against the same query with a model that takes no time (no_model), and against that query's CPU
   seconds plus the trees' spread over the 2 cores;
3. the search (every candidate of the model module's grid fitted and scored: training/search.py) on 2·10⁴, 2·10⁵ and
   10⁶ rows: one candidate after another in the driver against the candidates as Spark tasks
   (training/tuning.py), one thread each (scikit-learn's OpenMP threads on 2 shared cores beside Spark's
   JVM spin: 10x slower in a trial run); the grid and max_iter are the training job's own (4 candidates,
   200 iterations); --rounds rounds up to 2·10⁵ rows, one at 10⁶, bounded by --max-train-rows;
4. the machine's load (os.getloadavg) before, every 5 s during, and after the run;
5. bench/results/spark.json, bench/results/spark.md and the chart docs/spark_scaling.png (with --only, one
   part's results in bench/results/spark-<part>.json and .md, and no chart: it draws both parts); a full run then
   writes docs/performance.md (bench/report.py).

Why one module: one run read top to bottom (the model, the session, batch scoring and its bounds, the search,
the report and the chart), each a section; it starts no servers, and its report is 70 lines of functions of the
results (tests/test_bench_spark_report.py), too few to stand apart as bench/serving_report.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.contract import ModelModule

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/sklearn load: Spark's Python workers inherit it

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHART = ROOT / "docs" / "spark_scaling.png"
TRAIN_ROWS, SEED = 20_000, 7
BATCH_SIZES = (100_000, 1_000_000)
SEARCH_SIZES = (20_000, 200_000, 1_000_000)
PARTITIONS = 4
TARGET_SPEEDUP = 3.0
NO_MODEL = "same_query_no_model"  # ours() answering a constant: what the query costs without the model
PROFILE_ROWS = 10_000  # rows of the batch profile_batch times (spark.sql.execution.arrow.maxRecordsPerBatch's default)
SLOTS = 2  # local[2]: two tasks score at once
TOLERANCE = 1e-5


@dataclass
class LoadSampler:
    """os.getloadavg() every `every` seconds while the benchmark runs (the machine is shared)."""
    every: float = 5.0
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> LoadSampler:
        self.started = time.monotonic()
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - self.started, 1), *os.getloadavg()))
            self._stop.wait(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.samples.append((round(time.monotonic() - self.started, 1), *os.getloadavg()))

    def summary(self) -> dict:
        one = [s[1] for s in self.samples]
        return {"samples": len(one), "load1_min": min(one), "load1_median": statistics.median(one), "load1_max": max(one),
                "cores": os.cpu_count()}


def spark_session(state: Path):
    """One session for both methods: the batch job's own settings (serving.batch.SESSION_CONF) apply to spark_udf too."""
    from pyspark.sql import SparkSession

    from serving.batch import SESSION_CONF

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # the workers import our code
    builder = (SparkSession.builder.master("local[2]").appName("bench-spark")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.warehouse.dir", str(state / "warehouse")).config("spark.driver.memory", "6g")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def binary_model(name: str) -> ModelModule:
    """The model module measured: a binary classifier (the comparison is of probabilities), with an id column."""
    from training import contract

    model = contract.load(name)
    if model.contract.task != "binary" or not model.contract.ids or model.example_data is None:
        raise SystemExit(f"bench-spark compares a binary model's probabilities, row by row, on its example data: "
                         f"{model.module} is {model.contract.task}, ids {list(model.contract.ids)}")
    return model


def registered_model(state: Path, model: ModelModule) -> str:
    """models:/<name>/<version>, trained once per --state (the training job's own code, sequential)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from training import data, train

    uri, name = f"sqlite:///{state / 'mlflow.db'}", model.module.split(".")[-1]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    versions = MlflowClient().search_model_versions(f"name = '{name}'") if (state / "mlflow.db").exists() else []
    if not versions:
        table = state / "train.parquet"
        data.write_table(data.example_table(model, TRAIN_ROWS, seed=SEED), table)
        train.main(["--model-module", model.module, "--data", str(table), "--model-name", name, "--experiment",
                    "bench-spark", "--artifact-root", (state / "artifacts").as_uri(), "--skip-gate"])
        versions = MlflowClient().search_model_versions(f"name = '{name}'")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def portfolio_table(spark, state: Path, rows: int, model: ModelModule) -> str:
    """`rows` of the model's example data with their ids and without the target, as PARTITIONS Parquet files (both
    methods read the same)."""
    from training import data

    path = state / f"portfolio-{model.module}-{rows}"
    if not (path / "_SUCCESS").exists():
        frame = data.example_table(model, rows, seed=12).drop(columns=[model.contract.target.name])
        spark.createDataFrame(frame).repartition(PARTITIONS).write.mode("overwrite").parquet(str(path))
    return str(path)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def spark_cpu_seconds() -> float:
    """CPU seconds used so far by Spark's JVM and its Python workers (this process's descendants, alive: the
    workers are reused): on shared cores, the work a method needs is steadier than its wall time."""
    import psutil

    total = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a worker that ended meanwhile
            continue
        total += times.user + times.system
    return total


def ours(spark, model, path: str, partition=None):
    """serving/batch.py's path: the service's row checks, then the image's ONNX model in mapInArrow (or, with
    `partition`, another function in its place: no_model)."""
    from pyspark.sql import functions as fn

    from serving import batch

    keys = batch.id_columns(model.manifest, None)
    frame = batch.checked(spark.read.parquet(path), model.manifest.inputs, keys)
    valid = frame.where(fn.col(batch.REASON).isNull()).drop(batch.REASON)
    return batch.predictions(valid, spark.sparkContext.broadcast(model), model.manifest, keys, "bench",
                             datetime.now(UTC), partition=partition)


def no_model(spark, model, path: str):
    """ours() with a model that takes no time: the same query (read, the row checks, the columns handed to Python
    as Arrow batches, a batch back for each) answering a constant. What ours() adds to it is the encoding and
    onnxruntime's trees, which the issue prescribes (the image's compiled model)."""
    return ours(spark, model, path, partition=constant_partition)


def constant_partition(model, manifest, keys: list[str]):
    """score_partition's shape (a binary model's), answering probability 0 and label 0 for every row without looking
    at it."""
    from serving.batch import LABEL, PROBABILITY

    def answer(batches):
        import numpy as np
        import pyarrow as pa

        for arrow in batches:
            if arrow.num_rows:
                zeros = np.zeros(arrow.num_rows)
                yield pa.RecordBatch.from_arrays([*(arrow.column(k) for k in keys), pa.array(zeros),
                                                  pa.array(zeros.astype(np.int32))], names=[*keys, PROBABILITY, LABEL])
    return answer


def mlflow_udf(spark, model_uri: str, path: str, keys: list[str]):
    """The same rows through mlflow.pyfunc.spark_udf of the same registered version (its predict_proba)."""
    import mlflow
    from pyspark.sql import functions as fn

    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="array<double>", env_manager="local")
    frame = spark.read.parquet(path)
    columns = mlflow.models.get_model_info(model_uri).signature.inputs.input_names()
    return frame.select(*keys, udf(*[fn.col(c) for c in columns])[1].alias("probability"))


def bench_batch(spark, model_uri: str, state: Path, sizes: tuple[int, ...], rounds: int, module: ModelModule) -> dict:
    from serving import batch

    model = batch.load_model(model_uri, progress=lambda line: print(f"  {line}", flush=True))
    smallest = portfolio_table(spark, state, sizes[0], module)
    keys = batch.id_columns(model.manifest, None)
    profile = profile_batch(model, smallest)
    results: dict = {}
    for rows in sizes:
        path = portfolio_table(spark, state, rows, module)
        runs: dict[str, list[float]] = {"onnx_mapInArrow": [], "mlflow_spark_udf": [], NO_MODEL: []}
        cpu: dict[str, list[float]] = {method: [] for method in runs}
        for round_ in range(rounds):  # interleaved, so a busy minute of the shared machine hits all three
            for method, frame in (("onnx_mapInArrow", ours(spark, model, path)),
                                  ("mlflow_spark_udf", mlflow_udf(spark, model_uri, path, keys)),
                                  (NO_MODEL, no_model(spark, model, path))):
                before = spark_cpu_seconds()
                seconds = timed(lambda f=frame: f.write.format("noop").mode("overwrite").save())
                runs[method].append(seconds)
                cpu[method].append(spark_cpu_seconds() - before)
                print(f"  batch {rows:>9,} rows  {method:17} round {round_ + 1}: {seconds:6.1f} s "
                      f"({rows / seconds:,.0f} rows/s, {cpu[method][-1]:.1f} CPU s)  load {os.getloadavg()[0]:.2f}",
                      flush=True)
        medians = {m: statistics.median(s) for m, s in runs.items()}
        results[str(rows)] = {"seconds": runs, "median_seconds": medians, "cpu_seconds": cpu,
                              "rows_per_second": {m: rows / s for m, s in medians.items()},
                              "speedup": medians["mlflow_spark_udf"] / medians["onnx_mapInArrow"],
                              **bounds(medians, cpu, profile["onnxruntime (the trees)"] / 1e3 * rows / PROFILE_ROWS)}
    results["max_abs_probability_difference"] = probability_difference(spark, model, model_uri, smallest)
    results["profile_ms"] = profile
    return results


def bounds(medians: dict[str, float], cpu: dict[str, list[float]], trees_cpu: float) -> dict[str, float]:
    """How far the ratio to spark_udf could go here. `free_model`: if the model took no time (the same query
    answering a constant): a bound whatever scores the rows. `cpu_bound`: the no-model query's CPU seconds plus
    the trees' (onnxruntime, timed per batch by profile_batch) spread perfectly over the 2 cores: an estimate,
    since CPU seconds of short queries move from round to round."""
    udf = medians["mlflow_spark_udf"]
    return {"trees_cpu_seconds": trees_cpu, "free_model": udf / medians[NO_MODEL],
            "cpu_bound": udf / ((statistics.median(cpu[NO_MODEL]) + trees_cpu) / SLOTS)}


def profile_batch(model, path: str, rows: int = PROFILE_ROWS, repeats: int = 30) -> dict[str, float]:
    """One executor's work on one Arrow batch of `rows`, in this process on one core (no Spark): median ms per
    stage of serving/batch.py's path, and the service's own column path (pandas, columns_of, Encoding.matrix) it
    replaced, for comparison. The batch is the table's first rows as Spark hands them over (numbers as double)."""
    import numpy as np
    import pyarrow.parquet as pq

    from serving import batch

    fields, keys = model.manifest.inputs, batch.id_columns(model.manifest, None)
    table = pq.read_table(path, columns=[*keys, *(f.name for f in fields)])  # a --quick table may hold fewer rows
    arrow = table.slice(0, rows).combine_chunks().to_batches()[0]
    scorer = batch.worker_scorer(model)
    matrix = batch.encoded(scorer.encoding, arrow)
    probability = scorer.run({batch.FEATURES_INPUT: matrix})
    stages = {
        "encode (Arrow -> float matrix)": lambda: batch.encoded(scorer.encoding, arrow),
        "onnxruntime (the trees)": lambda: scorer.run({batch.FEATURES_INPUT: matrix}),
        "output (Arrow batch)": lambda: next(batch.score_partition(model, model.manifest, keys)(iter([arrow]))),
        "was: Arrow -> pandas": lambda: arrow.to_pandas(),
        "was: columns_of + Encoding.matrix": lambda: scorer.encoding.matrix(batch.columns_of(arrow.to_pandas(), fields)),
    }
    profile = {name: _median_ms(action, repeats) for name, action in stages.items()}
    profile["output (Arrow batch)"] -= profile["encode (Arrow -> float matrix)"] + profile["onnxruntime (the trees)"]
    assert np.array_equal(scorer.encoding.matrix(batch.columns_of(arrow.to_pandas(), fields)), matrix)
    assert len(probability) == arrow.num_rows
    print(f"  per {arrow.num_rows:,}-row batch: " + ", ".join(f"{k} {v:.1f} ms" for k, v in profile.items()), flush=True)
    return profile


def _median_ms(action, repeats: int) -> float:
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def probability_difference(spark, model, model_uri: str, path: str) -> float:
    from pyspark.sql import functions as fn

    from serving import batch

    keys = batch.id_columns(model.manifest, None)
    joined = ours(spark, model, path).select(*keys, fn.col("probability").alias("p_ours")).join(
        mlflow_udf(spark, model_uri, path, keys).withColumnRenamed("probability", "p_mlflow"), keys)
    row = joined.agg(fn.max(fn.abs(fn.col("p_ours") - fn.col("p_mlflow"))).alias("d"), fn.count(fn.lit(1)).alias("n")).first()
    print(f"  probabilities: max |dp| {row['d']:.2e} over {row['n']:,} rows (tolerance {TOLERANCE:g})", flush=True)
    return float(row["d"])


def bench_search(spark, state: Path, sizes: tuple[int, ...], rounds: int, model: ModelModule) -> dict:
    from training import data, search, tuning
    from training.loader import validate_frame

    results: dict = {}
    c = model.contract
    for rows in sizes:
        splits = search.split(validate_frame(data.example_table(model, rows, seed=SEED), c), c)  # as the job loads it
        runs: dict[str, list[float]] = {"sequential": [], "spark_tasks": []}
        chosen = {}
        for round_ in range(rounds if rows <= 200_000 else 1):  # 10⁶ rows: one round (minutes each)
            started = time.perf_counter()  # one thread, like each Spark task: OpenMP on 2 shared cores spins
            chosen["sequential"] = search.search(model, splits, SEED, progress=lambda _: None).params
            runs["sequential"].append(time.perf_counter() - started)
            started = time.perf_counter()
            chosen["spark_tasks"] = search.search(model, splits, SEED, progress=lambda _: None,
                                                  runner=tuning.spark_runner(spark),
                                                  fit=tuning.broadcast_fit(spark, splits, SEED, model.module)).params
            runs["spark_tasks"].append(time.perf_counter() - started)
            print(f"  search {rows:>9,} rows  round {round_ + 1}: sequential {runs['sequential'][-1]:6.1f} s, "
                  f"spark tasks {runs['spark_tasks'][-1]:6.1f} s  load {os.getloadavg()[0]:.2f}", flush=True)
        medians = {m: statistics.median(s) for m, s in runs.items()}
        results[str(rows)] = {"seconds": runs, "median_seconds": medians, "chosen": chosen["spark_tasks"],
                              "same_choice": chosen["sequential"] == chosen["spark_tasks"],
                              "speedup": medians["sequential"] / medians["spark_tasks"]}
    return results


def report(results: dict) -> str:
    load = results["load"]
    lines = ["# Spark benchmark (local[2], one thread per task)", "",
             f"Machine: {load['cores']} cores, shared; 1-minute load during the run: median {load['load1_median']:.2f} "
             f"(min {load['load1_min']:.2f}, max {load['load1_max']:.2f}, {load['samples']} samples).", "",
             *batch_report(results.get("batch")), *search_report(results.get("search"))]
    return "\n".join(lines) + "\n"


def batch_report(batch: dict | None) -> list[str]:
    if batch is None:
        return []
    lines = ["| batch rows | ONNX mapInArrow rows/s | mlflow spark_udf rows/s | speedup (target ≥ 3×) | the same query, "
             "no model | bound: model free | estimate: CPU |", "|---|---|---|---|---|---|---|"]
    for rows in (k for k in batch if k.isdigit()):
        r, result = batch[rows]["rows_per_second"], batch[rows]
        lines.append(f"| {int(rows):,} | {r['onnx_mapInArrow']:,.0f} | {r['mlflow_spark_udf']:,.0f} | "
                     f"{result['speedup']:.1f}× {'PASS' if result['speedup'] >= TARGET_SPEEDUP else 'FAIL'} | "
                     f"{result['median_seconds'][NO_MODEL]:.2f} s | {result['free_model']:.1f}× | "
                     f"{result['cpu_bound']:.1f}× (trees {result['trees_cpu_seconds']:.1f} CPU s) |")
    lines += ["", "How far the ratio could go here: *model free* (a bound), spark_udf's time over the same query's "
              "with a model that takes no time (whatever scores the rows); *CPU* (an estimate), over the no-model "
              "query's CPU seconds plus the trees' (onnxruntime per batch, below) spread perfectly over the 2 cores."]
    d = batch["max_abs_probability_difference"]
    lines += ["", f"Probabilities, ours vs spark_udf: max |dp| {d:.2e} ({'PASS' if d <= TOLERANCE else 'FAIL'}, "
              f"tolerance {TOLERANCE:g}).", ""]
    if batch.get("profile_ms"):
        lines += ["One executor's work per 10,000-row batch (one core, no Spark): "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in batch["profile_ms"].items()) + ".", ""]
    return lines


def search_report(search: dict | None) -> list[str]:
    if search is None:
        return []
    lines = ["| search rows | sequential s | Spark tasks s | speedup | same choice |", "|---|---|---|---|---|"]
    for rows, r in search.items():
        m = r["median_seconds"]
        lines.append(f"| {int(rows):,} | {m['sequential']:.1f} | {m['spark_tasks']:.1f} | {r['speedup']:.2f}× | "
                     f"{r['same_choice']} |")
    return lines


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    batch = {int(k): v for k, v in results["batch"].items() if k.isdigit()}
    for method, label in (("onnx_mapInArrow", "ONNX in mapInArrow (ours)"), ("mlflow_spark_udf", "mlflow spark_udf")):
        left.plot(list(batch), [batch[n]["median_seconds"][method] for n in batch], marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds (median)", title="Batch scoring, local[2]")
    search = {int(k): v for k, v in results["search"].items()}
    for method, label in (("sequential", "one after another"), ("spark_tasks", "candidates as Spark tasks")):
        right.plot(list(search), [search[n]["median_seconds"][method] for n in search], marker="o", label=label)
    right.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds", title="Search: 4 candidates x 200 iterations")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    load = results["load"]
    figure.suptitle(f"2 shared cores; 1-min load median {load['load1_median']:.2f} (max {load['load1_max']:.2f})")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=ROOT / ".local" / "bench-spark")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-train-rows", type=int, default=max(SEARCH_SIZES))
    parser.add_argument("--quick", action="store_true", help="10⁴/2·10⁴ rows, one round: does the benchmark run?")
    parser.add_argument("--only", choices=("batch", "search"), help="run one part (default: both)")
    parser.add_argument("--model", help="a binary model module or project name (default: the dev stack's name)")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    batch_sizes, search_sizes = ((10_000, 20_000), (5_000, 10_000)) if args.quick else (
        BATCH_SIZES, tuple(n for n in SEARCH_SIZES if n <= args.max_train_rows))
    rounds = 1 if args.quick else args.rounds
    from infra import stack_files

    results: dict = {"load_before": os.getloadavg()}
    with LoadSampler() as load:
        model = binary_model(args.model or stack_files.project("dev"))
        model_uri = registered_model(args.state, model)
        spark = spark_session(args.state)
        print(f"bench-spark: {model_uri}, Spark {spark.version} local[2], load {os.getloadavg()}", flush=True)
        if args.only in (None, "batch"):
            results["batch"] = bench_batch(spark, model_uri, args.state, batch_sizes, rounds, model)
        if args.only in (None, "search"):
            results["search"] = bench_search(spark, args.state, search_sizes, rounds, model)
        spark.stop()
    results.update(load=load.summary(), load_samples=load.samples, load_after=os.getloadavg(), quick=args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "spark" + ("-quick" if args.quick else "") + (f"-{args.only}" if args.only else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{name}.md").write_text(report(results))
    if not args.only:  # the chart draws both parts
        chart(results, RESULTS / "spark-quick.png" if args.quick else CHART)
    if not args.only and not args.quick:  # a full run: the documentation's page follows it
        from bench import report as page

        print(f"wrote {page.write(RESULTS)}")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
