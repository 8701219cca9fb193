"""Where a release's smoke test (serving/smoke.py) runs: where the endpoint is reachable from.

  public endpoint (Entra)            from the runner, with the smoke-test identity's token from GitHub's OIDC
  AKS (internal LB or ClusterIP)     inside the cluster: `az aks command invoke` runs a pod of the scoring image
  internal Container Apps            from a self-hosted runner in the environment's VNet (refused elsewhere)
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from infra import azure_credential
from infra.settings import StackSettings

ROOT = Path(__file__).resolve().parent.parent
Smoke = Callable[[str, Mapping[str, str]], None]  # (base URL, the stack outputs it must serve); raises on failure


class Unreachable(RuntimeError):
    """No smoke test can reach the endpoint from here: the release refuses before any `up`."""


def smoke_with_entra(client_id: str, tenant_id: str, personal: str | None = None, unreported_ok: bool = False) -> Smoke:
    """The smoke test (serving/smoke.py) from this runner, as the smoke-test identity: it holds no Azure role, it is
    only one of serving.auth.allowedClientApplications. Its Entra token comes from this job's GitHub OIDC token."""
    from serving import smoke

    def run(url: str, outputs: Mapping[str, str]) -> None:
        token = None
        if outputs.get("auth_audience"):
            credential = azure_credential.federated(client_id, tenant_id)
            token = credential.get_token(f"{outputs['auth_audience']}/.default").token
        smoke.run(url, expect_version=outputs.get("model_version") or None, wait=300, token=token,
                  expect_personal=personal, unreported_ok=unreported_ok)
    return run


SMOKE_MODULE = ROOT / "serving" / "smoke.py"  # standard library only: it runs on the scoring image's Python
SMOKE_NAMESPACE = "default"  # not the scoring namespace: its NetworkPolicy allows its pods no egress at all


def in_cluster_command(image: str, url: str, version: str | None, personal: str | None = None,
                       unreported_ok: bool = False) -> str:
    """The shell command `az aks command invoke` runs in its pod (kubectl, and the attached smoke.py in its working
    directory): a pod of the scoring image runs the smoke test against the Service; kubectl returns its exit code."""
    args = " ".join(shlex.quote(a) for a in (url, "--wait", "300", *(("--expect-version", version) if version else ()),
                                             *(("--expect-personal", personal) if personal else ()),
                                             *(("--personal-unreported-ok",) if unreported_ok else ())))
    return (f"kubectl run smoke-test -n {SMOKE_NAMESPACE} --image={shlex.quote(image)} --restart=Never --rm --attach "
            f'--quiet --pod-running-timeout=5m --command -- python -c "$(cat smoke.py)" {args}')


Run = Callable[[list[str]], str]  # argv -> stdout; raises on a non-zero exit


def run_command(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def renew_cli_login(env: Mapping[str, str], run: Run) -> None:
    """In a workflow, sign the Azure CLI in again with a fresh GitHub OIDC token. `az aks command invoke` on an Entra
    cluster asks Entra for a token of the cluster's server application (azure-cli's aks_runcommand passes it as
    clusterToken, so the command runs as the caller), and the assertion azure/login gave the CLI has expired by the
    end of a long `up` (Azure/login#180, AADSTS700024)."""
    identity = azure_credential.workflow_identity(env)
    if identity:
        run(["az", "login", "--service-principal", "--username", identity[0], "--tenant", identity[1],
             "--federated-token", azure_credential.github_oidc_token(env=env), "--allow-no-subscriptions",
             "--output", "none"])


def smoke_in_cluster(resource_group: str, cluster: str, env: Mapping[str, str], run: Run = run_command,
                     personal: str | None = None, unreported_ok: bool = False) -> Smoke:
    """AKS serves on an internal load balancer or a ClusterIP, which a GitHub-hosted runner cannot reach: the smoke
    test runs inside the cluster. `az aks command invoke` (the AKS Run Command API: runcommand/action and
    commandResults/read on the cluster, both in the deployer's Contributor on the resource group) needs no route from
    the runner to the cluster, not even to its API server. Sources: https://learn.microsoft.com/azure/aks/access-private-cluster
    (command invoke, attached files), https://learn.microsoft.com/rest/api/aks/managed-clusters/run-command (the
    result's exitCode and logs, which `--output json` returns)."""
    def smoke(url: str, outputs: Mapping[str, str]) -> None:
        command = in_cluster_command(outputs["image_ref"], url, outputs.get("model_version") or None, personal,
                                     unreported_ok)
        renew_cli_login(env, run)
        subscription = ["--subscription", env["ARM_SUBSCRIPTION_ID"]] if env.get("ARM_SUBSCRIPTION_ID") else []
        result = json.loads(run(["az", "aks", "command", "invoke", *subscription, "--resource-group", resource_group,
                                 "--name", cluster, "--file", str(SMOKE_MODULE), "--command", command,
                                 "--output", "json"]))
        if result.get("exitCode") != 0:
            raise AssertionError(f"in-cluster smoke test exited {result.get('exitCode')}: {result.get('logs', '')[-2000:]}")
    return smoke


def smoke_for(s: StackSettings, env: Mapping[str, str], run: Run = run_command) -> Smoke:
    """The smoke test from where the endpoint is reachable; refused (before any `up`) where it is not. It also checks
    the service treats the personal columns as the stack says (a pinned image older than the setting logs them)."""
    # A pin the operator checked (promotion.pinnedPersonalChecked) may be older than /ready's report: not refused for
    # reporting nothing; a mode it does report must still be the stack's.
    personal = s.observability.request_log_personal
    unreported_ok = s.promotion.pinned and s.promotion.pinned_personal_checked
    if s.serving.target == "aks":
        return smoke_in_cluster(s.names.resource_group, s.names.aks_cluster, env, run, personal, unreported_ok)
    if s.serving.auth.mode == "internal" and env.get("RUNNER_ENVIRONMENT") != "self-hosted":
        raise Unreachable("serving.auth.mode internal: the environment has no public endpoint, and a GitHub-hosted "
                            "runner has no route into its VNet. Run the deploy jobs on a self-hosted runner in that VNet "
                            "(the repository variable DEPLOY_RUNNER names its label; docs/operate.md, Where the smoke test runs)")
    return smoke_with_entra(env.get("SMOKE_CLIENT_ID", ""), env.get("AZURE_TENANT_ID", ""), personal, unreported_ok)
