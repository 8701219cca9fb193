"""A team's model module with an estimator class of its own, trained by the project's training entry point: the
version carries the module's code (MLflow code_paths), so the pyfunc runtime loads it in a process without this
repository, as the image does; a version logged without that code is refused at packaging, naming the missing
module, instead of crash-looping in a container."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

import models
from serving import smoke
from serving.context import PackagingError, assemble_build_context
from serving.localrun import free_port, start_service, stop_service
from training import contract, data
from training import train as training

MODULE = '''
"""A regressor of the team's own: house-prices' contract, a ridge inside a class nobody else has."""
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from models.house_prices import CONTRACT, GATE, example_data  # noqa: F401
from training.features import standard_features

SEARCH = {}


class DampedRidge(BaseEstimator, RegressorMixin):
    def __init__(self, alpha=1.0, damping=0.99):
        self.alpha, self.damping = alpha, damping

    def fit(self, X, y):
        self.pipeline_ = Pipeline([("features", standard_features(CONTRACT)), ("ridge", Ridge(alpha=self.alpha))])
        self.pipeline_.fit(X, y)
        return self

    def predict(self, X):
        return self.pipeline_.predict(X) * self.damping


def build(params, seed):
    return DampedRidge(**params)
'''


@pytest.fixture(scope="module")
def own_module(tmp_path_factory):
    """models.own_class, written where a team would put it (a folder on the models package's path)."""
    folder = tmp_path_factory.mktemp("team_models")
    (folder / "own_class.py").write_text(MODULE)
    models.__path__.append(str(folder))
    yield contract.load("models.own_class")
    models.__path__.remove(str(folder))


def train(own_module, root: Path, name: str) -> str:
    table = root / "table.parquet"
    data.write_table(data.example_table(own_module, 1500, seed=3), table)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    training.main(["--model-module", own_module.module, "--data", str(table), "--tracking-uri", uri, "--registry-uri",
                   uri, "--model-name", name, "--artifact-root", (root / "a").as_uri(), "--gate-floor", "inf"])
    return uri


def test_the_class_travels_with_the_version_and_the_service_loads_it_without_the_repository(own_module, tmp_path):
    train(own_module, tmp_path, "own")
    files = Path(mlflow.artifacts.download_artifacts("models:/own/1"))
    assert (files / "code/models/own_class.py").read_text() == MODULE
    assert {"code/models/house_prices.py", "code/training/features.py", "code/training/contract.py"} <= {
        p.relative_to(files).as_posix() for p in files.rglob("*.py")}
    said: list[str] = []
    context = assemble_build_context("models:/own@champion", tmp_path / "ctx", wheelhouse=False, progress=said.append)
    assert context.manifest["runtime"] == "pyfunc" and any(line.startswith("context: runtime pyfunc:") for line in said)
    example = context.manifest["input_example"]
    expected = mlflow.pyfunc.load_model("models:/own/1").predict(
        pd.DataFrame(example)[own_module.contract.feature_names]).tolist()
    port = free_port()  # the service runs from the context alone: PYTHONPATH and cwd are the context, not the repository
    process = start_service(context.path, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        smoke.wait_for(f"http://127.0.0.1:{port}", "/ready", 120)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": example}, timeout=60).json()
    finally:
        stop_service(process.pid)
    assert [p["prediction"] for p in answer["predictions"]] == pytest.approx(expected, rel=1e-9)


def test_a_version_without_its_code_is_refused_at_packaging_naming_the_module(own_module, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "model_code", lambda module, out: [])  # logged as a model without its code
    train(own_module, tmp_path, "codeless")
    with pytest.raises(PackagingError, match="No module named 'models'"):
        assemble_build_context("models:/codeless@champion", tmp_path / "ctx", wheelhouse=False, progress=lambda _: None)
    assert not (tmp_path / "ctx").exists()  # a refused model leaves no context
