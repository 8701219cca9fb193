"""Training entry point: load -> search -> evaluate -> MLflow run -> register -> gate, for any model module.

The same command runs on a laptop and as a Databricks job task:

    # local: sqlite tracking + registry
    python -m training.train --model-module models.credit_default --data .local/data/credit-default.parquet \
        --tracking-uri sqlite:///.local/mlflow.db --model-name credit-default

    # Databricks: the `mlops-train` entry point of the job wheel (python_wheel_task), with the job run id
    # so the gate task finds exactly this run's version (infra/databricks.py declares the parameters)
    mlops-train --model-module models.credit_default --data main.credit.card_holders \
        --model-name main.credit.credit_default --experiment /Shared/credit-default --environment staging \
        --skip-gate --job-run-id 123
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from training import code, gate, tuning
from training.baseline import BASELINE_FILE, build_baseline, equivalence_records, typical_records
from training.contract import CONTRACT_FILE, Contract, ModelModule
from training.evaluation import decision_threshold, evaluate, predictions
from training.loader import is_file, load_table, table_version
from training.search import SearchResult, Splits, features_of, search, sequential, split, target_of, valid_key

INPUT_EXAMPLE_ROWS = 3
EQUIVALENCE_FILE = "equivalence_records.parquet"  # serving/context.py EQUIVALENCE_ARTIFACT


def signature(model: Any, contract: Contract) -> ModelSignature:
    """Explicit, from the data contract (Unity Catalog requires one; inference would guess types). A classifier's
    pyfunc answers its probabilities, one column per class; a regressor's its values."""
    inputs = Schema([ColSpec("string" if f.kind == "category" else "double", f.name) for f in contract.features])
    if contract.task == "regression":
        return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double")]))
    classes = len(model.classes_)
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype("float64"), (-1, classes), "probabilities")]))


def pyfunc_predict_fn(contract: Contract) -> str:
    """What the version's MLflow pyfunc (and so `/invocations`) answers: a classifier's probabilities, a regressor's
    values."""
    return "predict" if contract.task == "regression" else "predict_proba"


def model_code(module: str, out: Path) -> list[str]:
    """The model module and what it imports of ours, copied into packages under `out`: the version's MLflow
    `code_paths`, which MLflow puts on the path wherever it loads the model. So a class of the team's own (pickled by
    reference, as a job cluster's MLflow does, or saved by skops by name) loads in an image that has no repository."""
    files = code.closure([module], code.imported, out)
    for name, path in files.items():
        target = out / code.relative_file(name, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return sorted(str(out / top) for top in {name.split(".")[0] for name in files})


def estimator_params(model: Any) -> dict[str, Any]:
    """The final estimator's own parameters that are plain values (what the search fixed and what it chose)."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return {k: v for k, v in final.get_params(deep=False).items() if isinstance(v, str | int | float | bool | None)}


def pip_requirements(module: str) -> list[str]:
    """What loading the model needs, pinned to what trained it; never the test tools of this venv. Beside scikit-learn
    and its kin, every distribution the model module's code imports (lightgbm, say): an image that loads a class of
    the team's own, which travels with the version (model_code), installs what that class imports."""
    import skops

    pins = {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "skops": skops.__version__, "mlflow": mlflow.__version__}
    return [f"{name}=={version}" for name, version in {**pins, **code.distributions(module)}.items()]


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Every row and column: MLflow's dataset digest (training_dataset) hashes only the first 10,000 rows and leaves
    out a text column with any missing value (education, marriage), so it alone would call different tables equal."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]


def training_dataset(frame: pd.DataFrame, source: str, contract: Contract) -> Any:
    """The training data as an MLflow dataset on the run's inputs: where it came from (a Unity Catalog table by name,
    with its Delta version where the runtime can tell, or a file) and MLflow's digest of the rows trained on."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.pandas_dataset import from_pandas

    origin = source if is_file(source) else DeltaDatasetSource(delta_table_name=source,
                                                                delta_table_version=table_version(source))
    return from_pandas(frame, source=origin, targets=contract.target.name, name=Path(source).name)


def git_sha() -> str:
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def input_example(baseline: dict) -> pd.DataFrame:
    """Typical records from the baseline's aggregates (docs, smoke test): never rows of real people."""
    return typical_records(baseline, INPUT_EXAMPLE_ROWS)


def trusted_types(model) -> list[str]:
    """The types skops must trust to load this pipeline: exactly the ones we just built."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def serialization(model) -> dict:
    """skops where this MLflow's sklearn flavor has it (no pickle to unpickle). The Databricks runtime's MLflow
    (3.8.1 on 18 LTS ML) has only pickle and cloudpickle, and installing a newer MLflow would replace the
    runtime's own: there the model is cloudpickled, read back only by this project's packaging, which serves
    it compiled to ONNX or re-saved with skops (serving/context.py), so no image ever unpickles it."""
    if hasattr(mlflow.sklearn, "SERIALIZATION_FORMAT_SKOPS"):
        return {"serialization_format": "skops", "skops_trusted_types": trusted_types(model)}
    return {"serialization_format": "cloudpickle"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a .csv/.parquet path, or a table name on Databricks")
    gate.add_model_args(parser)
    gate.add_gate_args(parser)
    parser.add_argument("--experiment", help="MLflow experiment name or path (default: the registered model's name)")
    parser.add_argument("--artifact-root", help="artifact location for a new experiment (e.g. file:///abs/path)")
    parser.add_argument("--environment", default=os.environ.get("MLOPS_ENVIRONMENT", "local"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-gate", action="store_true", help="register only; gate in a separate task")
    parser.add_argument("--search", choices=tuning.RUNNERS, default="sequential",
                        help="fit the hyper-parameter candidates one after another here, or as Spark tasks on the cluster")
    parser.add_argument("--search-jobs", type=int, help="with --search spark: candidates at a time (default: all)")
    parser.add_argument("--summary-out", type=Path, help="write the run summary as JSON here")
    gate.add_job_run_arg(parser)
    args = parser.parse_args(argv)
    args.experiment = args.experiment or args.model_name.split(".")[-1]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model, judge = args.model_module, gate.gate_of(args)
    contract = model.contract
    client = gate.configure_tracking(args.tracking_uri, args.registry_uri)

    step = _Steps()
    step("loading data", f"{args.data} ({model.module}: {len(contract.features)} features, {contract.task} "
                         f"target {contract.target.name})")
    frame = load_table(args.data, contract)
    splits = split(frame, contract)
    step("searching", f"{len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} test rows")
    result, spark_stats = run_search(args, model, splits)
    threshold = decision_threshold(result.model, features_of(splits.valid, contract), target_of(splits.valid, contract),
                                   contract)
    test_features, test_target = features_of(splits.test, contract), target_of(splits.test, contract)
    metrics = evaluate(result.model, test_features, test_target, contract, threshold)
    metrics[judge.name] = judge.measure.score(result.model, test_features, test_target)
    step("evaluated on held-out test", ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    lineage = {"git_sha": git_sha(), "data_fingerprint": data_fingerprint(frame)}
    step("logging to MLflow", mlflow.get_tracking_uri())
    run, version = log_and_register(args, model, frame, splits, result, metrics, threshold, spark_stats, lineage, client)
    run_tag = {gate.JOB_RUN_TAG: args.job_run_id} if args.job_run_id else {}
    threshold_tag = {"decision_threshold": threshold} if threshold is not None else {}
    for key, value in {**threshold_tag, judge.name: metrics[judge.name], **lineage, **run_tag}.items():
        client.set_model_version_tag(args.model_name, version, key, str(value))
    if args.skip_gate:  # the gate task judges it; until then it is the newest challenger
        client.set_registered_model_alias(args.model_name, gate.CHALLENGER, version)
    step("registered", f"{args.model_name} version {version} (run {run})")

    summary = {"model_name": args.model_name, "version": version, "run_id": run, "metric": judge.name,
               "metrics": metrics}
    if not args.skip_gate:
        decision = gate.run_gate(client, args.model_name, version, splits.test, model, judge)
        print(decision.summary(), flush=True)
        summary["gate"] = asdict(decision)
    if args.summary_out:
        args.summary_out.parent.mkdir(parents=True, exist_ok=True)
        args.summary_out.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def log_and_register(args: argparse.Namespace, model: ModelModule, frame: pd.DataFrame, splits: Splits,
                     result: SearchResult, metrics: dict[str, float], threshold: float | None,
                     spark_stats: dict[str, int], lineage: dict[str, str], client: Any) -> tuple[str, str]:
    """The training run (params, metrics, lineage, the candidates) and the registered version, which carries the
    contract, the drift baseline and the equivalence records: (run id, version)."""
    contract = model.contract
    if args.artifact_root and mlflow.get_experiment_by_name(args.experiment) is None:
        mlflow.create_experiment(args.experiment, artifact_location=args.artifact_root)
    mlflow.set_experiment(args.experiment)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as sources, \
            mlflow.start_run(run_name=f"train-{args.environment}") as run:
        # The version carries aggregates only: the gate re-reads its held-out rows from the table (behind its grants),
        # packaging checks the compiled model on records drawn from the baseline (training/baseline.py).
        extra = Path(tmp, "extra_files")
        extra.mkdir()
        train_features = features_of(splits.train, contract)
        baseline = build_baseline(train_features, predictions(result.model, train_features, contract), contract)
        (extra / BASELINE_FILE).write_text(json.dumps(baseline))
        (extra / CONTRACT_FILE).write_text(json.dumps(contract.to_dict(model.gate), indent=2, default=str))
        equivalence_records(baseline).to_parquet(extra / EQUIVALENCE_FILE, index=False)
        final = result.model.steps[-1][1] if hasattr(result.model, "steps") else result.model
        mlflow.log_params({**estimator_params(result.model), **result.params, "seed": args.seed, "rows": len(frame),
                           "model_module": model.module, "model_family": type(final).__name__,
                           **({"decision_threshold": threshold} if threshold is not None else {})})
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        chosen = next(c for c in result.candidates if {k: c[k] for k in result.params} == result.params)
        mlflow.log_metric(valid_key(model), chosen[valid_key(model)])
        mlflow.set_tags({**lineage, "data_source": args.data, "environment": args.environment,
                         "model_module": model.module, **({gate.JOB_RUN_TAG: args.job_run_id} if args.job_run_id else {})})
        mlflow.log_input(training_dataset(frame, args.data, contract), context="training")
        mlflow.log_dict({"candidates": result.candidates}, "search/candidates.json")
        mlflow.log_metrics({f"search_{k}": v for k, v in spark_stats.items()})
        log_candidates(result, valid_key(model))
        info = mlflow.sklearn.log_model(
            result.model, name="model", signature=signature(result.model, contract), input_example=input_example(baseline),
            pip_requirements=pip_requirements(model.module), **serialization(result.model),
            pyfunc_predict_fn=pyfunc_predict_fn(contract), code_paths=model_code(model.module, Path(sources)))
        # The contract and the baseline go into the model's own artifacts (models:/<name>/<version>/extra_files/...)
        # before it is registered, since Unity Catalog copies a version's files when it is created. Not through
        # log_model(extra_files=...): the runtime's MLflow 3.8.1 sklearn flavor has no such argument.
        client.log_model_artifacts(info.model_id, tmp)
        version = str(mlflow.register_model(info.model_uri, args.model_name).version)
    return run.info.run_id, version


def run_search(args: argparse.Namespace, model: ModelModule, splits: Splits) -> tuple[SearchResult, dict[str, int]]:
    """The search, sequential or on the cluster's workers; with Spark, how many stages and tasks ran it."""
    if args.search == "sequential":
        return search(model, splits, args.seed, runner=sequential), {}
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()  # a wheel task has no `spark` global
    result = search(model, splits, args.seed, runner=tuning.spark_runner(spark, args.search_jobs),
                    fit=tuning.broadcast_fit(spark, splits, args.seed, model.module))
    return result, tuning.spark_tasks(spark, result.candidates)


def log_candidates(result: SearchResult, score: str) -> None:
    """Each candidate as a child run of the training run: its parameters, validation score, fit time and the
    Spark task that fitted it; the chosen one tagged."""
    for index, candidate in enumerate(result.candidates, start=1):
        params = {k: candidate[k] for k in result.params}
        with mlflow.start_run(run_name=f"candidate-{index}", nested=True):
            mlflow.log_params(params)
            mlflow.log_metrics({score: candidate[score], "fit_seconds": candidate["fit_seconds"]})
            mlflow.set_tags({"chosen": str(params == result.params).lower(),
                             **{k: str(v) for k, v in candidate.items() if k.startswith("spark_")}})


def cli() -> None:
    """The `mlops-train` entry point (a python_wheel_task calls it with no arguments; argv holds the parameters)."""
    main()


class _Steps:
    """Prints numbered progress lines with the time since start, so long runs show where they are."""

    def __init__(self) -> None:
        self.started, self.count = time.perf_counter(), 0

    def __call__(self, what: str, detail: str = "") -> None:
        self.count += 1
        print(f"[train {time.perf_counter() - self.started:5.1f}s] {self.count}. {what}: {detail}", flush=True)


if __name__ == "__main__":
    main()
