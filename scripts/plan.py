"""Print what a stack declares, without any cloud: the real program under Pulumi's mocks.

    python -m scripts.plan --stack prod [--target aks] [--bootstrap | --greenfield] [--json] [--data TABLE]
    python -m scripts.plan --bench          # evaluation time of every stack and target (target: <= 5 s)

The model is resolved for real from a local sqlite registry: `.local/plan/mlflow.db`, where a small
model is trained once under the stack's model name (or pass --tracking-uri). --bootstrap shows the
first-deploy path instead (no version yet); --greenfield the very first `up` on an empty subscription
(no workspace, no registry: the program's own lookups answer 404, as ARM does). Also prints the
program's evaluation time. A stack the program refuses prints the error and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".local" / "plan"

# type -> the input paths worth showing a reviewer
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "azure-native:resources:ResourceGroup": ("resourceGroupName", "location"),
    "azure-native:operationalinsights:Workspace": ("workspaceName", "retentionInDays", "workspaceCapping.dailyQuotaGb"),
    "azure-native:applicationinsights:Component": ("resourceName", "ingestionMode"),
    "azure-native:monitor:ActionGroup": ("actionGroupName", "groupShortName", "emailReceivers", "webhookReceivers"),
    "azure-native:monitor:ScheduledQueryRule": ("ruleName", "displayName", "enabled", "severity", "windowSize",
                                                "criteria.allOf[0].operator", "criteria.allOf[0].threshold"),
    "azure-native:operationalinsights:SavedSearch": ("displayName",),
    "azure-native:containerregistry:Registry": ("registryName", "sku.name", "adminUserEnabled", "zoneRedundancy"),
    "azure-native:managedidentity:UserAssignedIdentity": ("resourceName",),
    "azure-native:authorization:RoleAssignment": ("roleDefinitionId", "principalId", "scope"),
    "azure-native:monitor:DiagnosticSetting": ("resourceUri", "workspaceId", "logs"),
    "azure-native:databricks:Workspace": ("workspaceName", "sku.name", "managedResourceGroupId"),
    "databricks:index/workspaceFile:WorkspaceFile": ("path",),
    "databricks:index/mlflowExperiment:MlflowExperiment": ("name",),
    "databricks:index/registeredModel:RegisteredModel": ("catalogName", "schemaName", "name"),
    "databricks:index/mlflowModel:MlflowModel": ("name",),
    "databricks:index/job:Job": ("name", "jobClusters[0].newCluster.nodeTypeId", "jobClusters[0].newCluster.numWorkers",
                                 "schedule.quartzCronExpression", "timeoutSeconds"),
    "docker:index/image:Image": ("imageName", "build.platform"),
    "azure-native:app:ManagedEnvironment": ("environmentName", "zoneRedundant", "appLogsConfiguration.destination"),
    "azure-native:app:ContainerApp": ("containerAppName", "configuration.ingress.allowInsecure",
                                      "configuration.ingress.traffic", "template.revisionSuffix",
                                      "template.containers[0].image", "template.containers[0].resources",
                                      "template.scale.minReplicas", "template.scale.maxReplicas"),
    "azure-native:containerservice:ManagedCluster": ("resourceName", "agentPoolProfiles[0].vmSize",
                                                     "agentPoolProfiles[0].count", "agentPoolProfiles[0].maxCount",
                                                     "addonProfiles.omsagent.enabled"),
    "kubernetes:apps/v1:Deployment": ("metadata.namespace", "spec.replicas", "spec.template.spec.containers[0].image"),
    "kubernetes:core/v1:Service": ("spec.type",),
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": ("spec.minReplicas", "spec.maxReplicas"),
    "kubernetes:policy/v1:PodDisruptionBudget": ("spec.maxUnavailable",),
    "kubernetes:core/v1:ConfigMap": ("metadata.namespace", "metadata.name", "data.pod-annotation-based-scraping"),
    "azure-native:monitor:AzureMonitorWorkspace": ("azureMonitorWorkspaceName",),
    "azure-native:alertsmanagement:PrometheusRuleGroup": ("ruleGroupName", "clusterName", "interval"),
}


def pick(value: Any, path: str) -> Any:
    for part in path.replace("]", "").replace("[", ".").split("."):
        if isinstance(value, list):
            value = value[int(part)] if part.isdigit() and int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def local_registry(stack: str, table: Path | None = None) -> str:
    """A sqlite registry holding a champion under the stack's model name, trained once (on `table`, or the model
    module's example data), then reused."""
    from infra import settings, stack_files
    from training.local_registry import ensure_champion

    s = settings.from_values(stack, stack_files.stack_values(stack), {})
    uri, _ = ensure_champion(STATE, s.model.full_name, rows=4000, seed=11, environment="plan", module=s.model.module,
                             table=table, say=lambda text: print(f"plan: {text}", file=sys.stderr))
    return uri


def bench(imported: float, repeats: int = 3) -> int:
    """Per stack and target: the first evaluation (SDK imports, context assembly) and the best of the rest."""
    from infra import stack_files
    from testing import mockcloud

    print(f"mock layer import: {imported:.2f} s")
    for stack in stack_files.stacks():
        uri = local_registry(stack)
        for target in ("containerapps", "aks"):
            overrides = {"model.trackingUri": uri, "model.registryUri": uri, "image.wheelhouse": False,
                         "image.contextDir": str(STATE / stack / "context"), "serving.target": target}
            times = []
            for _ in range(repeats):
                with contextlib.redirect_stdout(io.StringIO()):
                    times.append(mockcloud.evaluate(stack, overrides).seconds)
            print(f"{stack:8} {target:13} first {times[0]:5.2f} s   best of next {repeats - 1}: {min(times[1:]):5.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--bench", action="store_true", help="time the evaluation of every stack and target")
    parser.add_argument("--target", choices=("containerapps", "aks"), help="override serving.target")
    parser.add_argument("--tracking-uri", help="resolve the model here instead of .local/plan/mlflow.db")
    parser.add_argument("--bootstrap", action="store_true", help="show the first deploy: no model version yet")
    parser.add_argument("--greenfield", action="store_true",
                        help="an empty subscription: no workspace, the model resolved where the stack file says")
    parser.add_argument("--json", action="store_true", help="every resource with all its inputs, as JSON")
    parser.add_argument("--data", type=Path, help="the table the local champion is trained on (default: the model "
                                                  "module's example data)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from pulumi import RunError

    from testing import mockcloud, platform_rules

    imported = time.perf_counter() - started
    if args.bench:
        return bench(imported)
    overrides: dict[str, Any] = {"image.wheelhouse": False, "image.contextDir": str(STATE / args.stack / "context")}
    if args.greenfield:
        uri = "the stack's own Databricks workspace, once it exists"
    else:
        if args.bootstrap:
            uri = f"sqlite:///{STATE / 'empty.db'}"
            STATE.mkdir(parents=True, exist_ok=True)
        else:
            uri = args.tracking_uri or local_registry(args.stack, args.data)
        overrides.update({"model.trackingUri": uri, "model.registryUri": uri})
    if args.target:
        overrides["serving.target"] = args.target
    if args.bootstrap:
        overrides["model.allowBootstrap"] = True
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation = mockcloud.evaluate(args.stack, overrides, greenfield=args.greenfield)
    except RunError as error:  # what `pulumi up` would print, without a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"resources": [{"type": r.typ, "name": r.name, "inputs": r.inputs} for r in evaluation.custom],
                          "outputs": evaluation.outputs}, indent=2, default=str))
        return 0
    print(f"stack {args.stack}: {len(evaluation.custom)} resources (model resolved from {uri})\n")
    for resource in evaluation.custom:
        fields = KEY_FIELDS.get(resource.typ, ())
        shown = ", ".join(f"{f}={json.dumps(pick(resource.inputs, f), default=str)}" for f in fields
                          if pick(resource.inputs, f) is not None)
        print(f"  {resource.typ:55} {resource.name}\n      {shown}" if shown else f"  {resource.typ:55} {resource.name}")
    print("\noutputs:")
    for key, value in sorted(evaluation.outputs.items()):
        print(f"  {key:28} {value}")
    results = platform_rules.check(evaluation)
    print(f"\nplatform rules (testing/platform_rules/): {sum(r.ok for r in results)} of {len(results)} hold")
    print(platform_rules.report(results))
    print(f"\nevaluation: {evaluation.seconds:.2f} s under mocks (plus {imported:.2f} s importing the mock layer)")
    return 0 if all(r.ok for r in results) else 2


def close_event_loops() -> None:
    """Close the loops Pulumi's mocks ran on (the main thread's and its worker threads') while the interpreter still
    stands. Left to its shutdown, a loop's __del__ may run after its self-pipe socket was freed and print a ValueError
    traceback (runs of tests/infra/test_greenfield.py caught one), though the plan itself was printed whole."""
    for found in gc.get_objects():
        if isinstance(found, asyncio.AbstractEventLoop) and not found.is_closed() and not found.is_running():
            found.close()


if __name__ == "__main__":
    try:
        code = main()
    finally:
        close_event_loops()
    raise SystemExit(code)
