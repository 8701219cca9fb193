"""A first `pulumi up` on an empty subscription: no Databricks workspace, no DATABRICKS_HOST, no MLflow URI.

The first `up` of every stack creates its workspace and nothing inside it (nobody is a member of a workspace the
same `up` creates), and says what the account admin does before the next. Later, the program resolves the model in
the stack's own workspace (not wherever the deployer's shell points); prod fails with a message that names what to
set, as a `pulumi.RunError` (the engine prints it without a traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pulumi
import pytest

from infra import stack_files
from infra.promote import PromotionError
from testing import mockcloud
from tests.infra.conftest import settings_of

GREENFIELD_ENV = {"DATABRICKS_HOST": "https://adb-someone-elses.azuredatabricks.net", "MLFLOW_TRACKING_URI": "databricks"}


@pytest.fixture(scope="module")
def greenfield(tmp_path_factory):
    root = tmp_path_factory.mktemp("greenfield")

    def run(stack: str, overrides: dict | None = None, existing: dict | None = None) -> mockcloud.Evaluation:
        # No model.trackingUri override: the stack files' defaults, as on a real first `up`.
        return mockcloud.evaluate(stack, {"image.wheelhouse": False, "image.contextDir": str(root / stack),
                                          **(overrides or {})}, env=dict(GREENFIELD_ENV), existing=existing,
                                 greenfield=True)
    return run


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_first_up_creates_the_workspace_and_nothing_in_it(greenfield, stack):
    """audit F1: the deployer is no member of a workspace the same `up` creates, so every Databricks call of that
    `up` would be refused. The first `up` declares the workspace and no resource of the workspace's own provider."""
    ev = greenfield(stack)
    lookups = [args for token, args in ev.calls if token == "azure-native:databricks:getWorkspace"]
    s = settings_of(stack)
    assert {"resourceGroupName": s.names.resource_group, "workspaceName": s.names.databricks_workspace} in lookups
    assert ev.outputs["bootstrap"].startswith("BOOTSTRAP: this `up` creates the stack's Databricks workspace "
                                              f"{s.names.databricks_workspace} and nothing in it")
    assert s.databricks.deployer in ev.outputs["bootstrap"] and "account admin" in ev.outputs["bootstrap"]
    types = {r.typ for r in ev.custom}
    assert "azure-native:databricks:Workspace" in types
    assert not [r for r in ev.custom if r.typ.startswith("databricks:")], "nothing inside the new workspace"
    assert not [r for r in ev.custom if r.typ in (mockcloud.MODEL_PROMOTION, mockcloud.IMAGE_IMPORT)]
    assert "docker:index/image:Image" not in types and "azure-native:app:ContainerApp" not in types
    assert "azure-native:monitor:ScheduledQueryRule" not in types  # no log alert before the workload
    assert ev.outputs["image_ref"] == "" and ev.outputs["endpoint_url"] == "" and ev.outputs["databricks_job_id"] == ""


def test_prod_with_staging_in_bootstrap_fails_naming_what_to_set(greenfield):
    """Prod's workspace exists (its first `up` was done), staging's does not: nothing to promote yet."""
    prod = settings_of("prod").names.databricks_workspace
    with pytest.raises(PromotionError, match=r"has no image to promote .*bootstrap.*promotion\.pinnedDigest") as error:
        greenfield("prod", existing={prod: {"workspaceUrl": "adb-2.2.azuredatabricks.net"}})
    assert isinstance(error.value, pulumi.RunError)


def test_prod_building_itself_never_bootstraps_and_says_what_to_set(greenfield, tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"  # its workspace exists, its registry holds no version
    prod = settings_of("prod").names.databricks_workspace
    with pytest.raises(pulumi.RunError, match=r"has no version to serve.*allowBootstrap: false.*promotion\.sourceStack"):
        greenfield("prod", {"promotion": stack_files.DELETE, "model.trackingUri": empty, "model.registryUri": empty},
                   existing={prod: {"workspaceUrl": "adb-2.2.azuredatabricks.net"}})


def test_an_existing_workspace_is_the_one_resolved_against_not_databricks_host(greenfield, monkeypatch):
    """The workspace exists (a second `up`) but this machine cannot reach it: a clear error naming the stack's
    workspace, not a traceback, and not the DATABRICKS_HOST of the deployer's shell."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's backoff would wait minutes for port 9
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    def no_host_metadata(host: str, client=None):  # the SDK's best-effort probe retries for 300 s, then goes on
        raise ValueError(f"no metadata at {host}")
    import databricks.sdk.config

    monkeypatch.setattr(databricks.sdk.config, "get_host_metadata", no_host_metadata)
    s = settings_of("dev")
    existing = {s.names.databricks_workspace: {"workspaceUrl": "127.0.0.1:9"}}  # nothing listens on port 9
    with pytest.raises(pulumi.RunError, match=rf"cannot read {re.escape(s.model.uri)} from "
                                              r"https://127\.0\.0\.1:9") as error:
        greenfield("dev", existing=existing)
    assert "someone-elses" not in str(error.value)
    assert os.environ.get("DATABRICKS_HOST") != "https://127.0.0.1:9", "the pin must not leak out of resolution"


def test_make_plan_on_a_greenfield_machine(tmp_path):
    """What CI runs: no Databricks host, no MLflow URI, a fresh HOME; every stack prints its first `up`: the
    workspace and nothing in it, and what the account admin does next, without a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_", "ARM_", "AZURE_"))}
    env["HOME"] = str(tmp_path)
    for stack in ("dev", "staging", "prod"):
        result = subprocess.run([sys.executable, "-m", "scripts.plan", "--stack", stack, "--greenfield"], env=env,
                                capture_output=True, text=True, timeout=300, cwd=stack_files.ROOT)
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.returncode == 0, result.stderr
        workspace = settings_of(stack).names.databricks_workspace
        assert f"BOOTSTRAP: this `up` creates the stack's Databricks workspace {workspace}" in result.stdout
