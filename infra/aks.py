"""Serving on AKS: the cluster (Container Insights to the stack's workspace, managed Prometheus to an
Azure Monitor workspace: infra/prometheus.py), AcrPull for the kubelet identity, and the scoring objects
from infra.k8s_manifests through a provider bound to it.

Who may call it: nobody outside the VNet. The Service is an internal load balancer (a private IP; or ClusterIP), plain
HTTP on port 80 inside the VNet; AKS has no built-in token check and a public TLS ingress would need a controller, a
certificate and an authenticating proxy, which this stack does not declare (Container Apps is the target for callers
on the internet, with Entra tokens). The cluster enforces NetworkPolicy (Azure CNI Powered by Cilium), and the
namespace's policy admits only the app's port and no egress.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import pulumi
import pulumi_azure_native.containerregistry as containerregistry
import pulumi_azure_native.containerservice as containerservice
import pulumi_azure_native.monitor as monitor
import pulumi_kubernetes as k8s
import yaml

from infra import azure_credential, k8s_manifests
from infra.naming import Names
from infra.prometheus import ManagedPrometheus, PrometheusArgs
from infra.registry import RbacPropagation, grant_acr_pull
from infra.settings import ObservabilitySettings, ServingSettings


@dataclass(frozen=True)
class AksArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    names: Names  # the cluster's, its data collection rules', the Azure Monitor workspace's and the part-of label
    serving: ServingSettings
    log_analytics_workspace_id: pulumi.Input[str]
    registry: containerregistry.Registry
    image: pulumi.Input[str]  # repo digest
    env: dict[str, str]
    secret_env: dict[str, pulumi.Output[str]]  # variable -> secret value (infra/program.py secret_env)
    tags: dict[str, str]
    alerts: ObservabilitySettings  # thresholds of the Prometheus alerts (the log alerts' own)
    action_group_id: pulumi.Input[str]


INSIGHTS_STREAM = "Microsoft-ContainerInsights-Group-Default"  # ContainerLogV2, KubePodInventory, KubeEvents, ...
# Azure CNI Powered by Cilium: Cilium enforces NetworkPolicy, no separate engine (Azure NPM, Calico) to install. Chosen
# at creation: changing the plugin or engine later is a migration, not an update (docs/design/security.md).
NETWORK_PROFILE = containerservice.ContainerServiceNetworkProfileArgs(
    network_plugin="azure", network_plugin_mode="overlay", network_dataplane="cilium", network_policy="cilium")


# The Entra application every AKS cluster's API server accepts tokens for (learn.microsoft.com/azure/aks/kubelogin-
# authentication: "--server-id ... 6dae42f8-4368-4678-94ff-3960e28e3630", the same for every cluster).
AKS_SERVER_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
# The provider's login as whoever runs `up` or a preview: in a workflow from the job's GitHub OIDC token, fresh for each
# token (a long `up` outlives the Azure CLI's), elsewhere from `az login`. The source travels in the kubeconfig and runs
# with python3 alone: a refresh runs the state's copy on whatever machine refreshes (infra/azure_credential.py).
EXEC_LOGIN = {"apiVersion": azure_credential.EXEC_API_VERSION, "command": "python3",
              "args": ["-c", inspect.getsource(azure_credential), f"{AKS_SERVER_ID}/.default"],
              "interactiveMode": "Never", "provideClusterInfo": False}


def kubeconfig(credentials: containerservice.ListManagedClusterUserCredentialsResult) -> str:
    """The cluster's user kubeconfig, its users logging in with EXEC_LOGIN: with local accounts disabled it holds no
    credential of its own, only the endpoint, so the caller's Azure RBAC roles on the cluster decide what the
    Kubernetes provider may do (the PR preview: Azure Kubernetes Service RBAC Reader)."""
    config = yaml.safe_load(base64.b64decode(credentials.kubeconfigs[0].value).decode())
    config["users"] = [{"name": user["name"], "user": {"exec": dict(EXEC_LOGIN)}} for user in config.get("users") or []]
    return yaml.safe_dump(config, sort_keys=False)


def auto_upgrade(version: str | None) -> containerservice.ManagedClusterAutoUpgradeProfileArgs:
    """Patch releases and node images on AKS's schedule, so the cluster stays in support. A version pinned to a patch
    (1.33.2) is the team's own choice: AKS would move past it and the next `up` ask for a downgrade, which is refused."""
    pinned_patch = version is not None and version.count(".") == 2
    return containerservice.ManagedClusterAutoUpgradeProfileArgs(
        upgrade_channel="none" if pinned_patch else "patch", node_os_upgrade_channel="NodeImage")


class AksService(pulumi.ComponentResource):
    endpoint_url: pulumi.Output[str]

    def __init__(self, name: str, args: AksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:infra:AksService", name, None, opts)
        s = args.serving.aks
        autoscale = s.max_node_count > s.node_count
        cluster_name = args.names.aks_cluster
        self.cluster = containerservice.ManagedCluster(
            f"{name}-cluster", resource_name_=cluster_name, resource_group_name=args.resource_group_name,
            location=args.location, dns_prefix=cluster_name, kubernetes_version=s.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED),
            enable_rbac=True,
            # Entra only: no static cluster credential (a user kubeconfig is an admin's without this), Kubernetes
            # rights from Azure role assignments (learn.microsoft.com/azure/aks/manage-azure-rbac,
            # learn.microsoft.com/azure/aks/manage-local-accounts-managed-azure-ad).
            aad_profile=containerservice.ManagedClusterAADProfileArgs(managed=True, enable_azure_rbac=True),
            disable_local_accounts=True,
            auto_upgrade_profile=auto_upgrade(s.kubernetes_version),
            network_profile=NETWORK_PROFILE,
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier=s.sku_tier),
            agent_pool_profiles=[containerservice.ManagedClusterAgentPoolProfileArgs(
                name="system", mode="System", os_type="Linux", type="VirtualMachineScaleSets", vm_size=s.node_vm_size,
                count=s.node_count, enable_auto_scaling=autoscale, min_count=s.node_count if autoscale else None,
                max_count=s.max_node_count if autoscale else None, availability_zones=list(s.zones) or None)],
            # Container Insights: stdout (the request log) lands in ContainerLogV2 of the stack's workspace.
            addon_profiles={"omsagent": containerservice.ManagedClusterAddonProfileArgs(
                enabled=True, config={"logAnalyticsWorkspaceResourceID": args.log_analytics_workspace_id,
                                      "useAADAuth": "true"})},
            # Managed Prometheus (the ama-metrics add-on, with kube-state-metrics): scrapes the scoring pods' /metrics.
            azure_monitor_profile=containerservice.ManagedClusterAzureMonitorProfileArgs(
                metrics=containerservice.ManagedClusterAzureMonitorProfileMetricsArgs(enabled=True)),
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        self.data_collection = self._container_insights(name, args)
        self.prometheus = ManagedPrometheus(f"{name}-prometheus", PrometheusArgs(
            resource_group_name=args.resource_group_name, location=args.location, names=args.names,
            cluster_id=self.cluster.id,
            namespace=s.namespace, deployment=k8s_manifests.APP, settings=args.alerts,
            action_group_id=args.action_group_id, tags=args.tags), pulumi.ResourceOptions(parent=self))
        # Nodes pull with the kubelet identity, not the cluster identity.
        kubelet_object_id = self.cluster.identity_profile.apply(_kubelet_object_id)
        self.acr_pull = grant_acr_pull(f"{name}-kubelet-acr-pull", args.registry, kubelet_object_id, self)
        self.pull_ready = RbacPropagation(f"{name}-kubelet-acr-pull-propagation", self.acr_pull,
                                          opts=pulumi.ResourceOptions(parent=self))
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=args.resource_group_name, resource_name=self.cluster.name, format="exec",
            opts=pulumi.InvokeOutputOptions(parent=self))
        user_kubeconfig: pulumi.Output[str] = pulumi.Output.secret(credentials.apply(kubeconfig))
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=user_kubeconfig, opts=pulumi.ResourceOptions(parent=self))
        self.objects = self._objects(name, args)
        service = cast(k8s.core.v1.Service, self.objects["Service"])  # _objects makes it from that class
        self.endpoint_url = (service.status.apply(_load_balancer_url) if s.service_type == "LoadBalancer"
                             else pulumi.Output.from_input(f"http://{k8s_manifests.APP}.{s.namespace}.svc.cluster.local"))
        self.register_outputs({"endpoint_url": self.endpoint_url})

    def _container_insights(self, name: str, args: AksArgs) -> monitor.DataCollectionRuleAssociation:
        """With managed-identity auth (useAADAuth) the monitoring agent sends only what a data collection rule
        associated with the cluster asks for: without it, ContainerLogV2 and KubePodInventory stay empty and the
        alerts and the drift job read nothing."""
        rule = monitor.DataCollectionRule(
            f"{name}-container-insights", data_collection_rule_name=args.names.container_insights_rule,
            resource_group_name=args.resource_group_name, location=args.location, kind="Linux",
            description="Container Insights: ContainerLogV2, KubePodInventory, ... to the stack's workspace",
            data_sources=monitor.DataCollectionRuleDataSourcesArgs(extensions=[monitor.ExtensionDataSourceArgs(
                name="ContainerInsightsExtension", extension_name="ContainerInsights", streams=[INSIGHTS_STREAM],
                extension_settings={"dataCollectionSettings": {"interval": "1m", "namespaceFilteringMode": "Off",
                                                               "enableContainerLogV2": True}})]),
            destinations=monitor.DataCollectionRuleDestinationsArgs(log_analytics=[monitor.LogAnalyticsDestinationArgs(
                name="workspace", workspace_resource_id=args.log_analytics_workspace_id)]),
            data_flows=[monitor.DataFlowArgs(streams=[INSIGHTS_STREAM], destinations=["workspace"])],
            tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        return monitor.DataCollectionRuleAssociation(
            f"{name}-container-insights-association", association_name="ContainerInsightsExtension",
            resource_uri=self.cluster.id, data_collection_rule_id=rule.id,
            description="the cluster's Container Insights data goes where the rule says",
            opts=pulumi.ResourceOptions(parent=self))

    def _objects(self, name: str, args: AksArgs) -> dict[str, pulumi.CustomResource]:
        manifests = k8s_manifests.build(k8s_manifests.ManifestArgs(
            namespace=args.serving.aks.namespace, image=args.image, port=args.serving.port, settings=args.serving.aks,
            env=args.env, labels={"app.kubernetes.io/part-of": args.names.part_of, "environment": args.tags["environment"]},
            secret_env=args.secret_env))
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.provider)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=manifests["Namespace"]["metadata"], opts=on_cluster)
        in_namespace = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace]))
        objects: dict[str, pulumi.CustomResource] = {"Namespace": namespace}
        spec = manifests["Deployment"]
        if manifest := manifests.get("Secret"):
            secret = k8s.core.v1.Secret(f"{name}-secrets", metadata=manifest["metadata"], type=manifest["type"],
                                        string_data=manifest["stringData"], opts=in_namespace)
            spec, objects["Secret"] = k8s_manifests.rolled_on(spec, secret.metadata.resource_version), secret
        objects["Deployment"] = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=spec["metadata"], spec=spec["spec"],
            opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[self.pull_ready])))
        kinds = {"Service": k8s.core.v1.Service, "HorizontalPodAutoscaler": k8s.autoscaling.v2.HorizontalPodAutoscaler,
                 "PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget, "NetworkPolicy": k8s.networking.v1.NetworkPolicy}
        for kind, resource in kinds.items():
            objects[kind] = resource(f"{name}-{kind.lower()}", metadata=manifests[kind]["metadata"], spec=manifests[kind]["spec"],
                                     opts=in_namespace)
        # In kube-system, where the metrics add-on reads it; it exists only once declared (the add-on makes none).
        settings = manifests["ConfigMap"]
        objects["ConfigMap"] = k8s.core.v1.ConfigMap(f"{name}-metrics-settings", metadata=settings["metadata"],
                                                     data=settings["data"], opts=on_cluster)
        return objects


def _kubelet_object_id(
        profile: Mapping[str, containerservice.outputs.UserAssignedIdentityManagedClusterResponse] | None) -> str:
    """The kubelet identity (it pulls the images), which AKS reports for a cluster with a managed identity."""
    object_id = profile["kubeletidentity"].object_id if profile else None
    if object_id is None:
        raise ValueError("the cluster reports no kubelet identity (identityProfile.kubeletidentity.objectId)")
    return object_id


def _load_balancer_url(status) -> str:
    ingress = (status.load_balancer.ingress or []) if status and status.load_balancer else []
    return f"http://{ingress[0].ip or ingress[0].hostname}" if ingress else ""
