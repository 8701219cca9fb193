"""A schema fuzzer against the live service: schemathesis with every check (server errors, status codes, content
types, response schemas and headers, schema-violating requests refused, schema-valid ones accepted, ...) on every
operation the OpenAPI document declares. The document is generated from the model, so this holds for any model;
a failure means the code or the document does not tell the truth. Bounded: a fixed number of examples per operation,
derandomized (the same cases every run), and a wall-time limit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.localrun import stop_service
from tests.serving.conftest import launch

MAX_EXAMPLES = 8  # per operation and phase; the coverage phase adds its own boundary cases
WALL_TIME_S = 100
CONFIG = Path(__file__).with_name("schemathesis.toml")  # 413 is a refusal too (over MAX_RECORDS)


@pytest.fixture(scope="module")
def service(context, tmp_path_factory):
    live = launch(context.path, tmp_path_factory.mktemp("schemathesis") / "requests.jsonl")
    yield live
    stop_service(live.process.pid)


def test_schemathesis_all_checks_find_nothing(service, tmp_path):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    since = service.log_offset()
    run = subprocess.run([str(schemathesis), "--config-file", str(CONFIG), "run", f"{service.url}/openapi.json",
                          "--checks", "all",
                          "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--continue-on-failure",
                          "--request-timeout", "10", "--no-color"],
                         capture_output=True, text=True, timeout=WALL_TIME_S, cwd=tmp_path, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested and tested.group(1) == selected.group(1) == selected.group(2), report[-3000:]
    assert "generated" in report and "failures" not in report.split("Test cases:")[-1], report[-3000:]
    errors = [line for line in service.log_lines(since, 0, timeout=0) if b'"log_type":"error"' in line]
    assert errors == [], errors[:3]


def test_every_body_is_written_out_and_every_path_parameter_declared(service):
    """What lets a fuzzer reach every decoder: no schema left as a bare object, no operation without its path
    parameters, and every answer's schema (status and media type) declared."""
    document = httpx.get(f"{service.url}/openapi.json", timeout=30).json()
    bare = [path for path, schema in _schemas(document, "") if schema.get("type") == "object"
            and "properties" not in schema and "additionalProperties" not in schema]
    assert bare == []
    for route, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", route)), f"{method} {route}"
            for status, response in operation["responses"].items():
                assert all(c.get("schema") for c in response.get("content", {}).values()), f"{method} {route} {status}"
                assert response.get("content"), f"{method} {route} {status} declares no body"
    assert list(document["paths"]["/ping"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(document["paths"]["/version"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def _schemas(node: object, path: str):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _schemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schemas(value, f"{path}/{index}")
