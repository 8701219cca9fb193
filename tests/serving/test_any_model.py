"""Any tabular MLflow model is served: models logged outside this project with a plain
`mlflow.sklearn.log_model(model, name="model", input_example=df.head())` into a registry of their own, packaged and
served by `python -m serving.serve_model` (what `make serve` runs: a real uvicorn process on 127.0.0.1), and their
answers compared with `mlflow.pyfunc.load_model(uri).predict` on the same DataFrame: /invocations answers what the
pyfunc answers, /predict and V2 agree with it. The house-prices example (a regressor trained by training.train) is
served the same way. Each case asserts the runtime packaging chose, and prints the reason it gave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import httpx
import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from serving import smoke
from serving.context import assemble_build_context
from serving.localrun import free_port, stop_service
from serving.scoring.app import create_app
from serving.scoring.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5
ROWS = 240
DESCRIPTION = "Asking prices of sold listings, for the valuation desk."


class MedianVote(ClassifierMixin, BaseEstimator):
    """A team's own estimator: no ONNX converter knows it, and it is not scikit-learn's, so skops-saved it would not
    load in an image without this module: the pyfunc runtime serves it."""

    def fit(self, features: pd.DataFrame, target: pd.Series) -> MedianVote:
        self.classes_ = np.unique(target)
        self.medians_ = features.median().to_numpy()
        self.columns_ = list(features.columns)
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        above = (features[self.columns_].to_numpy(dtype=np.float64) > self.medians_).mean(axis=1)
        return np.column_stack([1 - above, above])

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(features).argmax(axis=1)]


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the class travels inside the model, as a team's would


def numbers(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(0, 1, rows), "x2": rng.normal(5, 2, rows), "x3": rng.uniform(-1, 1, rows)})


def multiclass_with_text() -> tuple[object, pd.DataFrame, dict]:
    frame = numbers(ROWS, 1)
    frame["colour"] = np.random.default_rng(2).choice(["red", "green", "blue"], ROWS)
    score = frame["x1"] + (frame["colour"] == "red") * 1.5 - (frame["colour"] == "blue")
    target = np.where(score > 0.7, "high", np.where(score < -0.5, "low", "mid"))
    features = ColumnTransformer([("numbers", StandardScaler(), ["x1", "x2", "x3"]),
                                  ("text", OneHotEncoder(handle_unknown="ignore"), ["colour"])])
    model = Pipeline([("features", features), ("classifier", LogisticRegression(max_iter=500))]).fit(frame, target)
    return model, frame, {}


def pickled_regressor() -> tuple[object, pd.DataFrame, dict]:
    frame = numbers(ROWS, 3)
    frame["rooms"] = np.random.default_rng(4).integers(1, 8, ROWS)
    target = 3 * frame["x1"] - 2 * frame["x2"] + 10 * frame["rooms"] + 100
    missing = frame.copy()
    missing.loc[::7, "x2"] = np.nan
    model = Pipeline([("impute", SimpleImputer()), ("ridge", Ridge(alpha=0.5))]).fit(missing, target)
    return model, frame, {"serialization_format": "cloudpickle"}


def random_forest() -> tuple[object, pd.DataFrame, dict]:
    frame = numbers(ROWS, 5)
    target = (frame["x1"] + frame["x3"] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(frame, target)
    return model, frame, {"skops_trusted_types": ["sklearn.tree._tree.Tree"]}


def custom_class() -> tuple[object, pd.DataFrame, dict]:
    frame = numbers(ROWS, 6)
    target = np.where(frame["x1"] > 0, "yes", "no")
    return MedianVote().fit(frame, target), frame, {"serialization_format": "cloudpickle"}


def lightgbm_classifier() -> tuple[object, pd.DataFrame, dict]:
    from lightgbm import LGBMClassifier

    frame = numbers(ROWS, 7)
    target = np.digitize(frame["x1"] + 0.5 * frame["x3"], [-0.5, 0.5])  # three classes, 0, 1, 2
    model = LGBMClassifier(n_estimators=20, num_leaves=7, min_child_samples=5, verbose=-1, random_state=0)
    return model.fit(frame, target), frame, {"serialization_format": "cloudpickle"}


def xgboost_regressor() -> tuple[object, pd.DataFrame, dict]:
    from xgboost import XGBRegressor

    frame = numbers(ROWS, 8)
    target = 2 * frame["x1"] + frame["x2"] ** 2 + 10
    model = XGBRegressor(n_estimators=20, max_depth=3, random_state=0).fit(frame, target)
    return model, frame, {"serialization_format": "cloudpickle"}


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], tuple[object, pd.DataFrame, dict]]
    task: str
    runtime: str


CASES = [
    Case("multiclass-text", multiclass_with_text, "multiclass", "onnx"),
    Case("pickled-regressor", pickled_regressor, "regression", "onnx"),
    # The compiled trees route a missing value otherwise than scikit-learn's (which sends it where most training rows
    # went): the equivalence check's missing-value probes catch it, and the estimator itself serves.
    Case("random-forest", random_forest, "binary", "sklearn"),
    Case("custom-class", custom_class, "binary", "pyfunc"),
    Case("lightgbm", lightgbm_classifier, "multiclass", "onnx"),
    Case("xgboost", xgboost_regressor, "regression", "onnx"),
]


@dataclass
class Served:
    url: str
    uri: str
    manifest: dict
    stderr: str
    process: subprocess.Popen
    frame: pd.DataFrame  # what the pyfunc and the service are both asked about


@pytest.fixture(scope="module", autouse=True)
def _restore_mlflow_uris():
    """This module points MLflow at registries of its own; the session's fixtures find theirs again after it."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def use(registry: str) -> None:
    """Log into `registry` (tracking and registry store, and an experiment of its own there)."""
    mlflow.set_tracking_uri(registry)
    mlflow.set_registry_uri(registry)
    mlflow.set_experiment("outside-team")


@pytest.fixture(scope="module")
def outside_registry(tmp_path_factory) -> str:
    """A registry of its own, as a team outside this project would have."""
    root = tmp_path_factory.mktemp("outside")
    return f"sqlite:///{root / 'mlflow.db'}"


def serve(uri: str, tracking_uri: str, out: Path) -> tuple[subprocess.Popen, str, Path]:
    """`python -m serving.serve_model <uri>` (what `make serve` runs), waiting until the service is ready."""
    port = free_port()
    out.mkdir(parents=True, exist_ok=True)
    stdout, stderr = (out / "requests.jsonl").open("wb"), (out / "stderr.log").open("wb")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
    process = subprocess.Popen([sys.executable, "-m", "serving.serve_model", uri, "--port", str(port),
                                "--out", str(out / "serve")], cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url, out
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_service(process.pid)
    raise AssertionError(f"{uri} never became ready:\n{(out / 'stderr.log').read_text()[-3000:]}")


def started(uri: str, tracking_uri: str, out: Path, frame: pd.DataFrame) -> Served:
    process, url, out = serve(uri, tracking_uri, out)
    [context] = list((out / "serve").iterdir())
    manifest = json.loads((context / "model" / "manifest.json").read_text())
    return Served(url, uri, manifest, (out / "stderr.log").read_text(), process, frame)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def served(request, outside_registry, tmp_path_factory):
    case: Case = request.param
    use(outside_registry)
    model, frame, options = case.build()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=frame.head(), registered_model_name=case.name,
                                        **options)
    uri = f"models:/{case.name}/{info.registered_model_version}"
    asked = numbers(12, 99)
    for column in frame.columns.difference(asked.columns):
        asked[column] = frame[column].iloc[:12].to_numpy()
    service = started(uri, outside_registry, tmp_path_factory.mktemp(case.name), asked[list(frame.columns)])
    yield case, service
    stop_service(service.process.pid)


def test_packaging_chose_the_runtime_and_said_why(served):
    case, service = served
    manifest = service.manifest
    reason = manifest["runtime_reason"]
    print(f"\n{case.name}: runtime {manifest['runtime']}: {reason}")
    assert (manifest["task"], manifest["runtime"]) == (case.task, case.runtime)
    assert f"context: runtime {manifest['runtime']}: {reason}" in service.stderr
    assert manifest["contract"] is None and manifest["input_example_source"] == "version"
    assert manifest["decision_threshold"] is None and manifest["predict_fn"] == "predict"
    pins = (Path(service.process.args[-1]) / f"{case.name}-1" / "requirements.txt").read_text()
    extras = {"onnx": [], "sklearn": ["scikit-learn==", "pandas==", "skops=="], "pyfunc": ["mlflow-skinny=="]}
    assert all(pin in pins for pin in extras[manifest["runtime"]]) and ("mlflow" in pins) == (case.runtime == "pyfunc")


def records_of(frame: pd.DataFrame) -> list[dict]:
    """The rows as a JSON client sends them: every float's exact digits (pandas' to_json keeps 10), NaN as null."""
    return orjson.loads(orjson.dumps(frame.to_dict(orient="records")))


def _invoke(client: httpx.Client, frame: pd.DataFrame) -> list:
    body = {"dataframe_split": {"columns": list(frame.columns), "data": [list(r.values()) for r in records_of(frame)]}}
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _v2(client: httpx.Client, service: Served) -> dict:
    records = records_of(service.frame)
    types = {"string": "BYTES", "long": "INT64", "integer": "INT64"}
    inputs = [{"name": f["name"], "datatype": types.get(f["type"], "FP64"), "shape": [len(records)],
               "data": [r[f["name"]] for r in records]} for f in service.manifest["inputs"]]
    answer = client.post(f"/v2/models/{service.manifest['model']['name']}/infer", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    return {o["name"]: o for o in answer.json()["outputs"]}


def test_every_protocol_answers_what_the_mlflow_pyfunc_answers(served):
    _, service = served
    frame, manifest = service.frame, service.manifest
    expected = mlflow.pyfunc.load_model(service.uri).predict(frame)
    raw = mlflow.sklearn.load_model(service.uri)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        invoked = _invoke(client, frame)
        as_csv = client.post("/invocations", content=frame.to_csv(index=False), headers={"content-type": "text/csv"})
        predicted = client.post("/predict", json={"records": records_of(frame)}).json()
        tensors = _v2(client, service)
    assert as_csv.status_code == 200 and as_csv.json()["predictions"] == invoked, as_csv.text
    predictions = predicted["predictions"]
    if manifest["task"] == "regression":
        values = np.asarray(expected, dtype=np.float64).reshape(-1)
        assert np.allclose(invoked, values, rtol=TOLERANCE, atol=0)
        assert np.allclose([p["prediction"] for p in predictions], values, rtol=TOLERANCE, atol=0)
        assert tensors["prediction"]["data"] == [p["prediction"] for p in predictions]
        assert tensors["prediction"]["datatype"] == "FP64"
        return
    classes = manifest["classes"]
    assert classes == np.asarray(raw.classes_).tolist()
    assert invoked == np.asarray(expected).tolist(), "labels, in their own types, as the pyfunc answers"
    probabilities = raw.predict_proba(frame)
    assert [p["label"] for p in predictions] == invoked
    assert tensors["label"]["data"] == invoked
    assert tensors["label"]["datatype"] == ("BYTES" if isinstance(classes[0], str) else "INT64")
    if manifest["task"] == "binary":
        got = [p["probability"] for p in predictions]
        assert np.max(np.abs(np.asarray(got) - probabilities[:, 1])) <= TOLERANCE
        assert tensors["probability"]["data"] == got
    else:
        got = np.array([[p["probabilities"][str(c)] for c in classes] for p in predictions])
        assert np.max(np.abs(got - probabilities)) <= TOLERANCE
        matrix = tensors["probabilities"]
        assert matrix["shape"] == [len(frame), len(classes)] and matrix["parameters"] == {"classes": classes}
        assert np.array_equal(np.asarray(matrix["data"]).reshape(len(frame), -1), got)


def test_tritonclient_binary_tensors_get_the_json_tensors_answer(served):
    # tritonclient's default: binary inputs, binary outputs (serving/scoring/v2_binary.py); NaN a missing number.
    _, service = served
    types = {"string": (object, "BYTES"), "long": (np.int64, "INT64"), "integer": (np.int64, "INT64")}
    inputs = []
    for field in service.manifest["inputs"]:
        dtype, datatype = types.get(field["type"], (np.float64, "FP64"))
        tensor = triton.InferInput(field["name"], [len(service.frame)], datatype)
        inputs.append(tensor.set_data_from_numpy(service.frame[field["name"]].to_numpy(dtype=dtype)))
    client = triton.InferenceServerClient(service.url.removeprefix("http://"))
    try:
        result = client.infer(service.manifest["model"]["name"], inputs)
    finally:
        client.close()
    with httpx.Client(base_url=service.url, timeout=30) as http:
        tensors = _v2(http, service)
    for name, tensor in tensors.items():
        assert "binary_data_size" in result.get_output(name)["parameters"]
        got = result.as_numpy(name)
        assert list(got.shape) == tensor["shape"]
        assert [v.decode() if isinstance(v, bytes) else v for v in got.ravel().tolist()] == tensor["data"]


def test_the_smoke_test_and_the_request_log_follow_the_task(served, capsys):
    case, service = served
    smoke.run(service.url)
    assert f"records, {case.task}:" in capsys.readouterr().out
    log = Path(service.process.args[-1]).parent / "requests.jsonl"  # --out's folder holds the request log
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not log.read_bytes():
        time.sleep(0.1)
    lines = log.read_bytes().splitlines()
    assert lines and all(line.startswith(b"{") for line in lines), "stdout is the request log and nothing else"
    outputs = json.loads(lines[-1])["outputs"][0]
    assert set(outputs) == {"binary": {"probability", "label"}, "multiclass": {"label", "probabilities"},
                            "regression": {"prediction"}}[case.task]


def test_make_serve_runs_serve_model_with_its_port_and_workers():
    """`make serve` is this module's path: the same command, the request log alone on its stdout (no echo)."""
    dry = subprocess.run(["make", "-s", "-n", "serve", "MODEL_URI=models:/m@champion", "PORT=8123", "WORKERS=2"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert dry.stdout.strip().splitlines()[-1].endswith(
        '-m serving.serve_model "models:/m@champion" --port 8123 --workers 2')
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "make serve MODEL_URI=" in help_text


# ---- the regression example this project ships, trained by training.train ----

@pytest.fixture(scope="module")
def house_prices(tmp_path_factory):
    from training import contract, data
    from training import train as training

    model = contract.load("house-prices")
    root = tmp_path_factory.mktemp("house-prices")
    table = root / "table.parquet"
    data.write_table(data.example_table(model, 1500, seed=3), table)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    summary = training.main(["--model-module", model.module, "--data", str(table), "--tracking-uri", tracking_uri,
                             "--registry-uri", tracking_uri, "--model-name", "house-prices-test",
                             "--artifact-root", (root / "artifacts").as_uri(), "--environment", "test"])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    MlflowClient().update_registered_model("house-prices-test", description=DESCRIPTION)
    frame = data.example_table(model, 20, seed=4)[model.contract.feature_names]
    frame = frame.dropna(subset=[c.name for c in model.contract.categories]).reset_index(drop=True)
    service = started(f"models:/house-prices-test/{summary['version']}", tracking_uri, root / "serve", frame)
    yield model, service
    stop_service(service.process.pid)


def test_the_house_prices_regressor_is_served_with_its_contract(house_prices):
    model, service = house_prices
    manifest = service.manifest
    print(f"\nhouse-prices: runtime {manifest['runtime']}: {manifest['runtime_reason']}")
    assert (manifest["task"], manifest["classes"], manifest["decision_threshold"]) == ("regression", None, None)
    assert manifest["contract"]["target"]["name"] == model.contract.target.name
    expected = np.asarray(mlflow.pyfunc.load_model(service.uri).predict(service.frame), dtype=np.float64)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        invoked = _invoke(client, service.frame)
        records = records_of(service.frame)
        predicted = [p["prediction"] for p in client.post("/predict", json={"records": records}).json()["predictions"]]
        tensors = _v2(client, service)
        document = client.get("/openapi.json").json()
    assert np.allclose(invoked, expected, rtol=TOLERANCE, atol=0)
    assert np.allclose(predicted, expected, rtol=TOLERANCE, atol=0)
    assert tensors["prediction"]["data"] == predicted
    assert model.contract.target.description in document["info"]["description"]
    assert DESCRIPTION in document["info"]["description"] and manifest["model"]["description"] == DESCRIPTION
    assert list(document["components"]["schemas"]["Prediction"]["properties"]) == ["prediction"]


# ---- a model with no scikit-learn flavor, from a run, without an input example ----

class Doubler(mlflow.pyfunc.PythonModel):
    """A pyfunc of a team's own: MLflow alone knows how to load it."""

    def predict(self, context, model_input, params=None):
        return model_input["x1"].to_numpy() * 2 + model_input["x2"].to_numpy()


def test_a_pyfunc_only_model_from_a_run_without_an_input_example(outside_registry, tmp_path):
    use(outside_registry)
    frame = numbers(8, 11)
    signature = mlflow.models.infer_signature(frame, Doubler().predict(None, frame))
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Doubler(), signature=signature)
    said: list[str] = []
    context = assemble_build_context(f"runs:/{run.info.run_id}/model", tmp_path / "ctx", wheelhouse=False,
                                     progress=said.append)
    manifest = context.manifest
    print(f"\npyfunc-only: runtime {manifest['runtime']}: {manifest['runtime_reason']}")
    assert (manifest["runtime"], manifest["task"], manifest["input_example_source"]) == ("pyfunc", "regression", "signature")
    assert manifest["runtime_reason"] == "the model has no scikit-learn flavor (flavors: python_function)"
    assert f"context: runtime pyfunc: {manifest['runtime_reason']}" in said
    assert (manifest["model"]["name"], manifest["model"]["version"]) == ("model", run.info.run_id)
    pins = [line for line in (context.path / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert f"mlflow-skinny=={mlflow.__version__}" in pins and not [p for p in pins if p.startswith("mlflow==")]
    expected = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(frame)
    records = records_of(frame)
    with TestClient(create_app(Settings(context.path / "model", max_records=10, request_log=False))) as client:
        assert client.get("/ready").json()["runtime"] == "pyfunc"
        predicted = [p["prediction"] for p in client.post("/predict", json={"records": records}).json()["predictions"]]
        invoked = client.post("/invocations", json={"dataframe_records": records}).json()["predictions"]
        example = client.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]["examples"][0]
    assert np.allclose(predicted, expected, rtol=TOLERANCE, atol=0) and invoked == np.asarray(expected).tolist()
    assert example == {"records": [dict.fromkeys(frame.columns, 1.0)]}
