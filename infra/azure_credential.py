"""The Entra credential of whoever runs the program: in GitHub Actions a fresh GitHub OIDC token for every exchange,
elsewhere DefaultAzureCredential (a laptop's `az login`).

Why not the Azure CLI in CI: `azure/login` signs the CLI in with a GitHub token that expires after minutes, and the
CLI cannot renew its Entra token from it once that is gone (Azure/login#180, AADSTS700024), so a long `up` fails in
whatever call comes last (the ACR token exchange, the image import). `ClientAssertionCredential` asks GitHub for a
new assertion whenever it needs a new Entra token. One implementation for the ACR token exchange
(infra/acr_auth.py), the promotion's import (infra/promote.py) and the release's smoke test (scripts/release.py).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from typing import Any

ENTRA_AUDIENCE = "api://AzureADTokenExchange"  # the audience Entra's federated credentials expect


def github_oidc_token(audience: str = ENTRA_AUDIENCE, env: Mapping[str, str] | None = None) -> str:
    """This job's GitHub OIDC token (the job needs `id-token: write`), requested fresh on every call."""
    env = os.environ if env is None else env
    url, bearer = env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    request = urllib.request.Request(f"{url}&audience={audience}", headers={"Authorization": f"bearer {bearer}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["value"]


def in_github_actions(env: Mapping[str, str]) -> bool:
    """A job that may ask GitHub for OIDC tokens."""
    return bool(env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))


def federated(client_id: str, tenant_id: str, env: Mapping[str, str] | None = None) -> Any:
    """`client_id` in `tenant_id`, through a federated credential that trusts this job's GitHub subject."""
    from azure.identity import ClientAssertionCredential  # imported here: only a real deployment needs it

    return ClientAssertionCredential(tenant_id, client_id, lambda: github_oidc_token(env=env))


def arm_credential(env: Mapping[str, str] | None = None) -> Any:
    """The deploying identity (ARM_CLIENT_ID in ARM_TENANT_ID, the workflows' variables) in GitHub Actions;
    DefaultAzureCredential anywhere else."""
    env = os.environ if env is None else env
    client_id, tenant_id = env.get("ARM_CLIENT_ID"), env.get("ARM_TENANT_ID")
    if in_github_actions(env) and client_id and tenant_id:
        return federated(client_id, tenant_id, env)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
