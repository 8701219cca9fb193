"""Security and reliability rules as code: pulumi_policy ResourceValidationPolicy objects (POLICIES) and one
StackValidationPolicy (STACK_POLICIES: an app's auth config and environment are resources of their own), all mandatory.

Properties are read in the engine's (camelCase) names, as a policy pack receives them. Kept apart
from policy/__main__.py (which constructs the PolicyPack and so starts a server) so tests can call
each policy's `validate` directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
# The only roles this stack grants, each on the only kind of scope it may have.
ALLOWED_ROLES = {ACR_PULL: ("AcrPull", "/providers/microsoft.containerregistry/registries/"),
                 LOG_ANALYTICS_READER: ("Log Analytics Reader", "/providers/microsoft.operationalinsights/workspaces/"),
                 METRICS_PUBLISHER: ("Monitoring Metrics Publisher", "/providers/microsoft.insights/components/")}
REQUIRED_TAGS = ("environment", "project", "cost-centre")
PROD = "prod"
CONTAINER_APP = "azure-native:app:ContainerApp"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SERVICE = "kubernetes:core/v1:Service"
AUTH_CONFIG = "azure-native:app:ContainerAppsAuthConfig"
MANAGED_ENVIRONMENT = "azure-native:app:ManagedEnvironment"
INTERNAL_LB = "service.beta.kubernetes.io/azure-load-balancer-internal"
# Azure resources of this stack that take a tag map (SavedSearch tags are a list; role assignments and
# diagnostic settings take none).
TAGGABLE = {
    "azure-native:resources:ResourceGroup", "azure-native:operationalinsights:Workspace",
    "azure-native:applicationinsights:Component", "azure-native:monitor:ActionGroup",
    "azure-native:monitor:ScheduledQueryRule", "azure-native:containerregistry:Registry",
    "azure-native:managedidentity:UserAssignedIdentity", "azure-native:databricks:Workspace",
    "azure-native:app:ManagedEnvironment", CONTAINER_APP, "azure-native:containerservice:ManagedCluster",
}


def _get(props: Mapping[str, Any] | None, *path: str | int) -> Any:
    node: Any = props
    for key in path:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and len(node) > key else None
        else:
            node = node.get(key) if isinstance(node, Mapping) else None
    return node


def _containers(args: ResourceValidationArgs) -> Iterable[Mapping[str, Any]]:
    if args.resource_type == CONTAINER_APP:
        return _get(args.props, "template", "containers") or []
    if args.resource_type == DEPLOYMENT:
        return _get(args.props, "spec", "template", "spec", "containers") or []
    return []


def _environment(args: ResourceValidationArgs) -> str | None:
    return _get(args.props, "tags", "environment") or _get(args.props, "metadata", "labels", "environment")


def acr_admin_disabled(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == "azure-native:containerregistry:Registry" and args.props.get("adminUserEnabled") is not False:
        report("the registry's admin user must be disabled (adminUserEnabled: false); push with an Entra token, "
               "pull with a managed identity", None)


def no_registry_passwords(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != CONTAINER_APP:
        return
    for registry in _get(args.props, "configuration", "registries") or []:
        if registry.get("passwordSecretRef") or registry.get("username") or not registry.get("identity"):
            report(f"registry {registry.get('server')!r} must be pulled by managed identity, without user name or password",
                   None)


def https_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    ingress = _get(args.props, "configuration", "ingress")
    if args.resource_type == CONTAINER_APP and ingress and ingress.get("allowInsecure") is not False:
        report("container app ingress must be HTTPS only (allowInsecure: false)", None)


def images_by_digest(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for container in _containers(args):
        if "@sha256:" not in str(container.get("image", "")):
            report(f"container {container.get('name')!r} must reference its image by digest (@sha256:), "
                   f"not by tag: {container.get('image')!r}", None)


def only_acr_pull_roles(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "azure-native:authorization:RoleAssignment":
        return
    role = str(args.props.get("roleDefinitionId", ""))
    allowed = ALLOWED_ROLES.get(role.lower().rsplit("/roledefinitions/", 1)[-1]) if "/roledefinitions/" in role.lower() else None
    if allowed is None:
        report(f"role assignments in this stack grant AcrPull (on the registry), or for the drift job Log Analytics Reader "
               f"(on the stack's workspace) and Monitoring Metrics Publisher (on its Application Insights) only; got "
               f"{role!r} (Owner, Contributor and other broad roles are not allowed)", None)
        return
    label, scope = allowed
    target = str(args.props.get("scope", "")).lower()
    if scope not in target or not target.rstrip("/").split(scope, 1)[1] or "/" in target.rstrip("/").split(scope, 1)[1]:
        report(f"{label} must be scoped to exactly one resource of its kind ({scope.strip('/')}), "
               f"not {args.props.get('scope')!r}", None)


def prod_min_replicas(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if _environment(args) != PROD:
        return
    if args.resource_type == CONTAINER_APP:
        replicas = _get(args.props, "template", "scale", "minReplicas") or 0
    elif args.resource_type == HPA:  # the Deployment leaves its replica count to the autoscaler
        replicas = _get(args.props, "spec", "minReplicas") or 0
    else:
        return
    if replicas < 2:
        report(f"prod needs at least 2 replicas for availability, got {replicas:g}", None)


def probes_present(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for container in _containers(args):
        if args.resource_type == CONTAINER_APP:
            kinds = {probe.get("type") for probe in container.get("probes") or []}
            missing = {"Liveness", "Readiness"} - kinds
        else:
            missing = {kind for kind in ("livenessProbe", "readinessProbe") if not container.get(kind)}
        if missing:
            report(f"container {container.get('name')!r} needs {', '.join(sorted(missing))} probe(s)", None)


def restricted_pods(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != DEPLOYMENT:
        return
    for container in _containers(args):
        security = container.get("securityContext") or {}
        wrong = [key for key, wanted in (("runAsNonRoot", True), ("allowPrivilegeEscalation", False),
                                         ("readOnlyRootFilesystem", True)) if security.get(key) is not wanted]
        if wrong:
            report(f"container {container.get('name')!r} must set {', '.join(wrong)} (non-root, no escalation, "
                   "read-only root filesystem)", None)


def required_tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in TAGGABLE:
        return
    tags = args.props.get("tags") or {}
    missing = [tag for tag in REQUIRED_TAGS if not tags.get(tag)]
    if missing:
        report(f"missing tag(s) {', '.join(missing)}", None)


def _policy(name: str, description: str, validate) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY)


POLICIES: list[ResourceValidationPolicy] = [
    _policy("acr-admin-user-disabled", "Container registries have the admin user disabled.", acr_admin_disabled),
    _policy("no-registry-passwords", "Container apps pull by managed identity, never with a password.", no_registry_passwords),
    _policy("containerapp-https-only", "Container app ingress is HTTPS only.", https_only),
    _policy("images-by-digest", "Workloads reference images by digest, never by a mutable tag.", images_by_digest),
    _policy("acr-pull-only-role-assignments", "Role assignments grant AcrPull on the registry, Log Analytics Reader "
            "on the stack's workspace or Monitoring Metrics Publisher on its Application Insights, nothing broader.",
            only_acr_pull_roles),
    _policy("prod-min-two-replicas", "Prod serving keeps at least two replicas (AKS: the autoscaler's minimum).",
            prod_min_replicas),
    _policy("probes-present", "Serving containers have liveness and readiness probes.", probes_present),
    _policy("restricted-pods", "Pods run non-root, without privilege escalation, on a read-only root filesystem.",
            restricted_pods),
    _policy("required-tags", "Taggable resources carry environment, project and cost-centre tags.", required_tags),
]


# ---- no anonymous public scoring endpoint (a stack policy: the auth config and the environment are separate) ----

def _depends_on(resource: PolicyResource, other: PolicyResource) -> bool:
    """Linked by the engine's dependencies: known in a preview too, unlike the ids the links are made of."""
    direct = [*resource.dependencies, *(d for deps in resource.property_dependencies.values() for d in deps)]
    return any(d.urn == other.urn for d in direct)


def requires_entra_token(auth: PolicyResource) -> bool:
    props = auth.props
    aad = _get(props, "identityProviders", "azureActiveDirectory") or {}
    return (_get(props, "platform", "enabled") is True
            and _get(props, "globalValidation", "unauthenticatedClientAction") in ("Return401", "Return403")
            and aad.get("enabled") is not False and bool(_get(aad, "registration", "clientId"))
            and bool(_get(aad, "validation", "defaultAuthorizationPolicy", "allowedApplications")))


def _internal_environment(container_app: PolicyResource, resources: list[PolicyResource]) -> bool:
    environments = [r for r in resources if r.resource_type == MANAGED_ENVIRONMENT and _depends_on(container_app, r)]
    return bool(environments) and all(_get(e.props, "vnetConfiguration", "internal") is True for e in environments)


def _public_container_apps(resources: list[PolicyResource]) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == CONTAINER_APP
            and _get(r.props, "configuration", "ingress", "external") is True
            and not _internal_environment(r, resources)]


def no_anonymous_public_endpoint(args: StackValidationArgs, report: ReportViolation) -> None:
    """A Container App reachable from the internet needs an auth config that turns away callers without a token of a
    listed client application; an AKS Service of type LoadBalancer gets only a private IP."""
    auth_configs = [r for r in args.resources if r.resource_type == AUTH_CONFIG]
    for container_app in _public_container_apps(args.resources):
        guarding = [a for a in auth_configs if _depends_on(a, container_app) and requires_entra_token(a)]
        if not guarding:
            report(f"container app {container_app.name!r} has public (external) ingress in a non-internal environment "
                   "but no auth config requiring an Entra token of listed client applications (platform enabled, "
                   "unauthenticatedClientAction Return401, allowedApplications set)", container_app.urn)
    for service in args.resources:
        if service.resource_type == SERVICE and _get(service.props, "spec", "type") == "LoadBalancer" \
                and str(_get(service.props, "metadata", "annotations", INTERNAL_LB)).lower() != "true":
            report(f"service {service.name!r} is a public load balancer (plain HTTP): annotate it "
                   f"{INTERNAL_LB}: \"true\" or use ClusterIP", service.urn)


STACK_POLICIES: list[StackValidationPolicy] = [
    StackValidationPolicy(name="no-anonymous-public-scoring-endpoint",
                          description="No anonymous public scoring endpoint: a Container App with external ingress in "
                                      "a public environment requires Entra authentication of listed client "
                                      "applications; an AKS LoadBalancer Service is internal.",
                          validate=no_anonymous_public_endpoint, enforcement_level=EnforcementLevel.MANDATORY),
]
