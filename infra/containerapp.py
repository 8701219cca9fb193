"""Serving on Azure Container Apps: a managed environment logging to Log Analytics and the scoring app.

Revisions and traffic (activeRevisionsMode Multiple). Each `pulumi up` that changes the image makes
a new revision named `<app>--v<model version>-<digest[:8]>`; `serving.containerApp.latestWeight`
is its share and `pinnedRevisions` keep older revisions serving the rest.

  canary     latestWeight: 10, pinnedRevisions: [{revision: ca-credit-prod--v6-1a2b3c4d, weight: 90}]
  shift      raise latestWeight step by step (lowering the pinned weight) and `pulumi up` each time
  complete   latestWeight: 100, pinnedRevisions: []
  roll back  latestWeight: 0, pinnedRevisions: [{revision: <the previous revision>, weight: 100}], then
             `pulumi up`; the bad revision stays deployed with no traffic until the next image replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native.app as app
import pulumi_azure_native.operationalinsights as operationalinsights

from infra.settings import ContainerAppSettings, ServingSettings

CONTAINER_NAME = "scoring"


@dataclass(frozen=True)
class ContainerAppArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    environment_name: str
    app_name: str
    serving: ServingSettings
    log_analytics_workspace_name: pulumi.Input[str]
    log_analytics_customer_id: pulumi.Input[str]
    image: pulumi.Input[str]             # repo digest: <server>/<repo>@sha256:...
    model_version: pulumi.Input[str]   # known at deploy time when prod promotes staging's version
    registry_server: pulumi.Input[str]
    pull_identity_id: pulumi.Input[str]  # user-assigned identity holding AcrPull
    acr_pull_role_assignment: pulumi.Resource
    env: dict[str, str]
    tags: dict[str, str]


def revision_suffix(model_version: str, digest_ref: str) -> str:
    """v<version>-<first 8 hex of the digest>: readable, and new whenever the image changes."""
    digest = digest_ref.rsplit("sha256:", 1)[-1]
    return f"v{model_version}-{digest[:8]}".lower()


def traffic(settings: ContainerAppSettings) -> list[app.TrafficWeightArgs]:
    weights = [app.TrafficWeightArgs(latest_revision=True, weight=settings.latest_weight)]
    weights += [app.TrafficWeightArgs(revision_name=p.revision, weight=p.weight) for p in settings.pinned_revisions]
    return weights


def probes(port: int) -> list[app.ContainerAppProbeArgs]:
    """Startup waits for the process; liveness restarts a hung one; readiness gates traffic on the warmed model."""
    def http(kind: str, path: str, period: int, failures: int, initial: int = 0) -> app.ContainerAppProbeArgs:
        return app.ContainerAppProbeArgs(type=kind, http_get=app.ContainerAppProbeHttpGetArgs(path=path, port=port),
                                         period_seconds=period, failure_threshold=failures, timeout_seconds=3,
                                         initial_delay_seconds=initial)
    return [http("Startup", "/health", 2, 30, 1), http("Liveness", "/health", 10, 3), http("Readiness", "/ready", 5, 3)]


class ContainerAppService(pulumi.ComponentResource):
    endpoint_url: pulumi.Output[str]

    def __init__(self, name: str, args: ContainerAppArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:ContainerAppService", name, None, opts)
        s = args.serving.container_app
        keys = operationalinsights.get_shared_keys_output(resource_group_name=args.resource_group_name,
                                                          workspace_name=args.log_analytics_workspace_name,
                                                          opts=pulumi.InvokeOutputOptions(parent=self))
        self.environment = app.ManagedEnvironment(
            f"{name}-environment", environment_name=args.environment_name, resource_group_name=args.resource_group_name,
            location=args.location, zone_redundant=s.zone_redundant,
            vnet_configuration=(app.VnetConfigurationArgs(infrastructure_subnet_id=s.infrastructure_subnet_id)
                                if s.infrastructure_subnet_id else None),
            app_logs_configuration=app.AppLogsConfigurationArgs(
                destination="log-analytics",
                log_analytics_configuration=app.LogAnalyticsConfigurationArgs(
                    customer_id=args.log_analytics_customer_id,
                    shared_key=pulumi.Output.secret(keys.apply(lambda k: k.primary_shared_key)))),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        image = pulumi.Output.from_input(args.image)
        self.app = app.ContainerApp(
            f"{name}-app", container_app_name=args.app_name, resource_group_name=args.resource_group_name,
            location=args.location, managed_environment_id=self.environment.id,
            identity=app.ManagedServiceIdentityArgs(type="UserAssigned", user_assigned_identities=[args.pull_identity_id]),
            configuration=app.ConfigurationArgs(
                active_revisions_mode="Multiple",
                ingress=app.IngressArgs(external=True, target_port=args.serving.port, allow_insecure=False, transport="auto",
                                        traffic=traffic(s)),
                # Pull by identity: no password, no secret in the app.
                registries=[app.RegistryCredentialsArgs(server=args.registry_server, identity=args.pull_identity_id)]),
            template=app.TemplateArgs(
                revision_suffix=pulumi.Output.all(args.model_version, image).apply(lambda v: revision_suffix(*v)),
                containers=[app.ContainerArgs(
                    name=CONTAINER_NAME, image=image, probes=probes(args.serving.port),
                    resources=app.ContainerResourcesArgs(cpu=s.cpu, memory=f"{s.memory_gi:g}Gi"),
                    env=[app.EnvironmentVarArgs(name=k, value=v) for k, v in args.env.items()])],
                scale=app.ScaleArgs(min_replicas=s.min_replicas, max_replicas=s.max_replicas, rules=[app.ScaleRuleArgs(
                    name="http-concurrency", http=app.HttpScaleRuleArgs(metadata={"concurrentRequests": str(s.concurrency)}))])),
            tags=args.tags,
            # The identity must hold AcrPull before the first revision pulls its image.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.acr_pull_role_assignment]))
        self.endpoint_url = self.app.configuration.apply(lambda c: f"https://{c.ingress.fqdn}" if c and c.ingress else "")
        self.register_outputs({"endpoint_url": self.endpoint_url})
