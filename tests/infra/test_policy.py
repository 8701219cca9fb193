"""The policy pack's rules: every stack's declared resources pass; each deliberately bad resource is caught."""

from __future__ import annotations

import copy

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from policy.rules import POLICIES, STACK_POLICIES
from testing import mockcloud

BY_NAME = {policy.name: policy for policy in POLICIES}


def violations(typ: str, props: dict, name: str = "r") -> dict[str, list[str]]:
    args = ResourceValidationArgs(resource_type=typ, props=props, urn=f"urn:pulumi:s::p::{typ}::{name}", name=name,
                                  opts=PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None,
                                                             aliases=[], custom_timeouts=None, additional_secret_outputs=[],
                                                             parent=None),
                                  provider=None)
    found: dict[str, list[str]] = {}
    for policy in POLICIES:
        policy.validate(args, lambda message, urn=None, p=policy.name: found.setdefault(p, []).append(message))
    return found


def test_all_policies_are_mandatory():
    assert len(POLICIES) >= 8
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in POLICIES)


@pytest.mark.parametrize(("stack", "overrides"), [("dev", {}), ("staging", {}), ("prod", {}),
                                                  ("prod", {"serving.target": "aks"})])
def test_every_stack_passes(evaluate, stack, overrides):
    evaluation = evaluate(stack, overrides)
    checked = 0
    for resource in evaluation.custom:
        assert violations(resource.typ, resource.inputs, resource.name) == {}, resource.name
        checked += 1
    assert checked > 20


def _resource(evaluation: mockcloud.Evaluation, typ: str, name: str | None = None) -> tuple[str, dict]:
    candidates = [r for r in evaluation.of_type(typ) if name is None or r.name == name]
    if typ == "azure-native:authorization:RoleAssignment":  # the registry's AcrPull: registration order varies
        candidates = [r for r in candidates if r.inputs["roleDefinitionId"].endswith(ACR_PULL_ROLE_ID)]
    found = candidates[0]
    return found.typ, copy.deepcopy(found.inputs)


def _mutate(props: dict, path: list, value) -> dict:
    node = props
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return props


ACR_PULL_ROLE_ID = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
OWNER = "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
LOG_READER = "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/73c42c96-874c-492b-b04d-ab87d138a893"
PUBLISHER = "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/3913510d-42f4-4e42-8a64-420c390055eb"
APP = "azure-native:app:ContainerApp"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@pytest.mark.parametrize(("policy", "typ", "path", "value", "target"), [
    ("acr-admin-user-disabled", "azure-native:containerregistry:Registry", ["adminUserEnabled"], True, "containerapps"),
    ("no-registry-passwords", APP, ["configuration", "registries", 0],
     {"server": "x.azurecr.io", "username": "admin", "passwordSecretRef": "acr-password"}, "containerapps"),
    ("containerapp-https-only", APP, ["configuration", "ingress", "allowInsecure"], True, "containerapps"),
    ("images-by-digest", APP, ["template", "containers", 0, "image"], "x.azurecr.io/scoring:latest", "containerapps"),
    ("images-by-digest", DEPLOYMENT, ["spec", "template", "spec", "containers", 0, "image"], "x.azurecr.io/s:1", "aks"),
    ("acr-pull-only-role-assignments", "azure-native:authorization:RoleAssignment", ["roleDefinitionId"], OWNER,
     "containerapps"),
    ("acr-pull-only-role-assignments", "azure-native:authorization:RoleAssignment", ["scope"], "/subscriptions/x",
     "containerapps"),
    # Log Analytics Reader is allowed on a Log Analytics workspace only, not on the registry the first assignment targets
    ("acr-pull-only-role-assignments", "azure-native:authorization:RoleAssignment", ["roleDefinitionId"], LOG_READER,
     "containerapps"),
    # and Monitoring Metrics Publisher on an Application Insights component only
    ("acr-pull-only-role-assignments", "azure-native:authorization:RoleAssignment", ["roleDefinitionId"], PUBLISHER,
     "containerapps"),
    ("prod-min-two-replicas", APP, ["template", "scale", "minReplicas"], 1, "containerapps"),
    ("prod-min-two-replicas", "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", ["spec", "minReplicas"], 1, "aks"),
    ("probes-present", APP, ["template", "containers", 0, "probes"], [], "containerapps"),
    ("probes-present", DEPLOYMENT, ["spec", "template", "spec", "containers", 0, "readinessProbe"], None, "aks"),
    ("restricted-pods", DEPLOYMENT, ["spec", "template", "spec", "containers", 0, "securityContext", "runAsNonRoot"],
     False, "aks"),
    ("required-tags", "azure-native:containerregistry:Registry", ["tags"], {"environment": "prod"}, "containerapps"),
])
def test_each_bad_resource_is_caught(evaluate, policy, typ, path, value, target):
    evaluation = evaluate("prod", {"serving.target": target})
    resource_type, props = _resource(evaluation, typ)
    assert violations(resource_type, props) == {}
    found = violations(resource_type, _mutate(props, path, value))
    assert list(found) == [policy], found


# ---- the stack policy: no anonymous public scoring endpoint ----

def stack_violations(evaluation: mockcloud.Evaluation, change=None) -> list[str]:
    """The stack policy over every captured resource (inputs as props: the mocks echo them), linked by the
    dependencies the engine recorded; `change(resources by type)` edits them first."""
    resources = {r.urn: PolicyResource(r.typ, copy.deepcopy(r.inputs), r.urn, r.name, _OPTS, None, None, [], {})
                 for r in evaluation.custom}
    for captured in evaluation.custom:
        resources[captured.urn].dependencies = [resources[d] for d in captured.dependencies if d in resources]
    if change:
        change(resources)
    found: list[str] = []
    for policy in STACK_POLICIES:
        policy.validate(StackValidationArgs(list(resources.values())), lambda message, urn=None: found.append(message))
    return found


_OPTS = PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                              custom_timeouts=None, additional_secret_outputs=[], parent=None)
AUTH_CONFIG = "azure-native:app:ContainerAppsAuthConfig"
SERVICE = "kubernetes:core/v1:Service"


def _of(resources: dict, typ: str) -> list[PolicyResource]:
    return [r for r in resources.values() if r.resource_type == typ]


def test_the_stack_policy_is_mandatory():
    assert [p.name for p in STACK_POLICIES] == ["no-anonymous-public-scoring-endpoint"]
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in STACK_POLICIES)


@pytest.mark.parametrize(("stack", "target"), [("dev", "containerapps"), ("staging", "containerapps"),
                                               ("prod", "containerapps"), ("prod", "aks")])
def test_every_stack_has_no_anonymous_public_endpoint(evaluate, stack, target):
    evaluation = evaluate(stack, {"serving.target": target})
    assert stack_violations(evaluation) == []
    kinds = {r.typ for r in evaluation.custom}
    assert (AUTH_CONFIG in kinds) == (target == "containerapps") and (SERVICE in kinds) == (target == "aks")


def test_a_public_container_app_without_its_auth_config_is_caught(evaluate):
    evaluation = evaluate("prod")

    def drop_auth(resources: dict) -> None:
        for auth in _of(resources, AUTH_CONFIG):
            del resources[auth.urn]
    assert "no auth config requiring an Entra token" in stack_violations(evaluation, drop_auth)[0]


@pytest.mark.parametrize(("path", "value"), [(["globalValidation", "unauthenticatedClientAction"], "AllowAnonymous"),
                                             (["platform", "enabled"], False),
                                             (["identityProviders", "azureActiveDirectory", "validation",
                                               "defaultAuthorizationPolicy", "allowedApplications"], [])])
def test_an_auth_config_that_lets_anyone_in_is_caught(evaluate, path, value):
    def weaken(resources: dict) -> None:
        _mutate(_of(resources, AUTH_CONFIG)[0].props, path, value)
    assert len(stack_violations(evaluate("prod"), weaken)) == 1


def test_anonymous_mode_is_refused_unless_the_environment_is_internal(evaluate):
    subnet = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aca"
    anonymous = evaluate("dev", {"serving.auth.mode": "anonymous", "serving.auth.anonymousReason": "demo data only"})
    assert "no auth config" in stack_violations(anonymous)[0]
    internal = evaluate("dev", {"serving.auth.mode": "internal", "serving.containerApp.infrastructureSubnetId": subnet})
    assert stack_violations(internal) == []
    assert not internal.of_type(AUTH_CONFIG)


def test_a_public_load_balancer_on_aks_is_caught(evaluate):
    def public(resources: dict) -> None:
        del _of(resources, SERVICE)[0].props["metadata"]["annotations"]
    assert "is a public load balancer" in stack_violations(evaluate("prod", {"serving.target": "aks"}), public)[0]

    def cluster_ip(resources: dict) -> None:
        service = _of(resources, SERVICE)[0].props
        service["spec"]["type"], service["metadata"]["annotations"] = "ClusterIP", {}
    assert stack_violations(evaluate("prod", {"serving.target": "aks"}), cluster_ip) == []
