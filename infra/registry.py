"""The stack's container registry, the identity that pulls from it, and its diagnostics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.containerregistry as containerregistry
import pulumi_azure_native.managedidentity as managedidentity
import pulumi_azure_native.monitor as monitor

from infra.settings import RegistrySettings

ACR_PULL_ROLE_ID = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # built-in AcrPull: pull only, nothing broader
# A new role assignment takes effect within minutes, not at once (microsoft/GitHub-Copilot-for-Azure#1701: "1-5
# minutes"; learn.microsoft.com/azure/role-based-access-control/troubleshooting#role-assignment-changes-are-not-being-
# detected). A revision that pulls before then fails, and Container Apps retries it until the deployment times out.
RBAC_PROPAGATION_SECONDS = 300


@dataclass(frozen=True)
class RegistryArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    identity_name: str
    settings: RegistrySettings
    log_analytics_workspace_id: pulumi.Input[str]
    tags: dict[str, str]
    protect: bool = False  # the registry holds every image a rollback can pin


def role_definition_id(scope_id: str, role_id: str = ACR_PULL_ROLE_ID) -> str:
    """/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<role>, from any id in the subscription
    (no extra lookup of the subscription id)."""
    subscription = "/".join(scope_id.split("/")[:3])
    return f"{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"


def grant_acr_pull(name: str, registry: containerregistry.Registry, principal_id: pulumi.Input[str],
                   parent: pulumi.Resource) -> authorization.RoleAssignment:
    """AcrPull on this registry only, for a managed identity (a service principal, so no directory lookup)."""
    return authorization.RoleAssignment(
        name, principal_id=principal_id, principal_type="ServicePrincipal", scope=registry.id,
        role_definition_id=registry.id.apply(role_definition_id), description="pull scoring images",
        opts=pulumi.ResourceOptions(parent=parent))


def propagation_wait(created_on: str | None, seconds: float, now: datetime | None = None) -> float:
    """What is left of `seconds` since the assignment was created (ARM's createdOn): all of it without one."""
    if not created_on:
        return seconds
    created = datetime.fromisoformat(created_on.replace("Z", "+00:00"))
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    elapsed = ((now or datetime.now(UTC)) - created).total_seconds()
    return max(0.0, min(seconds, seconds - elapsed))


class RbacPropagationProvider(dynamic.ResourceProvider):
    """Waits, once per assignment, until a new role assignment has had time to propagate: no cloud call."""

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        time.sleep(propagation_wait(props.get("created_on"), float(props["seconds"])))
        return dynamic.CreateResult(id_=str(props["assignment_id"]), outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = olds.get("assignment_id") != news.get("assignment_id")  # a new assignment waits again
        return dynamic.DiffResult(changes=changed, replaces=["assignment_id"] if changed else [],
                                  delete_before_replace=True)


class RbacPropagation(dynamic.Resource, module="mlops", name="RbacPropagation"):
    """Depend on this, not on the assignment, for anything that acts with the granted role at once (the first
    revision's image pull). It waits only on the `up` that creates the assignment, and only for what is left of
    RBAC_PROPAGATION_SECONDS (an assignment an earlier `up` made, staging's bootstrap say, has propagated)."""

    def __init__(self, name: str, assignment: authorization.RoleAssignment, seconds: float = RBAC_PROPAGATION_SECONDS,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"assignment_id": assignment.id, "created_on": assignment.created_on, "seconds": seconds}
        super().__init__(RbacPropagationProvider(), name, props,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[assignment])))


class Registry(pulumi.ComponentResource):
    registry: containerregistry.Registry
    login_server: pulumi.Output[str]
    pull_identity: managedidentity.UserAssignedIdentity
    pull_role_assignment: authorization.RoleAssignment

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        # Admin user off: pushes use an Entra token exchanged for an ACR token, pulls use the identity below.
        self.registry = containerregistry.Registry(
            f"{name}-acr", registry_name=s.name, resource_group_name=args.resource_group_name, location=args.location,
            sku=containerregistry.SkuArgs(name=s.sku), admin_user_enabled=False, anonymous_pull_enabled=False,
            zone_redundancy="Enabled" if s.zone_redundancy else "Disabled", tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        self.login_server = self.registry.login_server
        # User-assigned, so it exists (and holds AcrPull) before the first container app revision pulls.
        self.pull_identity = managedidentity.UserAssignedIdentity(
            f"{name}-pull-identity", resource_name_=args.identity_name, resource_group_name=args.resource_group_name,
            location=args.location, tags=args.tags, opts=child)
        self.pull_role_assignment = grant_acr_pull(f"{name}-acr-pull", self.registry, self.pull_identity.principal_id, self)
        self.diagnostics = monitor.DiagnosticSetting(
            f"{name}-diagnostics", name="to-log-analytics", resource_uri=self.registry.id,
            workspace_id=args.log_analytics_workspace_id,
            logs=[monitor.DiagnosticsLogSettingsArgs(category_group="allLogs", enabled=True)],
            metrics=[monitor.DiagnosticsMetricSettingsArgs(category="AllMetrics", enabled=True)], opts=child)
        self.register_outputs({"login_server": self.login_server})
