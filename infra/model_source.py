"""Where the stack's model registry is: the stack's own Databricks workspace, never the caller's.

MLflow's `databricks` / `databricks-uc` URIs mean "whatever DATABRICKS_HOST or ~/.databrickscfg says",
which on a deployer's laptop or CI runner is some other workspace, or nothing at all on an empty
subscription. So the program finds the workspace this stack declares (or the configured existing one)
with a read-only ARM lookup, and pins MLflow to that host while it resolves the alias:

  configured model.trackingUri   resolve there (local runs, tests, `make plan`)
  existing workspace configured  its URL
  the stack's workspace exists   its URL (ARM GET: a Reader can do it, so previews work)
  it does not exist yet          no registry: the first `up` creates the workspace (bootstrap)

Errors a deployer can act on are `ModelSourceError`, a `pulumi.RunError`: the engine prints the
message, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pulumi

from infra import arm
from infra.settings import ModelSettings


class ModelSourceError(pulumi.RunError):
    """The stack's model registry cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Workspace:
    host: str  # https://adb-....azuredatabricks.net
    resource_id: str | None  # ARM id, for Azure auth to the workspace

    def __str__(self) -> str:
        return self.host


def https(url: str) -> str:
    return url if url.startswith("https://") else f"https://{url}"


def locate(resource_group_name: str, workspace_name: str, existing_url: str | None = None,
           existing_resource_id: str | None = None) -> Workspace | None:
    """The workspace the stack's registry lives in, or None when the stack has not created it yet."""
    if existing_url:
        return Workspace(https(existing_url), existing_resource_id)
    import pulumi_azure_native.databricks as azure_databricks

    try:
        found = azure_databricks.get_workspace(resource_group_name=resource_group_name, workspace_name=workspace_name)
    except Exception as error:  # the engine raises a plain Exception naming the ARM error code
        if arm.not_found(error):
            return None
        raise ModelSourceError(f"looking up the Databricks workspace {workspace_name} in {resource_group_name} failed: "
                               f"{error}. The deploying identity needs read access to the resource group "
                               "(Reader is enough).") from None
    if not found.workspace_url:  # still provisioning: no API to resolve against yet
        return None
    return Workspace(https(found.workspace_url), found.id)


# The environment the Databricks SDK (and so MLflow's databricks URIs) reads its target from.
HOST_VARIABLES = ("DATABRICKS_HOST", "DATABRICKS_AZURE_RESOURCE_ID", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CONFIG_FILE")


@contextlib.contextmanager
def pinned_to(workspace: Workspace | None) -> Iterator[None]:
    """Inside: MLflow's databricks URIs reach `workspace`, whatever the caller's environment or
    ~/.databrickscfg say; credentials (a token, ARM_* / az login) still come from the caller."""
    if workspace is None:
        yield
        return
    saved = {name: os.environ.get(name) for name in HOST_VARIABLES}
    with tempfile.TemporaryDirectory() as empty:
        os.environ["DATABRICKS_HOST"] = workspace.host
        os.environ["DATABRICKS_CONFIG_FILE"] = os.path.join(empty, "none")  # no stray profile of another host
        os.environ.pop("DATABRICKS_CONFIG_PROFILE", None)
        if workspace.resource_id:
            os.environ["DATABRICKS_AZURE_RESOURCE_ID"] = workspace.resource_id
        else:
            os.environ.pop("DATABRICKS_AZURE_RESOURCE_ID", None)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def alias_version(model: ModelSettings, workspace: Workspace | None) -> str | None:
    """The version `model.alias` names now, read once by a release (scripts/release.py) so every `up` of it serves
    that version (model.version) even if training moves the alias meanwhile. None: no registry (the stack's
    workspace is not deployed yet) or no version yet; the release's one `up` then resolves it, as a first one does."""
    if model.in_stack_workspace and workspace is None:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with pinned_to(workspace):
        client = MlflowClient(tracking_uri=model.tracking_uri, registry_uri=model.registry_uri)
        try:
            return str(client.get_model_version_by_alias(model.full_name, model.alias).version)
        except MlflowException as error:
            if no_such_model(error):
                return None
            raise ModelSourceError(f"cannot read {model.uri} from {workspace or model.tracking_uri}: {error} (the "
                                   "deployer needs to be a member of the workspace with USE CATALOG, USE SCHEMA and "
                                   "EXECUTE: docs/deploy.md, Before the second `up`)") from None


def no_such_model(error: Exception) -> bool:
    """The registry answers that the model, its alias, its schema or its catalog does not exist (yet): a stack before
    its first training run. Decided by the answer's code: the exception's, or the REST code Unity Catalog sent, which
    MLflow keeps at the start of the message (mlflow/exceptions.py RestException) when it does not know it; a missing
    alias is INVALID_PARAMETER_VALUE naming the alias. Never by other words (a credential error's text says "does not
    exist" of an environment variable), and never a metastore that is missing: that is the admin's, not "no model"."""
    message = str(getattr(error, "message", error))
    sent = re.match(r"([A-Z_]+): ", message)
    codes = {str(getattr(error, "error_code", "")), sent.group(1) if sent else ""}
    alias_missing = re.search(r"\balias\b.*\b(not found|does not exist)\b", message, re.I) is not None
    return bool(codes & NO_MODEL_YET) or ("INVALID_PARAMETER_VALUE" in codes and alias_missing)


# The codes of "not there yet" for a model, its schema or its catalog (MLflow's, and Unity Catalog's REST codes).
NO_MODEL_YET = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "CATALOG_DOES_NOT_EXIST", "SCHEMA_DOES_NOT_EXIST"}
