"""The manifest of a model (serving/scoring/model.py documents its format), from the model's MLflow files alone:
its signature and input example, the flavor's pyfunc predict_fn, the version's contract.json and tags, and the
estimator itself for its task and classes.

The task: the version's contract.json when it has one (checked against the estimator); else a scikit-learn
estimator's `is_classifier` and `len(classes_)`; else (a pyfunc-only model) a classifier when its raw model
(`get_raw_model()`) has `classes_` and `predict_proba`, and a regressor otherwise. A contract that says classifier
for a model that answers no probabilities is refused. The classes are the estimator's `classes_`, in the order of its
probabilities (the contract's, for a pyfunc-only model without them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from serving.runtime import MLFLOW_SUBDIR, PackagingError

if TYPE_CHECKING:
    from serving.context import ResolvedModel

MANIFEST_FORMAT_VERSION = 2
CONTRACT_ARTIFACT = "extra_files/contract.json"
BASELINE_ARTIFACT = "extra_files/drift_baseline.json"


def build_manifest(resolved: ResolvedModel, mlflow_model: Model, mlflow_dir: Path, client: MlflowClient,
              contract: dict | None, estimator: Any, pyfunc: Any) -> dict:
    signature = mlflow_model.signature
    if signature is None or signature.inputs is None:
        raise PackagingError(f"{resolved.version_uri} has no signature: the API schema is generated from it")
    if signature.inputs.is_tensor_spec():
        raise PackagingError(f"{resolved.version_uri} takes tensors; this service serves tabular models (a "
                             "column-based signature)")
    described = {f["name"]: f for f in (contract or {}).get("features", [])}
    inputs = [_input(spec.name, spec.type.name, described.get(spec.name)) for spec in signature.inputs.inputs]
    predict_fn = mlflow_model.flavors.get("python_function", {}).get("predict_fn") or "predict"
    task, classes = model_task(estimator, pyfunc, contract, predict_fn)
    tags, description = _registry_facts(resolved, client)
    threshold = tags.get("decision_threshold") if task == "binary" else None
    example, source = _input_example(mlflow_model, mlflow_dir, inputs)
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "model": {"name": resolved.name, "version": resolved.version, "run_id": resolved.run_id,
                  "source_uri": resolved.source_uri, "version_uri": resolved.version_uri, "description": description},
        "task": task,
        "classes": classes,
        "decision_threshold": float(threshold) if threshold is not None else None,
        "predict_fn": predict_fn,
        "mlflow_version": mlflow_model.mlflow_version,  # what /version answers, as `mlflow models serve` does
        "inputs": inputs,
        "input_example": example,
        "input_example_source": source,
        "contract": contract,
        "drift_baseline": f"{MLFLOW_SUBDIR}/{BASELINE_ARTIFACT}" if (mlflow_dir / BASELINE_ARTIFACT).is_file() else None,
        "sklearn": None,
        "pyfunc": None,
        "missing_category": None,
        "equivalence": None,
    }


def _input(name: str, kind: str, described: dict | None) -> dict:
    field: dict[str, Any] = {"name": name, "type": kind}
    if described:
        field["description"] = described.get("description") or ""
        for key in ("minimum", "maximum", "greater_than", "less_than", "values", "open"):
            if described.get(key) is not None:
                field[key] = described[key]
    return field


def _registry_facts(resolved: ResolvedModel, client: MlflowClient) -> tuple[dict[str, str], str]:
    """(the version's tags, the registered model's and the version's descriptions); nothing for an unregistered model.
    A Unity Catalog client gives tags as a list of objects, a local store as a dict: both are read."""
    if not resolved.registered:
        return {}, ""
    version = client.get_model_version(resolved.name, resolved.version)
    raw_tags = version.tags
    tags = dict(raw_tags) if isinstance(raw_tags, dict) else {t.key: t.value for t in raw_tags or []}
    try:
        model_description = client.get_registered_model(resolved.name).description or ""
    except Exception:  # reading the model's own entry may need a right the version's does not
        model_description = ""
    parts = [text for text in (model_description, version.description or "") if text]
    return tags, "\n\n".join(dict.fromkeys(parts))


def model_task(estimator: Any, pyfunc: Any, contract: dict | None, predict_fn: str) -> tuple[str, list | None]:
    """(task, classes in the order of the model's probabilities): see the module's docstring for the rule."""
    declared = (contract or {}).get("target") or {}
    raw = estimator
    if raw is None and pyfunc is not None:
        try:
            raw = pyfunc.get_raw_model()
        except Exception:
            raw = None
    classes = _classes_of(raw, estimator is not None)
    if classes is not None:
        if len(classes) < 2:
            raise PackagingError(f"the classifier knows {len(classes)} class: nothing to predict")
        task = "binary" if len(classes) == 2 else "multiclass"
        if declared.get("task") and declared["task"] != task:
            raise PackagingError(f"the contract says {declared['task']}, the estimator is {task} ({classes})")
        return task, classes
    if declared.get("task") in ("binary", "multiclass"):
        if estimator is not None or predict_fn != "predict_proba":
            raise PackagingError(f"the contract says {declared['task']}, but the model answers no probabilities "
                                 "(no predict_proba, and its pyfunc's predict_fn is not predict_proba)")
        return declared["task"], list(declared.get("classes") or [])
    return "regression", None


def _classes_of(raw: Any, sklearn_flavor: bool) -> list | None:
    if raw is None or not callable(getattr(raw, "predict_proba", None)) or getattr(raw, "classes_", None) is None:
        return None
    if sklearn_flavor:
        from sklearn.base import is_classifier

        try:
            if not is_classifier(raw):
                return None
        except Exception:  # an estimator scikit-learn cannot tag: it has classes_ and predict_proba
            pass
    return np.asarray(raw.classes_).tolist()


def _input_example(mlflow_model: Model, mlflow_dir: Path, inputs: list[dict]) -> tuple[list[dict], str]:
    """(records, where they came from): the version's input example, or one record built from the signature (the
    middle of a number's contract bounds, or 1; a category's first allowed value, or "a") for /docs and smoke tests."""
    example = mlflow_model.load_input_example(str(mlflow_dir))
    if example is not None:
        records = json.loads(pd.DataFrame(example).to_json(orient="records"))
        names = [f["name"] for f in inputs]
        if records and all(set(names) <= set(r) for r in records):
            return [{name: r[name] for name in names} for r in records], "version"
    record: dict[str, Any] = {}
    for field in inputs:
        record[field["name"]] = _example_value(field)
    return [record], "signature"


def _example_value(field: dict) -> Any:
    kind = field["type"]
    if kind == "string":
        return (field.get("values") or ["a"])[0]
    if kind == "boolean":
        return False
    low = field.get("minimum", field.get("greater_than"))
    high = field.get("maximum", field.get("less_than"))
    value = (low + high) / 2 if low is not None and high is not None else (
        low + 1 if low is not None else high - 1 if high is not None else 1.0)
    return int(value) if kind in ("long", "integer") else float(value)
