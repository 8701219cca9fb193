"""The hyper-parameter search on the job cluster's workers: each candidate one Spark task.

joblib's Spark backend (joblibspark, maintained by Databricks' joblib-spark project) runs each
`delayed` call as a Spark task; the training splits travel once per executor as a Spark broadcast,
not once per candidate. What is fitted and how the winner is chosen is training/search.py's, so
the parallel search chooses exactly what the sequential one does on the same data and seed.
"""

from __future__ import annotations

from collections.abc import Callable

from training.search import Runner, Splits, fit_candidate

RUNNERS = ("sequential", "spark")


def spark_runner(spark, n_jobs: int | None = None) -> Runner:
    """A runner that fits the candidates as Spark tasks, at most `n_jobs` (default: all) at a time."""
    from joblib import Parallel, delayed, parallel_backend
    from joblibspark import register_spark

    register_spark()

    def run(fit: Callable[[dict], dict], candidates: list[dict]) -> list[dict]:
        with parallel_backend("spark", n_jobs=n_jobs or len(candidates)):
            return Parallel()(delayed(fit)(params) for params in candidates)
    return run


def broadcast_fit(spark, splits: Splits, seed: int, module: str) -> Callable[[dict], dict]:
    """fit_candidate over splits the executors read from one broadcast (a 10⁶-row table pickled once, not per task);
    the model module by name, which each executor imports from the jobs' wheel."""
    shared = spark.sparkContext.broadcast(splits)

    def fit(params: dict) -> dict:
        return fit_candidate(params, shared.value, seed, module)
    return fit


def spark_tasks(spark, fitted: list[dict]) -> dict[str, int]:
    """How many Spark stages ran the candidates and how many tasks they completed, from Spark's status tracker."""
    tracker = spark.sparkContext.statusTracker()
    stages = {r["spark_stage_id"] for r in fitted if "spark_stage_id" in r}
    infos = [tracker.getStageInfo(stage) for stage in stages]
    return {"spark_stages": len(stages), "spark_tasks": sum(i.numCompletedTasks for i in infos if i is not None)}
