"""Packaging: the build context's contents and manifest, the compiled model's equivalence (and the fallback to
the next runtime when it does not hold), and the sklearn runtime for pipelines ONNX cannot express. Columns come
from the session model's contract (`model`), never from its names."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from serving import compile as compiler
from serving.context import PackagingError, assemble_build_context, content_hash, resolve_model
from serving.scoring.app import create_app
from serving.scoring.model import FEATURES_INPUT, FrameScorer, Manifest, OnnxScorer, records_to_columns
from serving.scoring.settings import Settings
from training import data
from training import train as training
from training.baseline import build_baseline, equivalence_records
from training.evaluation import predictions
from training.loader import validate_frame
from training.search import features_of


def _features(model, frame: pd.DataFrame) -> pd.DataFrame:
    return features_of(frame, model.contract)


def _target(model, frame: pd.DataFrame) -> pd.Series:
    return frame[model.contract.target.name]


def _fresh(model, rows: int, seed: int) -> pd.DataFrame:
    return validate_frame(data.example_table(model, rows, seed), model.contract)


def test_context_holds_everything_the_image_needs(context, registry):
    root = context.path
    for relative in ("Dockerfile", "requirements.txt", "wheels", "scoring/app.py", "scoring/serve.py",
                     "model/manifest.json", "model/model.onnx", "model/mlflow/MLmodel", "model/mlflow/model.skops",
                     "model/mlflow/extra_files/drift_baseline.json"):
        assert (root / relative).exists(), relative
    assert not (root / "model/mlflow/extra_files/equivalence_records.parquet").exists()  # used for packaging only
    assert not list(root.rglob("__pycache__"))
    assert (root / "Dockerfile").read_text() == (Path("serving/Dockerfile")).read_text()


def test_manifest_names_the_model_and_its_lineage(context, registry):
    manifest = json.loads((context.path / "model/manifest.json").read_text())
    version = MlflowClient().get_model_version(registry["model_name"], registry["version"])
    assert manifest["model"] == {"name": registry["model_name"], "version": registry["version"], "run_id": version.run_id,
                                 "source_uri": f"models:/{registry['model_name']}@champion",
                                 "version_uri": f"models:/{registry['model_name']}/{registry['version']}",
                                 "description": ""}
    assert manifest["format_version"] == 2 and manifest["runtime"] == "onnx" and manifest["missing_category"] == "missing"
    assert manifest["runtime_reason"].startswith("compiled to ONNX, equal to the registered model")
    contract = registry["model"].contract
    assert [f["name"] for f in manifest["inputs"]] == contract.feature_names
    assert manifest["task"] == contract.task and manifest["classes"] == list(contract.target.classes)
    assert manifest["decision_threshold"] == float(version.tags["decision_threshold"])
    assert manifest["predict_fn"] == "predict_proba" and manifest["input_example_source"] == "version"
    assert manifest["contract"] == json.loads((context.path / "model/mlflow/extra_files/contract.json").read_text())
    assert manifest["drift_baseline"] == "mlflow/extra_files/drift_baseline.json"
    described = {f.name: f.description for f in contract.features}
    assert all(f.get("description", "") == described[f["name"]] for f in manifest["inputs"])
    assert manifest["content_sha256"] == content_hash(context.path)
    assert manifest["equivalence"]["max_abs_probability_difference"] <= 1e-5
    assert manifest["equivalence"]["labels_differing"] == 0 and manifest["equivalence"]["rows"] > 500


def test_content_hash_changes_with_any_file(context, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(context.path, copy)
    before = content_hash(copy)
    (copy / "scoring" / "app.py").write_text((copy / "scoring" / "app.py").read_text() + "\n# changed\n")
    assert content_hash(copy) != before


def test_runtime_requirements_carry_no_training_or_mlflow_stack(context):
    lines = [line for line in (context.path / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    names = {line.split("==")[0].lower() for line in lines}
    assert {"fastapi", "uvicorn", "onnxruntime", "numpy"} <= names
    assert not names & {"mlflow", "mlflow-skinny", "scikit-learn", "pandas", "skl2onnx", "pytest"}
    assert all("==" in line for line in lines)


def test_compiled_model_matches_pipeline_on_records_it_never_saw(registry, context):
    """Checked at packaging on records drawn from the baseline; here on fresh people-like rows as well."""
    uri = f"models:/{registry['model_name']}/{registry['version']}"
    pipeline = mlflow.sklearn.load_model(uri)
    holdout = _fresh(registry["model"], 800, seed=5)
    manifest = Manifest.read(context.path / "model")
    compiled = compiler.Compiled((context.path / "model/model.onnx").read_bytes(), manifest.missing_category)
    assert compiler.max_probability_difference(pipeline, compiled, manifest, holdout) <= 1e-5


def test_the_compiled_graph_takes_one_feature_matrix_its_metadata_describes(context):
    """Imputers and one-hot encoders become an Encoding in the model's metadata; the graph is the estimator
    alone, fed one float matrix (one onnxruntime input instead of one per column)."""
    manifest = Manifest.read(context.path / "model")
    scorer = OnnxScorer(context.path / "model/model.onnx", manifest)
    assert [i.name for i in scorer.session.get_inputs()] == [FEATURES_INPUT]
    encoding = scorer.encoding
    assert encoding is not None and encoding.width == scorer.session.get_inputs()[0].shape[1]
    encoded = [name for name, _, _ in encoding.numbers] + [name for name, _ in encoding.one_hot]
    assert sorted(encoded) == sorted(manifest.input_names)


def test_missing_and_unknown_values_score_as_the_pipeline_scores_them(registry, context):
    """None in a number (the imputer's median) or a text (the "missing" category), a category never seen
    (no one-hot column set): the one-record path and the many-record path agree with scikit-learn."""
    pipeline = mlflow.sklearn.load_model(f"models:/{registry['model_name']}/{registry['version']}")
    manifest = Manifest.read(context.path / "model")
    texts = [f.name for f in manifest.inputs if f.is_string]
    numbers = [f.name for f in manifest.inputs if not f.is_string]
    records = [dict(record) for record in manifest.input_example] * 3
    records[0].update({numbers[0]: None, texts[0]: None, texts[1]: "martian"})
    records[1].update({name: None for name in manifest.input_names})
    records[2].update({texts[2]: "", texts[-1]: "no such value"})
    compiled, reference = OnnxScorer(context.path / "model/model.onnx", manifest), FrameScorer(pipeline, manifest)
    together = compiled.predict(records_to_columns(records, manifest.input_names))
    one_by_one = [compiled.predict(records_to_columns([r], manifest.input_names))[0] for r in records]
    expected = reference.predict(records_to_columns(records, manifest.input_names))
    assert np.max(np.abs(together - expected)) <= 1e-5 and np.array_equal(together, np.array(one_by_one))


def test_other_preprocessing_compiles_to_one_input_per_column(context, small_frame, model):
    """Preprocessing compile_pipeline does not recognise as imputers and one-hot encoders (here a numeric step
    wrapped in a Pipeline of its own) keeps the whole-pipeline graph, one input per column."""
    manifest = Manifest.read(context.path / "model")
    contract = model.contract
    numeric = Pipeline([("impute", SimpleImputer(strategy="median"))])
    categorical = Pipeline([("impute", SimpleImputer(missing_values=None, strategy="constant", fill_value="missing")),
                            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))])
    features = ColumnTransformer([("numeric", numeric, [f.name for f in contract.numbers]),
                                  ("categorical", categorical, [f.name for f in contract.categories])])
    pipeline = Pipeline([("features", features), ("classifier", HistGradientBoostingClassifier(max_iter=30))])
    pipeline.fit(_features(model, small_frame), _target(model, small_frame))
    compiled = compiler.compile_pipeline(pipeline, manifest.inputs)
    scorer = OnnxScorer(compiled.onnx_bytes, manifest)
    assert scorer.encoding is None and [i.name for i in scorer.session.get_inputs()] == manifest.input_names
    found = compiler.check_equivalence(FrameScorer(pipeline, manifest), scorer, manifest, small_frame.head(300))
    assert found["max_abs_probability_difference"] <= 1e-5 and found["labels_differing"] == 0


def test_a_disagreeing_compiled_model_is_caught(registry, context, model):
    uri = f"models:/{registry['model_name']}/{registry['version']}"
    pipeline = mlflow.sklearn.load_model(uri)
    other_data = _fresh(model, 1500, seed=99)
    other = model.build({"learning_rate": 0.3, "max_leaf_nodes": 7}, 3).fit(_features(model, other_data),
                                                                           _target(model, other_data))
    manifest = Manifest.read(context.path / "model")
    wrong = OnnxScorer(compiler.compile_pipeline(other, manifest.inputs).onnx_bytes, manifest)
    with pytest.raises(compiler.EquivalenceError, match="differs from the registered model on 300 records"):
        compiler.check_equivalence(FrameScorer(pipeline, manifest), wrong, manifest, other_data.head(300))


def _register(model, pipeline: Pipeline, name: str, training_rows: pd.DataFrame) -> str:
    """Register a pipeline the way training does (signature, example, skops, the baseline of `training_rows` and
    the records drawn from it)."""
    contract = model.contract
    features = _features(model, training_rows)
    baseline = build_baseline(features, predictions(pipeline, features, contract), contract)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        equivalence = Path(tmp, training.EQUIVALENCE_FILE)
        equivalence_records(baseline).to_parquet(equivalence, index=False)
        info = mlflow.sklearn.log_model(
            pipeline, name="model", signature=training.signature(pipeline, contract),
            input_example=training.input_example(baseline), pip_requirements=training.pip_requirements(model.module),
            serialization_format="skops", skops_trusted_types=training.trusted_types(pipeline),
            pyfunc_predict_fn="predict_proba", registered_model_name=name, extra_files=[str(equivalence)])
    version = str(info.registered_model_version)
    MlflowClient().set_model_version_tag(name, version, "decision_threshold", "0.4")
    return version


@pytest.fixture(scope="module")
def small_frame(model) -> pd.DataFrame:
    return _fresh(model, 1500, seed=21)


def test_float32_precision_loss_falls_back_to_the_sklearn_runtime(registry, small_frame, tmp_path, model):
    """Numbers beyond float32's 24-bit mantissa: the compiled graph would misroute records, so packaging serves the
    estimator itself, saying why."""
    frame = small_frame.copy()
    number, target = model.contract.numbers[0].name, model.contract.target.name
    frame[number] = np.where(np.arange(len(frame)) % 2 == 0, 16_777_216.0, 16_777_217.0)
    frame[target] = np.asarray(model.contract.target.classes)[np.arange(len(frame)) % 2]
    pipeline = model.build({"learning_rate": 0.1, "max_leaf_nodes": 7}, 3).fit(_features(model, frame), frame[target])
    version = _register(model, pipeline, "precision-trap", frame)
    said: list[str] = []
    context = assemble_build_context(f"models:/precision-trap/{version}", tmp_path / "ctx", wheelhouse=False,
                                     progress=said.append)
    assert context.manifest["runtime"] == "sklearn" and not (context.path / "model/model.onnx").exists()
    assert context.manifest["runtime_reason"].startswith("the compiled model differs from the registered model")
    assert f"context: runtime sklearn: {context.manifest['runtime_reason']}" in said
    assert not (tmp_path / "ctx.partial").exists()


def test_uncompilable_pipeline_is_served_by_the_sklearn_runtime(registry, small_frame, tmp_path, model):
    numbers = [f.name for f in model.contract.numbers]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("cube_root", FunctionTransformer(np.cbrt))])
    features = ColumnTransformer([("numeric", numeric, numbers)])
    pipeline = Pipeline([("features", features), ("classifier", HistGradientBoostingClassifier(max_iter=30))])
    pipeline.fit(_features(model, small_frame), _target(model, small_frame))
    version = _register(model, pipeline, "uncompilable", small_frame)

    context = assemble_build_context(f"models:/uncompilable/{version}", tmp_path / "ctx", wheelhouse=False)
    assert context.manifest["runtime"] == "sklearn" and not (context.path / "model/model.onnx").exists()
    assert context.manifest["runtime_reason"].startswith("cannot compile: ")
    pins = (context.path / "requirements.txt").read_text()
    assert "scikit-learn==" in pins and "skops==" in pins and "pandas==" in pins and "mlflow" not in pins

    records = context.manifest["input_example"]
    with TestClient(create_app(Settings(context.path / "model", max_records=10, request_log=False))) as client:
        assert client.get("/ready").json()["runtime"] == "sklearn"
        got = [p["probability"] for p in client.post("/predict", json={"records": records}).json()["predictions"]]
    expected = pipeline.predict_proba(pd.DataFrame(records)[model.contract.feature_names])[:, 1]
    assert np.allclose(got, expected, atol=1e-12)


def test_a_cloudpickled_version_reaches_the_image_as_skops_never_as_a_pickle(registry, small_frame, tmp_path, model):
    """What the Databricks runtime's MLflow (no skops flavor) registers: the image must not unpickle it."""
    numbers = [f.name for f in model.contract.numbers]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("cube_root", FunctionTransformer(np.cbrt))])
    pipeline = Pipeline([("features", ColumnTransformer([("numeric", numeric, numbers)])),
                         ("classifier", HistGradientBoostingClassifier(max_iter=30))])
    pipeline.fit(_features(model, small_frame), _target(model, small_frame))  # uncompilable: the sklearn runtime
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(pipeline, name="model", signature=training.signature(pipeline, model.contract),
                                        input_example=_features(model, small_frame).dropna().head(3),
                                        serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
                                        registered_model_name="pickled")
    context = assemble_build_context(f"models:/pickled/{info.registered_model_version}", tmp_path / "ctx",
                                     wheelhouse=False)
    assert context.manifest["sklearn"]["format"] == "skops" and context.manifest["sklearn"]["path"] == "pipeline.skops"
    assert not [p for p in context.path.rglob("*") if p.suffix in (".pkl", ".pickle")]
    records = context.manifest["input_example"]
    with TestClient(create_app(Settings(context.path / "model", max_records=10, request_log=False))) as client:
        got = [p["probability"] for p in client.post("/predict", json={"records": records}).json()["predictions"]]
    expected = pipeline.predict_proba(pd.DataFrame(records)[model.contract.feature_names])[:, 1]
    assert np.allclose(got, expected, atol=1e-12)


def test_training_logs_skops_where_mlflow_has_it_and_cloudpickle_on_the_runtimes_mlflow(monkeypatch, model):
    model = model.build({"learning_rate": 0.1, "max_leaf_nodes": 7}, 3)
    assert training.serialization(model)["serialization_format"] == "skops"
    monkeypatch.delattr(mlflow.sklearn, "SERIALIZATION_FORMAT_SKOPS")  # as MLflow 3.8.1 (Databricks 18 LTS ML)
    assert training.serialization(model) == {"serialization_format": "cloudpickle"}


def test_resolve_by_alias_and_by_version(registry):
    by_alias = resolve_model(f"models:/{registry['model_name']}@champion")
    by_version = resolve_model(f"models:/{registry['model_name']}/{registry['version']}")
    assert by_alias.version == by_version.version == registry["version"]
    assert by_alias.run_id == by_version.run_id == registry["summary"]["run_id"]


@pytest.mark.parametrize("uri", ["models:/name", "models:/name@", "s3://bucket/model", "runs:/abc", "no/such/dir"])
def test_bad_model_uri_is_explained(uri):
    with pytest.raises(PackagingError, match="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path>"):
        resolve_model(uri)


def test_a_run_and_a_directory_resolve_to_a_model_of_their_own(registry, tmp_path):
    run = resolve_model("runs:/0123abcd/model")
    assert (run.name, run.version, run.run_id, run.version_uri, run.registered) == (
        "model", "0123abcd", "0123abcd", "runs:/0123abcd/model", False)
    local = tmp_path / "my_model"
    mlflow.artifacts.download_artifacts(f"models:/{registry['model_name']}/{registry['version']}", dst_path=str(local))
    found = resolve_model(str(local))
    assert (found.name, found.version, found.registered) == ("my_model", "local", False)


def test_unknown_alias_is_an_error(registry, tmp_path):
    with pytest.raises(mlflow.exceptions.MlflowException):
        assemble_build_context(f"models:/{registry['model_name']}@nonexistent", tmp_path / "ctx", wheelhouse=False)



COMPILE_IN_A_FRESH_PROCESS = """
import hashlib, pickle, sys
from serving import compile as compiler
pipeline, inputs = pickle.load(open(sys.argv[1], "rb"))
print(hashlib.sha256(compiler.compile_pipeline(pipeline, inputs).onnx_bytes).hexdigest())
"""


def test_compiled_model_is_byte_identical_whatever_the_hash_seed(registry, context, tmp_path):
    """Same pipeline, same bytes, in every process. skl2onnx writes opset_import in set order, which follows
    PYTHONHASHSEED: before, some `pulumi up`s saw a new model.onnx, rebuilt the image and made a revision for
    nothing. Seeds 0..11 include orders both ways on CPython 3.11."""
    import os
    import pickle
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    pipeline = mlflow.sklearn.load_model(f"models:/{registry['model_name']}/{registry['version']}")
    manifest = Manifest.read(context.path / "model")
    path = tmp_path / "pipeline.pkl"
    path.write_bytes(pickle.dumps((pipeline, manifest.inputs)))

    def compile_with(seed: int) -> str:
        return subprocess.run([sys.executable, "-c", COMPILE_IN_A_FRESH_PROCESS, str(path)], check=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}, capture_output=True, timeout=300,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip()

    with ThreadPoolExecutor(2) as pool:
        digests = dict(zip(range(12), pool.map(compile_with, range(12)), strict=True))
    assert len(set(digests.values())) == 1, digests


SKOPS_IN_A_FRESH_PROCESS = """
import pickle, sys
from pathlib import Path
import skops.io
from serving.runtime import canonical_skops
pipeline = pickle.load(open(sys.argv[1], "rb"))
skops.io.dump(pipeline, sys.argv[2])
if sys.argv[3] == "canonical":
    canonical_skops(Path(sys.argv[2]))
"""


def test_the_sklearn_runtimes_file_is_byte_identical_in_every_process(registry, context, tmp_path):
    """Audit s12 F2: skops names arrays and shared objects by id() and dates each zip entry, so the same estimator
    saved in two processes gave two files: for a model on the sklearn runtime, another content hash, image and
    revision on every `up`. canonical_skops' file is the same in every process and loads to the same predictions."""
    import pickle
    import subprocess
    import sys
    import time

    import skops.io

    from serving.runtime import canonical_skops

    pipeline = mlflow.sklearn.load_model(f"models:/{registry['model_name']}/{registry['version']}")
    (tmp_path / "pipeline.pkl").write_bytes(pickle.dumps(pipeline))

    def saved(name: str, form: str) -> bytes:
        time.sleep(1.1)  # a zip entry's date has a 2-second resolution: two saves in other seconds
        subprocess.run([sys.executable, "-c", SKOPS_IN_A_FRESH_PROCESS, str(tmp_path / "pipeline.pkl"),
                        str(tmp_path / name), form], check=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
        return (tmp_path / name).read_bytes()

    assert saved("a.skops", "as skops writes it") != saved("b.skops", "as skops writes it")  # why the rewrite exists
    first, second = saved("c.skops", "canonical"), saved("d.skops", "canonical")
    assert first == second
    again = tmp_path / "again.skops"  # this process too, loading the estimator the same way (what it shares is kept)
    skops.io.dump(pickle.loads((tmp_path / "pipeline.pkl").read_bytes()), again)
    canonical_skops(again)
    assert again.read_bytes() == first
    loaded = skops.io.load(tmp_path / "c.skops", trusted=skops.io.get_untrusted_types(file=tmp_path / "c.skops"))
    records = pd.DataFrame(Manifest.read(context.path / "model").input_example)
    assert np.array_equal(loaded.predict_proba(records), pipeline.predict_proba(records))
    shared = np.arange(5.0)  # what the estimator shares stays shared (skops reads an __id__ of 0 as none)
    skops.io.dump({"first": shared, "again": shared}, tmp_path / "shared.skops")
    canonical_skops(tmp_path / "shared.skops")
    both = skops.io.load(tmp_path / "shared.skops", trusted=skops.io.get_untrusted_types(file=tmp_path / "shared.skops"))
    assert both["first"] is both["again"]


def test_the_pyfunc_runtime_installs_the_packaging_mlflow_whatever_mlflow_logged_the_model(tmp_path):
    """A version a job cluster logged says mlflow_version 3.8.1, whose mlflow-skinny requires importlib-metadata<9 and
    packaging<26: beside the image's lock it could never install. The image gets the mlflow-skinny packaging loaded
    and checked the model with, and every requirement of it that the lock pins is met by the lock's version."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    from serving import context, lock

    mlflow_dir = tmp_path / "mlflow"
    mlflow_dir.mkdir()
    (mlflow_dir / "requirements.txt").write_text("mlflow==3.8.1\nscikit-learn==1.9.1\ncloudpickle==3.1.3\n")
    _, extras = context._requirements({"runtime": "pyfunc", "mlflow_version": "3.8.1"}, mlflow_dir)
    assert extras[0] == f"mlflow-skinny=={mlflow.__version__}" and "mlflow==3.8.1" not in extras
    pinned = {pin.name: pin.version for pin in lock.pins(context.RUNTIME_REQUIREMENTS)}
    needs = [Requirement(line) for line in requires("mlflow-skinny") or [] if "extra ==" not in line]
    unmet = [str(r) for r in needs if r.name.lower() in pinned and not r.specifier.contains(pinned[r.name.lower()])]
    assert unmet == [], f"mlflow-skinny {mlflow.__version__} needs what the image's lock does not pin: {unmet}"
