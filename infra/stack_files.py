"""Pulumi.<stack>.yaml read as the engine hands it to the program, for what runs outside the engine: the release
script (scripts/release.py validates a stack's settings before it deploys), `make plan` and the mocked cloud.
infra/settings.py validates what this returns."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DELETE = object()  # an override that removes the key


def project_name() -> str:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]


def stacks() -> list[str]:
    return sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


def stack_values(stack: str) -> dict[str, Any]:
    """Pulumi.<stack>.yaml as {top-level key (without the project prefix): value}."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name}; stacks: {', '.join(stacks())}")
    prefix = project_name() + ":"
    config = yaml.safe_load(path.read_text()).get("config") or {}
    return {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}


def project(stack: str = "dev") -> str:
    """The project's one name (`name` in the stack file): the model it trains and serves (models/<name>.py)."""
    return str(stack_values(stack)["name"])


def apply_overrides(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`{"serving.target": "aks"}` sets a nested value; a value of `DELETE` removes the key."""
    values = copy.deepcopy(values)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return values
