"""The policy pack's rules: every stack's declared resources pass; each deliberately bad resource is caught."""

from __future__ import annotations

import copy

import pytest
from pulumi_policy import EnforcementLevel, PolicyResourceOptions, ResourceValidationArgs

from infra import mockcloud
from policy.rules import POLICIES

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
