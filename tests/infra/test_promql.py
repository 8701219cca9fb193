"""Every PromQL expression the AKS rule group declares parses and type-checks offline, and reads only series that
are collected: ARM accepts any string at create time, and a rule over a metric nobody scrapes never fires.

The parser is promql-parser (the Prometheus grammar and function signatures, in Rust). What is collected:
the app's counter from its own registry (serving/scoring/metrics.py) through the metrics add-on's pod-annotation
job, which adds `job`, `kubernetes_namespace` and `kubernetes_pod_name` (github.com/Azure/prometheus-collector,
otelcollector/configmapparser/default-prom-configs/podannotationsDefault.yml); `up`, which the add-on ingests
for every scrape; and kube-state-metrics series the add-on's minimal ingestion profile keeps
(learn.microsoft.com/azure/azure-monitor/containers/prometheus-metrics-scrape-configuration-minimal)."""

from __future__ import annotations

import promql_parser
import pytest

from infra import prometheus, settings, stack_files
from serving.scoring import metrics

POD_JOB_LABELS = {"job", "kubernetes_namespace", "kubernetes_pod_name", "instance"}
# series -> the labels it carries (the ones a rule may match on)
COLLECTED = {
    prometheus.METRIC: set(metrics.REQUESTS._labelnames) | POD_JOB_LABELS,
    "up": POD_JOB_LABELS,
    # kube-state-metrics, kept by the minimal ingestion profile
    "kube_deployment_status_replicas_available": {"namespace", "deployment", "job", "cluster"},
}
STACKS = ("dev", "staging", "prod")


def selectors(expression: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every selector in the expression; parsing raises on a bad one."""
    found: list[tuple[str, set[str]]] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            found.append((node.name, labels))

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_every_declared_expression_parses_and_reads_collected_series(evaluate, stack):
    ev = evaluate(stack, {"serving.target": "aks", **({"promotion": stack_files.DELETE} if stack == "prod" else {})})
    group = ev.one("azure-native:alertsmanagement:PrometheusRuleGroup")
    assert group.inputs["rules"]
    for rule in group.inputs["rules"]:
        read = selectors(rule["expression"])
        assert read, rule["alert"]
        for name, labels in read:
            assert name in COLLECTED, f"{rule['alert']} reads {name}, which nothing collects"
            assert labels <= COLLECTED[name], f"{rule['alert']}: {name} has no label {labels - COLLECTED[name]}"


def test_the_check_refuses_what_prometheus_would():
    s = settings.from_values("dev", stack_files.stack_values("dev"), {}).observability
    good = prometheus.rules("scoring", "scoring", s)[0].expression
    assert selectors(good)
    for broken in (good.replace("sum(increase(", "sum(increase((", 1),   # unbalanced
                   good.replace("[15m]", "", 1),                         # increase() of an instant vector
                   good.replace("increase(", "increse(", 1)):            # unknown function
        with pytest.raises(ValueError):
            selectors(broken)
    # a label the app's counter does not have is caught by the collected-series check
    (_, labels), *_ = selectors(good.replace('protocol!="none"', 'proto!="none"'))
    assert not labels <= COLLECTED[prometheus.METRIC]
