"""The AKS serving objects as plain Kubernetes manifests (dicts), built by one pure function.

Pure so that tests can validate them against the Kubernetes schema offline (kubernetes-validate
--strict) and the AKS component hands the very same dicts to pulumi_kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.settings import CONTAINER_UID, AksSettings
from serving.scoring.settings import KEEP_ALIVE_S

APP = "scoring"
SERVICE_PORT = 80
# Managed Prometheus (infra/prometheus.py) scrapes annotated pods only in the namespaces this add-on setting names.
METRICS_SETTINGS = "ama-metrics-settings-configmap"
METRICS_SETTINGS_NAMESPACE = "kube-system"
# Azure's cloud provider gives a LoadBalancer Service a private frontend IP in the cluster's VNet with this annotation:
# the scoring endpoint is never on a public IP (plain HTTP inside the VNet; callers reach it by peering or VPN).
# Its rule's idle timeout is 4 minutes unless the Service says otherwise (learn.microsoft.com/azure/load-balancer/
# load-balancer-tcp-idle-timeout; the annotation: kubernetes/kubernetes#66045, cloud-provider-azure's LoadBalancer
# annotations), shorter than the service's keep-alive (KEEP_ALIVE_S, 300 s, serving/scoring/settings.py): the load
# balancer would end an idle connection first, silently where its TCP reset is off, and a client reusing it would wait
# for nothing. Longer than the keep-alive, the service closes it first, with a FIN the client sees.
LB_IDLE_MINUTES = min(100, 2 * KEEP_ALIVE_S // 60)  # twice the service's default keep-alive: 10 minutes (4..100)
INTERNAL_LB = {"service.beta.kubernetes.io/azure-load-balancer-internal": "true",
               "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout": str(LB_IDLE_MINUTES)}
SECRET = f"{APP}-secrets"  # the container's secret variables, one key each
# The pod template's annotation that rolls the Deployment when the Secret changes: pods read a Secret's value into
# their environment once, at start. Its value is the Secret's resourceVersion (a counter of the API server), nothing
# derived from the secret.
SECRET_VERSION = "mlops.io/secrets-version"


@dataclass(frozen=True)
class ManifestArgs:
    namespace: str
    image: Any  # a string, or a pulumi Output of one inside the program
    port: int
    settings: AksSettings
    env: dict[str, str]
    labels: dict[str, str]
    secret_env: dict[str, Any] = field(default_factory=dict)  # variable -> secret value (an Output in the program)


def build(args: ManifestArgs) -> dict[str, dict]:
    """kind -> manifest for Namespace, Deployment, Service (internal), HorizontalPodAutoscaler, PodDisruptionBudget,
    NetworkPolicy, the ConfigMap that turns on the metrics add-on's scraping of the annotated pods in this
    namespace, and the Secret of the secret variables (only when there are any)."""
    selector = {"app.kubernetes.io/name": APP}
    labels = {**selector, **args.labels}
    meta = {"name": APP, "namespace": args.namespace, "labels": labels}
    secret = {"Secret": {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": dict(args.secret_env),
                         "metadata": {"name": SECRET, "namespace": args.namespace, "labels": labels}}}
    return ({**secret} if args.secret_env else {}) | {
        "Namespace": {"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": args.namespace, "labels": {**args.labels,
                                                                      "pod-security.kubernetes.io/enforce": "restricted"}}},
        "Deployment": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            # No `replicas`: the HPA owns the count. Declaring it too makes every `up` reset what the HPA scaled to
            # (server-side apply: two managers of one field).
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": scrape_annotations(args.port)},
                         "spec": _pod(args)}}},
        "Service": {"apiVersion": "v1", "kind": "Service", "metadata": service_metadata(meta, args.settings.service_type),
                    "spec": {
            "type": args.settings.service_type, "selector": selector,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]}},
        "HorizontalPodAutoscaler": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": args.settings.replicas, "maxReplicas": args.settings.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": args.settings.target_cpu_percent}}}]}},
        "PodDisruptionBudget": {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta, "spec": {
            # At most one pod away during a drain or upgrade, whatever the replica count (0 would block drains).
            "maxUnavailable": 1, "selector": {"matchLabels": selector}}},
        "NetworkPolicy": network_policy(args.namespace, args.port, args.labels),
        "ConfigMap": metrics_settings(args.namespace),
    }


def rolled_on(deployment: dict, secrets_version: Any) -> dict:
    """The Deployment with its pod template annotated with the Secret's version: a new version rolls the pods."""
    template = deployment["spec"]["template"]
    annotations = {**template["metadata"].get("annotations", {}), SECRET_VERSION: secrets_version}
    return {**deployment, "spec": {**deployment["spec"], "template": {
        **template, "metadata": {**template["metadata"], "annotations": annotations}}}}


def service_metadata(meta: dict, service_type: str) -> dict:
    return {**meta, "annotations": dict(INTERNAL_LB)} if service_type == "LoadBalancer" else meta


def network_policy(namespace: str, port: int, labels: dict[str, str]) -> dict:
    """Every pod of the namespace: ingress only on the app's port (clients through the Service, kubelet probes and the
    metrics add-on's scrape all use it), no egress at all. The app needs none: the model is baked into the image and
    the request log goes to stdout, which the node's agent reads; so not even DNS is allowed."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"{APP}-ingress-port-only-no-egress", "namespace": namespace, "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": port}]}], "egress": []}}


def scrape_annotations(port: int) -> dict[str, str]:
    """What the metrics add-on's pod-annotation job reads: scrape this pod's /metrics on the app's port."""
    return {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics", "prometheus.io/port": str(port)}


def metrics_settings(namespace: str) -> dict:
    """The add-on's settings ConfigMap (absent by default; a section left out keeps its default). Pod-annotation
    scraping is off until `podannotationnamespaceregex` names a namespace; the regex is anchored by Prometheus."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": METRICS_SETTINGS, "namespace": METRICS_SETTINGS_NAMESPACE},
            "data": {"schema-version": "v1", "config-version": "ver1",
                     "pod-annotation-based-scraping": f'podannotationnamespaceregex = "{namespace}"'}}


def _pod(args: ManifestArgs) -> dict:
    port = args.port
    http = {"path": "/health", "port": "http"}
    container = {
        "name": APP, "image": args.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [*({"name": k, "value": v} for k, v in args.env.items()),
                *({"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": k}}} for k in args.secret_env)],
        "resources": {"requests": {"cpu": args.settings.cpu_request, "memory": args.settings.memory_request},
                      "limits": {"cpu": args.settings.cpu_limit, "memory": args.settings.memory_limit}},
        "startupProbe": {"httpGet": http, "periodSeconds": 2, "failureThreshold": 30, "timeoutSeconds": 3},
        "livenessProbe": {"httpGet": http, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 3},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3,
                           "timeoutSeconds": 3},
        "securityContext": {"runAsNonRoot": True, "runAsUser": CONTAINER_UID, "runAsGroup": CONTAINER_UID,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        # Several uvicorn workers keep prometheus files under /tmp: the only writable place.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": CONTAINER_UID, "fsGroup": CONTAINER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": APP}}}],
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
    }
