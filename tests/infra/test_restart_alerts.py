"""The restart alerts count what a restart is, checked with sample rows as the tables hold them.

No Kusto engine runs offline (tests/infra/test_kql_bind.py binds the queries, it does not run them), so these
tests read the two clauses that decide the count from the query text (the group key, the reasons and exit codes)
and apply them to rows shaped as Container Insights and Container Apps write them."""

from __future__ import annotations

import re

from infra import kql

# KubePodInventory, one row per container per minute: ContainerName is <pod uid>/<container>; ContainerID is the
# runtime id of the current container (microsoft/Docker-Provider in_kube_podinventory.rb), new after each restart.
POD_INVENTORY = [
    {"ContainerName": "uid-1/scoring", "ContainerID": "aaa", "ContainerRestartCount": 0},
    {"ContainerName": "uid-1/scoring", "ContainerID": "bbb", "ContainerRestartCount": 1},
    {"ContainerName": "uid-1/scoring", "ContainerID": "ccc", "ContainerRestartCount": 2},
    {"ContainerName": "uid-2/scoring", "ContainerID": "ddd", "ContainerRestartCount": 0},
]


def aks_restarts(rows: list[dict]) -> int:
    query = kql.aks("scoring", "scoring").restarts
    key = re.search(r"by (\w+)\n", query).group(1)  # type: ignore[union-attr]
    groups: dict[str, list[int]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row["ContainerRestartCount"])
    return sum(max(counts) - min(counts) for counts in groups.values())


def test_aks_restarts_are_counted_across_container_ids():
    assert aks_restarts(POD_INVENTORY) == 2
    assert aks_restarts(POD_INVENTORY[3:]) == 0


# ContainerAppSystemLogs rows: a release deactivating two replicas, a warming replica failing readiness, a scale-in,
# and one crash (exit code 1) followed by the platform's back-off.
RELEASE = [{"Reason": "ContainerTerminated", "Log": "Container 'scoring' was terminated with exit code '0'"},
           {"Reason": "ContainerTerminated", "Log": "Container 'scoring' was terminated with exit code '143'"},
           {"Reason": "ProbeFailed", "Log": "Probe of Readiness failed with status code: 503"},
           {"Reason": "ContainerTerminated", "Log": "Container 'scoring' was terminated with exit code '0'"}]
CRASH = [{"Reason": "ContainerTerminated", "Log": "Container 'scoring' was terminated with exit code '1'"},
         {"Reason": "ContainerBackOff", "Log": "Persistent failure to start container"}]


def container_apps_restarts(rows: list[dict]) -> int:
    query = kql.container_apps("ca-x").restarts
    crash = re.findall(r"'(\w+)'", re.search(r"where reason in \(([^)]*)\)", query).group(1))  # type: ignore[union-attr]
    clean = re.findall(r"'(\d*)'", re.search(r"exit_code !in \(([^)]*)\)", query).group(1))  # type: ignore[union-attr]
    counted = 0
    for row in rows:
        found = re.search(r"exit code '(-?[0-9]+)'", row["Log"])
        code = found.group(1) if found else ""
        counted += row["Reason"] in crash or (row["Reason"] == "ContainerTerminated" and code not in clean)
    return counted


def test_container_apps_restarts_count_crashes_not_releases_or_probes():
    assert container_apps_restarts(RELEASE) == 0
    assert container_apps_restarts(CRASH) == 2


def test_no_log_alert_before_the_workload_and_a_missing_table_counts_zero():
    """Bootstrap declares no log alert (their tables do not exist yet; Azure disables a rule failing for a week);
    the error-rate union tolerates a table still missing."""
    from infra.observability import ObservabilityArgs, alert_rules
    from tests.infra.conftest import settings_of

    s = settings_of("prod")
    args = ObservabilityArgs(resource_group_name="rg", location="westeurope", names=s.names, settings=s.observability,
                             log_source=kql.container_apps("ca-x"), serving_deployed=False, tags={})
    assert alert_rules(args) == []
    serving = alert_rules(ObservabilityArgs(**{**args.__dict__, "serving_deployed": True}))
    assert {r.key for r in serving} == {"error-rate", "p95-latency", "restarts", "drift", "quality", "no-traffic"}
    assert kql.alert_error_rate(kql.container_apps("ca-x")).startswith("union isfuzzy=true ")
