"""The Entra credential of whoever runs the program: in GitHub Actions a fresh GitHub OIDC token for every exchange,
elsewhere DefaultAzureCredential (a laptop's `az login`). Run as a script, it is the Kubernetes provider's credential
for an Entra-only AKS cluster (the exec plugin in infra/aks.py).

Why not the Azure CLI in CI: `azure/login` signs the CLI in with a GitHub token that expires after minutes, and the
CLI cannot renew its Entra token from it once that is gone (Azure/login#180, AADSTS700024), so a long `up` fails in
whatever call comes last (the ACR token exchange, the image import). `ClientAssertionCredential` asks GitHub for a
new assertion whenever it needs a new Entra token. One implementation for the ACR token exchange
(infra/acr_auth.py), the promotion's import (infra/promote.py) and the release's smoke test (scripts/release.py).

Why this module needs nothing but the standard library at import: the AKS kubeconfig carries its source and runs it
with `python3 -c` (infra/aks.py). `up --refresh` refreshes the cluster's objects with the provider's kubeconfig as
the state holds it, before the program runs and possibly on another machine, so the plugin cannot name a checkout, a
virtualenv or kubelogin (GitHub's runner images have none, and its `azurecli` login has the CLI's expiring assertion).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

ENTRA_AUDIENCE = "api://AzureADTokenExchange"  # the audience Entra's federated credentials expect


def github_oidc_token(audience: str = ENTRA_AUDIENCE, env: Mapping[str, str] | None = None) -> str:
    """This job's GitHub OIDC token (the job needs `id-token: write`), requested fresh on every call."""
    env = os.environ if env is None else env
    url, bearer = env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    request = urllib.request.Request(f"{url}&audience={audience}", headers={"Authorization": f"bearer {bearer}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["value"]


def workflow_identity(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(ARM_CLIENT_ID, ARM_TENANT_ID) in a GitHub Actions job that may ask for OIDC tokens; None anywhere else."""
    may_ask = env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    client_id, tenant_id = env.get("ARM_CLIENT_ID"), env.get("ARM_TENANT_ID")
    return (client_id, tenant_id) if may_ask and client_id and tenant_id else None


def federated(client_id: str, tenant_id: str, env: Mapping[str, str] | None = None) -> Any:
    """`client_id` in `tenant_id`, through a federated credential that trusts this job's GitHub subject."""
    from azure.identity import ClientAssertionCredential  # imported here: only a real deployment needs it

    return ClientAssertionCredential(tenant_id, client_id, lambda: github_oidc_token(env=env))


def arm_credential(env: Mapping[str, str] | None = None) -> Any:
    """The deploying identity (ARM_CLIENT_ID in ARM_TENANT_ID, the workflows' variables) in GitHub Actions;
    DefaultAzureCredential anywhere else."""
    env = os.environ if env is None else env
    identity = workflow_identity(env)
    if identity:
        return federated(*identity, env)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# ---- The AKS exec credential (client.authentication.k8s.io, kubernetes.io/docs/reference/access-authn-authz/
# authentication/#client-go-credential-plugins): client-go runs it whenever it has no token or its token expired. ----

EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"
AUTHORITY = "https://login.microsoftonline.com"  # AZURE_AUTHORITY_HOST names a sovereign cloud's, as for azure-identity
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def federated_token(scope: str, env: Mapping[str, str]) -> tuple[str, int]:
    """Entra's client-credentials grant with this job's GitHub OIDC token as the client assertion
    (learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow, "second case: access token request
    with a certificate", a federated assertion in its place): the token and when it expires (POSIX seconds)."""
    authority = env.get("AZURE_AUTHORITY_HOST", AUTHORITY).rstrip("/")
    form = urllib.parse.urlencode({
        "client_id": env["ARM_CLIENT_ID"], "scope": scope, "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER, "client_assertion": github_oidc_token(env=env)}).encode()
    request = urllib.request.Request(f"{authority}/{env['ARM_TENANT_ID']}/oauth2/v2.0/token", data=form)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    return body["access_token"], int(time.time()) + int(body["expires_in"])


def cli_token(scope: str, run: Callable[[list[str]], str]) -> tuple[str, int | None]:
    """The Azure CLI's token for `scope` (a laptop's `az login`): `expires_on` is POSIX seconds since CLI 2.54; an older
    CLI's token gets no expiry, and client-go asks again when the API server refuses it."""
    body = json.loads(run(["az", "account", "get-access-token", "--scope", scope, "--output", "json"]))
    expires_on = body.get("expires_on")
    return body["accessToken"], int(expires_on) if expires_on is not None else None


def exec_credential(scope: str, env: Mapping[str, str], run: Callable[[list[str]], str]) -> dict[str, Any]:
    """The ExecCredential client-go reads on stdout: from GitHub OIDC in a workflow (ARM_CLIENT_ID and ARM_TENANT_ID
    name the identity, as for the providers), from the Azure CLI elsewhere."""
    token, expires = federated_token(scope, env) if workflow_identity(env) else cli_token(scope, run)
    status: dict[str, str] = {"token": token}
    if expires is not None:
        status["expirationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential", "status": status}


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


if __name__ == "__main__":  # python3 -c "<this module>" <scope>: what the AKS kubeconfig runs
    print(json.dumps(exec_credential(sys.argv[1], os.environ, _run)))
