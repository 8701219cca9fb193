"""Shared fixtures: one small real model (the credit-default example, through its model module), trained and
registered once per test session in a sqlite MLflow registry, and a build context assembled from it by the real
packaging code. Tests take columns and examples from `model.contract`, never from credit's names."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from serving.context import BuildContext, assemble_build_context
from training import contract, data
from training import train as training
from training.contract import ModelModule

MODEL = "credit-default"  # the example the session trains; tests read its columns from model.contract
MODEL_NAME = "credit-default-test"
TRAIN_ROWS = 4000


@pytest.fixture(scope="session")
def model() -> ModelModule:
    return contract.load(MODEL)


@pytest.fixture(scope="session")
def registry(model, tmp_path_factory) -> dict:
    """A sqlite registry holding one champion version trained on the model module's example data."""
    root = tmp_path_factory.mktemp("registry")
    data_path = root / "table.parquet"
    data.write_table(data.example_table(model, TRAIN_ROWS, seed=11), data_path)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    summary = training.main(["--model-module", model.module, "--data", str(data_path), "--tracking-uri", tracking_uri,
                             "--registry-uri", tracking_uri, "--model-name", MODEL_NAME,
                             "--artifact-root", (root / "artifacts").as_uri(),
                             "--environment", "test"])
    return {"root": root, "tracking_uri": tracking_uri, "data": data_path, "model_name": MODEL_NAME,
            "version": summary["version"], "summary": summary, "model": model}


@pytest.fixture
def promoted_copy(registry, tmp_path):
    """Prod's registry (`prod-model`, experiment `promotions`) holding an earlier version and then the copy of the
    session's version: the copy's number is not the source's, as in a promotion target. (prod Registry, the copy)"""
    from infra import promote

    prod = promote.Registry(f"sqlite:///{tmp_path / 'prod.db'}")
    client = prod.client()
    experiment = client.create_experiment("promotions", artifact_location=(tmp_path / "art").as_uri())
    older = client.create_run(experiment)
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "MLmodel").write_text("artifact_path: model\n")
    client.log_artifacts(older.info.run_id, str(tmp_path / "older"), artifact_path="model")
    client.create_registered_model("prod-model")
    client.create_model_version("prod-model", f"{older.info.artifact_uri}/model", run_id=older.info.run_id)
    source = promote.ModelSource(promote.Registry(registry["tracking_uri"]), registry["model_name"], registry["version"],
                                 "staging")
    copy = promote.promote_model_version(source, promote.ModelTarget(prod, "prod-model", experiment="promotions"))
    assert copy.version != str(registry["version"])
    return prod, copy


@pytest.fixture(scope="session")
def context(registry, tmp_path_factory) -> BuildContext:
    """A build context (no wheelhouse) for the registry's champion."""
    use_registry(registry)
    out = tmp_path_factory.mktemp("context") / "ctx"
    return assemble_build_context(f"models:/{registry['model_name']}@champion", out, wheelhouse=False)


@pytest.fixture(autouse=True)
def _tracking_uri(request) -> None:
    """Tests that use the registry see it as the current tracking store."""
    if "registry" in request.fixturenames:
        use_registry(request.getfixturevalue("registry"))


def use_registry(registry: dict) -> None:
    """Point both global URIs at the test registry (other tests may have moved either)."""
    mlflow.set_tracking_uri(registry["tracking_uri"])
    mlflow.set_registry_uri(registry["tracking_uri"])


def model_dir(context: BuildContext) -> Path:
    return context.path / "model"


@pytest.fixture(scope="session")
def personal(context) -> list[str]:
    """The session model's inputs its contract marks personal (what the request log drops or pseudonymises)."""
    from serving.scoring import privacy
    from serving.scoring.model import Manifest

    names = privacy.personal_inputs(Manifest.read(context.path / "model"))
    if not names:
        pytest.skip("the session model's contract marks no input personal")
    return names
