"""Fixtures for the Pulumi program under mocks: the real Pulumi.<stack>.yaml files, a real sqlite
MLflow registry holding each stack's model (copied from the session's trained test model), and
evaluations cached per (stack, overrides) so each program variant is evaluated once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from infra import settings, stack_files
from testing import mockcloud

STACKS = ("dev", "staging", "prod")


def settings_of(stack: str, overrides: dict | None = None) -> settings.StackSettings:
    """The stack's settings as the program reads them: tests take expected names from here (`.names`, the model's
    full name, the experiment...), never from a literal, so they hold for any project `name`."""
    return settings.from_values(stack, stack_files.apply_overrides(stack_files.stack_values(stack), overrides or {}), {})


def registered_names() -> list[str]:
    """The model name each stack resolves (catalog.schema.name with Unity Catalog)."""
    return [settings_of(stack).model.full_name for stack in STACKS]


@pytest.fixture(scope="session")
def stack_registry(registry) -> dict:
    """The trained test model, registered again under every stack's model name with @champion."""
    client = MlflowClient(tracking_uri=registry["tracking_uri"], registry_uri=registry["tracking_uri"])
    source = client.get_model_version(registry["model_name"], registry["version"])
    for name in registered_names():
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        version = client.create_model_version(name, source.source, run_id=source.run_id, tags=source.tags)
        client.set_registered_model_alias(name, "champion", version.version)
    return registry


@pytest.fixture(scope="session")
def base_overrides(stack_registry, tmp_path_factory) -> Callable[[str], dict]:
    """What differs from a real deployment: the registry is local sqlite, contexts go to tmp, no wheelhouse."""
    root = tmp_path_factory.mktemp("contexts")

    def overrides(stack: str) -> dict:
        uri = stack_registry["tracking_uri"]
        return {"model.trackingUri": uri, "model.registryUri": uri, "image.wheelhouse": False,
                "image.contextDir": str(root / stack)}
    return overrides


@pytest.fixture(scope="session")
def evaluate(base_overrides) -> Callable[..., mockcloud.Evaluation]:
    """evaluate(stack, **overrides) -> Evaluation, cached: mocks are fresh on every real evaluation."""
    cache: dict[str, mockcloud.Evaluation] = {}

    def run(stack: str, overrides: dict | None = None) -> mockcloud.Evaluation:
        merged = {**base_overrides(stack), **(overrides or {})}
        key = json.dumps([stack, merged], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = mockcloud.evaluate(stack, merged, env={})
            mlflow.set_tracking_uri(base_overrides(stack)["model.trackingUri"])
        return cache[key]
    return run


@pytest.fixture(scope="session")
def empty_registry(tmp_path_factory) -> str:
    return f"sqlite:///{Path(tmp_path_factory.mktemp('empty')) / 'mlflow.db'}"
