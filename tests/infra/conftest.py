"""Fixtures for the Pulumi program under mocks: the real Pulumi.<stack>.yaml files, a real sqlite
MLflow registry holding each stack's model (copied from the session's trained test model), and
evaluations cached per (stack, overrides) so each program variant is evaluated once."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from infra import settings, stack_files
from serving import context as serving_context
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


@pytest.fixture(scope="module", autouse=True)
def contexts_assembled_once() -> Iterator[None]:
    """A registered version's build context, assembled by the real serving.context.assemble_build_context the first
    time a module's `up`s need it, and kept while its folder holds it. A version's artifacts never change, so assembling
    again would write the same files (tests/serving proves the context byte-identical); these tests are about what the
    program declares from it. Assembling took two thirds of a second an `up`, a fifth of tests/infra's time."""
    real = serving_context.assemble_build_context
    assembled: dict[tuple[str, str, str, bool], serving_context.BuildContext] = {}

    def assemble(model_uri: str, out_dir: Path, **options: Any) -> serving_context.BuildContext:
        key = (mlflow.get_registry_uri(), model_uri, str(out_dir), options.get("wheelhouse", True))
        kept = assembled.get(key)
        manifest = Path(out_dir) / "model" / serving_context.MANIFEST_FILE
        if kept is not None and manifest.is_file() and json.loads(manifest.read_text()) == kept.manifest:
            return serving_context.BuildContext(kept.path, copy.deepcopy(kept.manifest))
        context = assembled[key] = real(model_uri, out_dir, **options)
        return serving_context.BuildContext(context.path, copy.deepcopy(context.manifest))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving_context, "assemble_build_context", assemble)
        yield


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
