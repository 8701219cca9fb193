"""The Pulumi engine: stack references, the resources it must never delete or replace, and `changes`, its diff between
two evaluations (what a second `up` would do).
"""

from __future__ import annotations

from testing.mockcloud import Evaluation
from testing.platform_rules.common import Rule


def stack_references_qualified(ev: Evaluation) -> list[str]:
    return [f"{r.name}: StackReference {r.inputs.get('name')!r} must be <organization>/<project>/<stack>"
            for r in ev.of_type("pulumi:pulumi:StackReference") if str(r.inputs.get("name", "")).count("/") != 2]


STATEFUL = ("azure-native:resources:ResourceGroup", "azure-native:containerregistry:Registry",
            "azure-native:operationalinsights:Workspace", "azure-native:databricks:Workspace",
            "databricks:index/registeredModel:RegisteredModel", "databricks:index/mlflowModel:MlflowModel")
REGISTERED_MODELS = STATEFUL[-2:]


def stateful_resources_kept(ev: Evaluation) -> list[str]:
    """A registered model is always retained (a rename must not delete its versions); where the stack says
    `protect`, every stateful resource is protected."""
    problems = [f"{r.name}: a registered model must be retainOnDelete" for typ in REGISTERED_MODELS
                for r in ev.of_type(typ) if not r.retain_on_delete]
    if ev.config.get("protect") in (True, "true"):
        problems += [f"{r.name}: not protected in a stack with protect: true" for typ in STATEFUL
                     for r in ev.of_type(typ) if not r.protect]
    return problems


def changes(before: Evaluation, after: Evaluation) -> dict[str, str]:
    """(type, name) -> create / update / delete, as `pulumi preview` would list them: the engine diffs inputs."""
    old = {(r.typ, r.name): r for r in before.custom}
    new = {(r.typ, r.name): r for r in after.custom}
    plan = {f"{t} {n}": "create" for t, n in new.keys() - old.keys()}
    plan |= {f"{t} {n}": "delete" for t, n in old.keys() - new.keys()}
    plan |= {f"{t} {n}": "update" for (t, n) in new.keys() & old.keys() if new[(t, n)].inputs != old[(t, n)].inputs}
    return plan


RULES: tuple[Rule, ...] = (
    Rule("pulumi-stack-reference", "a StackReference is <organization>/<project>/<stack> on every backend",
         "https://www.pulumi.com/docs/iac/concepts/stacks/#stackreferences", stack_references_qualified),
    Rule("stateful-resources-kept", "protected resources are never deleted or replaced; retained ones outlive "
         "their removal from the program", "https://www.pulumi.com/docs/iac/concepts/options/protect/",
         stateful_resources_kept),
)
