"""Promotion: a stack with `promotion.sourceStack` (prod) deploys exactly what the source stack (staging)
tested, and never builds or trains.

    staging outputs ─StackReference─► image_ref (digest), model_name/version/run id, registry_id
        ─► ImageImport: ACR import of <repo>@sha256:... into this stack's registry (same digest)
        ─► ModelPromotion: the same model version copied into this stack's MLflow registry with its
           lineage (source_workspace, source_model, source_version, source_run_id), alias @champion
           (@candidate while a release is in flight: @champion moves when it completes)
        ─► the serving workload runs <this registry>/<repo>@<same digest>

Rollback: `promotion.pinnedDigest` + `promotion.pinnedModelVersion` deploy an earlier artifact that
this stack already holds (no import: a rollback must not depend on staging being healthy); the
model promotion then finds the earlier copy of that version and moves @champion back to it.

Both cloud steps are dynamic resources, so they run inside `pulumi up` (preview shows them, state
records them, the workload depends on them) and their logic is the plain functions in infra/promote.py.
Deleting either resource deletes nothing: images and model versions stay for later rollbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from infra import promote
from infra.promote import PromotionError
from infra.settings import ImageSettings, ModelSettings, PromotionSettings

# While a release is in flight the copy is made and verified before any traffic, under this alias; @champion (what
# the registry says prod serves) moves to it only in the release's last `up`, so a failed candidate never holds it.
CANDIDATE_ALIAS = "candidate"
REQUIRED_OUTPUTS = ("image_ref", "model_name", "model_version", "model_run_id", "registry_id")


@dataclass(frozen=True)
class SourceArtifact:
    """What the source stack exported, validated: the thing prod will serve."""
    stack: str
    image: promote.ImageRef | None  # None when pinned (the image comes from this stack's own registry)
    registry_id: str
    model_name: str
    model_version: str
    run_id: str  # "" when pinned: the registry knows the pinned version's run
    workspace: str
    runtime: str = ""  # what the image's model runs on (the source's image_runtime); "" when pinned or not exported

    def image_to_import(self) -> promote.ImageRef:
        """The source's image: every promotion but a pinned one (a rollback) imports it."""
        if self.image is None:
            raise PromotionError(f"a pinned promotion from {self.stack} imports no image")
        return self.image


def source_artifact(stack: str, outputs: Mapping[str, Any], settings: PromotionSettings) -> SourceArtifact:
    """Staging's outputs -> what to promote; a bootstrap (no image yet) or missing output fails naming both."""
    workspace = str(outputs.get("databricks_workspace_url") or stack)
    if settings.pinned:
        if not outputs.get("model_name"):
            raise PromotionError(f"promotion source stack {stack} exports no model_name: deploy it once before pinning")
        return SourceArtifact(stack, None, str(outputs.get("registry_id") or ""), str(outputs["model_name"]),
                              str(settings.pinned_model_version), "", workspace)
    if outputs.get("bootstrap") or not outputs.get("image_ref"):
        raise PromotionError(
            f"promotion source stack {stack} has no image to promote (image_ref is empty"
            f"{'; it is in bootstrap: ' + str(outputs['bootstrap']) if outputs.get('bootstrap') else ''}). "
            "Train and deploy the source stack first, or roll back with promotion.pinnedDigest and "
            "promotion.pinnedModelVersion.")
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        raise PromotionError(f"promotion source stack {stack} lacks the output(s) {', '.join(missing)}: "
                             "run `pulumi up` on it with this version of the program first")
    image = promote.parse_image_ref(str(outputs["image_ref"]))
    if settings.tested_digest and (image.digest, str(outputs["model_version"])) != (settings.tested_digest,
                                                                                  settings.tested_model_version):
        raise PromotionError(
            f"promotion source stack {stack} now serves {image.digest} (model version {outputs['model_version']}), not "
            f"what this run's staging job tested: {settings.tested_digest} (model version "
            f"{settings.tested_model_version}). A later deploy replaced it while this promotion waited: nothing is "
            "promoted; promote the newer run once its smoke test passed.")
    return SourceArtifact(stack, image, str(outputs["registry_id"]), str(outputs["model_name"]),
                          str(outputs["model_version"]), str(outputs["model_run_id"]), workspace,
                          str(outputs.get("image_runtime") or ""))


def fitting(artifact: SourceArtifact, check_runtime: Callable[[str], None]) -> SourceArtifact:
    """The artifact, once this stack's containers are known to hold its runtime's workers (a pinned rollback's
    runtime is not known: its image was checked when it was promoted, against this stack's settings of then)."""
    if artifact.runtime:
        check_runtime(artifact.runtime)
    return artifact


# ---- dynamic resources: the two cloud steps ----

def _changed(olds: Mapping[str, Any], news: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if olds.get(key) != news.get(key)]


class ImageImportProvider(dynamic.ResourceProvider):
    KEYS = ("target_registry_id", "source_registry_id", "source_image", "target_tags")

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        promote.import_image(props["target_registry_id"], props["source_registry_id"], props["source_image"],
                             list(props["target_tags"]))
        return dynamic.CreateResult(id_=props["image_ref"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = _changed(olds, news, self.KEYS)  # another digest or registry is another import
        return dynamic.DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Keep the image: it is what a later rollback pins."""


class ImageImport(dynamic.Resource, module="mlops", name="ImageImport"):
    image_ref: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ImageImportProvider(), name, props, opts)


class ModelPromotionProvider(dynamic.ResourceProvider):
    KEYS = ("source_tracking_uri", "source_registry_uri", "source_model", "source_version", "source_workspace",
            "target_tracking_uri", "target_registry_uri", "target_workspace", "target_model", "alias", "experiment",
            "image_digest")

    @staticmethod
    def registry(tracking_uri: str, registry_uri: str, workspace: str) -> promote.Registry:
        """databricks URIs read the named workspace (staging's for the source, this stack's for the target)."""
        host = workspace if tracking_uri == "databricks" and workspace.startswith("https://") else None
        return promote.Registry(tracking_uri, registry_uri or None, host)

    @classmethod
    def promote(cls, props: Mapping[str, Any]) -> dict[str, Any]:
        source = promote.ModelSource(cls.registry(props["source_tracking_uri"], props["source_registry_uri"],
                                                  props["source_workspace"]),
                                     props["source_model"], str(props["source_version"]), props["source_workspace"])
        target = promote.ModelTarget(cls.registry(props["target_tracking_uri"], props["target_registry_uri"],
                                                  props.get("target_workspace") or ""),
                                     props["target_model"], props["experiment"], props["alias"])
        result = promote.promote_model_version(source, target, image_digest=props["image_digest"])
        expected_run = props.get("source_run_id")
        if expected_run and result.tags.get("source_run_id") != expected_run:
            raise PromotionError(f"{source.name} v{source.version} was trained by run {result.tags.get('source_run_id')}, "
                                 f"but the source stack exported run {expected_run}: its outputs are stale")
        return {**props, "version": result.version, "content_sha256": result.content_sha256, "reused": result.reused}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = self.promote(props)
        return dynamic.CreateResult(id_=f"{props['target_model']}/{outs['version']}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        return dynamic.DiffResult(changes=bool(_changed(olds, news, self.KEYS)), replaces=[])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self.promote(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Keep the model version: the registry's history is the audit trail."""


class ModelPromotion(dynamic.Resource, module="mlops", name="ModelPromotion"):
    version: pulumi.Output[str]
    content_sha256: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ModelPromotionProvider(), name, {"version": None, "content_sha256": None, "reused": None, **props},
                         opts)


# ---- the component ----

@dataclass(frozen=True)
class PromotionArgs:
    settings: PromotionSettings
    model: ModelSettings  # this stack's registry and model name
    image: ImageSettings  # this stack's repository
    experiment: str  # this stack's experiment: holds the promotion runs
    registry_id: pulumi.Input[str]
    login_server: pulumi.Input[str]
    workspace_url: pulumi.Input[str]  # this stack's Databricks workspace: the target registry of the model copy
    # what the copy writes into, so they exist first: the experiment (its promotion run) with its folder and
    # permissions, and the registered model where the stack declares it
    writes_into: Sequence[pulumi.Resource] = ()
    in_flight: bool = False  # a release's candidate: the copy takes CANDIDATE_ALIAS; model.alias moves when it completes
    # this stack's memory rule for the runtime the source's image runs on (settings.check_memory): the source checked
    # it for its own containers, which may be larger than this stack's
    check_runtime: Callable[[str], None] = lambda runtime: None


class Promotion(pulumi.ComponentResource):
    image_ref: pulumi.Output[str]  # <this registry>/<repository>@sha256:<the source's digest>
    digest: pulumi.Output[str]
    model_name: pulumi.Output[str]  # this stack's registered model
    model_version: pulumi.Output[str]  # the source version (what the image serves; /ready reports it)
    registry_model_version: pulumi.Output[str]  # its copy's version in this stack's registry
    model_run_id: pulumi.Output[str]
    source_image_ref: pulumi.Output[str]
    runtime: pulumi.Output[str]  # the source's image_runtime ("" when pinned)

    def __init__(self, name: str, args: PromotionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:Promotion", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # <organization>/<project>/<stack>: the form a StackReference takes on every backend.
        stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{s.source_stack}"
        self.source_stack = stack
        self.reference = pulumi.StackReference(f"{name}-source", stack_name=stack, opts=child)
        source = self.reference.outputs.apply(lambda outputs: fitting(source_artifact(stack, outputs or {}, s),
                                                                      args.check_runtime))
        self.digest = source.apply(lambda a: a.image.digest if a.image else str(s.pinned_digest))
        server = pulumi.Output.from_input(args.login_server)
        target_ref = pulumi.Output.all(server, self.digest).apply(lambda v: f"{v[0]}/{args.image.repository}@{v[1]}")
        if s.pinned:
            self.image_ref, self.source_image_ref = target_ref, pulumi.Output.from_input("")
            self.import_ = None
        else:
            self.source_image_ref = source.apply(lambda a: str(a.image))
            self.import_ = ImageImport(f"{name}-image-import", {
                "target_registry_id": args.registry_id, "source_registry_id": source.apply(lambda a: a.registry_id),
                "source_image": source.apply(lambda a: f"{a.image_to_import().repository}@{a.image_to_import().digest}"),
                "target_tags": source.apply(
                    lambda a: [f"{args.image.repository}:v{a.model_version}-{a.image_to_import().digest[7:19]}"]),
                "image_ref": target_ref, "digest": self.digest}, opts=child)
            self.image_ref = self.import_.image_ref
        m = args.model
        self.registration = ModelPromotion(f"{name}-model", {
            "source_tracking_uri": s.source_tracking_uri, "source_registry_uri": s.source_registry_uri or "",
            "source_model": source.apply(lambda a: a.model_name), "source_version": source.apply(lambda a: a.model_version),
            "source_workspace": source.apply(lambda a: a.workspace), "source_run_id": source.apply(lambda a: a.run_id),
            "target_tracking_uri": m.tracking_uri, "target_registry_uri": m.registry_uri or "",
            "target_workspace": args.workspace_url,
            "target_model": m.full_name, "alias": CANDIDATE_ALIAS if args.in_flight else m.alias,
            "experiment": args.experiment, "image_digest": self.digest,
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=[*([self.import_] if self.import_ else []), *args.writes_into]))
        self.model_name = pulumi.Output.from_input(m.full_name)
        self.model_version = source.apply(lambda a: a.model_version)
        self.model_run_id = source.apply(lambda a: a.run_id)
        self.runtime = source.apply(lambda a: a.runtime)
        self.registry_model_version = self.registration.version
        # The workload waits for both: prod's registry says what prod serves before it serves it.
        self.deployable_image = pulumi.Output.all(self.image_ref, self.registration.version).apply(lambda v: v[0])
        self.register_outputs({"image_ref": self.image_ref, "digest": self.digest,
                               "registry_model_version": self.registry_model_version})
