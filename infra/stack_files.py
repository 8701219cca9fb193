"""Pulumi.<stack>.yaml read as the engine hands it to the program, for what runs outside the engine: the release
script (scripts/release.py validates a stack's settings before it deploys), `make plan` and the mocked cloud.
infra/settings.py validates what this returns.

The keys live in the `mlops` namespace (`mlops:<key>`), whatever Pulumi.yaml names the Pulumi project: a team that
shares one Pulumi organization with another renames the project there (stack names are unique per organization and
project) and rewrites no key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "mlops"  # every key of this program is `mlops:<key>` (infra/settings.py reads pulumi.Config("mlops"))
DELETE = object()  # an override that removes the key


def pulumi_project() -> str:
    """The Pulumi project (Pulumi.yaml's `name`): with the organization, it names the stacks; no config key uses it."""
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]


def stacks() -> list[str]:
    return sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


def misplaced(keys: Iterable[str], project: str) -> list[str]:
    """Keys written in the Pulumi project's namespace (`pulumi config set KEY` without `mlops:` writes them there)
    when the project is not named `mlops`: the program would never read them."""
    return sorted(k for k in keys if project != NAMESPACE and k.startswith(f"{project}:"))


def stack_values(stack: str) -> dict[str, Any]:
    """Pulumi.<stack>.yaml as {top-level key (without the `mlops:` namespace): value}."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name}; stacks: {', '.join(stacks())}")
    config = yaml.safe_load(path.read_text()).get("config") or {}
    if stray := misplaced(config, pulumi_project()):
        raise ValueError(f"{path.name}: {', '.join(stray)} are in the Pulumi project's namespace; this program reads "
                         f"{NAMESPACE}:<key> (write them as {NAMESPACE}:{stray[0].split(':', 1)[1]}, ...)")
    prefix = NAMESPACE + ":"
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
