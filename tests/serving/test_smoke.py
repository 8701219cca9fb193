"""The smoke program against a real uvicorn process started from a build context."""

from __future__ import annotations

import os
import subprocess

import pytest

from serving import smoke
from serving.localrun import free_port, start_service


@pytest.fixture(scope="module")
def service(context):
    port = free_port()
    process = start_service(context.path, port, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_smoke_passes_against_a_running_service(service, context, capsys):
    assert smoke.main([service, "--manifest", str(context.path / "model/manifest.json"),
                       "--expect-version", context.model_version]) == 0
    out = capsys.readouterr().out
    assert "ok   /predict (3 records" in out and "rejects a bad" in out and "smoke test passed" in out


def test_smoke_takes_the_example_from_openapi_without_a_manifest(service, capsys):
    assert smoke.main([service]) == 0


def test_smoke_fails_naming_the_check(service, capsys):
    assert smoke.main([service, "--expect-version", "999"]) == 1
    assert "/ready: serving model version" in capsys.readouterr().err


def test_smoke_fails_when_nothing_listens(capsys):
    assert smoke.main([f"http://127.0.0.1:{free_port()}", "--wait", "1"]) == 1
    assert "/health: no 200 after 1s" in capsys.readouterr().err


# ---- behind authentication: a stand-in for Container Apps' auth sidecar in front of the real service ----

TOKEN = "eyJ.test-token.sig"


@pytest.fixture(scope="module")
def guarded(service):
    """401 without `Authorization: Bearer TOKEN` (as the sidecar answers with Return401), else forwarded; `open[0]`
    False turns the guard off, as a deployment that lost its auth config would be."""
    import http.server
    import threading
    import urllib.error
    import urllib.request

    open_door = [False]

    class Sidecar(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if not open_door[0] and self.headers.get("authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("content-length") or 0)) or None
            request = urllib.request.Request(f"{service}{self.path}", data=body, method=self.command,
                                             headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, payload = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, payload = error.code, error.read()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _forward  # noqa: N815 (http.server's method names)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Sidecar)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", open_door
    server.shutdown()


def test_smoke_sends_the_token_from_the_environment(guarded, monkeypatch, capsys):
    url, _ = guarded
    monkeypatch.delenv(smoke.TOKEN_ENV, raising=False)
    assert smoke.main([url, "--wait", "1"]) == 1, "without a token the guarded service refuses the smoke test"
    monkeypatch.setenv(smoke.TOKEN_ENV, TOKEN)
    assert smoke.main([url]) == 0
    out = capsys.readouterr().out
    assert "/predict without a token is refused with 401" in out and TOKEN not in out


def test_smoke_fails_when_the_endpoint_lets_anyone_in(guarded, monkeypatch, capsys):
    url, open_door = guarded
    monkeypatch.setenv(smoke.TOKEN_ENV, TOKEN)
    open_door[0] = True
    try:
        assert smoke.main([url]) == 1
    finally:
        open_door[0] = False
    assert "without a token: expected 401, got 200" in capsys.readouterr().err


def test_smoke_takes_the_token_from_the_azure_cli(guarded, monkeypatch, tmp_path, capsys):
    """A stand-in `az` on PATH: the smoke test asks it for the audience's token exactly as CI's step does."""
    url, _ = guarded
    calls = tmp_path / "az-calls"
    az = tmp_path / "az"
    az.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho {TOKEN}\n')
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv(smoke.TOKEN_ENV, raising=False)
    assert smoke.main([url, "--token-from-azure-cli", "api://00000000-0000-0000-0000-0000000000a2"]) == 0
    assert calls.read_text().split() == ["account", "get-access-token", "--resource",
                                         "api://00000000-0000-0000-0000-0000000000a2", "--query", "accessToken",
                                         "--output", "tsv"]
    az.write_text("#!/bin/sh\necho 'Please run az login' >&2\nexit 1\n")
    assert smoke.main([url, "--token-from-azure-cli", "api://x"]) == 1
    assert "no token for api://x: Please run az login" in capsys.readouterr().err


@pytest.mark.parametrize(("prediction", "task", "classes", "wrong"), [
    ({"probability": 0.2, "label": 0}, "binary", [0, 1], None),
    ({"probability": 1.2, "label": 0}, "binary", [0, 1], "probability 1.2 is not in [0, 1]"),
    ({"probability": 0.2, "label": "0"}, "binary", [0, 1], "label '0' is not one of the classes [0, 1]"),
    ({"label": "b", "probabilities": {"a": 0.3, "b": 0.7}}, "multiclass", ["a", "b"], None),
    ({"label": "b", "probabilities": {"b": 0.7, "a": 0.3}}, "multiclass", ["a", "b"], "in order"),
    ({"label": "b", "probabilities": {"a": 0.3, "b": 0.3}}, "multiclass", ["a", "b"], "sum to 1"),
    ({"prediction": 3.5}, "regression", [], None),
    ({"prediction": None}, "regression", [], "None is not a finite number"),
    ({"prediction": True}, "regression", [], "True is not a finite number"),
])
def test_the_smoke_test_checks_outputs_by_task(prediction, task, classes, wrong):
    found = smoke.problem(prediction, task, classes)
    assert (found is None) if wrong is None else (found is not None and wrong in found)


def test_smoke_checks_the_request_log_treats_personal_columns_as_the_stack_says(service, capsys):
    """A rollback to an image older than REQUEST_LOG_PERSONAL logs the personal columns whole: its /ready reports no
    mode, and the release's smoke test refuses it unless the stack keeps them (issue 21, audit #3)."""
    mode = smoke.call(f"{service}/ready").body["request_log_personal"]
    assert mode in ("keep", "drop", "pseudonymise")
    assert smoke.main([service, "--expect-personal", mode]) == 0
    assert f"request log personal columns: {mode}" in capsys.readouterr().out
    other = next(m for m in ("drop", "pseudonymise") if m != mode)
    assert smoke.main([service, "--expect-personal", other]) == 1
    assert f"the stack says '{other}'" in capsys.readouterr().err
    with pytest.raises(smoke.SmokeFailure, match=r"not reported \(an image older than this check: it may log them whole"):
        smoke.check_personal({"status": "ready"}, "drop")
    smoke.check_personal({"status": "ready"}, "keep")  # keeping them: any image does
    # A pinned image checked by hand may report nothing (older than the report), never another mode.
    smoke.check_personal({"status": "ready"}, "drop", unreported_ok=True)
    with pytest.raises(smoke.SmokeFailure, match="the stack says 'drop'"):
        smoke.check_personal({"status": "ready", "request_log_personal": "keep"}, "drop", unreported_ok=True)
    assert smoke.main([service, "--expect-personal", other, "--personal-unreported-ok"]) == 1
