"""The scoring image: registered model alias -> concrete version -> build context -> pushed image.

Resolution and context assembly run for real while the program is evaluated (they decide what the
stack declares); the build and push are the docker provider's. Downstream uses `repo_digest` only.

Bootstrap: before the training job has ever registered a version, there is nothing to build. With
`model.allowBootstrap` true the stack then declares no image (and the program no workload) and says
so; with it false (prod) the missing version is an error, so prod can never lose its workload.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pulumi
import pulumi_docker as docker

from infra import acr_auth, model_source
from infra.model_source import ModelSourceError, Workspace, pinned_to
from infra.settings import ImageSettings, ModelSettings

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str | None  # None for a version registered from a path rather than a run
    content_sha256: str


@dataclass(frozen=True)
class Resolution:
    model: ModelRef | None
    context_dir: Path | None  # None also in a preview, which assembles no context (see _resolve)
    bootstrap_message: str  # "" when a version was found


@dataclass(frozen=True)
class ImageArgs:
    login_server: pulumi.Input[str]
    settings: ImageSettings
    resolution: Resolution
    token: Callable[[str], str] = acr_auth.refresh_token


def bootstrap_message(model: ModelSettings, reason: str) -> str:
    return (f"BOOTSTRAP: {model.uri} has no registered version yet ({reason}), so this stack declares no image and "
            "no serving workload. Run the Databricks training job (see the databricks_job_id output), then "
            "`pulumi up` again.")


def no_model(model: ModelSettings, reason: str) -> Resolution:
    """Nothing to serve yet: the bootstrap plan where the stack allows it, a clear error where it does not (prod)."""
    if model.allow_bootstrap:
        return Resolution(None, None, bootstrap_message(model, reason))
    raise ModelSourceError(
        f"{model.uri} has no version to serve ({reason}), and this stack never bootstraps (model.allowBootstrap: false). "
        "Deploy and train staging first, then set promotion.sourceStack to staging's stack name so this stack serves "
        "what staging tested; or set model.allowBootstrap: true to create the infrastructure without a workload.")


def resolve(model: ModelSettings, image: ImageSettings, locate: Callable[[], Workspace | None] = lambda: None,
            progress: Callable[[str], None] = pulumi.log.info) -> Resolution:
    """Alias -> version -> assembled build context, read from the stack's own registry (see infra/model_source.py);
    no workspace yet, or no version in it, is the bootstrap case."""
    workspace = None
    if model.in_stack_workspace:
        workspace = locate()
        if workspace is None:
            return no_model(model, "the stack's Databricks workspace does not exist yet; this `up` creates it")
    from mlflow.tracking import MlflowClient  # imported here: ~1 s, and only this step needs it

    with global_uris(model.tracking_uri, model.registry_uri), pinned_to(workspace):
        client = MlflowClient(tracking_uri=model.tracking_uri, registry_uri=model.registry_uri)
        return _resolve(model, image, progress, client, where=str(workspace or model.tracking_uri))


URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def global_uris(tracking_uri: str, registry_uri: str | None) -> Iterator[None]:
    """assemble_build_context downloads through MLflow's global URIs, so set them for this step and put back
    exactly what the caller had, "never set" included: restoring the value get_tracking_uri() reports instead
    would pin later callers to MLflow's default store (./mlflow.db) and their variables in os.environ."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = tracking_utils._tracking_uri, registry_utils._registry_uri, {v: os.environ.get(v) for v in URI_VARIABLES}
    mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        # None ("never set") is what mlflow itself resets to; its annotations leave None out.
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]
        mlflow.set_registry_uri(saved[1])  # type: ignore[arg-type]
        for name, value in saved[2].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _resolve(model: ModelSettings, image: ImageSettings, progress: Callable[[str], None], client, where: str) -> Resolution:
    from mlflow.exceptions import MlflowException

    from serving.context import assemble_build_context, resolve_model

    try:
        resolved = resolve_model(model.uri, client)
    except MlflowException as error:
        if not model_source.no_such_model(error):
            raise unreachable(model, where, error) from None  # an outage or no permission is not "no model yet"
        return no_model(model, f"{where} holds none: {error.message}")
    except (OSError, ValueError) as error:  # connection refused, no credentials for the host (Databricks SDK)
        raise unreachable(model, where, error) from None
    if pulumi.runtime.is_dry_run():
        # A preview builds nothing, and may run as an identity that can browse the model but not download it (the
        # PR preview): the version decides what the stack declares, the context only what an `up` would build.
        progress(f"preview: {model.uri} is version {resolved.version}; the image is built by `up`, not assembled here")
        return Resolution(ModelRef(resolved.name, resolved.version, resolved.run_id, content_sha256=""), None, "")
    context_dir = Path(image.context_dir)
    if not context_dir.is_absolute():
        context_dir = ROOT / context_dir
    context = assemble_build_context(resolved.version_uri, context_dir, client=client, wheelhouse=image.wheelhouse,
                                     progress=progress)
    ref = ModelRef(resolved.name, resolved.version, resolved.run_id, context.manifest["content_sha256"])
    return Resolution(ref, context.path, "")


def unreachable(model: ModelSettings, where: str, error: Exception) -> ModelSourceError:
    return ModelSourceError(f"cannot read {model.uri} from {where}: {type(error).__name__}: {error}. The deploying "
                            "identity needs to reach that workspace (az login, or ARM_* / OIDC in CI) as a member, with "
                            "USE CATALOG, USE SCHEMA and EXECUTE on the model's schema (docs/deploy.md, Before the second `up`: "
                            "before the second `up`).")


def image_tag(model: ModelRef) -> str:
    """<version>-<build context hash>: a function of what is built. A git sha would change the image on every
    commit, even one that touches no file of the context, and so rebuild, push and roll a revision for nothing."""
    return f"{model.version}-{model.content_sha256[:12]}"


def unknown() -> pulumi.Output[str]:
    """A value only an `up` can know: the preview shows it as unknown and computes nothing from it."""
    return pulumi.Output.from_input("").apply(lambda _: cast(str, pulumi.output.UNKNOWN))


def _stable(path: Path) -> Path:
    """Relative to the project (Pulumi runs there): the same inputs on a laptop and in CI, no spurious diff."""
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


class ScoringImage(pulumi.ComponentResource):
    repo_digest: pulumi.Output[str]  # <login server>/<repository>@sha256:<digest>

    def __init__(self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:ScoringImage", name, None, opts)
        model, context = args.resolution.model, args.resolution.context_dir
        if model is None:
            raise ValueError("ScoringImage needs a resolved model; the program skips it in the bootstrap case")
        server = pulumi.Output.from_input(args.login_server)
        # Never in state in plain text; and never fetched by a preview, which pushes nothing and may run as a Reader.
        password: pulumi.Output[str] = pulumi.Output.secret(
            server.apply(lambda s: "" if pulumi.runtime.is_dry_run() else args.token(s)))
        image_name: pulumi.Output[str] = server.apply(lambda s: f"{s}/{args.settings.repository}:{image_tag(model)}")
        build_context: pulumi.Input[str]
        if context is None:  # a preview: what the context holds, and so the tag, is known only to an `up`
            if not pulumi.runtime.is_dry_run():
                raise ValueError("ScoringImage needs an assembled build context outside a preview")
            image_name, build_context = unknown(), unknown()
            dockerfile: pulumi.Input[str] = unknown()
        else:
            context = _stable(context)
            build_context, dockerfile = str(context), str(context / "Dockerfile")
        self.image = docker.Image(
            f"{name}-image",
            image_name=image_name,
            build=docker.DockerBuildArgs(context=build_context, dockerfile=dockerfile, platform=PLATFORM,
                                         args={"BASE_IMAGE": args.settings.base_image}),
            registry=docker.RegistryArgs(server=server, username=acr_auth.TOKEN_USERNAME, password=password),
            opts=pulumi.ResourceOptions(parent=self))
        self.repo_digest = self.image.repo_digest
        self.register_outputs({"repo_digest": self.repo_digest})
