"""The AKS objects against the Kubernetes schema (kubernetes-validate --strict)."""

from __future__ import annotations

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions, major_minor

from infra import k8s_manifests, settings, stack_files
from serving.scoring.settings import KEEP_ALIVE_S

K8S_VERSION = "1.33"


def manifests(stack: str) -> dict[str, dict]:
    s = settings.from_values(stack, stack_files.stack_values(stack), {})
    return k8s_manifests.build(k8s_manifests.ManifestArgs(
        namespace=s.serving.aks.namespace, image=f"cr.azurecr.io/scoring@sha256:{'a' * 64}", port=s.serving.port,
        settings=s.serving.aks, env={"PORT": "8000"}, labels={"environment": stack}))


def test_schema_version_is_available():
    assert K8S_VERSION in {major_minor(v) for v in all_versions()}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_objects_validate_strictly(stack):
    objects = manifests(stack)
    assert set(objects) == {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                            "NetworkPolicy", "ConfigMap"}
    for manifest in objects.values():
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_a_typo_fails_strict_validation():
    deployment = manifests("dev")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_pod_is_restricted():
    pod = manifests("prod")["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["volumes"][0]["emptyDir"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_pods_ask_to_be_scraped_where_the_metrics_add_on_looks(stack):
    """Managed Prometheus scrapes an annotated pod only if its namespace matches the add-on's settings regex, on the
    port and path the app serves /metrics on."""
    objects = manifests(stack)
    pod = objects["Deployment"]["spec"]["template"]
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                              "prometheus.io/port": str(port)}
    settings = objects["ConfigMap"]
    assert settings["metadata"] == {"name": "ama-metrics-settings-configmap", "namespace": "kube-system"}
    regex = settings["data"]["pod-annotation-based-scraping"].split("=", 1)[1].strip().strip('"')
    namespace = objects["Namespace"]["metadata"]["name"]
    assert regex == namespace and settings["data"]["schema-version"] == "v1"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_load_balancer_is_internal(stack):
    """Azure's cloud provider gives the Service a private IP only with this annotation (a string, not a YAML bool)."""
    service = manifests(stack)["Service"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_load_balancer_keeps_an_idle_connection_longer_than_the_service_does(stack):
    """The Azure load balancer's idle timeout (4 minutes unless annotated, learn.microsoft.com/azure/load-balancer/
    load-balancer-tcp-idle-timeout; 4 to 100 minutes) outlasts the service's keep-alive: the service ends an idle
    connection with a FIN its client sees, not the balancer silently."""
    annotations = manifests(stack)["Service"]["metadata"]["annotations"]
    minutes = annotations["service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"]
    assert minutes.isdigit() and 4 <= int(minutes) <= 100, "a whole number of minutes, as a string"
    assert int(minutes) * 60 > KEEP_ALIVE_S, f"{minutes} minutes, the service keeps one {KEEP_ALIVE_S} s"


def test_a_cluster_ip_service_needs_no_annotation():
    s = settings.from_values("dev", stack_files.apply_overrides(
        stack_files.stack_values("dev"), {"serving.aks.serviceType": "ClusterIP"}), {})
    objects = k8s_manifests.build(k8s_manifests.ManifestArgs(namespace="scoring", image="x@sha256:" + "a" * 64, port=8000,
                                                             settings=s.serving.aks, env={}, labels={}))
    assert "annotations" not in objects["Service"]["metadata"]


def test_the_network_policy_admits_the_service_port_only_and_no_egress():
    objects = manifests("prod")
    policy = objects["NetworkPolicy"]
    container_port = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert policy["metadata"]["namespace"] == objects["Namespace"]["metadata"]["name"]
    assert policy["spec"]["podSelector"] == {}, "every pod of the namespace"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": container_port}]}]
    assert policy["spec"]["egress"] == [], "Egress listed with no rule: nothing leaves the pods, not even DNS"
    # what reaches the port: the Service's target, and the probes and the scrape on the same port
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(container_port)


def test_a_network_policy_typo_fails_strict_validation():
    policy = manifests("dev")["NetworkPolicy"]
    policy["spec"]["egres"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_a_secret_variable_comes_from_the_secret_and_its_version_rolls_the_pods():
    s = settings.from_values("prod", stack_files.stack_values("prod"), {})
    objects = k8s_manifests.build(k8s_manifests.ManifestArgs(
        namespace=s.serving.aks.namespace, image=f"cr.azurecr.io/scoring@sha256:{'a' * 64}", port=s.serving.port,
        settings=s.serving.aks, env={"PORT": "8000"}, labels={"environment": "prod"},
        secret_env={"REQUEST_LOG_PSEUDONYM_KEY": "k" * 40}))
    secret = objects["Secret"]
    deployment = k8s_manifests.rolled_on(objects["Deployment"], "4711")
    for manifest in (secret, deployment):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert secret["metadata"]["namespace"] == objects["Namespace"]["metadata"]["name"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "REQUEST_LOG_PSEUDONYM_KEY", "valueFrom": {"secretKeyRef": {
        "name": secret["metadata"]["name"], "key": "REQUEST_LOG_PSEUDONYM_KEY"}}} in env
    assert "k" * 40 not in str(deployment), "the value lives in the Secret only"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[k8s_manifests.SECRET_VERSION] == "4711"
    assert annotations["prometheus.io/scrape"] == "true", "the scrape annotations stay"
    assert "Secret" not in manifests("prod"), "no secret variable, no Secret"
