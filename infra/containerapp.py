"""Serving on Azure Container Apps: a managed environment whose logs reach the stack's Log Analytics
workspace through a diagnostic setting (the `azure-monitor` destination: no shared key is read, so a
Reader can preview), and the scoring app.

Revisions. Any change to the template (image, CPU, memory, replicas, probes, environment) makes a new
revision; anything else (ingress, traffic, a secret's value) does not: the template carries a version of
the secrets for that (SECRETS_VERSION). The template sets no revision suffix: Azure gives
each new revision a unique one, because a suffix can never be reused in an app (a rollback to an
earlier image, or a CPU change without a new image, would otherwise send an old suffix again and be
refused). An unchanged template sends nothing, so a no-op `up` makes no revision. The stack output
`latest_revision_name` names the revision serving now.

Lifecycle. Single revision mode: the new revision takes all traffic once it is ready and Azure
deactivates the one before, so superseded revisions stop running (and billing). Only while a traffic
split is configured does the app run in Multiple mode:

  canary     latestWeight: 10, pinnedRevisions: [{revision: <latest_revision_name before the deploy>, weight: 90}]
  shift      raise latestWeight step by step (lowering the pinned weight) and `pulumi up` each time
  complete   latestWeight: 100, pinnedRevisions: [] -> back to Single mode: every other revision is deactivated
  roll back  set the image back by config (prod: promotion.pinnedDigest), or during a canary pin the
             previous revision at 100 and latestWeight: 0

Who may call it (serving.auth.mode):

  entra      built-in authentication (an auth config named "current"): the platform's auth sidecar answers 401 to
             any request without a valid Entra token for the API's audience from one of allowedClientApplications,
             before the request reaches the app. Health probes are not requests through the ingress: the platform
             sends them to the container's port on the replica, so /health and /ready need no token.
  internal   the environment has only a VNet-internal load balancer (no public IP) in the configured subnet.
  anonymous  public and unauthenticated; needs serving.auth.anonymousReason, and the mandatory policy pack still
             refuses it (an exception takes a reviewed reason and the pack's owner).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
import pulumi_azure_native.app as app
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.monitor as monitor

from infra import ingress_opener, kql
from infra.registry import RbacPropagation
from infra.settings import AuthSettings, ContainerAppSettings, ServingSettings

CONTAINER_NAME = "scoring"


@dataclass(frozen=True)
class ContainerAppArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    environment_name: str
    app_name: str
    serving: ServingSettings
    log_analytics_workspace_id: pulumi.Input[str]
    image: pulumi.Input[str]             # repo digest: <server>/<repo>@sha256:...
    registry_server: pulumi.Input[str]
    pull_identity_id: pulumi.Input[str]  # user-assigned identity holding AcrPull
    acr_pull_role_assignment: authorization.RoleAssignment
    env: dict[str, str]
    secret_env: dict[str, pulumi.Output[str]]  # variable -> secret value (infra/program.py secret_env)
    tags: dict[str, str]
    # declared, no variable refers to them: a secret an old revision may still use (infra/program.py retired_secrets)
    retired_secrets: dict[str, pulumi.Output[str]] = field(default_factory=dict)


# The managed environment's log categories, each its own table: console (the request log), system (restarts) and
# HTTP (the ingress's record of every request it answered: the error-rate alert counts the 5xx it returned itself).
LOG_CATEGORIES = ("ContainerAppConsoleLogs", "ContainerAppSystemLogs", kql.HTTP_LOGS)
AUTH_CONFIG_NAME = "current"  # the only name Azure accepts for an app's auth config


def vnet(settings: ServingSettings) -> app.VnetConfigurationArgs | None:
    """internal mode: no public IP on the environment, only a load balancer inside the subnet's VNet."""
    subnet = settings.container_app.infrastructure_subnet_id
    if not subnet:
        return None
    return app.VnetConfigurationArgs(infrastructure_subnet_id=subnet, internal=settings.auth.mode == "internal")


def entra_auth(auth: AuthSettings) -> dict:
    """The auth config's arguments: Microsoft Entra only, 401 to anyone without a token of a listed client application
    for the API's audience (no login redirect: callers are programs), HTTPS only, no token store (the API keeps no
    sessions, so nothing needs a storage account or a secret)."""
    if auth.client_id is None or auth.audience is None:  # the settings require both for entra
        raise ValueError("Entra auth needs serving.auth.clientId and serving.auth.audience")
    return dict(
        platform=app.AuthPlatformArgs(enabled=True),
        global_validation=app.GlobalValidationArgs(unauthenticated_client_action=app.UnauthenticatedClientActionV2.RETURN401),
        http_settings=app.HttpSettingsArgs(require_https=True),
        login=app.LoginArgs(token_store=app.TokenStoreArgs(enabled=False)),
        identity_providers=app.IdentityProvidersArgs(azure_active_directory=app.AzureActiveDirectoryArgs(
            enabled=True,
            # No client secret: the API only validates tokens, it never signs anyone in.
            registration=app.AzureActiveDirectoryRegistrationArgs(client_id=auth.client_id, open_id_issuer=auth.issuer),
            validation=app.AzureActiveDirectoryValidationArgs(
                # v1 tokens carry the Application ID URI, v2 tokens the client id: accept both spellings of this API.
                allowed_audiences=list(dict.fromkeys([auth.audience, auth.client_id])),
                # The token's appid/azp claim: only these client applications get past the sidecar.
                default_authorization_policy=app.DefaultAuthorizationPolicyArgs(
                    allowed_applications=list(auth.allowed_client_applications))))),
    )


def revisions_mode(settings: ContainerAppSettings) -> str:
    """Single unless a traffic split is configured: Single deactivates superseded revisions, Multiple does not."""
    return "Multiple" if settings.pinned_revisions else "Single"


CANDIDATE_LABEL, STABLE_LABEL = "candidate", "stable"


def traffic(settings: ContainerAppSettings) -> list[app.TrafficWeightArgs]:
    """During a release (stableRevision) the new revision is labelled `candidate`, reachable at its label URL
    whatever its weight, and the one it replaces `stable`."""
    releasing = settings.stable_revision is not None
    weights = [app.TrafficWeightArgs(latest_revision=True, weight=settings.latest_weight,
                                     label=CANDIDATE_LABEL if releasing else None)]
    weights += [app.TrafficWeightArgs(revision_name=p.revision, weight=p.weight, label=STABLE_LABEL if releasing else None)
                for p in settings.pinned_revisions]
    return weights


def label_url(app_fqdn: str, label: str) -> str:
    """A label's own URL: <app>---<label>.<environment domain> (Container Apps' revision labels)."""
    name, domain = app_fqdn.split(".", 1)
    return f"https://{name}---{label}.{domain}"


def secret_name(variable: str) -> str:
    """An app secret's name for a container variable: lowercase letters, digits and '-' (REQUEST_LOG_PSEUDONYM_KEY ->
    request-log-pseudonym-key), what Azure accepts (testing/platform_rules/ container-apps-secrets)."""
    return variable.lower().replace("_", "-")


def secrets(secret_env: dict[str, pulumi.Output[str]]) -> list[app.SecretArgs] | None:
    """The app's secrets, one per secret variable."""
    return [app.SecretArgs(name=secret_name(variable), value=value) for variable, value in secret_env.items()] or None


# Container Apps makes no new revision when a secret's value changes, and a running revision keeps the value it started
# with until it is restarted (learn.microsoft.com/azure/container-apps/manage-secrets: "An updated or deleted secret
# doesn't automatically affect existing revisions"), while replicas it starts later read the new one: a rotated key
# would not take effect, and one revision would log two keys' pseudonyms. So the template carries a version of the
# secrets, new whenever they change: the changed template makes a new revision, which reads the new values.
SECRETS_VERSION = "MLOPS_SECRETS_VERSION"  # read by nobody: only its change matters


class SecretsVersionProvider(dynamic.ResourceProvider):
    """A random version, drawn again whenever the secrets change: nothing derived from them. No cloud call."""

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_=uuid.uuid4().hex, outs={**props, "version": uuid.uuid4().hex})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        return dynamic.DiffResult(changes=olds.get("secrets") != news.get("secrets"))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs={**news, "version": uuid.uuid4().hex})


class SecretsVersion(dynamic.Resource, module="mlops", name="SecretsVersion"):
    version: pulumi.Output[str]

    def __init__(self, name: str, secret_env: dict[str, pulumi.Output[str]],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SecretsVersionProvider(), name, {"secrets": secret_env, "version": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["secrets"])))


def env_vars(args: ContainerAppArgs, secrets_version: pulumi.Output[str] | None) -> list[app.EnvironmentVarArgs]:
    """Plain values as such, secrets by reference to the app's secret of that name, and their version."""
    versioned = ([app.EnvironmentVarArgs(name=SECRETS_VERSION, value=secrets_version)]
                 if secrets_version is not None else [])
    return [*(app.EnvironmentVarArgs(name=k, value=v) for k, v in args.env.items()), *versioned,
            *(app.EnvironmentVarArgs(name=k, secret_ref=secret_name(k)) for k in args.secret_env)]


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
        self.environment = app.ManagedEnvironment(
            f"{name}-environment", environment_name=args.environment_name, resource_group_name=args.resource_group_name,
            location=args.location, zone_redundant=s.zone_redundant,
            vnet_configuration=vnet(args.serving),
            app_logs_configuration=app.AppLogsConfigurationArgs(destination=kql.CONTAINER_APPS_DESTINATION),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        # azure-monitor destination: the diagnostic setting decides where the logs go (dedicated tables).
        self.diagnostics = monitor.DiagnosticSetting(
            f"{name}-diagnostics", name="logs-to-log-analytics", resource_uri=self.environment.id,
            workspace_id=args.log_analytics_workspace_id, log_analytics_destination_type="Dedicated",
            logs=[monitor.DiagnosticsLogSettingsArgs(category=category, enabled=True) for category in LOG_CATEGORIES],
            opts=pulumi.ResourceOptions(parent=self))
        image = pulumi.Output.from_input(args.image)
        # Entra: a new app stays closed until its auth config exists (infra/ingress_opener.py).
        restrictions: pulumi.Input[list | None] = None
        if args.serving.auth.entra:
            group: pulumi.Output[str] = pulumi.Output.from_input(args.resource_group_name)
            exists: pulumi.Output[bool] = group.apply(lambda g: ingress_opener.app_exists(g, args.app_name))
            restrictions = exists.apply(ingress_opener.closed)
        # The first revision pulls at once: wait until the identity's AcrPull has propagated (N12).
        self.pull_ready = RbacPropagation(f"{name}-acr-pull-propagation", args.acr_pull_role_assignment,
                                          opts=pulumi.ResourceOptions(parent=self))
        secrets_version = (SecretsVersion(f"{name}-secrets-version", args.secret_env,
                                          opts=pulumi.ResourceOptions(parent=self)).version if args.secret_env else None)
        self.app = app.ContainerApp(
            f"{name}-app", container_app_name=args.app_name, resource_group_name=args.resource_group_name,
            location=args.location, managed_environment_id=self.environment.id,
            identity=app.ManagedServiceIdentityArgs(type="UserAssigned", user_assigned_identities=[args.pull_identity_id]),
            configuration=app.ConfigurationArgs(
                active_revisions_mode=revisions_mode(s),
                ingress=app.IngressArgs(external=True, target_port=args.serving.port, allow_insecure=False, transport="auto",
                                        traffic=traffic(s), ip_security_restrictions=restrictions),
                # Pull by identity: no password, no secret in the app.
                registries=[app.RegistryCredentialsArgs(server=args.registry_server, identity=args.pull_identity_id)],
                secrets=secrets({**args.retired_secrets, **args.secret_env})),
            template=app.TemplateArgs(
                containers=[app.ContainerArgs(
                    name=CONTAINER_NAME, image=image, probes=probes(args.serving.port),
                    resources=app.ContainerResourcesArgs(cpu=s.cpu, memory=f"{s.memory_gi:g}Gi"),
                    env=env_vars(args, secrets_version))],
                scale=app.ScaleArgs(min_replicas=s.min_replicas, max_replicas=s.max_replicas, rules=[app.ScaleRuleArgs(
                    name="http-concurrency", http=app.HttpScaleRuleArgs(metadata={"concurrentRequests": str(s.concurrency)}))])),
            tags=args.tags,
            # The identity must hold AcrPull (propagated) before the first revision pulls its image, and the logs
            # have a destination before the first revision writes any.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.pull_ready, self.diagnostics]))
        self.auth_config = self._auth_config(name, args)
        # The configuration holds the secrets, so Pulumi marks all of it secret; the host names in it are not.
        configuration = pulumi.Output.unsecret(self.app.configuration)
        self.endpoint_url = configuration.apply(lambda c: f"https://{c.ingress.fqdn}" if c and c.ingress else "")
        self.latest_revision_name = self.app.latest_revision_name
        releasing = s.stable_revision is not None
        self.candidate_url = configuration.apply(
            lambda c: label_url(c.ingress.fqdn, CANDIDATE_LABEL) if releasing and c and c.ingress else "")
        # What serves if the release in progress fails: the stable revision until the release completes.
        self.serving_revision = (pulumi.Output.from_input(s.stable_revision) if s.stable_revision is not None
                                 else self.latest_revision_name)
        self.register_outputs({"endpoint_url": self.endpoint_url, "latest_revision_name": self.latest_revision_name,
                               "candidate_url": self.candidate_url, "serving_revision": self.serving_revision})

    def _auth_config(self, name: str, args: ContainerAppArgs) -> app.ContainerAppsAuthConfig | None:
        if not args.serving.auth.entra:
            return None
        # container_app_name from the app's output: the auth config is created after the app, on that app.
        auth = app.ContainerAppsAuthConfig(
            f"{name}-auth", auth_config_name=AUTH_CONFIG_NAME, container_app_name=self.app.name,
            resource_group_name=args.resource_group_name, **entra_auth(args.serving.auth),
            opts=pulumi.ResourceOptions(parent=self))
        self.opener = ingress_opener.IngressOpener(f"{name}-open-ingress", self.app.id, auth,
                                                   opts=pulumi.ResourceOptions(parent=self))
        return auth
