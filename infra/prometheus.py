"""AKS: Azure Monitor managed Prometheus scrapes the scoring pods' `/metrics`, and alerts on what it collects.

Why here and not in Log Analytics: behind a plain LoadBalancer Service there is no L7 proxy, so the platform
returns no HTTP status of its own. A request that finds no ready pod is refused or times out at the TCP level;
what the platform does report is the Deployment's available replicas (kube-state-metrics). And the app's own
5xx counter (`scoring_http_requests_total{status=~"5.."}`) keeps counting when the Log Analytics daily cap
has stopped the request log.

What collects `/metrics` (the documented, least-moving-parts way; learn.microsoft.com/azure/azure-monitor/
containers/prometheus-metrics-scrape-configuration#enable-pod-annotation-based-scraping):
  - the cluster's azureMonitorProfile.metrics enables the ama-metrics add-on (it also runs kube-state-metrics);
  - an Azure Monitor workspace, a data collection endpoint and a rule (prometheusForwarder ->
    monitoringAccounts) associated with the cluster, named as Microsoft's onboarding template names them
    (github.com/Azure/prometheus-collector, AddonBicepTemplate/FullAzureMonitorMetricsProfile.bicep);
  - the pods carry `prometheus.io/scrape|path|port` annotations (infra/k8s_manifests.py), which the add-on
    honours only in namespaces matching `podannotationnamespaceregex` of the `ama-metrics-settings-configmap`
    in kube-system (declared by infra/aks.py). Plain v1 objects: a PodMonitor would need the add-on's CRD to
    exist before the first `up` creates it.
The pod-annotation job labels series `kubernetes_namespace` and `kubernetes_pod_name` (its job is
`kubernetes-pods`); kube-state-metrics series carry `namespace` and `deployment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native.alertsmanagement as alertsmanagement
import pulumi_azure_native.monitor as monitor

from infra.naming import Names
from infra.settings import ObservabilitySettings

STREAM = "Microsoft-PrometheusMetrics"
DESTINATION = "MonitoringAccount1"
SCRAPE_JOB = "kubernetes-pods"  # the add-on's pod-annotation job
METRIC = "scoring_http_requests_total"  # serving/scoring/metrics.py REQUESTS (a Counter: `_total` on the wire)


@dataclass(frozen=True)
class PrometheusArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    names: Names  # the Azure Monitor workspace's, the collection's, the rule group's and the cluster's
    cluster_id: pulumi.Input[str]
    namespace: str
    deployment: str
    settings: ObservabilitySettings
    action_group_id: pulumi.Input[str]
    tags: dict[str, str]


@dataclass(frozen=True)
class PromRule:
    alert: str
    expression: str
    for_minutes: int
    summary: str


def rules(namespace: str, deployment: str, settings: ObservabilitySettings) -> list[PromRule]:
    """The AKS alerts on managed Prometheus, with the thresholds and window of the log alerts."""
    window = f"{settings.window_minutes}m"
    # Scoring requests only (protocol != "none"): the kubelet's probes and the scraper's own GETs would dilute it.
    scoring = f'{METRIC}{{kubernetes_namespace="{namespace}", protocol!="none"'
    failed = f'sum(increase({scoring}, status=~"5.."}}[{window}]))'
    total = f"sum(increase({scoring}}}[{window}]))"
    available = f'kube_deployment_status_replicas_available{{namespace="{namespace}", deployment="{deployment}"}}'
    scraped = f'up{{job="{SCRAPE_JOB}", kubernetes_namespace="{namespace}"}}'
    return [
        PromRule("ScoringErrorRate", f"100 * {failed} / {total} > {settings.error_rate_percent:g}", 0,
                 f"5xx share of scoring requests above {settings.error_rate_percent:g}% (the pods' /metrics)"),
        # With no available replica the Service has no endpoint: every request is refused, none gets a status.
        PromRule("ScoringNoReadyReplica", f"max({available}) < 1", 2,
                 "no ready scoring replica: every request fails without an HTTP status"),
        # The promise that /metrics is scraped: no successful scrape in the window means the alerts above are blind.
        PromRule("ScoringMetricsNotScraped", f"absent_over_time({scraped}[{window}]) or max({scraped}) < 1",
                 settings.window_minutes, "the scoring pods' /metrics is not being scraped"),
    ]


class ManagedPrometheus(pulumi.ComponentResource):
    workspace: monitor.AzureMonitorWorkspace

    def __init__(self, name: str, args: PrometheusArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:ManagedPrometheus", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.workspace = monitor.AzureMonitorWorkspace(
            f"{name}-workspace", azure_monitor_workspace_name=args.names.monitor_workspace,
            resource_group_name=args.resource_group_name, location=args.location, tags=args.tags, opts=child)
        self.association = self._collection(name, args, child)
        self.rule_group = self._alerts(name, args, child)
        self.register_outputs({"workspace_id": self.workspace.id})

    def _collection(self, name: str, args: PrometheusArgs,
                    child: pulumi.ResourceOptions) -> monitor.DataCollectionRuleAssociation:
        """The add-on sends what the rule associated with the cluster asks for, to the Azure Monitor workspace."""
        prefix = args.names.prometheus_collection
        endpoint = monitor.DataCollectionEndpoint(
            f"{name}-endpoint", data_collection_endpoint_name=prefix, resource_group_name=args.resource_group_name,
            location=args.location, kind="Linux", tags=args.tags, opts=child)
        rule = monitor.DataCollectionRule(
            f"{name}-rule", data_collection_rule_name=prefix, resource_group_name=args.resource_group_name,
            location=args.location, kind="Linux", data_collection_endpoint_id=endpoint.id,
            description="Managed Prometheus: the cluster's metrics and the scoring pods' /metrics",
            data_sources=monitor.DataCollectionRuleDataSourcesArgs(prometheus_forwarder=[
                monitor.PrometheusForwarderDataSourceArgs(name="PrometheusDataSource", streams=[STREAM],
                                                          label_include_filter={})]),
            destinations=monitor.DataCollectionRuleDestinationsArgs(monitoring_accounts=[
                monitor.MonitoringAccountDestinationArgs(account_resource_id=self.workspace.id, name=DESTINATION)]),
            data_flows=[monitor.DataFlowArgs(streams=[STREAM], destinations=[DESTINATION])],
            tags=args.tags, opts=child)
        return monitor.DataCollectionRuleAssociation(
            f"{name}-association", association_name=prefix, resource_uri=args.cluster_id, data_collection_rule_id=rule.id,
            description="the cluster's Prometheus metrics go where the rule says", opts=child)

    def _alerts(self, name: str, args: PrometheusArgs,
                child: pulumi.ResourceOptions) -> alertsmanagement.PrometheusRuleGroup:
        s = args.settings
        return alertsmanagement.PrometheusRuleGroup(
            f"{name}-alerts", rule_group_name=args.names.prometheus_rule_group,
            resource_group_name=args.resource_group_name, location=args.location, cluster_name=args.names.aks_cluster,
            interval="PT1M", enabled=True,
            description="Scoring service on AKS: 5xx share, ready replicas, /metrics scraped",
            # One scope, the Azure Monitor workspace (the API allows one); cluster_name narrows it to this cluster.
            scopes=[self.workspace.id],
            rules=[alertsmanagement.PrometheusRuleArgs(
                alert=r.alert, expression=r.expression, for_=f"PT{r.for_minutes}M" if r.for_minutes else None,
                severity=s.alert_severity, enabled=True, annotations={"summary": r.summary},
                labels={"namespace": args.namespace},
                actions=[alertsmanagement.PrometheusRuleGroupActionArgs(action_group_id=args.action_group_id)],
                resolve_configuration=alertsmanagement.PrometheusRuleResolveConfigurationArgs(
                    auto_resolved=True, time_to_resolve="PT10M")) for r in rules(args.namespace, args.deployment, s)],
            tags=args.tags, opts=child)
