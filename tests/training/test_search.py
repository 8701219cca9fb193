"""The search: whoever runs the candidates (one after another, or concurrently, as Spark tasks do), the same
candidates are fitted and the same one is chosen; a sequential run logs each candidate as a child MLflow run."""

from __future__ import annotations

from joblib import Parallel, delayed

from training import data, pipeline
from training.loader import validate_frame


def threads(fit, candidates):
    """Concurrent, finishing in any order, as Spark tasks do: joblib's threading backend (Spark's is joblibspark)."""
    return Parallel(n_jobs=len(candidates), backend="threading")(delayed(fit)(params) for params in candidates)


def test_a_concurrent_runner_chooses_what_the_sequential_search_does():
    splits = pipeline.split(validate_frame(data.generate(1500, seed=3)))
    one_by_one = pipeline.search(splits, 7, progress=lambda _: None)
    concurrent = pipeline.search(splits, 7, progress=lambda _: None, runner=threads)
    assert concurrent.params == one_by_one.params
    assert [c["valid_roc_auc"] for c in concurrent.candidates] == [c["valid_roc_auc"] for c in one_by_one.candidates]
    assert [{k: c[k] for k in pipeline.SEARCH_SPACE} for c in concurrent.candidates] == pipeline.grid()


def test_the_best_validation_score_wins_and_the_earliest_candidate_breaks_a_tie():
    fitted = [{"params": {"n": i}, "valid_roc_auc": auc} for i, auc in enumerate([0.7, 0.8, 0.8, 0.75])]
    assert pipeline.choose(fitted)["params"] == {"n": 1}
    assert pipeline.choose(fitted[2:])["params"] == {"n": 2}


def test_each_candidate_is_a_child_run_of_the_training_run(registry):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(registry["summary"]["run_id"])
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted((c.data.params["learning_rate"], c.data.params["max_leaf_nodes"]) for c in children) == sorted(
        (str(g["learning_rate"]), str(g["max_leaf_nodes"])) for g in pipeline.grid())
    [chosen] = [c for c in children if c.data.tags["chosen"] == "true"]
    assert {k: chosen.data.params[k] for k in pipeline.SEARCH_SPACE} == {k: run.data.params[k] for k in pipeline.SEARCH_SPACE}
    assert chosen.data.metrics["valid_roc_auc"] == max(c.data.metrics["valid_roc_auc"] for c in children)
    assert not any(k.startswith("spark_") for c in children for k in c.data.tags)  # sequential: no Spark task
