"""The documented schema (column -> KQL type) of every Log Analytics table our KQL reads (infra/kql.py).

Why: ARM validates a scheduled query rule's query only when the rule is created, in the cloud, and a
mock accepts anything. tests/infra/test_kql_bind.py binds every query the program declares against
these schemas with Microsoft's Kusto parser, offline. So a schema here must be what Azure documents,
never what makes a query pass: each table names the page its columns were copied from.

Azure tables (no `_CL`): copied column for column from Azure Monitor's table reference
(learn.microsoft.com/azure/azure-monitor/reference/tables/<table>; its source is the
MicrosoftDocs/azure-reference-other repository, azure-monitor-ref/tables/includes/<table>-include.md).

Custom-log tables (`_CL`, the Container Apps `log-analytics` destination): Container Apps writes them
through the HTTP Data Collector API, which suffixes each column with its type (`_s` string, `_d`
double, `_b` bool, `_t` datetime, `_g` GUID stored as a string), and creates a column only when a
record carries it. No page lists their full schema: the columns below are the ones Container Apps'
logging doc names, plus the standard columns every Log Analytics table has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

AZURE_MONITOR_TABLES = "https://learn.microsoft.com/azure/azure-monitor/reference/tables/"
CONTAINER_APPS_LOG_ANALYTICS = "https://learn.microsoft.com/azure/container-apps/log-monitoring"
DATA_COLLECTOR_SUFFIXES = "https://learn.microsoft.com/azure/azure-monitor/logs/data-collector-api#record-type-and-properties"
STANDARD_COLUMNS = "https://learn.microsoft.com/azure/azure-monitor/logs/log-standard-columns"


@dataclass(frozen=True)
class Table:
    name: str
    columns: Mapping[str, str]  # column -> KQL scalar type, as documented
    docs: tuple[str, ...]       # where the columns come from

    @property
    def custom_log(self) -> bool:
        return self.name.endswith("_CL")


# The standard columns of every Azure table, as each table reference page lists them.
_AZURE_STANDARD = {"_BilledSize": "real", "_IsBillable": "string", "_ResourceId": "string", "SourceSystem": "string",
                   "_SubscriptionId": "string", "TenantId": "string", "TimeGenerated": "datetime", "Type": "string"}
# A custom-log table has the workspace's standard columns (log-standard-columns) but no per-table page.
_CUSTOM_LOG_STANDARD = {"TimeGenerated": "datetime", "Type": "string", "TenantId": "string", "_ResourceId": "string",
                        "_SubscriptionId": "string", "_IsBillable": "string", "_BilledSize": "real"}


def _azure(name: str, columns: Mapping[str, str]) -> Table:
    return Table(name, {**_AZURE_STANDARD, **columns}, (AZURE_MONITOR_TABLES + name.lower(),))


def _without_standard(name: str, columns: Mapping[str, str], absent: tuple[str, ...]) -> Table:
    """An Azure table whose page does not list every usual standard column."""
    table = _azure(name, columns)
    return Table(name, {k: v for k, v in table.columns.items() if k not in absent}, table.docs)


# Container Apps, `azure-monitor` destination (a diagnostic setting on the managed environment).
_CONTAINER_APP_CONSOLE_LOGS = _azure("ContainerAppConsoleLogs", {
    "ContainerAppName": "string", "ContainerGroupId": "string", "ContainerGroupName": "string", "ContainerId": "string",
    "ContainerImage": "string", "ContainerName": "string", "EnvironmentName": "string", "JobName": "string",
    "Location": "string", "Log": "string", "OperationName": "string", "RevisionName": "string", "Stream": "string"})
_CONTAINER_APP_SYSTEM_LOGS = _azure("ContainerAppSystemLogs", {
    "ComponentName": "string", "ComponentType": "string", "ContainerAppName": "string", "ContainerName": "string",
    "Count": "int", "EnvironmentName": "string", "EventSource": "string", "JobName": "string", "Location": "string",
    "Log": "string", "OperationName": "string", "Reason": "string", "ReplicaName": "string", "RevisionName": "string"})
# The ingress's request log: only with a diagnostic setting enabling the category ContainerAppHTTPLogs
# (learn.microsoft.com/azure/container-apps/log-monitoring#http-logs); the log-analytics destination has none.
_CONTAINER_APP_HTTP_LOGS = _azure("ContainerAppHTTPLogs", {
    "Authority": "string", "BytesReceived": "long", "BytesSent": "long", "ConnectionId": "string",
    "ContainerAppName": "string", "EnvironmentName": "string", "EnvoyContainerId": "string", "EnvoyPodName": "string",
    "Location": "string", "Method": "string", "OperationName": "string", "Path": "string", "Protocol": "string",
    "ReplicaName": "string", "RequestDuration": "long", "RequestId": "string", "ResponseCodeDetails": "string",
    "ResponseFlags": "string", "RevisionName": "string", "StartTime": "datetime", "StatusCode": "int",
    "UpstreamHost": "string", "UpstreamRequestAttemptCount": "int", "UserAgent": "string", "XForwardedFor": "string"})

# Container Apps, `log-analytics` destination (the environment writes with the workspace's shared key).
# The logging doc lists "the most used" columns only.
_CONTAINER_APP_CONSOLE_LOGS_CL = Table("ContainerAppConsoleLogs_CL", {
    **_CUSTOM_LOG_STANDARD,
    # Listed in the doc's table of console-log columns (ContainerGroupName_g: a GUID suffix, stored as a string).
    "ContainerAppName_s": "string", "ContainerGroupName_g": "string", "ContainerId_s": "string",
    "ContainerImage_s": "string", "EnvironmentName_s": "string", "Log_s": "string", "RevisionName_s": "string",
    # Used by the doc's example queries (project ... Container=ContainerName_s ..., LogLevel_s).
    "ContainerName_s": "string", "LogLevel_s": "string"},
    (CONTAINER_APPS_LOG_ANALYTICS, DATA_COLLECTOR_SUFFIXES, STANDARD_COLUMNS))
_CONTAINER_APP_SYSTEM_LOGS_CL = Table("ContainerAppSystemLogs_CL", {
    **_CUSTOM_LOG_STANDARD,
    # Listed in the doc's table of system-log columns.
    "ContainerAppName_s": "string", "EnvironmentName_s": "string", "Log_s": "string", "RevisionName_s": "string",
    # Used by the doc's example queries.
    "LogLevel_s": "string",
    # NOT in the Container Apps doc: the documented ContainerAppSystemLogs.Reason (string) under the Data
    # Collector API's string suffix. The restart alert filters on it; a deployment is the only full proof.
    "Reason_s": "string"},
    (CONTAINER_APPS_LOG_ANALYTICS, DATA_COLLECTOR_SUFFIXES, STANDARD_COLUMNS, AZURE_MONITOR_TABLES + "containerappsystemlogs"))

# AKS, Container Insights.
_CONTAINER_LOG_V2 = _azure("ContainerLogV2", {
    "Computer": "string", "ContainerId": "string", "ContainerName": "string", "KubernetesMetadata": "dynamic",
    "LogLevel": "string", "LogMessage": "dynamic", "LogSource": "string", "PodName": "string", "PodNamespace": "string"})
# KubePodInventory's page lists no TenantId column.
_KUBE_POD_INVENTORY = _without_standard("KubePodInventory", {
    "ClusterId": "string", "ClusterName": "string", "Computer": "string", "ContainerCreationTimeStamp": "datetime",
    "ContainerID": "string", "ContainerLastStatus": "string", "ContainerName": "string", "ContainerRestartCount": "int",
    "ContainerStartTime": "datetime", "ContainerStatus": "string", "ContainerStatusReason": "string",
    "ControllerKind": "string", "ControllerName": "string", "InstanceName": "string", "Name": "string",
    "Namespace": "string", "PodCreationTimeStamp": "datetime", "PodIp": "string", "PodLabel": "string",
    "PodRestartCount": "int", "PodStartTime": "datetime", "PodStatus": "string", "PodUid": "string",
    "ServiceName": "string"}, absent=("TenantId",))

# Application Insights (workspace-based): the drift job's record.
_APP_TRACES = _azure("AppTraces", {
    "AppRoleInstance": "string", "AppRoleName": "string", "AppVersion": "string", "ClientBrowser": "string",
    "ClientCity": "string", "ClientCountryOrRegion": "string", "ClientIP": "string", "ClientModel": "string",
    "ClientOS": "string", "ClientStateOrProvince": "string", "ClientType": "string", "IKey": "string",
    "ItemCount": "int", "Measurements": "dynamic", "Message": "string", "OperationId": "string",
    "OperationName": "string", "ParentId": "string", "Properties": "dynamic", "ReferencedItemId": "string",
    "ReferencedType": "string", "ResourceGUID": "string", "SDKVersion": "string", "SessionId": "string",
    "SeverityLevel": "int", "SyntheticSource": "string", "UserAccountId": "string", "UserAuthenticatedId": "string",
    "UserId": "string"})

TABLES: dict[str, Table] = {t.name: t for t in (
    _CONTAINER_APP_CONSOLE_LOGS, _CONTAINER_APP_SYSTEM_LOGS, _CONTAINER_APP_HTTP_LOGS, _CONTAINER_APP_CONSOLE_LOGS_CL,
    _CONTAINER_APP_SYSTEM_LOGS_CL, _CONTAINER_LOG_V2, _KUBE_POD_INVENTORY, _APP_TRACES)}


def schemas() -> dict[str, dict[str, str]]:
    """{table: {column: type}}, the form scripts/kusto_bind.cjs reads."""
    return {name: dict(table.columns) for name, table in TABLES.items()}
