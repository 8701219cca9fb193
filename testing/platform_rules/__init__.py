"""What Azure, Databricks, Kubernetes and the Pulumi engine refuse or do differently, as checks.

A mock accepts anything; the platform does not. Every rule we rely on or have learned is one entry of
`RULES`, with a link to where it is documented, and is checked against what the program declared
under mocks (`testing/mockcloud.py`), for every stack and both serving targets (tests/infra/test_platform_rules.py;
`make plan` prints the results). Add a rule whenever we learn one, in its platform's module, next to its check:

- azure: Azure Monitor, resource names, identities, resource providers and API versions, the preview's rights;
- container_apps: Container Apps' logs, revisions, traffic, secrets, sizes, image pulls and auth;
- kubernetes: Kubernetes on AKS: secrets, the HPA, Container Insights, managed Prometheus, access, network policy;
- databricks: the workspace and its jobs; databricks_catalog: Unity Catalog grants, tables, models, the monitor;
- engine: the Pulumi engine (stack references, what it must keep).

Some behaviour needs two `up`s to show: `changes` is Pulumi's diff between two evaluations (engine), and
`RevisionHistory` is Container Apps' revision bookkeeping (revisions; tests/infra/test_stateful.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from testing.mockcloud import Evaluation
from testing.platform_rules import azure, container_apps, databricks, databricks_catalog, engine, kubernetes
from testing.platform_rules.azure import API_VERSIONS, INVOKE_ACTIONS, PROVIDERS, WORKSPACE_READS, preview_needs_only_its_roles
from testing.platform_rules.common import (
    ACR_PULL_ROLE,
    APP,
    AUTH_CONFIG,
    CLUSTER,
    CONFIG_MAP,
    DCR,
    DCRA,
    DEPLOYMENT,
    DIAGNOSTICS,
    ENVIRONMENT,
    HPA,
    JOB,
    MONITOR_WORKSPACE,
    NETWORK_POLICY,
    PROM_RULES,
    QUERY_RULE,
    ROLE,
    RULE_SET,
    Rule,
)
from testing.platform_rules.container_apps import OPENER, RBAC_WAIT
from testing.platform_rules.databricks import DIRECTORY, PERMISSIONS, POLICY
from testing.platform_rules.databricks_catalog import GRANT, MODEL, QUALITY_MONITOR, SQL_TABLE, VOLUME, _held
from testing.platform_rules.engine import changes
from testing.platform_rules.revisions import RevisionHistory, RevisionRefused

__all__ = [
    "ACR_PULL_ROLE", "API_VERSIONS", "APP", "AUTH_CONFIG", "CLUSTER", "CONFIG_MAP", "DCR", "DCRA", "DEPLOYMENT",
    "DIAGNOSTICS", "DIRECTORY", "ENVIRONMENT", "GRANT", "HPA", "INVOKE_ACTIONS", "JOB", "MODEL", "MONITOR_WORKSPACE",
    "NETWORK_POLICY", "OPENER", "PERMISSIONS", "POLICY", "PROM_RULES", "PROVIDERS", "QUALITY_MONITOR", "QUERY_RULE",
    "RBAC_WAIT", "ROLE", "RULES", "RULE_SET", "SQL_TABLE", "VOLUME", "WORKSPACE_READS", "Result", "RevisionHistory",
    "RevisionRefused", "Rule", "_held", "changes", "check", "preview_needs_only_its_roles", "report",
]

RULES: tuple[Rule, ...] = (*azure.RULES, *container_apps.RULES, *kubernetes.RULES, *databricks.RULES,
                           *databricks_catalog.RULES, *engine.RULES)


@dataclass
class Result:
    rule: Rule
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(ev: Evaluation, rules: Iterable[Rule] = RULES) -> list[Result]:
    return [Result(rule, rule.check(ev)) for rule in rules]


def report(results: list[Result]) -> str:
    lines = []
    for result in results:
        lines.append(f"  {'ok  ' if result.ok else 'FAIL'} {result.rule.key:34} {result.rule.says}")
        lines += [f"         - {problem}" for problem in result.problems]
        if not result.ok:
            lines.append(f"         see {result.rule.doc}")
    return "\n".join(lines)
