"""The rules' shape (`Rule`: a key, the platform's rule in one line, its source, a check) and what several
platforms' checks share: the resource types they read and lookups into a resource's inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testing.mockcloud import Evaluation

APP = "azure-native:app:ContainerApp"
ENVIRONMENT = "azure-native:app:ManagedEnvironment"
QUERY_RULE = "azure-native:monitor:ScheduledQueryRule"
DIAGNOSTICS = "azure-native:monitor:DiagnosticSetting"
ROLE = "azure-native:authorization:RoleAssignment"
CLUSTER = "azure-native:containerservice:ManagedCluster"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
JOB = "databricks:index/job:Job"
RULE_SET = "databricks:index/accessControlRuleSet:AccessControlRuleSet"
DCR = "azure-native:monitor:DataCollectionRule"
DCRA = "azure-native:monitor:DataCollectionRuleAssociation"
MONITOR_WORKSPACE = "azure-native:monitor:AzureMonitorWorkspace"
PROM_RULES = "azure-native:alertsmanagement:PrometheusRuleGroup"
AUTH_CONFIG = "azure-native:app:ContainerAppsAuthConfig"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ERROR_RATE_ALERT = "-alert-error-rate"  # infra/observability.py names each log alert <component>-alert-<key>


@dataclass(frozen=True)
class Rule:
    key: str
    says: str  # the platform's rule, in one line
    doc: str  # where it is documented
    check: Callable[[Evaluation], list[str]]  # violations, each naming the resource


def _get(value: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and len(value) > key else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", duration or "")
    if not match:
        return -1
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return days * 1440 + hours * 60 + minutes
