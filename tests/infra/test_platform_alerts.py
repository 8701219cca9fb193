"""The alerts see the platform, not only the app: what each stack declares under mocks, on both targets.

Container Apps: the error-rate alert counts the 5xx the ingress returned itself (ContainerAppHTTPLogs rows whose
status the app did not set: no healthy replica, a crashed one, a timeout) as well as the app's error lines, and the
environment sends those HTTP logs to the alert's workspace. AKS: managed Prometheus scrapes the scoring pods'
/metrics (annotations, the add-on's settings ConfigMap, a collection rule to an Azure Monitor workspace) and a rule
group alerts on the 5xx share from the app's counter and on the Deployment having no ready replica.
(The KQL itself binds against the documented tables in tests/infra/test_kql_bind.py.)"""

from __future__ import annotations

import re

import pytest

from infra import k8s_manifests, kql, prometheus, stack_files
from testing import mockcloud

STACKS = ("dev", "staging", "prod")
BUILDS = {"promotion": stack_files.DELETE}
QUERY_RULE = "azure-native:monitor:ScheduledQueryRule"
PROM_RULES = "azure-native:alertsmanagement:PrometheusRuleGroup"


def overrides(stack: str, target: str) -> dict:
    return {**(BUILDS if stack == "prod" else {}), **({"serving.target": "aks"} if target == "aks" else {})}


def error_rate_rule(ev: mockcloud.Evaluation) -> dict:
    return ev.named(QUERY_RULE, "observability-alert-error-rate").inputs


@pytest.mark.parametrize("stack", STACKS)
def test_container_apps_error_rate_counts_the_ingress_5xx_and_the_app_error_lines(evaluate, stack):
    ev = evaluate(stack, overrides(stack, "containerapps"))
    rule = error_rate_rule(ev)
    condition = rule["criteria"]["allOf"][0]
    query = condition["query"]
    threshold = stack_files.stack_values(stack).get("observability", {}).get("errorRatePercent", 5)
    assert (condition["metricMeasureColumn"], condition["operator"], condition["threshold"]) == (
        "error_rate_percent", "GreaterThan", threshold)
    app = ev.one("azure-native:app:ContainerApp").inputs["containerAppName"]
    # the platform's own answers: 5xx whose status the app did not set
    assert f"ContainerAppHTTPLogs | where ContainerAppName == '{app}'" in query
    assert "platform_failed = countif(StatusCode >= 500 and ResponseCodeDetails != 'via_upstream')" in query
    # the app's error lines, and its own 5xx through the ingress: the same failures, counted once
    assert "tostring(entry.log_type) == 'error'" in query and "max_of(app_lines, app_answered_5xx)" in query
    assert "failed = platform_failed + max_of(app_lines, app_answered_5xx)" in query
    assert "requests = max_of(answered, ok + failed)" in query
    assert query == kql.alert_error_rate(kql.container_apps(app))
    # ... and the environment sends the HTTP logs to the workspace the rule reads
    environment = ev.one("azure-native:app:ManagedEnvironment")
    setting = ev.named("azure-native:monitor:DiagnosticSetting", "containerapp-diagnostics").inputs
    assert setting["resourceUri"] == environment.id and rule["scopes"] == [setting["workspaceId"]]
    assert {"category": "ContainerAppHTTPLogs", "enabled": True} in setting["logs"]
    saved = ev.named("azure-native:operationalinsights:SavedSearch", "observability-query-errors").inputs["query"]
    assert "ContainerAppHTTPLogs" in saved and "platform_failed" in saved


def test_without_an_ingress_log_the_error_rate_is_the_app_lines_only():
    """AKS behind a LoadBalancer Service, and the log-analytics destination, have no ingress log: the same
    query shape, with nothing the platform answered."""
    for source in (kql.aks("scoring", "scoring"), kql.container_apps("ca-x", "log-analytics")):
        query = kql.alert_error_rate(source)
        assert "ContainerAppHTTPLogs" not in query and "failed = app_lines" in query
        with pytest.raises(ValueError, match="no ingress log"):
            kql.platform_errors(source)


@pytest.fixture(scope="module", params=STACKS)
def aks(request, evaluate) -> mockcloud.Evaluation:
    return evaluate(request.param, overrides(request.param, "aks"))


def test_aks_scrapes_the_scoring_pods_metrics_into_an_azure_monitor_workspace(aks):
    cluster = aks.one("azure-native:containerservice:ManagedCluster")
    assert cluster.inputs["azureMonitorProfile"] == {"metrics": {"enabled": True}}
    workspace = aks.one("azure-native:monitor:AzureMonitorWorkspace")
    endpoint = aks.one("azure-native:monitor:DataCollectionEndpoint")
    rule = aks.named("azure-native:monitor:DataCollectionRule", "aks-prometheus-rule").inputs
    assert rule["dataSources"]["prometheusForwarder"][0]["streams"] == ["Microsoft-PrometheusMetrics"]
    assert rule["destinations"]["monitoringAccounts"] == [{"accountResourceId": workspace.id,
                                                           "name": "MonitoringAccount1"}]
    assert rule["dataFlows"] == [{"streams": ["Microsoft-PrometheusMetrics"], "destinations": ["MonitoringAccount1"]}]
    assert rule["dataCollectionEndpointId"] == endpoint.id
    association = aks.named("azure-native:monitor:DataCollectionRuleAssociation", "aks-prometheus-association").inputs
    assert association["resourceUri"] == cluster.id
    assert association["dataCollectionRuleId"] == aks.named("azure-native:monitor:DataCollectionRule",
                                                            "aks-prometheus-rule").id
    deployment = aks.one("kubernetes:apps/v1:Deployment").inputs
    namespace = deployment["metadata"]["namespace"]
    port = int(deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"])  # JSON: a float
    assert deployment["spec"]["template"]["metadata"]["annotations"] == k8s_manifests.scrape_annotations(port)
    settings = aks.one("kubernetes:core/v1:ConfigMap").inputs
    assert settings["metadata"] == {"name": "ama-metrics-settings-configmap", "namespace": "kube-system"}
    assert settings["data"]["pod-annotation-based-scraping"] == f'podannotationnamespaceregex = "{namespace}"'


def test_aks_alerts_on_the_app_5xx_share_and_on_no_ready_replica(aks):
    group = aks.one(PROM_RULES).inputs
    workspace = aks.one("azure-native:monitor:AzureMonitorWorkspace")
    cluster = aks.one("azure-native:containerservice:ManagedCluster")
    assert group["scopes"] == [workspace.id] and group["clusterName"] == cluster.inputs["resourceName"]
    observability = stack_files.stack_values(aks.stack).get("observability", {})
    threshold, window = observability.get("errorRatePercent", 5), observability.get("windowMinutes", 15)
    actions = [{"actionGroupId": aks.one("azure-native:monitor:ActionGroup").id}]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"ScoringErrorRate", "ScoringNoReadyReplica", "ScoringMetricsNotScraped"}
    assert all(r["actions"] == actions and r["enabled"] for r in alerts.values())
    namespace = aks.one("kubernetes:apps/v1:Deployment").inputs["metadata"]["namespace"]
    errors = alerts["ScoringErrorRate"]["expression"]
    assert f'status=~"5.."}}[{window}m]' in errors and errors.endswith(f"> {threshold:g}")
    assert errors.count(f'scoring_http_requests_total{{kubernetes_namespace="{namespace}", protocol!="none"') == 2
    ready = alerts["ScoringNoReadyReplica"]["expression"]
    assert ready == (f'max(kube_deployment_status_replicas_available{{namespace="{namespace}", '
                     f'deployment="{k8s_manifests.APP}"}}) < 1')
    assert 'job="kubernetes-pods"' in alerts["ScoringMetricsNotScraped"]["expression"]


def test_the_metric_the_alert_reads_is_the_one_the_app_serves():
    """The counter's exposed name and labels (prometheus_client adds `_total`), from the app's own registry."""
    from serving.scoring import metrics

    exposed = metrics.REQUESTS.describe()[0]
    assert exposed.name + "_total" == prometheus.METRIC
    assert {"status", "protocol"} <= set(metrics.REQUESTS._labelnames)
    assert metrics.NO_PROTOCOL == "none" and re.search(r'protocol!="none"', prometheus.rules(
        "scoring", "scoring", _settings())[0].expression)


def _settings():
    from infra import settings

    values = stack_files.stack_values("dev")
    return settings.from_values("dev", values, {}).observability
