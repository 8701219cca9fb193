"""Kubernetes on AKS: pods' secret references, the HPA, Container Insights and managed Prometheus (their data
collection rules, scraping, rule groups), Entra-only cluster access, the network policy engine and the load
balancer's idle timeout.
"""

from __future__ import annotations

import json
import re

from infra import k8s_manifests
from testing.mockcloud import Evaluation
from testing.platform_rules.common import (
    CLUSTER,
    CONFIG_MAP,
    DCR,
    DCRA,
    DEPLOYMENT,
    HPA,
    MONITOR_WORKSPACE,
    NETWORK_POLICY,
    PROM_RULES,
    Rule,
    _get,
    _minutes,
)


def pod_secret_refs(ev: Evaluation) -> list[str]:
    """A pod whose variable refers to a missing Secret or key does not start (CreateContainerConfigError): the Secret
    is declared in the Deployment's namespace with that key, and the Deployment rolls when it changes (pods read
    it at start)."""
    problems = []
    secrets = {(_get(s.inputs, "metadata", "namespace"), _get(s.inputs, "metadata", "name")): s
               for s in ev.of_type("kubernetes:core/v1:Secret")}
    for deployment in ev.of_type(DEPLOYMENT):
        namespace = _get(deployment.inputs, "metadata", "namespace")
        template = _get(deployment.inputs, "spec", "template") or {}
        for container in _get(template, "spec", "containers") or []:
            for var in container.get("env") or []:
                ref = _get(var, "valueFrom", "secretKeyRef")
                if not ref:
                    continue
                secret = secrets.get((namespace, ref.get("name")))
                if secret is None or ref.get("key") not in {**(secret.inputs.get("stringData") or {}),
                                                           **(secret.inputs.get("data") or {})}:
                    problems.append(f"{deployment.name}: {var.get('name')} refers to key {ref.get('key')!r} of Secret "
                                    f"{ref.get('name')!r}, which {namespace} does not hold")
                elif not (_get(template, "metadata", "annotations") or {}).get(k8s_manifests.SECRET_VERSION):
                    problems.append(f"{deployment.name}: reads Secret {ref.get('name')!r} but does not roll when it "
                                    f"changes (no {k8s_manifests.SECRET_VERSION} annotation)")
    return problems


def hpa_owns_replicas(ev: Evaluation) -> list[str]:
    scaled = {_get(h.inputs, "spec", "scaleTargetRef", "name") for h in ev.of_type(HPA)}
    return [f"{d.name}: sets spec.replicas while an HPA scales it" for d in ev.of_type(DEPLOYMENT)
            if _get(d.inputs, "metadata", "name") in scaled and _get(d.inputs, "spec", "replicas") is not None]


def container_insights_collects(ev: Evaluation) -> list[str]:
    problems = []
    for cluster in ev.of_type(CLUSTER):
        oms = _get(cluster.inputs, "addonProfiles", "omsagent") or {}
        if not oms.get("enabled") or _get(oms, "config", "useAADAuth") != "true":
            continue
        rules = {r.id: r for r in ev.of_type("azure-native:monitor:DataCollectionRule")
                 if "Microsoft-ContainerInsights-Group-Default" in json.dumps(r.inputs.get("dataSources"))}
        # The agent looks for the association by this exact name.
        associated = [a for a in ev.of_type("azure-native:monitor:DataCollectionRuleAssociation")
                      if a.inputs.get("resourceUri") == cluster.id and a.inputs.get("dataCollectionRuleId") in rules
                      and a.inputs.get("associationName") == "ContainerInsightsExtension"]
        if not associated:
            problems.append(f"{cluster.name}: Container Insights with managed identity needs a data collection rule "
                            "associated with the cluster")
    return problems


def managed_prometheus_collects(ev: Evaluation) -> list[str]:
    """The metrics add-on sends what a data collection rule associated with the cluster asks for: Prometheus metrics
    (prometheusForwarder) through a data collection endpoint to an Azure Monitor workspace (monitoringAccounts)."""
    problems = []
    workspaces = {w.id for w in ev.of_type(MONITOR_WORKSPACE)}
    for cluster in ev.of_type(CLUSTER):
        if not _get(cluster.inputs, "azureMonitorProfile", "metrics", "enabled"):
            continue
        if _get(cluster.inputs, "identity", "type") not in ("SystemAssigned", "UserAssigned"):
            problems.append(f"{cluster.name}: managed Prometheus needs a cluster with a managed identity")
        rules = {r.id: r for r in ev.of_type(DCR)
                 if "Microsoft-PrometheusMetrics" in json.dumps(_get(r.inputs, "dataSources", "prometheusForwarder"))
                 and r.inputs.get("dataCollectionEndpointId")
                 and {d.get("accountResourceId") for d in _get(r.inputs, "destinations", "monitoringAccounts") or []}
                 & workspaces}
        if not any(a.inputs.get("resourceUri") == cluster.id and a.inputs.get("dataCollectionRuleId") in rules
                   for a in ev.of_type(DCRA)):
            problems.append(f"{cluster.name}: managed Prometheus is enabled but no rule associated with the cluster "
                            "forwards Microsoft-PrometheusMetrics through an endpoint to an Azure Monitor workspace")
    return problems


def annotated_pods_scraped(ev: Evaluation) -> list[str]:
    """Pod annotations are honoured only in namespaces matching podannotationnamespaceregex of the add-on's settings
    ConfigMap (kube-system/ama-metrics-settings-configmap), on a cluster with the add-on enabled."""
    settings = [c for c in ev.of_type(CONFIG_MAP) if _get(c.inputs, "metadata", "name") == "ama-metrics-settings-configmap"
                and _get(c.inputs, "metadata", "namespace") == "kube-system"]
    regexes = [re.search(r'podannotationnamespaceregex\s*=\s*"([^"]*)"',
                         str(_get(c.inputs, "data", "pod-annotation-based-scraping") or "")) for c in settings]
    enabled = any(_get(c.inputs, "azureMonitorProfile", "metrics", "enabled") for c in ev.of_type(CLUSTER))
    problems = []
    for deployment in ev.of_type(DEPLOYMENT):
        annotations = _get(deployment.inputs, "spec", "template", "metadata", "annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        namespace = _get(deployment.inputs, "metadata", "namespace") or "default"
        if not enabled:
            problems.append(f"{deployment.name}: asks to be scraped, but no cluster has managed Prometheus enabled")
        elif not any(m and m.group(1) and re.fullmatch(m.group(1), namespace) for m in regexes):
            problems.append(f"{deployment.name}: asks to be scraped, but podannotationnamespaceregex of "
                            f"kube-system/ama-metrics-settings-configmap does not match namespace {namespace!r}")
        if not str(annotations.get("prometheus.io/port", "")).isdigit():
            problems.append(f"{deployment.name}: prometheus.io/port must be the port number")
    return problems


PROM_INTERVAL_MINUTES = range(1, 16)  # a rule group's interval, and an alert's time to resolve: 1..15 minutes


def prometheus_rule_groups(ev: Evaluation) -> list[str]:
    """A rule group queries one Azure Monitor workspace (its only scope in this API version), every 1..15 minutes;
    durations are ISO 8601; severity 0..4; an alert rule has an alert name and no `record`."""
    workspaces = {w.id for w in ev.of_type(MONITOR_WORKSPACE)}
    clusters = {str(c.inputs.get("resourceName")) for c in ev.of_type(CLUSTER)}
    problems = []
    for group in ev.of_type(PROM_RULES):
        scopes = group.inputs.get("scopes") or []
        if len(scopes) != 1 or scopes[0] not in workspaces:
            problems.append(f"{group.name}: scopes must be exactly one declared Azure Monitor workspace, not {scopes}")
        if _minutes(str(group.inputs.get("interval", ""))) not in PROM_INTERVAL_MINUTES:
            problems.append(f"{group.name}: interval {group.inputs.get('interval')} is not 1..15 minutes (ISO 8601)")
        if group.inputs.get("clusterName") and group.inputs["clusterName"] not in clusters:
            problems.append(f"{group.name}: clusterName {group.inputs['clusterName']!r} is not a declared cluster")
        for rule in group.inputs.get("rules") or []:
            problems += [f"{group.name}: {problem}" for problem in _prometheus_rule(rule)]
    return problems


def _prometheus_rule(rule: dict) -> list[str]:
    name, problems = rule.get("alert") or rule.get("record"), []
    if bool(rule.get("alert")) == bool(rule.get("record")):
        problems.append(f"rule {name!r} must have either an alert or a record name")
    if "for" in rule and _minutes(str(rule["for"])) < 0:
        problems.append(f"rule {name}: for {rule['for']!r} is not an ISO 8601 duration")
    resolve = _get(rule, "resolveConfiguration", "timeToResolve")
    if resolve is not None and _minutes(str(resolve)) not in PROM_INTERVAL_MINUTES:
        problems.append(f"rule {name}: timeToResolve {resolve} is not 1..15 minutes")
    if rule.get("alert") and rule.get("severity") not in range(5):
        problems.append(f"rule {name}: severity {rule.get('severity')} is not 0..4")
    return problems


def aks_entra_only(ev: Evaluation) -> list[str]:
    """Without Entra integration and with local accounts on, listClusterUserCredential returns the cluster's static
    credential, which has full rights: the PR preview's identity (it must fetch the kubeconfig to diff) would hold an
    admin's. With Entra, Azure RBAC and no local accounts the kubeconfig carries no credential, only the endpoint and an
    exec login, and the caller's Azure roles on the cluster decide; so the provider's kubeconfig must hold no token,
    password or client key of its own. And the exec command is a name on PATH: `up --refresh` refreshes with the
    kubeconfig as the state holds it, before the program runs, on whatever machine refreshes (client-go runs the
    command as given: kubernetes.io/docs/reference/access-authn-authz/authentication/#configuration)."""
    import yaml

    problems = []
    for cluster in ev.of_type(CLUSTER):
        aad = cluster.inputs.get("aadProfile") or {}
        if not (aad.get("managed") and aad.get("enableAzureRBAC") and cluster.inputs.get("disableLocalAccounts")):
            problems.append(f"{cluster.name}: needs aadProfile.managed, aadProfile.enableAzureRBAC and "
                            "disableLocalAccounts, or its user kubeconfig is an admin credential")
    for provider in ev.of_type("pulumi:providers:kubernetes"):
        config = yaml.safe_load(str(provider.inputs.get("kubeconfig") or "")) or {}
        for user in config.get("users") or [] if isinstance(config, dict) else []:
            held = {"token", "password", "client-key-data", "client-key"} & set(user.get("user") or {})
            command = str(((user.get("user") or {}).get("exec") or {}).get("command", ""))
            if held:
                problems.append(f"{provider.name}: kubeconfig user {user.get('name')} holds {sorted(held)}: use an "
                                "Entra login (an exec plugin), not a static credential")
            elif not command or "/" in command:
                problems.append(f"{provider.name}: kubeconfig user {user.get('name')} logs in with "
                                f"{command or 'no exec plugin'}: an exec command found on PATH, not a path on the "
                                "machine that ran `up`")
    return problems


LB_IDLE = "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"
LB_DEFAULT_IDLE_MINUTES = 4


def lb_outlasts_keep_alive(ev: Evaluation) -> list[str]:
    """An Azure load balancer ends a flow idle longer than its rule's timeout (4 minutes unless the Service's
    annotation says 4..100), silently where its TCP reset is off: the service behind it must end an idle keep-alive
    connection first (KEEP_ALIVE_S, its container's variable or serving/scoring/settings.py's default)."""
    default = k8s_manifests.KEEP_ALIVE_S
    keep_alive = {_get(d.inputs, "metadata", "namespace"): max(
        [int(var.get("value") or default) for c in _get(d.inputs, "spec", "template", "spec", "containers") or []
         for var in c.get("env") or [] if var.get("name") == "KEEP_ALIVE_S"] or [default])
        for d in ev.of_type(DEPLOYMENT)}
    problems = []
    for service in ev.of_type("kubernetes:core/v1:Service"):
        if _get(service.inputs, "spec", "type") != "LoadBalancer":
            continue
        value = str((_get(service.inputs, "metadata", "annotations") or {}).get(LB_IDLE, LB_DEFAULT_IDLE_MINUTES))
        seconds = keep_alive.get(_get(service.inputs, "metadata", "namespace"), default)
        if not value.isdigit() or not 4 <= int(value) <= 100:
            problems.append(f"{service.name}: {LB_IDLE} is {value!r}: a whole number of minutes, 4..100")
        elif int(value) * 60 <= seconds:
            problems.append(f"{service.name}: the load balancer ends idle connections after {value} minutes, before "
                            f"the service's keep-alive of {seconds} s: set {LB_IDLE} above it")
    return problems


POLICY_ENGINES = {"azure", "calico", "cilium"}


def network_policy_engine(ev: Evaluation) -> list[str]:
    """Without an engine the API server stores NetworkPolicy objects and nothing enforces them. Cilium's policy comes
    with the Cilium dataplane of Azure CNI (both or neither); the engine is chosen at creation."""
    if not ev.of_type(NETWORK_POLICY):
        return []
    problems = []
    for cluster in ev.of_type(CLUSTER):
        profile = cluster.inputs.get("networkProfile") or {}
        engine, dataplane, plugin = (profile.get(k) for k in ("networkPolicy", "networkDataplane", "networkPlugin"))
        if engine not in POLICY_ENGINES:
            problems.append(f"{cluster.name}: networkPolicy {engine!r} enforces no NetworkPolicy (the stack declares "
                            f"some); use one of {', '.join(sorted(POLICY_ENGINES))}")
        if (engine == "cilium") != (dataplane == "cilium"):
            problems.append(f"{cluster.name}: networkPolicy cilium and networkDataplane cilium go together, got "
                            f"{engine!r} / {dataplane!r}")
        if dataplane == "cilium" and plugin != "azure":
            problems.append(f"{cluster.name}: the Cilium dataplane needs networkPlugin azure, got {plugin!r}")
    return problems


RULES: tuple[Rule, ...] = (
    Rule("kubernetes-secret-refs", "a pod's secretKeyRef names a Secret and key of its namespace or the pod does not "
         "start; a pod reads the value at start only",
         "https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-environment-variables",
         pod_secret_refs),
    Rule("aks-lb-idle-timeout", "an Azure load balancer drops a flow idle longer than its rule's timeout (4 minutes "
         "unless the Service's annotation sets 4..100), silently where TCP reset is off: longer than the service's "
         "keep-alive, the service closes first", "https://learn.microsoft.com/azure/load-balancer/"
         "load-balancer-tcp-idle-timeout", lb_outlasts_keep_alive),
    Rule("aks-network-policy-engine", "NetworkPolicy is enforced only by a network policy engine (none: accepted and "
         "ignored); Cilium's needs the Cilium dataplane on Azure CNI; chosen at creation, changed later only by "
         "Azure's migration steps", "https://learn.microsoft.com/azure/aks/use-network-policies", network_policy_engine),
    Rule("aks-entra-only", "a cluster without Entra integration and local accounts disabled hands its static admin "
         "credential to anyone allowed listClusterUserCredential; the kubeconfig's exec login is a command on PATH, as "
         "a refresh runs the state's copy anywhere", "https://learn.microsoft.com/azure/aks/"
         "control-kubeconfig-access", aks_entra_only),
    Rule("kubernetes-hpa-replicas", "a Deployment scaled by an HPA leaves spec.replicas unset",
         "https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/"
         "#migrating-deployments-and-statefulsets-to-horizontal-autoscaling", hpa_owns_replicas),
    Rule("aks-container-insights-dcr", "Container Insights with managed-identity auth collects what an associated "
         "data collection rule asks for", "https://learn.microsoft.com/azure/azure-monitor/containers/"
         "kubernetes-monitoring-enable", container_insights_collects),
    Rule("aks-managed-prometheus-dcr", "the metrics add-on sends Prometheus metrics where an associated data collection "
         "rule says: prometheusForwarder through an endpoint to an Azure Monitor workspace",
         "https://learn.microsoft.com/azure/azure-monitor/containers/kubernetes-monitoring-enable", managed_prometheus_collects),
    Rule("aks-pod-annotation-scraping", "annotated pods are scraped only in namespaces matching podannotationnamespaceregex "
         "of kube-system/ama-metrics-settings-configmap", "https://learn.microsoft.com/azure/azure-monitor/containers/"
         "prometheus-metrics-scrape-configuration#enable-pod-annotation-based-scraping", annotated_pods_scraped),
    Rule("prometheus-rule-group", "a Prometheus rule group has one scope, an Azure Monitor workspace; interval and time "
         "to resolve 1..15 minutes (ISO 8601); severity 0..4",
         "https://learn.microsoft.com/azure/azure-monitor/essentials/prometheus-rule-groups", prometheus_rule_groups),
)
