"""Log Analytics, Application Insights, the action group, alert rules and saved queries."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native.applicationinsights as appinsights
import pulumi_azure_native.monitor as monitor
import pulumi_azure_native.operationalinsights as operationalinsights

from infra import kql
from infra.naming import Names
from infra.settings import ObservabilitySettings

DRIFT_WINDOW_MINUTES = 60


@dataclass(frozen=True)
class ObservabilityArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    names: Names  # the stack's names (infra/naming.py): workspace, component, action group, alert rules
    settings: ObservabilitySettings
    log_source: kql.LogSource
    serving_deployed: bool  # no workload yet (bootstrap): no log alert rules (see alert_rules)
    tags: dict[str, str]
    protect: bool = False  # the workspace holds the request log history


@dataclass(frozen=True)
class AlertRule:
    key: str
    display: str
    query: str
    measure: str
    operator: str
    threshold: float
    aggregation: str
    window_minutes: int
    severity: int | None = None  # None: the stack's observability.alertSeverity


class Observability(pulumi.ComponentResource):
    workspace: operationalinsights.Workspace
    workspace_id: pulumi.Output[str]
    customer_id: pulumi.Output[str]

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        self.workspace = operationalinsights.Workspace(
            f"{name}-workspace", workspace_name=args.names.log_analytics, resource_group_name=args.resource_group_name,
            location=args.location, sku=operationalinsights.WorkspaceSkuArgs(name="PerGB2018"),
            retention_in_days=s.retention_days,
            workspace_capping=(operationalinsights.WorkspaceCappingArgs(daily_quota_gb=s.daily_cap_gb)
                               if s.daily_cap_gb is not None else None),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        self.workspace_id, self.customer_id = self.workspace.id, self.workspace.customer_id
        self.app_insights = appinsights.Component(
            f"{name}-appinsights", resource_name_=args.names.app_insights,
            resource_group_name=args.resource_group_name, location=args.location, kind="web", application_type="web",
            ingestion_mode="LogAnalytics", workspace_resource_id=self.workspace.id,
            # Entra ID only: telemetry needs a token of an identity with Monitoring Metrics Publisher on this
            # component (the drift job's), not just the instrumentation key in the connection string.
            disable_local_auth=True, tags=args.tags, opts=child)
        self.app_insights_id = self.app_insights.id
        # Where the drift job sends its record (AppTraces in this workspace); kept secret all the same.
        self.connection_string: pulumi.Output[str] = pulumi.Output.secret(self.app_insights.connection_string)
        self.action_group = monitor.ActionGroup(
            f"{name}-actions", action_group_name=args.names.action_group, resource_group_name=args.resource_group_name,
            location="global", enabled=True, group_short_name=args.names.action_group_short,  # at most 12 characters
            email_receivers=[monitor.MicrosoftCommonEmailReceiverArgs(name=f"email-{i}", email_address=address,
                                                                      use_common_alert_schema=True)
                             for i, address in enumerate(s.alert_emails)],
            webhook_receivers=[monitor.WebhookReceiverArgs(name=f"webhook-{i}", service_uri=url, use_common_alert_schema=True)
                               for i, url in enumerate(s.alert_webhooks)],
            tags=args.tags, opts=child)
        self.alerts = {rule.key: self._alert(name, rule, args) for rule in alert_rules(args)}
        self.saved_queries = self._saved_queries(name, args, child)
        self.register_outputs({"workspace_id": self.workspace_id})

    def _alert(self, name: str, rule: AlertRule, args: ObservabilityArgs) -> monitor.ScheduledQueryRule:
        s = args.settings
        window = f"PT{rule.window_minutes}M"
        return monitor.ScheduledQueryRule(
            f"{name}-alert-{rule.key}", rule_name=args.names.alert_rule(rule.key),
            resource_group_name=args.resource_group_name, location=args.location,
            display_name=f"{args.names.project} ({args.names.environment}) {rule.display}", description=rule.display,
            kind="LogAlert",
            severity=rule.severity if rule.severity is not None else s.alert_severity, enabled=True,
            scopes=[self.workspace.id],
            evaluation_frequency="PT5M", window_size=window, auto_mitigate=True,
            # ARM checks the query at create time, and the tables it reads appear only with their first log line
            # ("Failed to resolve table" on a first up). The queries are bound offline instead (tests/infra).
            skip_query_validation=True,
            criteria=monitor.ScheduledQueryRuleCriteriaArgs(all_of=[monitor.ConditionArgs(
                query=rule.query, time_aggregation=rule.aggregation, metric_measure_column=rule.measure,
                operator=rule.operator, threshold=rule.threshold,
                failing_periods=monitor.ConditionFailingPeriodsArgs(number_of_evaluation_periods=1,
                                                                    min_failing_periods_to_alert=1))]),
            actions=monitor.ActionsArgs(action_groups=[self.action_group.id]),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self))

    def _saved_queries(self, name: str, args: ObservabilityArgs,
                       child: pulumi.ResourceOptions) -> dict[str, operationalinsights.SavedSearch]:
        queries = {"latency": ("Scoring latency percentiles", kql.latency(args.log_source)),
                   "errors": ("Scoring error rate", kql.error_rate(args.log_source)),
                   "probabilities": ("Predicted probability distribution", kql.probability_distribution(args.log_source))}
        return {key: operationalinsights.SavedSearch(
            f"{name}-query-{key}", saved_search_id=f"scoring-{key}", resource_group_name=args.resource_group_name,
            workspace_name=self.workspace.name, category="Scoring service", display_name=display, query=query,
            tags=[operationalinsights.TagArgs(name=k, value=v) for k, v in args.tags.items()], opts=child)
            for key, (display, query) in queries.items()}


# Silence alone is no outage (the error-rate and restart alerts see failures) and a quiet night is normal: the
# no-traffic alert is Informational (3), a notice on the action group, never a page at the stack's severity.
NO_TRAFFIC_SEVERITY = 3


def alert_rules(args: ObservabilityArgs) -> list[AlertRule]:
    """The rules the stack's values ask for: errors, latency, restarts, drift; no-traffic only where noTrafficMinutes > 0.
    None before the stack serves (bootstrap): their tables (ContainerApp*Logs, KubePodInventory, AppTraces) appear
    only with the workload's first log line, and Azure disables a rule whose query has failed for a week
    (microsoft/AzureMonitorCommunity#175) without anything re-enabling it; the `up` that deploys the workload
    declares them."""
    if not args.serving_deployed:
        return []
    s, source, window = args.settings, args.log_source, args.settings.window_minutes
    rules = [
        AlertRule("error-rate", f"5xx rate above {s.error_rate_percent:g}%", kql.alert_error_rate(source),
                  "error_rate_percent", "GreaterThan", s.error_rate_percent, "Maximum", window),
        AlertRule("p95-latency", f"p95 latency above {s.p95_latency_ms:g} ms", kql.alert_p95_latency(source),
                  "p95_ms", "GreaterThan", s.p95_latency_ms, "Maximum", window),
        AlertRule("restarts", f"{s.restart_threshold}+ container restarts", kql.alert_restarts(source),
                  "restarts", "GreaterThanOrEqual", s.restart_threshold, "Maximum", window),
    ]
    # The scheduled drift job (infra/databricks.py) sends one record per model version and run to Application
    # Insights; a drifted one alerts once: the window is shorter than any sensible schedule.
    rules.append(AlertRule("drift", "input or prediction drift (drift job)", kql.alert_drift(),
                           "drifted_versions", "GreaterThan", 0, "Maximum", DRIFT_WINDOW_MINUTES))
    # The quality job (monitoring/quality_delta.py) sends one record per run; one that says retrain alerts once, on the
    # same action group: where a training job exists it has also started it, in prod people decide.
    rules.append(AlertRule("quality", "model quality says retrain (quality job)", kql.alert_quality(),
                           "retraining_models", "GreaterThan", 0, "Maximum", DRIFT_WINDOW_MINUTES))
    if s.no_traffic_minutes:  # the rule's window is the silence that counts as "no traffic"
        rules.append(AlertRule("no-traffic", f"no requests for {s.no_traffic_minutes} min", kql.alert_traffic(source),
                               "requests", "LessThan", 1, "Maximum", s.no_traffic_minutes,
                               max(NO_TRAFFIC_SEVERITY, s.alert_severity)))
    return rules
