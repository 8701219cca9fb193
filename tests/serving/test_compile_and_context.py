"""Packaging: the build context's contents and manifest, the compiled model's equivalence (and the
refusal when it does not hold), and the sklearn fallback for pipelines ONNX cannot express."""

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
from serving.scoring.model import FEATURES_INPUT, Manifest, OnnxScorer, SklearnScorer, records_to_columns
from serving.scoring.settings import Settings
from training import data, schema
from training import train as training
from training.baseline import build_baseline, equivalence_records
from training.loader import validate_frame
from training.pipeline import build_pipeline, features_of


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
                                 "version_uri": f"models:/{registry['model_name']}/{registry['version']}"}
    assert manifest["runtime"] == "onnx" and manifest["missing_category"] == "missing"
    assert [f["name"] for f in manifest["inputs"]] == list(schema.FEATURES)
    assert manifest["content_sha256"] == content_hash(context.path)
    assert manifest["equivalence"]["max_abs_probability_difference"] <= 1e-5
    assert manifest["equivalence"]["rows"] > 500


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
    holdout = validate_frame(data.generate(800, seed=5))
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
    records = [dict(record) for record in manifest.input_example] * 3
    records[0].update(age=None, sex=None, education="martian")
    records[1].update({name: None for name in manifest.input_names})
    records[2].update(marriage="", repayment_status_1="no such status")
    compiled, reference = OnnxScorer(context.path / "model/model.onnx", manifest), SklearnScorer(pipeline, manifest)
    together = compiled.predict_proba(records_to_columns(records, manifest.input_names))
    one_by_one = [compiled.predict_proba(records_to_columns([r], manifest.input_names))[0] for r in records]
    expected = reference.predict_proba(records_to_columns(records, manifest.input_names))
    assert np.max(np.abs(together - expected)) <= 1e-5 and np.array_equal(together, one_by_one)


def test_other_preprocessing_compiles_to_one_input_per_column(context, small_frame):
    """Preprocessing compile_pipeline does not recognise as imputers and one-hot encoders (here a numeric step
    wrapped in a Pipeline of its own) keeps the whole-pipeline graph, one input per column."""
    manifest = Manifest.read(context.path / "model")
    numeric = Pipeline([("impute", SimpleImputer(strategy="median"))])
    categorical = Pipeline([("impute", SimpleImputer(missing_values=None, strategy="constant", fill_value="missing")),
                            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))])
    features = ColumnTransformer([("numeric", numeric, list(schema.NUMERIC)),
                                  ("categorical", categorical, list(schema.CATEGORICAL))])
    pipeline = Pipeline([("features", features), ("classifier", HistGradientBoostingClassifier(max_iter=30))])
    pipeline.fit(features_of(small_frame), small_frame[schema.TARGET])
    compiled = compiler.compile_pipeline(pipeline, manifest.inputs)
    scorer = OnnxScorer(compiled.onnx_bytes, manifest)
    assert scorer.encoding is None and [i.name for i in scorer.session.get_inputs()] == manifest.input_names
    assert compiler.check_equivalence(pipeline, compiled, manifest, small_frame.head(300)) <= 1e-5


def test_a_disagreeing_compiled_model_is_refused(registry, context):
    uri = f"models:/{registry['model_name']}/{registry['version']}"
    pipeline = mlflow.sklearn.load_model(uri)
    other_data = validate_frame(data.generate(1500, seed=99))
    other = build_pipeline({"learning_rate": 0.3, "max_leaf_nodes": 7}).fit(features_of(other_data), other_data[schema.TARGET])
    manifest = Manifest.read(context.path / "model")
    wrong = compiler.compile_pipeline(other, manifest.inputs)
    with pytest.raises(compiler.EquivalenceError, match="refusing to package"):
        compiler.check_equivalence(pipeline, wrong, manifest, other_data.head(300))


def _register(pipeline: Pipeline, frame: pd.DataFrame, name: str, training_rows: pd.DataFrame) -> str:
    """Register a pipeline the way training does (signature, example, skops, the baseline of `training_rows` and
    the records drawn from it)."""
    baseline = build_baseline(features_of(training_rows), pipeline.predict_proba(features_of(training_rows))[:, 1])
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        equivalence = Path(tmp, training.EQUIVALENCE_FILE)
        equivalence_records(baseline).to_parquet(equivalence, index=False)
        info = mlflow.sklearn.log_model(
            pipeline, name="model", signature=training.signature(), input_example=training.input_example(baseline),
            pip_requirements=training.pip_requirements(), serialization_format="skops",
            skops_trusted_types=training.trusted_types(pipeline), pyfunc_predict_fn="predict_proba",
            registered_model_name=name, extra_files=[str(equivalence)])
    version = str(info.registered_model_version)
    MlflowClient().set_model_version_tag(name, version, "decision_threshold", "0.4")
    return version


@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    return validate_frame(data.generate(1500, seed=21))


def test_float32_precision_loss_is_caught_at_packaging(registry, small_frame, tmp_path):
    """Money beyond float32's 24-bit mantissa: the compiled graph would misroute records, so packaging refuses."""
    frame = small_frame.copy()
    frame["credit_limit"] = np.where(np.arange(len(frame)) % 2 == 0, 16_777_216.0, 16_777_217.0)
    frame[schema.TARGET] = (np.arange(len(frame)) % 2).astype(int)
    pipeline = build_pipeline({"learning_rate": 0.1, "max_leaf_nodes": 7}).fit(features_of(frame), frame[schema.TARGET])
    version = _register(pipeline, frame, "precision-trap", frame)
    with pytest.raises(compiler.EquivalenceError, match=r"differs from the registered pipeline by 0?\.?\d+ in probability"):
        assemble_build_context(f"models:/precision-trap/{version}", tmp_path / "ctx", wheelhouse=False)
    assert not (tmp_path / "ctx").exists() and not (tmp_path / "ctx.partial").exists()  # nothing half-built


def test_uncompilable_pipeline_is_served_by_the_sklearn_fallback(registry, small_frame, tmp_path):
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("cube_root", FunctionTransformer(np.cbrt))])
    features = ColumnTransformer([("numeric", numeric, list(schema.NUMERIC))])
    pipeline = Pipeline([("features", features), ("classifier", HistGradientBoostingClassifier(max_iter=30))])
    pipeline.fit(features_of(small_frame), small_frame[schema.TARGET])
    version = _register(pipeline, small_frame, "uncompilable", small_frame)

    context = assemble_build_context(f"models:/uncompilable/{version}", tmp_path / "ctx", wheelhouse=False)
    assert context.manifest["runtime"] == "sklearn" and not (context.path / "model/model.onnx").exists()
    pins = (context.path / "requirements.txt").read_text()
    assert "scikit-learn==" in pins and "skops==" in pins and "pandas==" in pins and "mlflow" not in pins

    records = context.manifest["input_example"]
    with TestClient(create_app(Settings(context.path / "model", max_records=10, request_log=False))) as client:
        assert client.get("/ready").json()["runtime"] == "sklearn"
        got = [p["probability"] for p in client.post("/predict", json={"records": records}).json()["predictions"]]
    expected = pipeline.predict_proba(pd.DataFrame(records)[list(schema.FEATURES)])[:, 1]
    assert np.allclose(got, expected, atol=1e-12)


def test_a_cloudpickled_version_reaches_the_image_as_skops_never_as_a_pickle(registry, small_frame, tmp_path):
    """What the Databricks runtime's MLflow (no skops flavor) registers: the image must not unpickle it."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("cube_root", FunctionTransformer(np.cbrt))])
    pipeline = Pipeline([("features", ColumnTransformer([("numeric", numeric, list(schema.NUMERIC))])),
                         ("classifier", HistGradientBoostingClassifier(max_iter=30))])
    pipeline.fit(features_of(small_frame), small_frame[schema.TARGET])  # uncompilable: the fallback runtime serves it
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(pipeline, name="model", signature=training.signature(),
                                        input_example=features_of(small_frame).dropna().head(3),
                                        serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
                                        registered_model_name="pickled")
    context = assemble_build_context(f"models:/pickled/{info.registered_model_version}", tmp_path / "ctx",
                                     wheelhouse=False)
    assert context.manifest["sklearn"]["format"] == "skops" and context.manifest["sklearn"]["path"] == "pipeline.skops"
    assert not [p for p in context.path.rglob("*") if p.suffix in (".pkl", ".pickle")]
    records = context.manifest["input_example"]
    with TestClient(create_app(Settings(context.path / "model", max_records=10, request_log=False))) as client:
        got = [p["probability"] for p in client.post("/predict", json={"records": records}).json()["predictions"]]
    expected = pipeline.predict_proba(pd.DataFrame(records)[list(schema.FEATURES)])[:, 1]
    assert np.allclose(got, expected, atol=1e-12)


def test_training_logs_skops_where_mlflow_has_it_and_cloudpickle_on_the_runtimes_mlflow(monkeypatch):
    model = build_pipeline({"learning_rate": 0.1, "max_leaf_nodes": 7})
    assert training.serialization(model)["serialization_format"] == "skops"
    monkeypatch.delattr(mlflow.sklearn, "SERIALIZATION_FORMAT_SKOPS")  # as MLflow 3.8.1 (Databricks 18 LTS ML)
    assert training.serialization(model) == {"serialization_format": "cloudpickle"}


def test_resolve_by_alias_and_by_version(registry):
    by_alias = resolve_model(f"models:/{registry['model_name']}@champion")
    by_version = resolve_model(f"models:/{registry['model_name']}/{registry['version']}")
    assert by_alias.version == by_version.version == registry["version"]
    assert by_alias.run_id == by_version.run_id == registry["summary"]["run_id"]


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/name", "models:/name@", "s3://bucket/model"])
def test_bad_model_uri_is_explained(uri):
    with pytest.raises(PackagingError, match="models:/<name>@<alias> or models:/<name>/<version>"):
        resolve_model(uri)


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
