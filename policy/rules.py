"""Security and reliability rules as code: pulumi_policy ResourceValidationPolicy objects, all mandatory.

Properties are read in the engine's (camelCase) names, as a policy pack receives them. Kept apart
from policy/__main__.py (which constructs the PolicyPack and so starts a server) so tests can call
each policy's `validate` directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

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
