"""The real cloud's `Stack` for a release (scripts/release.py): one stack of this project driven by the Pulumi
Automation API (the Pulumi CLI must be installed). tests/infra/test_release.py drives the same `Release` against the
mocked cloud's stateful evaluation instead.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import settings, stack_files
from infra.settings import StackSettings

ROOT = Path(__file__).resolve().parent.parent
APP_TYPE = "azure-native:app:ContainerApp"


@dataclass
class PulumiStack:
    """A stack of this project driven by the Automation API; `config` (the run's own values, e.g. the tested digest)
    is set before every operation, as `pulumi config set --path` would."""
    name: str
    config: Mapping[str, Any]
    policy_packs: tuple[str, ...] = ("policy",)

    def __post_init__(self) -> None:
        from pulumi import automation

        self._auto = automation
        self._stack = automation.select_stack(self.name, work_dir=str(ROOT))
        self._file = ROOT / f"Pulumi.{self.name.rsplit('/', 1)[-1]}.yaml"
        self._committed = self._file.read_text()

    def _set(self, config: Mapping[str, Any]) -> None:
        """The stack file as committed plus this step's values: a step never inherits the one before's."""
        self._file.write_text(self._committed)
        for key, value in {**self.config, **config}.items():
            self._stack.set_config(f"{stack_files.NAMESPACE}:{key}", self._auto.ConfigValue(json.dumps(value) if not
                                   isinstance(value, str) else value), path=True)

    def outputs(self) -> dict[str, str]:
        return {key: str(value.value) for key, value in self._stack.outputs().items()}

    def template_changes(self, config: Mapping[str, Any]) -> bool | None:
        self._set(config)
        found: list[bool] = []

        def on_event(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre and pre.metadata.type == APP_TYPE:
                found.append(pre.metadata.op.value == "create" or "template" in (pre.metadata.diffs or []))
        self._stack.preview(on_event=on_event, policy_packs=list(self.policy_packs), refresh=True)
        return any(found) if found else None

    def up(self, config: Mapping[str, Any]) -> dict[str, str]:
        self._set(config)
        # refresh: what Azure changed since the last `up` (an alert rule the platform disabled) is seen and put back
        result = self._stack.up(on_output=print, policy_packs=list(self.policy_packs), refresh=True)
        return {key: str(value.value) for key, value in result.outputs.items()}

    def deactivate(self, revision: str) -> None:
        """ARM's revisions/{name}/deactivate, waited for (in the deployer's Contributor on the resource group)."""
        from infra import ingress_opener

        s = self.settings()
        app = (f"/subscriptions/{os.environ['ARM_SUBSCRIPTION_ID']}/resourceGroups/{s.names.resource_group}"
               f"/providers/Microsoft.App/containerApps/{s.names.container_app}")
        ingress_opener.deactivate_revision(app, revision)

    def settings(self) -> StackSettings:
        stack = self.name.rsplit("/", 1)[-1]
        return settings.from_values(stack, stack_files.apply_overrides(stack_files.stack_values(stack), self.config), {})
