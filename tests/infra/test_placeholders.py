"""The stack files' placeholder GUIDs are refused where a stack is really deployed (__main__.py), naming each key;
tests and `make plan` evaluate the files as committed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infra import settings
from tests.infra.conftest import settings_of

ROOT = Path(__file__).resolve().parents[2]
REAL = {"serving.auth.tenantId": "3f1c2a4e-8d5b-4c7a-9e2f-1a2b3c4d5e6f",
        "serving.auth.clientId": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        "serving.auth.allowedClientApplications": ["9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"],
        "databricks.accountId": "c0ffee00-1234-4abc-9def-0123456789ab",
        "databricks.deployer": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b",
        "databricks.previewReader": "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c",
        "databricks.promotionReaders": ["7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0e"]}
DEPLOYERS = {"staging": ("databricks.deployer", "databricks.previewReader", "databricks.promotionReaders[0]"),
             "prod": ("databricks.deployer",), "dev": ()}  # dev's deployer is a person's user name


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_committed_placeholders_are_refused_naming_each_key(stack):
    with pytest.raises(settings.ConfigError) as error:
        settings.refuse_placeholders(settings_of(stack))
    for key in ("serving.auth.tenantId", "serving.auth.clientId", "serving.auth.allowedClientApplications[0]",
                "databricks.accountId", *DEPLOYERS[stack]):
        assert f"mlops:{key}" in str(error.value)
    settings.refuse_placeholders(settings_of(stack, REAL))


def test_only_the_real_program_refuses_them():
    """__main__.py (what `pulumi up` runs) checks before declaring anything; infra/program.py, which tests and
    `make plan` evaluate, does not."""
    calls = [node.func for node in ast.walk(ast.parse((ROOT / "__main__.py").read_text())) if isinstance(node, ast.Call)]
    names = [f"{c.value.id}.{c.attr}" for c in calls if isinstance(c, ast.Attribute) and isinstance(c.value, ast.Name)]
    assert names.index("settings.refuse_placeholders") < names.index("program.run")
    assert "refuse_placeholders" not in (ROOT / "infra" / "program.py").read_text()
