"""The search: whoever runs the candidates (one after another, or concurrently, as Spark tasks do), the same
candidates are fitted and the same one is chosen, by the gate's metric in its direction; a sequential run logs each
candidate as a child MLflow run."""

from __future__ import annotations

import dataclasses

from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from training import data, search
from training.contract import Gate, Metric
from training.loader import validate_frame


def threads(fit, candidates):
    """Concurrent, finishing in any order, as Spark tasks do: joblib's threading backend (Spark's is joblibspark)."""
    return Parallel(n_jobs=len(candidates), backend="threading")(delayed(fit)(params) for params in candidates)


def test_a_concurrent_runner_chooses_what_the_sequential_search_does(model):
    splits = search.split(validate_frame(data.example_table(model, 1500, seed=3), model.contract), model.contract)
    # One OpenMP thread a fit, as a Spark task has its core: four threads of fits each starting an OpenMP thread per
    # CPU oversubscribe a small machine (158 s of CI time here, 2 CPUs).
    with threadpool_limits(limits=1):
        one_by_one = search.search(model, splits, 7, progress=lambda _: None)
        concurrent = search.search(model, splits, 7, progress=lambda _: None, runner=threads)
    key = search.valid_key(model)
    assert concurrent.params == one_by_one.params
    assert [c[key] for c in concurrent.candidates] == [c[key] for c in one_by_one.candidates]
    assert [{k: c[k] for k in model.search} for c in concurrent.candidates] == model.grid()


def test_the_best_validation_score_wins_in_the_metrics_direction_and_the_earliest_breaks_a_tie(model):
    higher = dataclasses.replace(model, gate=Gate("roc_auc", 0.5))
    fitted = [{"params": {"n": i}, "valid_roc_auc": score} for i, score in enumerate([0.7, 0.8, 0.8, 0.75])]
    assert search.choose(fitted, higher)["params"] == {"n": 1}
    assert search.choose(fitted[2:], higher)["params"] == {"n": 2}
    lower = dataclasses.replace(model, gate=Gate(Metric("loss", lambda y, p: 0.0, greater_is_better=False), 1.0))
    fitted = [{"params": {"n": i}, "valid_loss": score} for i, score in enumerate([0.7, 0.6, 0.6, 0.9])]
    assert search.choose(fitted, lower)["params"] == {"n": 1}


def test_each_candidate_is_a_child_run_of_the_training_run(registry, model):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(registry["summary"]["run_id"])
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    searched = list(model.search)
    assert sorted(tuple(c.data.params[k] for k in searched) for c in children) == sorted(
        tuple(str(g[k]) for k in searched) for g in model.grid())
    [chosen] = [c for c in children if c.data.tags["chosen"] == "true"]
    assert {k: chosen.data.params[k] for k in searched} == {k: run.data.params[k] for k in searched}
    key, sign = search.valid_key(model), 1 if model.gate.measure.greater_is_better else -1
    assert chosen.data.metrics[key] == max((c.data.metrics[key] for c in children), key=lambda v: sign * v)
    assert run.data.metrics[key] == chosen.data.metrics[key]
    assert not any(k.startswith("spark_") for c in children for k in c.data.tags)  # sequential: no Spark task
