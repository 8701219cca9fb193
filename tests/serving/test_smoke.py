"""The smoke program against a real uvicorn process started from a build context."""

from __future__ import annotations

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
