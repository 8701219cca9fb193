"""The program body, as a function: __main__.py calls it once; tests and `make plan` call it once
per stack under mocks. Returns the stack outputs (stable names used by CI and promotion)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_azure_native.resources as resources

from infra import acr_auth, kql, model_source, settings
from infra.databricks import Databricks, DatabricksArgs, DriftJobArgs, QualityJobArgs
from infra.image import ImageArgs, Resolution, ScoringImage, resolve
from infra.observability import Observability, ObservabilityArgs
from infra.promotion import Promotion, PromotionArgs
from infra.registry import Registry, RegistryArgs
from infra.settings import StackSettings
from serving.scoring.model import MANIFEST_FILE

CONTAINER_NAME = "scoring"


def run(acr_token: Callable[[str], str] = acr_auth.refresh_token, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    s = settings.load(env)
    names = s.names  # every name below derives from the config key `name` (infra/naming.py)
    promoting = s.promotion.enabled  # a promotion target (prod) neither resolves nor builds: it imports
    # A read-only ARM lookup: the stack's own workspace (or databricks.existingWorkspaceUrl), None before it exists.
    workspace = model_source.locate(names.resource_group, names.databricks_workspace,
                                    s.databricks.existing_workspace_url, s.databricks.existing_workspace_resource_id)
    first_up = workspace is None  # this `up` creates the workspace and nothing inside it (workspace_bootstrap)
    resolution = None if promoting or first_up else resolve(s.model, s.image, locate=lambda: workspace)
    # Before any resource: a container too small for the runtime the image's model runs on stops the `up` with nothing
    # changed (a promotion target: the runtime staging tested, passed by CI with its digest; infra/promotion.py checks
    # staging's output again where no one passed it).
    runtime = image_runtime(resolution) or s.promotion.tested_runtime or ""
    if runtime:
        settings.check_memory(s, runtime)
    group = resources.ResourceGroup("resource-group", resource_group_name=names.resource_group, location=s.location,
                                    tags=s.tags, opts=pulumi.ResourceOptions(protect=s.protect))
    serving = not first_up and (resolution is None or resolution.model is not None)  # this `up` declares the service
    observability = Observability("observability", ObservabilityArgs(
        resource_group_name=group.name, location=s.location, names=names, settings=s.observability,
        log_source=log_source(s), serving_deployed=serving, tags=s.tags, protect=s.protect))
    registry = Registry("registry", RegistryArgs(
        resource_group_name=group.name, location=s.location, identity_name=names.pull_identity, settings=s.registry,
        log_analytics_workspace_id=observability.workspace_id, tags=s.tags, protect=s.protect))
    databricks = Databricks("databricks", DatabricksArgs(
        resource_group_name=group.name, resource_group_id=group.id, location=s.location, names=names,
        settings=s.databricks, model=s.model, environment=s.environment, tags=s.tags, drift=drift_job(s, observability),
        quality=quality_job(s),
        trains=not promoting, protect=s.protect, workspace_only=first_up, serving=serving))

    outputs: dict[str, Any] = {
        "environment": s.environment, "serving_target": s.serving.target, "resource_group_name": group.name,
        "registry_login_server": registry.login_server, "model_uri": s.model.uri, "model_name": s.model.full_name,
        "databricks_workspace_url": databricks.workspace_url, "databricks_job_id": databricks.job_id,
        "databricks_experiment": s.databricks.experiment, "databricks_drift_job_id": databricks.drift_job_id,
        "databricks_quality_job_id": databricks.quality_job_id,
        "databricks_batch_job_id": "",  # declared once the stack serves a version (below)
        "log_analytics_workspace_id": observability.workspace_id, "registry_id": registry.registry.id,
        # What a client (and CI's smoke test) needs to call the endpoint: the mode, and the audience to ask a token for.
        "auth_mode": s.serving.auth.mode, "auth_audience": s.serving.auth.audience if s.serving.auth.entra else "",
    }
    if first_up:
        return bootstrapped(outputs, workspace_bootstrap(s))
    if resolution is None:
        return {**outputs, **promoted(s, group, observability, registry, databricks)}
    if resolution.model is None:
        return bootstrapped(outputs, resolution.bootstrap_message)

    image = ScoringImage("scoring-image", ImageArgs(login_server=registry.login_server, settings=s.image,
                                                    resolution=resolution, token=acr_token))
    served = serve(s, image.repo_digest, group, observability, registry)
    version = batch_version(s, resolution.model.version)  # the version the image serves
    batch = databricks.declare_batch_job(version)
    return {**outputs, **served, **batch_output(batch, version), "image_ref": image.repo_digest,
            "image_runtime": runtime, "model_version": resolution.model.version,
            "model_run_id": resolution.model.run_id, "bootstrap": "", "promoted_from": ""}


def image_runtime(resolution: Resolution | None) -> str:
    """The runtime the image's model runs on (onnx, sklearn, ...), from the build context's manifest: known in an `up`,
    "" in a preview (no context is assembled) and where nothing is built."""
    if resolution is None or resolution.context_dir is None:
        return ""
    return str(json.loads((resolution.context_dir / "model" / MANIFEST_FILE).read_text())["runtime"])


def workspace_bootstrap(s: StackSettings) -> str:
    return (f"BOOTSTRAP: this `up` creates the stack's Databricks workspace {s.names.databricks_workspace} and nothing "
            f"in it: a workspace the same `up` creates has no members, so the deployer ({s.databricks.deployer}) could "
            "declare no job, grant or model there. An account admin now adds the deployer to the workspace as admin "
            "(docs/deploy.md, Before the second `up`); then run `pulumi up` again.")


def bootstrapped(outputs: dict[str, Any], message: str) -> dict[str, Any]:
    """No image and no workload yet: the outputs say why (the release and the prod job read `bootstrap`)."""
    pulumi.log.warn(message)
    empty = ("endpoint_url", "latest_revision_name", "candidate_url", "serving_revision", "candidate_weight",
             "image_ref", "image_runtime", "model_version", "model_run_id", "promoted_from", "batch_model_version")
    return {**outputs, **dict.fromkeys(empty, ""), "bootstrap": message}


def promoted(s: StackSettings, group: resources.ResourceGroup, observability: Observability, registry: Registry,
             databricks: Databricks) -> dict[str, Any]:
    """The promotion target's workload: the source stack's digest, imported; its model version, registered here."""
    promotion = Promotion("promotion", PromotionArgs(
        settings=s.promotion, model=s.model, image=s.image, experiment=s.databricks.experiment,
        registry_id=registry.registry.id, login_server=registry.login_server, workspace_url=databricks.workspace_url,
        writes_into=databricks.promotion_writes_into, in_flight=in_flight(s),
        check_runtime=lambda runtime: settings.check_memory(s, runtime)))
    served = serve(s, promotion.deployable_image, group, observability, registry)
    version = batch_version(s, promotion.registry_model_version)  # the promoted copy in this stack's registry
    batch = databricks.declare_batch_job(version)
    return {**served, **batch_output(batch, version), "image_ref": promotion.image_ref, "image_digest": promotion.digest,
            "image_runtime": promotion.runtime,
            "model_name": promotion.model_name, "model_version": promotion.model_version,
            "model_run_id": promotion.model_run_id, "registry_model_version": promotion.registry_model_version,
            "source_image_ref": promotion.source_image_ref, "promoted_from": promotion.source_stack, "bootstrap": ""}


def in_flight(s: StackSettings) -> bool:
    """A release is in flight (scripts/release.py): the candidate is not yet what the stack serves."""
    return s.serving.container_app.stable_revision is not None


def batch_version(s: StackSettings, candidate: pulumi.Input[str]) -> pulumi.Input[str]:
    """The batch job scores with the version the stack serves: the stable revision's while a release is in flight,
    so a candidate that fails its smoke test never scores a batch."""
    held = s.serving.container_app.stable_model_version
    return held if in_flight(s) and held else candidate


def batch_output(job, version: pulumi.Input[str]) -> dict[str, Any]:
    return {"databricks_batch_job_id": job.id if job is not None else "",
            "batch_model_version": version if job is not None else ""}


def log_source(s: StackSettings) -> kql.LogSource:
    if s.serving.target == "aks":
        return kql.aks(CONTAINER_NAME, s.serving.aks.namespace)
    return kql.container_apps(s.names.container_app)


def drift_job(s: StackSettings, observability: Observability) -> DriftJobArgs:
    """The drift job reads this stack's request log where log_source(s) says it lands."""
    source = log_source(s)
    # Inside the workspace the registry is the workspace's own. A promotion target's request log names the source
    # (staging) model version, in a catalog this stack's jobs cannot read: its baseline comes from this stack's copy.
    registry = "databricks-uc" if s.databricks.unity_catalog else "databricks"
    notify = tuple(dict.fromkeys((*s.observability.alert_emails, *s.databricks.job.failure_emails)))
    return DriftJobArgs(settings=s.drift, log_analytics_customer_id=observability.customer_id,
                        app_insights_connection_string=observability.connection_string, target=s.serving.target,
                        app_name=source.app_name, namespace=s.serving.aks.namespace, notify=notify, registry_uri=registry,
                        log_analytics_workspace_id=observability.workspace_id, app_insights_id=observability.app_insights_id,
                        model_name=s.model.full_name if s.promotion.enabled else "")


def quality_job(s: StackSettings) -> QualityJobArgs:
    """The quality loop's table holds what the request log keeps; with pseudonymise its job needs the log's key."""
    mode = s.observability.request_log_personal
    return QualityJobArgs(settings=s.quality, personal=mode,
                          pseudonym_key=secret_values(s).get("REQUEST_LOG_PSEUDONYM_KEY") if mode == "pseudonymise" else None)


def container_env(s: StackSettings) -> dict[str, str]:
    return {"PORT": str(s.serving.port), "WEB_CONCURRENCY": str(s.serving.web_concurrency),
            "MAX_RECORDS": str(s.serving.max_records), "MAX_BODY_BYTES": str(s.serving.max_body_bytes),
            "BODY_TIMEOUT_S": str(s.serving.body_timeout_seconds), "REQUEST_LOG": "true", "MLOPS_ENVIRONMENT": s.environment,
            "REQUEST_LOG_PERSONAL": s.observability.request_log_personal, "MAX_IN_FLIGHT": str(s.serving.max_in_flight)}


def secret_values(s: StackSettings) -> dict[str, pulumi.Output[str]]:
    """The stack's secrets by the container variable each is for: secret Outputs, encrypted in the state."""
    key = s.request_log_pseudonym_key
    return {} if key is None else {"REQUEST_LOG_PSEUDONYM_KEY": pulumi.Output.secret(key.get_secret_value())}


def secret_env(s: StackSettings) -> dict[str, pulumi.Output[str]]:
    """The container variables whose values are secrets: on each target a platform secret the container variable
    refers to, never a plain value in the app's or pod's definition."""
    return secret_values(s) if s.observability.request_log_personal == "pseudonymise" else {}


def retired_secrets(s: StackSettings) -> dict[str, pulumi.Output[str]]:
    """Secrets no variable refers to any more but still declared: the pseudonym key of a stack leaving pseudonymise.
    Container Apps refuses to delete a secret an active revision refers to ("Before you delete a secret, deploy a new
    revision that no longer references the old secret. Then deactivate all revisions that reference the secret":
    learn.microsoft.com/azure/container-apps/manage-secrets; hashicorp/terraform-provider-azurerm#22493), and during a
    release the stable revision still does. The user removes the key once that release has completed."""
    return {} if s.observability.request_log_personal == "pseudonymise" else secret_values(s)


def serve(s: StackSettings, image: pulumi.Output[str], group: resources.ResourceGroup, observability: Observability,
          registry: Registry) -> dict[str, pulumi.Output[str]]:
    """The serving workload on the configured target (its endpoint_url and latest_revision_name outputs); each
    target's SDK is imported only when used."""
    if s.serving.target == "aks":
        from infra.aks import AksArgs, AksService

        aks = AksService("aks", AksArgs(
            resource_group_name=group.name, location=s.location, names=s.names, serving=s.serving,
            log_analytics_workspace_id=observability.workspace_id, registry=registry.registry, image=image,
            env=container_env(s), secret_env=secret_env(s), tags=s.tags, alerts=s.observability,
            action_group_id=observability.action_group.id))
        none = pulumi.Output.from_input("")
        return {"endpoint_url": aks.endpoint_url, "latest_revision_name": none, "candidate_url": none,
                "serving_revision": none, "candidate_weight": none}
    from infra.containerapp import ContainerAppArgs, ContainerAppService

    service = ContainerAppService("containerapp", ContainerAppArgs(
        resource_group_name=group.name, location=s.location, environment_name=s.names.container_app_environment,
        app_name=s.names.container_app,
        serving=s.serving, log_analytics_workspace_id=observability.workspace_id, image=image,
        registry_server=registry.login_server, pull_identity_id=registry.pull_identity.id,
        acr_pull_role_assignment=registry.pull_role_assignment, env=container_env(s), secret_env=secret_env(s),
        retired_secrets=retired_secrets(s), tags=s.tags))
    return {"endpoint_url": service.endpoint_url, "latest_revision_name": service.latest_revision_name,
            "candidate_url": service.candidate_url, "serving_revision": service.serving_revision,
            # what a release left: the candidate's traffic (scripts/release.py reads a failed shift from it)
            "candidate_weight": pulumi.Output.from_input(str(s.serving.container_app.latest_weight) if in_flight(s) else "")}
