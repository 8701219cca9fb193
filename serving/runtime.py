"""Which runtime serves a model, chosen at packaging (serving/context.py), with the reason printed
("context: runtime <name>: <why>") and kept in the manifest's `runtime_reason`:

  onnx     the scikit-learn estimator or pipeline (XGBoost and LightGBM through onnxmltools) compiles
           (serving/compile.py) and its graph gives the registered model's labels and probabilities (or values) on the
           equivalence records: the fastest, and the image needs onnxruntime and numpy only
  sklearn  otherwise, when the estimator holds only scikit-learn's (numpy's, scipy's) types: re-saved with skops, loaded
           back trusting exactly those types, and checked the same way; the image adds scikit-learn, pandas and skops
  pyfunc   anything else (a custom class, a model skops cannot save or the image could not load, a flavor other than
           scikit-learn): MLflow loads it in the scoring process (mlflow-skinny and the model's own requirements in
           the image); the version's pickle, if any, ships and is unpickled there, and nowhere else

The equivalence records are the version's own (training draws them from the drift baseline), or, for a model logged
elsewhere, probes built from its input example (probe_groups).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import Model

from serving import compile as compiler
from serving.scoring.model import FEW_RECORDS_ONNX_FILE, ONNX_FILE, FrameScorer, Manifest, OnnxScorer, SklearnScorer

MLFLOW_SUBDIR = "mlflow"
SKOPS_FILE = "pipeline.skops"  # the estimator, (re-)saved for the sklearn runtime
# The modules whose types the sklearn runtime's image can load (scikit-learn and what it is made of).
SKLEARN_MODULES = ("sklearn", "numpy", "scipy", "builtins", "collections", "functools", "operator", "skops", "joblib",
                   "_operator", "pandas")
UNSEEN = "__unseen__"


class PackagingError(RuntimeError):
    pass


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
    graphs = {ONNX_FILE: compiled.onnx_bytes}
    if compiled.few_records_bytes is not None:  # skl2onnx's graph too, for a few records, where it passes too
        with contextlib.suppress(compiler.EquivalenceError):
            found = max(found, compiler.check_equivalence(reference, OnnxScorer(compiled.few_records_bytes, checked),
                                                          checked, records), key=_farthest)
            graphs[FEW_RECORDS_ONNX_FILE] = compiled.few_records_bytes
    for name, graph in graphs.items():
        (model_dir / name).write_bytes(graph)
    _drop_pickles(model_dir / MLFLOW_SUBDIR)
    form = "" if len(graphs) == 1 else "; two graphs, each checked: skl2onnx's for a few records, one rewritten for many"
    reason = f"compiled to ONNX, equal to the registered model on {len(records)} records ({_measure(found)}){form}"
    progress(f"context: runtime onnx: {reason}")
    return {"runtime": "onnx", "runtime_reason": reason, "missing_category": compiled.missing_category,
            "equivalence": found}


def canonical_skops(path: Path) -> None:
    """The skops file rewritten to bytes that depend on the estimator alone. skops names its arrays' files and its
    shared objects by id() (and bytes' files by a uuid), and stamps each zip entry with the time: the same estimator
    gave other bytes in another process, so another content hash, image and revision on every `up` (audit s12 F2;
    serving/compile.py canonical_bytes does the same for an ONNX graph). Here the ids and files are numbered in the
    schema's order, the entries written in that order, each dated 1980-01-01."""
    numbers: dict[int, int] = {}  # id() -> its number, from 1 (skops reads an __id__ of 0 as none: not shared)
    files: dict[str, str] = {}  # file name -> its new name (the same extension)

    def renumber(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    node[key] = numbers.setdefault(value, len(numbers) + 1)
                elif key == "file" and isinstance(value, str):
                    node[key] = files.setdefault(value, f"{len(files)}{Path(value).suffix}")
                else:
                    renumber(value)
        elif isinstance(node, list):
            for value in node:
                renumber(value)

    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        renumber(schema)
        contents = {new: archive.read(old) for old, new in files.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in [("schema.json", json.dumps(schema, indent=2).encode()), *contents.items()]:
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)


def _sklearn(estimator: Any, manifest: dict, reference: FrameScorer, records: pd.DataFrame, model_dir: Path,
             why_not_onnx: str, progress: Callable[[str], None]) -> dict:
    """The estimator re-saved with skops (the image never unpickles), loaded back trusting exactly its types, which
    must all be scikit-learn's (or numpy's, scipy's): nothing else is installed in that image."""
    import skops.io

    path = model_dir / SKOPS_FILE
    try:
        skops.io.dump(estimator, path)
        canonical_skops(path)
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
    """MLflow loads the model in the scoring process; proven here by a warm-up prediction of the input example in a
    process that sees the scoring app and the model's files, not this repository (a class the model's pickle names by
    module must come with the model, as MLflow `code_paths` do, or the image could not load it). Its packages are
    this environment's: the image's are the lock's and the model's requirements (training pins what the model
    module imports), which only the image build itself proves."""
    checked = {**manifest, "runtime": "pyfunc", "pyfunc": {"path": MLFLOW_SUBDIR}}
    with tempfile.TemporaryDirectory() as work:
        manifest_file = Path(work, "manifest.json")
        manifest_file.write_text(json.dumps(checked, default=str))
        result = subprocess.run([sys.executable, "-P", "-c", PYFUNC_WARM_UP, str(model_dir), str(manifest_file)],
                                cwd=work, env={**os.environ, "PYTHONPATH": str(SCORING_PARENT)}, capture_output=True,
                                text=True, check=False, timeout=WARM_UP_SECONDS)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise PackagingError(f"the pyfunc runtime cannot serve it either, in a process without this repository (as "
                             f"in the image): {last}")
    progress(f"context: runtime pyfunc: {why}")
    return {"runtime": "pyfunc", "runtime_reason": why, "pyfunc": {"path": MLFLOW_SUBDIR}}


# The pyfunc runtime's warm-up, as the image runs it: the scoring package on the path (the image's top-level
# `scoring`), the model directory, nothing of this repository.
PYFUNC_WARM_UP = """
import json, sys
from pathlib import Path
from scoring.model import Manifest, PyfuncScorer, check_outputs, records_to_columns
model_dir, manifest_file = sys.argv[1:]
manifest = Manifest.from_dict(json.loads(Path(manifest_file).read_text()))
scorer = PyfuncScorer.load(Path(model_dir), manifest)
check_outputs(scorer.predict(records_to_columns(manifest.input_example, manifest.input_names)), manifest,
              len(manifest.input_example))
"""
SCORING_PARENT = Path(__file__).resolve().parent  # holds scoring/
WARM_UP_SECONDS = 600  # loading MLflow and a large model takes seconds; a hang must not hold `pulumi up` forever


def _farthest(found: dict) -> float:
    return float(found.get("max_abs_probability_difference", found.get("max_relative_difference", 0.0)))


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
