"""Container Apps' revision bookkeeping across `up`s (tests/infra/test_stateful.py, tests/infra/test_release.py):
which revision serves, which stay active, and what ARM refuses on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from testing.platform_rules.common import _get


def _secret_refs(value: Any) -> set[str]:
    """Every `secretRef` a template holds (containers' env, volumes)."""
    if isinstance(value, dict):
        found = {value["secretRef"]} if isinstance(value.get("secretRef"), str) else set()
        return found.union(*(_secret_refs(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_secret_refs(item) for item in value))
    return set()


class RevisionRefused(RuntimeError):
    """What ARM answers: the update is refused and nothing changes."""


@dataclass
class RevisionHistory:
    """One Container App's revisions, as Azure keeps them. Any change under `template` makes a new revision
    (application-scope changes do not); a suffix, given or generated, can never be used twice in an app."""
    app: str
    revisions: list[tuple[str, str]] = field(default_factory=list)  # (name, template as JSON)
    active: set[str] = field(default_factory=set)
    generated: int = 0
    weights: dict[str, int] = field(default_factory=dict)  # revision -> % of the app's traffic
    labels: dict[str, str] = field(default_factory=dict)  # label -> revision (its URL reaches it at any weight)
    # microsoft/azure-container-apps#679: a switch to Single mode (no new revision) once left an older revision active.
    # True: such a switch deactivates nothing (only an explicit deactivate does), to check a release does not rely on it.
    single_keeps_others_active: bool = False

    def apply(self, inputs: dict[str, Any]) -> str | None:
        """PUT the app; returns the new revision's name, or None when no revision was made."""
        self._secrets_kept(inputs)
        made = self._revision(inputs)
        self._route(inputs)
        return made

    def _secrets_kept(self, inputs: dict[str, Any]) -> None:
        """In Multiple mode a secret an active revision refers to cannot be removed (learn.microsoft.com/azure/
        container-apps/manage-secrets: "deploy a new revision that no longer references the old secret. Then deactivate
        all revisions that reference the secret"; microsoft/vscode-azurecontainerapps#1098: "In Multiple mode deletion
        is blocked, while in Single mode deletion succeeds"; hashicorp/terraform-provider-azurerm#22493: a 400). Not
        documented, so not modelled: which mode applies when one PUT switches mode and removes a secret (the mode it
        asks for is taken here), and inactive revisions (taken as not referring)."""
        if (_get(inputs, "configuration", "activeRevisionsMode") or "Single") == "Single":
            return
        declared = {secret.get("name") for secret in _get(inputs, "configuration", "secrets") or []}
        for name, template in self.revisions:
            missing = sorted(_secret_refs(json.loads(template)) - declared) if name in self.active else []
            if missing:
                raise RevisionRefused(f"secret {missing[0]!r} is in use by the active revision {name}: it cannot be "
                                      "removed in Multiple mode")

    def _revision(self, inputs: dict[str, Any]) -> str | None:
        template = json.dumps(inputs.get("template") or {}, sort_keys=True)
        single = (_get(inputs, "configuration", "activeRevisionsMode") or "Single") == "Single"
        if self.revisions and self.revisions[-1][1] == template:
            if single and not self.single_keeps_others_active:  # a switch to Single leaves only the latest active
                self.active = {self.revisions[-1][0]}
            return None
        suffix = (inputs.get("template") or {}).get("revisionSuffix")
        if suffix is None:
            self.generated += 1
            suffix = f"gen{self.generated:04d}"  # Azure makes a random unique one
        name = f"{self.app}--{suffix}"
        if any(existing == name for existing, _ in self.revisions):
            raise RevisionRefused(f"a revision with the suffix {suffix!r} already exists in {self.app}")
        self.revisions.append((name, template))
        self.active = {name} if single else {*self.active, name}
        return name

    def _route(self, inputs: dict[str, Any]) -> None:
        """The ingress traffic list replaces the routing (labels not listed are dropped); Single mode sends all
        traffic to the latest revision. A named revision must exist and be active."""
        latest = self.revisions[-1][0]
        if (_get(inputs, "configuration", "activeRevisionsMode") or "Single") == "Single":
            self.weights, self.labels = {latest: 100}, {}
            return
        weights: dict[str, int] = {}
        labels: dict[str, str] = {}
        for entry in _get(inputs, "configuration", "ingress", "traffic") or []:
            revision = latest if entry.get("latestRevision") else entry.get("revisionName")
            if revision not in self.active:
                raise RevisionRefused(f"traffic names {revision!r}, which is not an active revision of {self.app}")
            weights[revision] = weights.get(revision, 0) + int(entry.get("weight") or 0)
            if entry.get("label"):
                labels[entry["label"]] = revision
        if sum(weights.values()) != 100:
            raise RevisionRefused(f"traffic weights of {self.app} sum to {sum(weights.values())}, not 100")
        self.weights, self.labels = weights, labels

    def deactivate(self, name: str) -> None:
        """POST revisions/{name}/deactivate: refused for a revision that has traffic or a label."""
        if self.weights.get(name) or name in self.labels.values():
            raise RevisionRefused(f"{name} has traffic or a label: it cannot be deactivated")
        self.active.discard(name)

    def serving(self) -> set[str]:
        """The revisions that receive any of the app's traffic."""
        return {revision for revision, weight in self.weights.items() if weight > 0}
