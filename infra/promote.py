"""The two cloud steps of a promotion, as plain functions (no Pulumi here).

- `promote_model_version`: copy one registered model version from a source MLflow registry (staging's)
  into a target registry (prod's), byte for byte, with its lineage as tags, and point an alias at it.
- `import_image`: ACR's server-side import of `repo@sha256:...` from one registry into another. The
  manifest is copied as is, so the digest does not change.

The Pulumi program calls them from dynamic resources (infra/promotion.py) and `make promote-local`
calls `promote_model_version` with two local sqlite registries: one implementation for both.

Why one module: the two steps share the registries' clients, the lineage tags and the checks of a copy; apart, the
copy, its verification and the image import would each import the others.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulumi.errors import RunError

from infra.model_source import Workspace, pinned_to

if TYPE_CHECKING:
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

LINEAGE = ("source_workspace", "source_model", "source_version", "source_run_id")
IMAGE_DIGEST_TAG = "image_digest"
ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
ACR_API_VERSION = "2025-11-01"  # azure-mgmt-containerregistry 15's own


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


APPROVAL_METRICS = "gate_challenger_"  # training/gate.py's score at approval, which the quality job compares with


def approval_scores(client: Any, run_id: str | None) -> dict[str, float]:
    """The source version's scores at approval (its run's gate_challenger_<metric>), for the copy's run: the target's
    quality job reads its reference there (monitoring/quality.py references). A run that no longer exists has none
    (the quality rule then keeps its floor, as before); any other refusal fails the promotion, to be retried, rather
    than leave a copy without them."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return {}
    return {key: float(value) for key, value in metrics.items() if key.startswith(APPROVAL_METRICS)}


def carry_approval(source: ModelSource, client: Any, copy: Any) -> None:
    """The source's scores at approval on the copy's run, those it lacks: a new copy, and one an earlier promotion made
    (reused by a re-run, a new image of the same version, or a rollback) before copies carried them. A copy that holds
    them does not ask the source."""
    if not copy.run_id:
        return
    held = client.get_run(copy.run_id).data.metrics
    if any(key.startswith(APPROVAL_METRICS) for key in held):
        return
    source_client = source.registry.client()
    scores = approval_scores(source_client, source_client.get_model_version(source.name, source.version).run_id)
    for key, value in scores.items():
        if key not in held:
            client.log_metric(copy.run_id, key, value)


def download_version(registry: Registry, name: str, version: str, dst: Path) -> Path:
    """The version's files, exactly as stored (no `registered_model_meta` added, unlike a models:/ download)."""
    repo: ArtifactRepository
    if registry.unity_catalog:
        from mlflow.store.artifact.unity_catalog_models_artifact_repo import UnityCatalogModelsArtifactRepository

        # mlflow marks ArtifactRepository._download_file abstract but never enforces it (a Python 2 __metaclass__);
        # this repository overrides download_artifacts instead.
        repo = UnityCatalogModelsArtifactRepository(  # type: ignore[abstract]
            f"models:/{name}/{version}", registry_uri=registry.registry_uri, tracking_uri=registry.tracking_uri)
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
    """An earlier copy of the same source version in the target (re-run, or rollback to it): reuse, don't copy twice.

    Unity Catalog's search returns versions without tags (ModelVersionSearch: `tags` is a method that raises), so
    each version's tags come from get_model_version, newest version first. READY only: Unity Catalog creates a version,
    with its tags, before its files arrive, so an interrupted copy stays PENDING_REGISTRATION or FAILED, and reusing
    it would fail every re-run (as monitoring/lineage.copies_of skips it). A target model that does not exist yet has
    no copy; any other refusal fails the promotion, to be retried, rather than make a second copy."""
    from mlflow.exceptions import MlflowException

    client = target.registry.client()
    try:
        numbers = sorted((int(found.version) for found in client.search_model_versions(f"name='{target.name}'")),
                         reverse=True)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    wanted = {"source_workspace": source.workspace, "source_model": source.name, "source_version": str(source.version)}
    for number in numbers:
        version = client.get_model_version(target.name, str(number))
        if version.status == "READY" and all((version.tags or {}).get(k) == v for k, v in wanted.items()):
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


def _copy_in_registry(source: ModelSource, target: ModelTarget, image_digest: str) -> Any:
    """One registry holds both models: MLflow's own copy_model_version (no files through this process)."""
    client = target.registry.client()
    _ensure_registered_model(client, target.name)
    source_version = source.registry.client().get_model_version(source.name, source.version)
    copied = client.copy_model_version(f"models:/{source.name}/{source.version}", target.name)
    for key, value in lineage_tags(source, source_version.run_id, image_digest).items():
        client.set_model_version_tag(target.name, copied.version, key, value)
    return copied


def shares_registry(a: Registry, b: Registry) -> bool:
    return (a.tracking_uri, a.registry_uri or a.tracking_uri, a.host) == (b.tracking_uri, b.registry_uri or b.tracking_uri,
                                                                          b.host)


def promote_model_version(source: ModelSource, target: ModelTarget, image_digest: str = "") -> PromotedModel:
    """Copy (or find the earlier copy of) `source` in the target registry, verify it, and move the alias to it.

    Staging and prod are two workspaces, and each stack's catalog is ISOLATED to its own: prod's workspace cannot
    read staging's model by name, so MLflow's copy_model_version (which runs in the target) cannot reach the source
    and the files travel through this process (`_copy`). Where one registry holds both, MLflow copies."""
    from mlflow.exceptions import MlflowException

    client = target.registry.client()
    existing = find_promoted(target, source)
    if existing is None:
        version = (_copy_in_registry(source, target, image_digest) if shares_registry(source.registry, target.registry)
                   else _copy(source, target, image_digest)[0])
        check = verify_copy(source, target.registry, target.name, str(version.version))
        carry_approval(source, client, version)
    else:
        version = existing
        if image_digest:
            client.set_model_version_tag(target.name, version.version, IMAGE_DIGEST_TAG, image_digest)
        check = verify_reused(source, target.registry, target.name, str(version.version))
        with contextlib.suppress(OSError, MlflowException):  # a rollback needs no staging: a copy whose source
            carry_approval(source, client, version)  # cannot be read keeps what its run holds
    if check.problems:
        raise PromotionError(f"the copy {target.name} v{version.version} of {source.name} v{source.version} differs: "
                             + "; ".join(check.problems))
    client.set_model_version_tag(target.name, str(version.version), "content_sha256", check.target_sha256)
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
    return CopyCheck(src_hash, dst_hash, same_signature, tags, problems + lineage_problems(tags, source))


def verify_reused(source: ModelSource, target: Registry, target_name: str, target_version: str) -> CopyCheck:
    """An earlier copy, checked without the source: its files still hash to the `content_sha256` recorded when it was
    copied and checked against the source (MLmodel, and so the signature, is among the files hashed). A rollback to it
    must not depend on staging being up (infra/promotion.py). A copy without the record (its promotion stopped before
    recording it) is checked against the source."""
    tags = dict(target.client().get_model_version(target_name, target_version).tags or {})
    recorded = tags.get("content_sha256")
    if not recorded:
        return verify_copy(source, target, target_name, target_version)
    with tempfile.TemporaryDirectory() as tmp:
        dst_hash = files_hash(download_version(target, target_name, target_version, Path(tmp) / "target"))
    problems = [] if dst_hash == recorded else [f"content sha256 {dst_hash[:12]} != recorded {recorded[:12]}"]
    return CopyCheck(recorded, dst_hash, dst_hash == recorded, tags, problems + lineage_problems(tags, source))


def lineage_problems(tags: dict[str, str], source: ModelSource) -> list[str]:
    problems = []
    missing = [key for key in LINEAGE if not tags.get(key)]
    if missing:
        problems.append(f"lineage tags missing: {', '.join(missing)}")
    if tags.get("source_version") not in (None, str(source.version)):
        problems.append(f"source_version tag is {tags['source_version']}, expected {source.version}")
    return problems


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


def arm_credential() -> Any:
    from infra.azure_credential import arm_credential as credential  # CI: a fresh GitHub OIDC token; a laptop: az login

    return credential()


def import_image(target_registry_id: str, source_registry_id: str, source_image: str, target_tags: list[str], *,
                 credential: Any = None, endpoint: str = ARM_ENDPOINT, timeout_s: float = 900,
                 poll_s: float | None = None, ca_bundle: str | None = None) -> None:
    """ACR's importImage through azure-mgmt-containerregistry's long-running-operation poller (Azure-AsyncOperation
    or Location, Retry-After, retries on throttling and token refresh: the SDK's, not ours).

    The source is named by its ARM resource id, so ARM authorises the copy with the caller's Entra
    identity (it needs Reader on the source registry, registries/read, and import rights on the target): no
    registry password."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import ImportImageParameters, ImportMode, ImportSource

    target = _registry_id(target_registry_id)
    transport: dict[str, Any] = {"connection_verify": ca_bundle} if ca_bundle else {}  # a TLS-inspecting proxy's CA, or a test's
    polling: dict[str, Any] = {"polling_interval": poll_s} if poll_s is not None else {}
    client = ContainerRegistryManagementClient(
        credential or arm_credential(), target["subscriptions"], base_url=endpoint, api_version=ACR_API_VERSION, **transport)
    parameters = ImportImageParameters(
        source=ImportSource(resource_id=source_registry_id, source_image=source_image), target_tags=target_tags,
        mode=ImportMode.FORCE)  # Force: re-running a promotion (same tag, same digest) is not an error
    try:
        poller = client.registries.begin_import_image(target["resourceGroups"], target["registries"], parameters, **polling)
        poller.result(timeout=timeout_s)
    except ResourceNotFoundError as error:
        raise PromotionError(f"{source_image} is not in the source registry {source_registry_id}: only an image the "
                             f"source stack pushed and tested can be promoted ({_detail(error)})") from None
    except HttpResponseError as error:
        hint = (": the source registry does not hold it, and only an image the source stack pushed and tested can be "
                "promoted" if _unknown_image(_detail(error)) else "")
        raise PromotionError(f"importing {source_image} into {target_registry_id} failed: {_detail(error)}{hint}") from None
    if not poller.done():
        raise PromotionError(f"importing {source_image}: not finished after {timeout_s:.0f}s")


def _registry_id(registry_id: str) -> dict[str, str]:
    """/subscriptions/<s>/resourceGroups/<g>/providers/Microsoft.ContainerRegistry/registries/<name> by segment."""
    parts = registry_id.strip("/").split("/")
    segments = dict(zip(parts[::2], parts[1::2], strict=False))
    if not {"subscriptions", "resourceGroups", "registries"} <= set(segments):
        raise PromotionError(f"{registry_id!r} is not a container registry's ARM resource id")
    return segments


def _detail(error: Any) -> str:
    """ARM's own error code and message, without the SDK's multi-line rendering."""
    body = getattr(error, "error", None)
    code, message = getattr(body, "code", None), getattr(body, "message", None)
    return f"{code + ': ' if code else ''}{message or error.reason or error}"


def _unknown_image(error: Any) -> bool:
    """ACR's answer when the source has no such manifest (the import API reports it in the error text)."""
    text = str(error).lower()
    return "manifestunknown" in text or "manifest unknown" in text or "not found" in text
