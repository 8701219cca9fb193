"""Assemble the docker build context for one MLflow model version: any tabular model, from its MLflow files alone.

This is the one implementation used by `make local`, `make serve`, the Pulumi program's docker Image, the batch
job and CI. Given `models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/<run id>/<path>` or a local MLflow
model directory, it writes:

    <out>/Dockerfile           serving/Dockerfile
    <out>/requirements.txt     the hash-locked serving runtime, serving/requirements.txt, plus the runtime's own
                               packages at the model's pins (sklearn: scikit-learn, pandas, skops; pyfunc:
                               mlflow-skinny and the model's requirements), hashed when their wheels are downloaded
    <out>/pip.sha256           the hash of the pip wheel the build runs from (serving/pip.txt), for sha256sum
    <out>/wheels/              every wheel the image installs: the build needs no network
    <out>/scoring/             the FastAPI app
    <out>/model/manifest.json  what the app serves and how (format: serving/scoring/model.py)
    <out>/model/model.onnx     the compiled model (onnx runtime only)
    <out>/model/pipeline.skops the estimator re-saved with skops (sklearn runtime, when the version's is a pickle)
    <out>/model/mlflow/        the MLflow model directory (MLmodel, contract, drift baseline, ...)

    python -m serving.context models:/my-model@champion .local/context

The runtime is chosen here, and the reason printed ("context: runtime <name>: <why>"):
  onnx     the scikit-learn estimator or pipeline (XGBoost and LightGBM through onnxmltools) compiles and its graph
           gives the registered model's labels and probabilities (or values) on the equivalence records
  sklearn  otherwise, when the estimator holds only scikit-learn's (numpy's, scipy's) types, so the image loads it
           with skops and nothing else; re-saved, loaded back and checked the same way
  pyfunc   anything else (a custom class, a model skops cannot save or load, a flavor other than scikit-learn):
           MLflow loads it in the scoring process; the pickle, if any, ships and is unpickled there
The task: the version's contract.json when it has one; else a scikit-learn estimator's is_classifier and
len(classes_); else (a pyfunc-only model) a classifier when its raw model has classes_ and predict_proba, and a
regressor otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from serving import compile as compiler
from serving import lock
from serving.scoring.model import MANIFEST_FILE, ONNX_FILE, FrameScorer, Manifest, OnnxScorer, SklearnScorer

SERVING_DIR = Path(__file__).resolve().parent
APP_PACKAGE = SERVING_DIR / "scoring"
RUNTIME_REQUIREMENTS = SERVING_DIR / "requirements.txt"
DOCKERFILE = SERVING_DIR / "Dockerfile"
MLFLOW_SUBDIR = "mlflow"
SKOPS_FILE = "pipeline.skops"  # a pickled version, re-saved for the sklearn runtime
CONTRACT_ARTIFACT = "extra_files/contract.json"
BASELINE_ARTIFACT = "extra_files/drift_baseline.json"
# Records drawn by training from the drift baseline's aggregates (training/baseline.py equivalence_records), which
# the compiled model is checked on: used here, never shipped. A version carries no row of a real person.
EQUIVALENCE_ARTIFACT = "extra_files/equivalence_records.parquet"
FALLBACK_PACKAGES = ("scikit-learn", "pandas", "skops")
# The modules whose types the sklearn runtime's image can load (scikit-learn and what it is made of).
SKLEARN_MODULES = ("sklearn", "numpy", "scipy", "builtins", "collections", "functools", "operator", "skops", "joblib",
                   "_operator", "pandas")
MANIFEST_FORMAT_VERSION = 2
UNSEEN = "__unseen__"

# The image is CPython 3.11 on x86-64 Linux, whatever machine assembles the context (serving/lock.py hashes the
# same wheels).
WHEEL_PLATFORM_ARGS = lock.WHEEL_PLATFORM_ARGS
DEFAULT_WHEEL_CACHE = Path(os.environ.get("WHEEL_CACHE", Path.home() / ".cache" / "mlops-wheelhouse"))


class PackagingError(RuntimeError):
    pass


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str | None  # None for a version registered from a path rather than a run
    source_uri: str
    artifact_uri: str | None = None  # what to download: the registered version's URI unless given
    registered: bool = True

    @property
    def version_uri(self) -> str:
        return self.artifact_uri or f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class BuildContext:
    path: Path
    manifest: dict

    @property
    def model_version(self) -> str:
        return str(self.manifest["model"]["version"])


MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+(?:\.[^@/]+)*)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)/(?P<path>.+)$")
URI_FORMS = "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a local model directory"


def resolve_model(model_uri: str, client: MlflowClient | None = None) -> ResolvedModel:
    """A model URI -> a concrete model: a registered version (by alias or number), a run's model (named after its
    artifact path, versioned by the run id) or a local MLflow model directory (named after it, version "local")."""
    run = RUN_URI.match(model_uri)
    if run:
        path = run["path"].strip("/")
        return ResolvedModel(name=path.split("/")[-1], version=run["run"], run_id=run["run"], source_uri=model_uri,
                             artifact_uri=model_uri, registered=False)
    local = Path(model_uri.removeprefix("file://"))
    if not model_uri.startswith(("models:/", "runs:/")) and (local / "MLmodel").is_file():
        return ResolvedModel(name=local.resolve().name, version="local", run_id=None, source_uri=model_uri,
                             artifact_uri=str(local.resolve()), registered=False)
    match = MODEL_URI.match(model_uri)
    if not match:
        raise PackagingError(f"model URI must be one of {URI_FORMS}, got {model_uri!r}")
    client = client or MlflowClient()
    name = match["name"]
    version = (client.get_model_version_by_alias(name, match["alias"]) if match["alias"]
               else client.get_model_version(name, match["version"]))
    return ResolvedModel(name=name, version=str(version.version), run_id=version.run_id, source_uri=model_uri)


def assemble_build_context(model_uri: str, out_dir: Path, *, client: MlflowClient | None = None,
                           wheelhouse: bool = True, wheel_cache: Path = DEFAULT_WHEEL_CACHE,
                           progress: Callable[[str], None] = print) -> BuildContext:
    """Build into a sibling folder and swap it in at the end: a refused model leaves no context."""
    client = client or MlflowClient()
    resolved = resolve_model(model_uri, client)
    progress(f"context: {model_uri} is {resolved.name} version {resolved.version} (run {resolved.run_id})")
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        manifest = _assemble(resolved, partial, client, wheelhouse, wheel_cache, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    progress(f"context: ready at {out_dir} (runtime {manifest['runtime']}, content {manifest['content_sha256'][:12]})")
    return BuildContext(out_dir, manifest)


def _assemble(resolved: ResolvedModel, out_dir: Path, client: MlflowClient, wheelhouse: bool, wheel_cache: Path,
              progress: Callable[[str], None]) -> dict:
    model_dir = out_dir / "model"
    manifest = prepare_model(resolved, model_dir, client, progress)
    shutil.copytree(APP_PACKAGE, out_dir / "scoring", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(DOCKERFILE, out_dir / "Dockerfile")
    locked, extras = _requirements(manifest, model_dir / MLFLOW_SUBDIR)
    (out_dir / "wheels").mkdir()
    if wheelhouse:
        extras = _fill_wheelhouse(locked, extras, out_dir / "wheels", wheel_cache, progress)
    (out_dir / "requirements.txt").write_text(_render(manifest["runtime"], locked, extras, hashed=wheelhouse))
    (out_dir / "pip.sha256").write_text("".join(f"{pin.hashes[0]}  {pin.wheel}\n" for pin in lock.pins(lock.PIP_LOCK)))

    manifest["content_sha256"] = content_hash(out_dir)
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def prepare_model(resolved: ResolvedModel, model_dir: Path, client: MlflowClient,
                  progress: Callable[[str], None] = print) -> dict:
    """The version's files in `model_dir` (the MLflow model; model.onnx or pipeline.skops by runtime) and its manifest
    (without the content hash): the image's model, and the batch job's (serving/batch.py), from this one function, so
    both score with the same runtime after the same equivalence check."""
    mlflow_dir = model_dir / MLFLOW_SUBDIR
    with tempfile.TemporaryDirectory() as tmp:
        if resolved.registered or resolved.artifact_uri is None or not Path(resolved.artifact_uri).is_dir():
            downloaded = Path(mlflow.artifacts.download_artifacts(resolved.version_uri, dst_path=tmp))
        else:
            downloaded = Path(resolved.artifact_uri)
        probe = _read_equivalence_records(downloaded)
        shutil.copytree(downloaded, mlflow_dir,
                        ignore=lambda d, names: [n for n in names if Path(d, n) == downloaded / EQUIVALENCE_ARTIFACT])
    mlflow_model = Model.load(str(mlflow_dir))
    contract_path = mlflow_dir / CONTRACT_ARTIFACT
    contract = json.loads(contract_path.read_text()) if contract_path.is_file() else None
    estimator = mlflow.sklearn.load_model(str(mlflow_dir)) if "sklearn" in mlflow_model.flavors else None
    pyfunc = None if estimator is not None else _load_pyfunc(mlflow_dir)
    manifest = _manifest(resolved, mlflow_model, mlflow_dir, client, contract, estimator, pyfunc)
    manifest.update(choose_runtime(estimator, manifest, probe, model_dir, mlflow_model, progress))
    return manifest


def _load_pyfunc(mlflow_dir: Path) -> Any:
    try:
        return mlflow.pyfunc.load_model(str(mlflow_dir))
    except Exception as error:
        raise PackagingError(f"MLflow cannot load the model here ({type(error).__name__}: {error}), so neither can "
                             "the image") from error


def _read_equivalence_records(model_dir: Path) -> pd.DataFrame | None:
    path = model_dir / EQUIVALENCE_ARTIFACT
    return pd.read_parquet(path) if path.exists() else None


# ---- the manifest: what the model is, from its MLflow files ----

def _manifest(resolved: ResolvedModel, mlflow_model: Model, mlflow_dir: Path, client: MlflowClient,
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
        for key in ("minimum", "maximum", "greater_than", "less_than", "values"):
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


# ---- the runtime: onnx, else sklearn, else pyfunc ----

def choose_runtime(estimator: Any, manifest: dict, probe: pd.DataFrame | None, model_dir: Path, mlflow_model: Model,
                   progress: Callable[[str], None]) -> dict:
    """The manifest's runtime fields, the first runtime that can serve the model as the registered version does."""
    if estimator is None:
        flavors = ", ".join(sorted(mlflow_model.flavors))
        return _pyfunc(manifest, model_dir, f"the model has no scikit-learn flavor (flavors: {flavors})", progress)
    parsed = Manifest.from_dict({**manifest, "runtime": "sklearn"})
    reference = FrameScorer(estimator, parsed)
    records = equivalence_records(reference, parsed, probe)
    try:
        return _onnx(estimator, manifest, reference, records, model_dir, progress)
    except (compiler.CompileError, compiler.EquivalenceError) as error:
        why_not_onnx = f"cannot compile: {error}" if isinstance(error, compiler.CompileError) else \
            f"the compiled model {error}"
    try:
        return _sklearn(estimator, manifest, reference, records, model_dir, why_not_onnx, progress)
    except (PackagingError, compiler.EquivalenceError) as error:
        why = f"the estimator loaded with skops {error}" if isinstance(error, compiler.EquivalenceError) else str(error)
        return _pyfunc(manifest, model_dir, f"{why_not_onnx}; and the sklearn runtime cannot serve it: {why}", progress)


def _onnx(estimator: Any, manifest: dict, reference: FrameScorer, records: pd.DataFrame, model_dir: Path,
          progress: Callable[[str], None]) -> dict:
    if manifest["predict_fn"] not in ("predict", "predict_proba"):
        raise compiler.CompileError(f"its pyfunc answers {manifest['predict_fn']}, which the graph has no output for")
    provisional = Manifest.from_dict({**manifest, "runtime": "onnx"})
    compiled = compiler.compile_pipeline(estimator, provisional.inputs, classifier=provisional.is_classifier)
    checked = Manifest.from_dict({**manifest, "runtime": "onnx", "missing_category": compiled.missing_category})
    found = compiler.check_equivalence(reference, OnnxScorer(compiled.onnx_bytes, checked), checked, records)
    (model_dir / ONNX_FILE).write_bytes(compiled.onnx_bytes)
    _drop_pickles(model_dir / MLFLOW_SUBDIR)
    reason = f"compiled to ONNX, equal to the registered model on {len(records)} records ({_measure(found)})"
    progress(f"context: runtime onnx: {reason}")
    return {"runtime": "onnx", "runtime_reason": reason, "missing_category": compiled.missing_category,
            "equivalence": found}


def _sklearn(estimator: Any, manifest: dict, reference: FrameScorer, records: pd.DataFrame, model_dir: Path,
             why_not_onnx: str, progress: Callable[[str], None]) -> dict:
    """The estimator re-saved with skops (the image never unpickles), loaded back trusting exactly its types, which
    must all be scikit-learn's (or numpy's, scipy's): nothing else is installed in that image."""
    import skops.io

    path = model_dir / SKOPS_FILE
    try:
        skops.io.dump(estimator, path)
        trusted = skops.io.get_untrusted_types(file=path)
    except Exception as error:
        path.unlink(missing_ok=True)
        raise PackagingError(f"skops cannot save it ({type(error).__name__}: {error})") from error
    foreign = sorted(t for t in trusted if t.split(".")[0] not in SKLEARN_MODULES)
    if foreign:
        path.unlink()
        raise PackagingError(f"it holds types from outside scikit-learn ({', '.join(foreign[:3])})")
    sklearn = {"path": SKOPS_FILE, "format": "skops", "trusted_types": trusted}
    checked = Manifest.from_dict({**manifest, "runtime": "sklearn", "sklearn": sklearn})
    try:
        found = compiler.check_equivalence(reference, SklearnScorer.load(model_dir, checked), checked, records)
    except compiler.EquivalenceError:
        path.unlink()
        raise
    _drop_pickles(model_dir / MLFLOW_SUBDIR)
    reason = why_not_onnx
    progress(f"context: runtime sklearn: {reason}")
    return {"runtime": "sklearn", "runtime_reason": reason, "sklearn": sklearn, "equivalence": found}


def _drop_pickles(mlflow_dir: Path) -> None:
    """A (cloud)pickled version (what the Databricks runtime's MLflow writes) leaves the image: the onnx and sklearn
    runtimes never unpickle, so no image holds a pickle to unpickle."""
    flavor = Model.load(str(mlflow_dir)).flavors.get("sklearn", {})
    if flavor.get("pickled_model") and flavor.get("serialization_format", "pickle") != "skops":
        (mlflow_dir / flavor["pickled_model"]).unlink(missing_ok=True)


def _pyfunc(manifest: dict, model_dir: Path, why: str, progress: Callable[[str], None]) -> dict:
    """MLflow loads the model in the scoring process; proven here by a warm-up prediction of the input example."""
    from serving.scoring.model import PyfuncScorer, check_outputs, records_to_columns

    checked = Manifest.from_dict({**manifest, "runtime": "pyfunc", "pyfunc": {"path": MLFLOW_SUBDIR}})
    try:
        scorer = PyfuncScorer.load(model_dir, checked)
        check_outputs(scorer.predict(records_to_columns(checked.input_example, checked.input_names)), checked,
                      len(checked.input_example))
    except Exception as error:
        raise PackagingError(f"the pyfunc runtime cannot serve it either: {type(error).__name__}: {error}") from error
    progress(f"context: runtime pyfunc: {why}")
    return {"runtime": "pyfunc", "runtime_reason": why, "pyfunc": {"path": MLFLOW_SUBDIR}}


def _measure(found: dict) -> str:
    if "max_abs_probability_difference" in found:
        return f"max |dp| {found['max_abs_probability_difference']:.2e}, labels equal"
    return f"max relative difference {found['max_relative_difference']:.2e}"


def equivalence_records(reference: FrameScorer, manifest: Manifest, probe: pd.DataFrame | None) -> pd.DataFrame:
    """What a runtime is checked on: the version's equivalence records when the registered model scores them, else
    probes built from the input example (probe_groups), each group kept where the registered model scores it."""
    names = manifest.input_names
    if probe is not None and set(names) <= set(probe.columns) and _scores(reference, manifest, probe[names]):
        return probe[names].reset_index(drop=True)
    kept = [group for group in probe_groups(manifest) if _scores(reference, manifest, group)]
    if not kept:
        raise PackagingError("the registered model scores none of the probes built from its input example")
    return pd.concat(kept, ignore_index=True)


def _scores(reference: FrameScorer, manifest: Manifest, records: pd.DataFrame) -> bool:
    try:
        reference.predict(compiler.frame_to_columns(records, manifest.inputs))
    except Exception:  # e.g. a model that refuses missing values: it is not checked on them
        return False
    return True


def probe_groups(manifest: Manifest) -> list[pd.DataFrame]:
    """From each input example row: the row; each number times 0, 0.5, 2 and -1; each text value swapped for the
    others seen (and the contract's) and an unseen one; then each value missing (a group of its own, so a model
    that refuses missing values is still checked on the rest)."""
    names = manifest.input_names
    rows = [dict(r) for r in manifest.input_example]
    groups: list[list[dict]] = [rows]
    for field in manifest.inputs:
        name, variants = field.name, []
        if field.is_string:
            seen = list(dict.fromkeys([*(r[name] for r in rows if r.get(name) is not None), *(field.values or ())]))
            for row in rows:
                variants += [{**row, name: value} for value in [*seen, UNSEEN] if value != row.get(name)]
        elif field.type != "boolean":
            integer = field.type in ("long", "integer")
            for row in rows:
                if row.get(name) is None:
                    continue
                for factor in (0.0, 0.5, 2.0, -1.0):
                    value = row[name] * factor
                    variants.append({**row, name: int(value) if integer else float(value)})
        groups += [variants, [{**row, name: None} for row in rows]]
    frames = []
    for group in groups:
        if group:
            frame = pd.DataFrame(group, columns=names)
            for field in manifest.inputs:
                frame[field.name] = frame[field.name].astype(object if field.is_string or field.type == "boolean"
                                                             else np.float64)
            frames.append(frame)
    return frames


def _package_name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _requirements(manifest: dict, mlflow_dir: Path) -> tuple[list[str], list[str]]:
    """(the hash-locked serving runtime's lines, the runtime's own packages at the model's pins): nothing for onnx;
    scikit-learn, pandas and skops for sklearn; mlflow-skinny at the model's MLflow version and the model's own
    requirements for pyfunc. A package the lock pins keeps the lock's version (the app runs on it)."""
    locked = [line for line in RUNTIME_REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    present = {_package_name(line) for line in locked}
    runtime = manifest["runtime"]
    if runtime == "onnx":
        return locked, []
    model_pins = _model_requirements(mlflow_dir)
    if runtime == "sklearn":
        import sklearn
        import skops

        installed = {"scikit-learn": sklearn.__version__, "pandas": pd.__version__, "skops": skops.__version__}
        pinned = {_package_name(pin): pin for pin in model_pins if _package_name(pin) in FALLBACK_PACKAGES}
        # skops loads what this process saved: at this process's version unless the model pins its own.
        extras = [pinned.get(name, f"{name}=={installed[name]}") for name in FALLBACK_PACKAGES]
        return locked, [pin for pin in extras if _package_name(pin) not in present]
    skinny = f"mlflow-skinny=={manifest['mlflow_version']}" if manifest.get("mlflow_version") else "mlflow-skinny"
    extras = [skinny, *(pin for pin in model_pins if _package_name(pin) not in ("mlflow", "mlflow-skinny"))]
    return locked, [pin for pin in dict.fromkeys(extras) if _package_name(pin) not in present]


def _model_requirements(mlflow_dir: Path) -> list[str]:
    """The model's requirements.txt, requirement lines only (no options, comments or includes)."""
    path = mlflow_dir / "requirements.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.split("#")[0].strip() for line in lines
            if line.split("#")[0].strip() and not line.strip().startswith(("-", "#"))]


def _render(runtime: str, locked: list[str], extras: list[str], hashed: bool = True) -> str:
    text = f"# generated by serving.context for the {runtime} runtime from serving/requirements.txt (hash-locked)\n"
    text += "\n".join(locked) + "\n"
    if extras:
        text += (f"# The {runtime} runtime's packages, at the model's pins: not in the lock, so hashed when their wheels "
                 "were\n# downloaded for this context (the image build still installs them with --require-hashes).\n"
                 if hashed else f"# The {runtime} runtime's packages, at the model's pins (no wheelhouse: not hashed, "
                 "a local run only).\n")
        text += "\n".join(extras) + "\n"
    return text


def _download(requirements: list[str], dest: Path, constraints: Sequence[str] = ()) -> None:
    try:
        lock.download(requirements, dest, constraints=constraints)
    except lock.LockError as error:
        raise PackagingError(f"downloading the image's wheels failed: {error}") from error


def _fill_wheelhouse(locked: list[str], extras: list[str], wheels: Path, cache: Path,
                     progress: Callable[[str], None]) -> list[str]:
    """pip download once per requirements set into a cache, then copy into the context; returns the extras' pins
    with the hashes of the wheels downloaded for them.

    The locked lines carry their hashes, so pip downloads in hash-checking mode: a wheel that is not the locked
    one fails here already. pip's own wheel comes from serving/pip.txt the same way."""
    bootstrap = [lock.format_pin(pin) for pin in lock.pins(lock.PIP_LOCK)]
    key = hashlib.sha256("\n".join([*locked, *bootstrap, *extras, *WHEEL_PLATFORM_ARGS]).encode()).hexdigest()[:16]
    cached = cache / key
    hashed_extras = cached / "extras.txt"
    if not (cached / ".complete").exists():
        progress(f"context: downloading wheels for linux/cp311 into {cached} (once per requirements set)")
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir(parents=True)
        _download([*locked, *bootstrap], cached)
        lines = []
        if extras:
            known = {_package_name(line) for line in [*locked, *bootstrap]}
            constraints = [line.split()[0] for line in locked]  # the locked versions, without hashes
            _download(extras, cached, constraints)
            for name, wheel in sorted(lock.downloaded(cached).items()):
                if name not in known:
                    _, version, *_ = lock.wheel_name_version(wheel.name)
                    lines.append(lock.format_pin(lock.Pin(name, version, (lock.sha256(wheel),), wheel.name)))
        hashed_extras.write_text("".join(f"{line}\n" for line in lines))
        (cached / ".complete").touch()
    for wheel in sorted(cached.glob("*.whl")):
        shutil.copy2(wheel, wheels / wheel.name)
    progress(f"context: wheelhouse has {len(list(wheels.glob('*.whl')))} wheels")
    return hashed_extras.read_text().splitlines()


def content_hash(root: Path) -> str:
    """sha256 over every file's path and bytes, except the manifest that records it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative == f"model/{MANIFEST_FILE}":
            continue
        digest.update(relative.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_uri", help=URI_FORMS)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI"))
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheelhouse (local process only)")
    args = parser.parse_args(argv)
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    if args.registry_uri:
        mlflow.set_registry_uri(args.registry_uri)
    try:
        context = assemble_build_context(args.model_uri, args.out_dir, wheelhouse=not args.no_wheels)
    except (PackagingError, compiler.EquivalenceError) as error:
        print(f"packaging failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(context.path), "model_version": context.model_version,
                      "content_sha256": context.manifest["content_sha256"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
