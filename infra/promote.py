"""The two cloud steps of a promotion, as plain functions (no Pulumi here).

- `promote_model_version`: copy one registered model version from a source MLflow registry (staging's)
  into a target registry (prod's), byte for byte, with its lineage as tags, and point an alias at it.
- `import_image`: ACR's server-side import of `repo@sha256:...` from one registry into another. The
  manifest is copied as is, so the digest does not change.

The Pulumi program calls them from dynamic resources (infra/promotion.py) and `make promote-local`
calls `promote_model_version` with two local sqlite registries: one implementation for both.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.errors import RunError

from infra.model_source import Workspace, pinned_to

LINEAGE = ("source_workspace", "source_model", "source_version", "source_run_id")
IMAGE_DIGEST_TAG = "image_digest"
ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
ACR_API_VERSION = "2023-07-01"


class PromotionError(RunError):
    """A promotion cannot go ahead or did not copy what it should have; the message says which part. A RunError
    (a plain exception class, no runtime): the engine prints the message, not a traceback."""


@dataclass(frozen=True)
class Registry:
    """An MLflow tracking server + model registry (a Databricks workspace, or a local sqlite file)."""
    tracking_uri: str
    registry_uri: str | None = None
    # With databricks URIs: the workspace they mean (https://adb-...). Staging's and prod's registries are two
    # workspaces in one promotion, so neither may come from the caller's DATABRICKS_HOST (infra/model_source.py).
    host: str | None = None

    def client(self):
        from mlflow.tracking import MlflowClient  # imported here: ~1 s, and only the deploy step needs it

        # Explicit registry URI: left None, MLflow would take a process-wide set_registry_uri() over this tracking URI.
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)
        return PinnedClient(client, self.host) if self.host else client

    def pinned(self):
        """A context in which MLflow's databricks URIs reach this registry's workspace."""
        return pinned_to(Workspace(self.host, None) if self.host else None)

    @property
    def unity_catalog(self) -> bool:
        return (self.registry_uri or "").startswith("databricks-uc")


class PinnedClient:
    """An MlflowClient whose every call runs pinned to one workspace: MLflow looks the host up per request."""

    def __init__(self, client: Any, host: str) -> None:
        self._client, self._host = client, host

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def pinned(*args: Any, **kwargs: Any) -> Any:
            with pinned_to(Workspace(self._host, None)):
                return attribute(*args, **kwargs)
        return pinned


@dataclass(frozen=True)
class ModelSource:
    registry: Registry
    name: str
    version: str
    workspace: str  # where the source registry lives: a workspace URL, or a local path (lineage tag)


@dataclass(frozen=True)
class ModelTarget:
    registry: Registry
    name: str
    experiment: str  # the target's experiment that holds the promotion run (and so the copied files)
    alias: str = "champion"
    artifact_location: str | None = None  # for creating that experiment locally; Databricks picks its own


@dataclass(frozen=True)
class PromotedModel:
    name: str
    version: str
    source_version: str
    content_sha256: str
    reused: bool  # True: an earlier promotion of the same source version was found and re-aliased
    tags: dict[str, str] = field(default_factory=dict)


def lineage_tags(source: ModelSource, run_id: str, image_digest: str = "") -> dict[str, str]:
    tags = {"source_workspace": source.workspace, "source_model": source.name, "source_version": str(source.version),
            "source_run_id": run_id}
    return {**tags, IMAGE_DIGEST_TAG: image_digest} if image_digest else tags


def download_version(registry: Registry, name: str, version: str, dst: Path) -> Path:
    """The version's files, exactly as stored (no `registered_model_meta` added, unlike a models:/ download)."""
    if registry.unity_catalog:
        from mlflow.store.artifact.unity_catalog_models_artifact_repo import UnityCatalogModelsArtifactRepository

        repo = UnityCatalogModelsArtifactRepository(f"models:/{name}/{version}", registry_uri=registry.registry_uri,
                                                    tracking_uri=registry.tracking_uri)
    else:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = registry.client().get_model_version_download_uri(name, version)
        repo = get_artifact_repository(uri, tracking_uri=registry.tracking_uri)
    dst.mkdir(parents=True, exist_ok=True)
    with registry.pinned():
        return Path(repo.download_artifacts("", dst_path=str(dst)))


def files_hash(root: Path) -> str:
    from serving.context import content_hash  # the same hash the build context records

    return content_hash(root)


def signature_of(model_dir: Path) -> dict | None:
    from mlflow.models import Model

    signature = Model.load(str(model_dir)).signature
    return signature.to_dict() if signature is not None else None


def find_promoted(target: ModelTarget, source: ModelSource) -> Any | None:
    """An earlier copy of the same source version in the target (re-run, or rollback to it): reuse, don't copy twice."""
    from mlflow.exceptions import MlflowException

    client = target.registry.client()
    try:
        versions = client.search_model_versions(f"name='{target.name}'")
    except MlflowException:
        return None
    wanted = {"source_workspace": source.workspace, "source_model": source.name, "source_version": str(source.version)}
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = version.tags or client.get_model_version(target.name, version.version).tags
        if all(tags.get(k) == v for k, v in wanted.items()):
            return version
    return None


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description="promoted model versions; tags source_* give the lineage")


def _experiment_id(client, target: ModelTarget) -> str:
    experiment = client.get_experiment_by_name(target.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(target.experiment, artifact_location=target.artifact_location)


def _copy(source: ModelSource, target: ModelTarget, image_digest: str) -> tuple[Any, str]:
    """Download the source version, log its files unchanged in a promotion run of the target, register that."""
    source_client, client = source.registry.client(), target.registry.client()
    source_version = source_client.get_model_version(source.name, source.version)
    tags = {**(source_version.tags or {}), **lineage_tags(source, source_version.run_id, image_digest)}
    with tempfile.TemporaryDirectory() as tmp:
        local = download_version(source.registry, source.name, source.version, Path(tmp) / "model")
        digest = files_hash(local)
        run = client.create_run(_experiment_id(client, target), run_name=f"promote-{source.name}-v{source.version}",
                                tags={**lineage_tags(source, source_version.run_id, image_digest), "content_sha256": digest})
        client.log_artifacts(run.info.run_id, str(local), artifact_path="model")
        client.set_terminated(run.info.run_id)
    _ensure_registered_model(client, target.name)
    created = client.create_model_version(target.name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          tags={**tags, "content_sha256": digest},
                                          description=f"promoted from {source.workspace} {source.name} v{source.version}")
    return created, digest


def promote_model_version(source: ModelSource, target: ModelTarget, image_digest: str = "") -> PromotedModel:
    """Copy (or find the earlier copy of) `source` in the target registry, verify it, and move the alias to it."""
    client = target.registry.client()
    existing = find_promoted(target, source)
    if existing is None:
        version, _ = _copy(source, target, image_digest)
    else:
        version = existing
        if image_digest:
            client.set_model_version_tag(target.name, version.version, IMAGE_DIGEST_TAG, image_digest)
    check = verify_copy(source, target.registry, target.name, str(version.version))
    if check.problems:
        raise PromotionError(f"the copy {target.name} v{version.version} of {source.name} v{source.version} differs: "
                             + "; ".join(check.problems))
    client.set_registered_model_alias(target.name, target.alias, str(version.version))
    return PromotedModel(target.name, str(version.version), str(source.version), check.target_sha256,
                         reused=existing is not None, tags=check.tags)


@dataclass(frozen=True)
class CopyCheck:
    source_sha256: str
    target_sha256: str
    signature_equal: bool
    tags: dict[str, str]
    problems: list[str]


def verify_copy(source: ModelSource, target: Registry, target_name: str, target_version: str) -> CopyCheck:
    """Same files (content hash), same signature, lineage tags present: what prod's registry claims is true."""
    with tempfile.TemporaryDirectory() as tmp:
        src = download_version(source.registry, source.name, source.version, Path(tmp) / "source")
        dst = download_version(target, target_name, target_version, Path(tmp) / "target")
        src_hash, dst_hash = files_hash(src), files_hash(dst)
        same_signature = signature_of(src) == signature_of(dst)
    tags = dict(target.client().get_model_version(target_name, target_version).tags or {})
    problems = []
    if src_hash != dst_hash:
        problems.append(f"content sha256 {dst_hash[:12]} != source {src_hash[:12]}")
    if not same_signature:
        problems.append("signatures differ")
    missing = [key for key in LINEAGE if not tags.get(key)]
    if missing:
        problems.append(f"lineage tags missing: {', '.join(missing)}")
    if tags.get("source_version") not in (None, str(source.version)):
        problems.append(f"source_version tag is {tags['source_version']}, expected {source.version}")
    return CopyCheck(src_hash, dst_hash, same_signature, tags, problems)


# ---- image import (ACR, server side) ----

@dataclass(frozen=True)
class ImageRef:
    server: str
    repository: str
    digest: str  # sha256:<hex>

    def __str__(self) -> str:
        return f"{self.server}/{self.repository}@{self.digest}"


def parse_image_ref(ref: str) -> ImageRef:
    """`<server>/<repo>@sha256:<64 hex>` -> parts; anything else (a tag, no digest) is refused."""
    import re

    match = re.fullmatch(r"(?P<server>[^/@]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)@(?P<digest>sha256:[0-9a-f]{64})", ref)
    if not match:
        raise PromotionError(f"{ref!r} is not an image reference by digest (<registry>/<repository>@sha256:<64 hex>)")
    return ImageRef(match["server"], match["repo"], match["digest"])


def arm_token() -> str:
    from azure.identity import DefaultAzureCredential  # CI: the federated identity (OIDC); a laptop: az login

    return DefaultAzureCredential().get_token(ARM_SCOPE).token


def import_image(target_registry_id: str, source_registry_id: str, source_image: str, target_tags: list[str], *,
                 token: Callable[[], str] = arm_token, endpoint: str = ARM_ENDPOINT, timeout_s: float = 900,
                 poll_s: float = 5.0) -> None:
    """POST .../registries/<target>/importImage and wait for the long-running operation to succeed.

    The source is named by its ARM resource id, so ARM authorises the copy with the caller's Entra
    identity (it needs pull rights on the source, import rights on the target): no registry password."""
    url = f"{endpoint}{target_registry_id}/importImage?api-version={ACR_API_VERSION}"
    body = {"source": {"resourceId": source_registry_id, "sourceImage": source_image}, "targetTags": target_tags,
            "mode": "Force"}  # Force: re-running a promotion (same tag, same digest) is not an error
    bearer = token()
    status, headers, payload = _arm("POST", url, bearer, body)
    if status in (200, 204):
        return
    if status == 404 or _unknown_image(payload):
        raise PromotionError(f"{source_image} is not in the source registry {source_registry_id}: only an image the "
                             f"source stack pushed and tested can be promoted (HTTP {status} {payload})")
    if status != 202:
        raise PromotionError(f"importing {source_image} into {target_registry_id} failed: HTTP {status} {payload}")
    _wait(headers, bearer, source_image, timeout_s, poll_s)


def _unknown_image(error: Any) -> bool:
    """ACR's answer when the source has no such manifest (the import API reports it in the error text)."""
    text = str(error).lower()
    return "manifestunknown" in text or "manifest unknown" in text or "not found" in text


def _wait(headers: dict[str, str], bearer: str, what: str, timeout_s: float, poll_s: float) -> None:
    """ARM long-running operation: poll Azure-AsyncOperation (a status body) or Location (202 until done)."""
    async_url, location = headers.get("azure-asyncoperation"), headers.get("location")
    if not async_url and not location:
        raise PromotionError(f"importing {what}: ARM accepted the request but gave no operation to follow")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        status, _, payload = _arm("GET", async_url or location, bearer)
        if async_url:
            state = (payload or {}).get("status", "") if isinstance(payload, dict) else ""
            if state == "Succeeded":
                return
            if state in ("Failed", "Canceled"):
                error = payload.get("error", payload)
                hint = (": the source registry does not hold it, and only an image the source stack pushed and tested can "
                        "be promoted" if _unknown_image(error) else "")
                raise PromotionError(f"importing {what}: operation {state}: {error}{hint}")
        elif status in (200, 204):
            return
        elif status != 202:
            raise PromotionError(f"importing {what}: HTTP {status} {payload}")
    raise PromotionError(f"importing {what}: not finished after {timeout_s:.0f}s")


def _arm(method: str, url: str, bearer: str, body: dict | None = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, {k.lower(): v for k, v in headers.items()}, payload
