"""The Kubernetes provider's login to an Entra-only AKS cluster, run as client-go runs the kubeconfig the program
declares: its exec command and arguments, python3 from PATH, in a folder with no checkout and no virtualenv (a
refresh runs the state's copy on whatever machine refreshes). The GitHub and Entra endpoints are stand-ins on
127.0.0.1 answering as the real ones do (the token request's form, `access_token` and `expires_in`)."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from infra import aks

TENANT = "66666666-7777-8888-9999-000000000000"
CLIENT = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def login(evaluate) -> dict:
    """The exec section of the user the declared provider's kubeconfig logs in as."""
    provider = next(r for r in evaluate("prod", {"serving.target": "aks"}).resources
                    if r.typ == "pulumi:providers:kubernetes")
    users = yaml.safe_load(provider.inputs["kubeconfig"])["users"]
    assert len(users) == 1
    return users[0]["user"]["exec"]


def run_login(login: dict, cwd: Path, env: dict[str, str]) -> dict:
    assert "/" not in login["command"]  # found on PATH: no path to this checkout or its virtualenv
    done = subprocess.run([login["command"], *login["args"]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    credential = json.loads(done.stdout)
    assert credential["apiVersion"] == login["apiVersion"] and credential["kind"] == "ExecCredential"
    return credential["status"]


@pytest.fixture
def endpoints() -> Iterator[tuple[str, list[dict]]]:
    """GitHub's OIDC token endpoint (a new assertion each call) and Entra's token endpoint (records each form)."""
    forms: list[dict] = []
    issued = [0]

    class Endpoints(BaseHTTPRequestHandler):
        def answer(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # GitHub: ?audience=..., the job's bearer
            assert self.headers["Authorization"] == "bearer job-bearer"
            issued[0] += 1
            self.answer({"value": f"github-assertion-{issued[0]}"})

        def do_POST(self) -> None:  # Entra: /<tenant>/oauth2/v2.0/token
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
            forms.append({"path": self.path, **{key: values[0] for key, values in form.items()}})
            self.answer({"token_type": "Bearer", "expires_in": 3599, "access_token": f"entra-token-{len(forms)}"})

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Endpoints)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", forms
    finally:
        server.shutdown()


def test_in_a_workflow_each_token_comes_from_a_fresh_github_assertion(login, endpoints, tmp_path):
    base, forms = endpoints
    env = {"PATH": os.environ["PATH"], "ACTIONS_ID_TOKEN_REQUEST_URL": f"{base}/token?api-version=2.0",
           "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "job-bearer", "ARM_CLIENT_ID": CLIENT, "ARM_TENANT_ID": TENANT,
           "AZURE_AUTHORITY_HOST": base}
    before = time.time()
    statuses = [run_login(login, tmp_path, env) for _ in range(2)]
    assert [s["token"] for s in statuses] == ["entra-token-1", "entra-token-2"]
    expires = calendar.timegm(time.strptime(statuses[0]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 3599 - 5 <= expires <= time.time() + 3599 + 5
    assert [f["client_assertion"] for f in forms] == ["github-assertion-1", "github-assertion-2"]
    assert forms[0] == {"path": f"/{TENANT}/oauth2/v2.0/token", "client_id": CLIENT,
                        "scope": f"{aks.AKS_SERVER_ID}/.default", "grant_type": "client_credentials",
                        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        "client_assertion": "github-assertion-1"}


def test_elsewhere_the_token_of_az_login(login, tmp_path):
    """A laptop: the Azure CLI's token for the AKS server application, with the expiry the CLI reports."""
    bin_dir, asked = tmp_path / "bin", tmp_path / "asked"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(f'#!/bin/sh\necho "$@" > {asked}\n'
                  'echo \'{"accessToken": "cli-token", "expires_on": 1893456000, "tokenType": "Bearer"}\'\n')
    az.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ARM_CLIENT_ID": CLIENT}  # no GitHub: not a workflow
    status = run_login(login, tmp_path, env)
    assert status == {"token": "cli-token", "expirationTimestamp": "2030-01-01T00:00:00Z"}
    assert asked.read_text().split() == ["account", "get-access-token", "--scope", f"{aks.AKS_SERVER_ID}/.default",
                                         "--output", "json"]
