"""In GitHub Actions every Entra token comes from a fresh GitHub OIDC token (the Azure CLI's cannot be renewed once
azure/login's assertion expired); the ACR token exchange and the promotion's import both use that credential."""

from __future__ import annotations

import io
import json

import pytest
from azure.identity import ClientAssertionCredential, DefaultAzureCredential

from infra import acr_auth, azure_credential, promote

GITHUB = {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.actions.example/?x=1", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "b",
          "ARM_CLIENT_ID": "11111111-2222-3333-4444-555555555555", "ARM_TENANT_ID": "66666666-7777-8888-9999-000000000000"}


def test_github_actions_federates_with_a_fresh_token_each_time(monkeypatch):
    asked: list[str] = []

    def urlopen(request, timeout):
        asked.append(request.full_url)
        return io.BytesIO(json.dumps({"value": f"assertion-{len(asked)}"}).encode())

    monkeypatch.setattr(azure_credential.urllib.request, "urlopen", urlopen)
    credential = azure_credential.arm_credential(GITHUB)
    assert isinstance(credential, ClientAssertionCredential)
    assert [azure_credential.github_oidc_token(env=GITHUB) for _ in range(2)] == ["assertion-1", "assertion-2"]
    assert all(url.endswith("&audience=api://AzureADTokenExchange") for url in asked)


def test_elsewhere_the_default_chain():
    assert isinstance(azure_credential.arm_credential({}), DefaultAzureCredential)
    no_client = {k: v for k, v in GITHUB.items() if k != "ARM_CLIENT_ID"}
    assert isinstance(azure_credential.arm_credential(no_client), DefaultAzureCredential)


class Used(Exception):
    pass


def test_the_acr_exchange_and_the_import_use_it(monkeypatch):
    def credential(env=None):
        raise Used

    monkeypatch.setattr(azure_credential, "arm_credential", credential)
    with pytest.raises(Used):
        acr_auth.refresh_token("cr.azurecr.io")
    with pytest.raises(Used):
        promote.arm_credential()
