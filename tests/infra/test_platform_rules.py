"""The platform's rules (testing/platform_rules/) hold for what every stack declares on both serving targets,
and each rule catches the mistake it is there for (a rule that cannot fail proves nothing)."""

from __future__ import annotations

import copy
import json

import pytest

from infra import k8s_manifests, kql, stack_files
from testing import mockcloud, platform_rules
from testing.mockcloud import Captured, Evaluation

TARGETS = ("containerapps", "aks")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_rule_holds_for_every_stack(evaluate, stack, target):
    results = platform_rules.check(evaluate(stack, {"serving.target": target}))
    assert [r.rule.key for r in results] == [rule.key for rule in platform_rules.RULES]
    failed = {r.rule.key: r.problems for r in results if not r.ok}
    assert failed == {}, platform_rules.report(results)


def test_prod_building_itself_holds_too(evaluate):
    results = platform_rules.check(evaluate("prod", {"promotion": stack_files.DELETE}))
    assert all(r.ok for r in results), platform_rules.report(results)


def fake(*resources: Captured, config: dict | None = None, calls: list | None = None,
         target: str = "containerapps") -> Evaluation:
    return Evaluation("test", list(resources), {"serving_target": target}, calls or [], 0.0, config or {})


def resource(typ: str, name: str, inputs: dict, **extra) -> Captured:
    return Captured(typ, name, copy.deepcopy(inputs), {"id": f"/id/{name}"}, True, urn=f"urn:{name}", **extra)


def problems(rule_key: str, ev: Evaluation) -> list[str]:
    rule = next(r for r in platform_rules.RULES if r.key == rule_key)
    return rule.check(ev)


def test_a_log_alert_validated_at_creation_is_caught():
    rule = {"kind": "LogAlert", "windowSize": "PT15M", "evaluationFrequency": "PT5M"}
    assert problems("log-alert-skip-query-validation", fake(resource(platform_rules.QUERY_RULE, "r", rule)))
    ok = resource(platform_rules.QUERY_RULE, "r", {**rule, "skipQueryValidation": True})
    assert not problems("log-alert-skip-query-validation", fake(ok))
    assert problems("log-alert-window", fake(resource(platform_rules.QUERY_RULE, "r", {**rule, "windowSize": "PT7M"})))


def test_a_load_balancer_ending_idle_connections_before_the_service_is_caught():
    def service(annotations: dict) -> Captured:
        return resource("kubernetes:core/v1:Service", "svc", {"metadata": {"namespace": "s", "annotations": annotations},
                                                             "spec": {"type": "LoadBalancer"}})

    def deployment(keep_alive: str) -> Captured:
        return resource("kubernetes:apps/v1:Deployment", "app", {"metadata": {"namespace": "s"}, "spec": {"template": {
            "spec": {"containers": [{"env": [{"name": "KEEP_ALIVE_S", "value": keep_alive}]}]}}}})

    idle = "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"
    assert "before the service's keep-alive of 300 s" in problems("aks-lb-idle-timeout", fake(service({})))[0]
    assert not problems("aks-lb-idle-timeout", fake(service({idle: "10"})))
    assert problems("aks-lb-idle-timeout", fake(service({idle: "10"}), deployment("900")))
    assert problems("aks-lb-idle-timeout", fake(service({idle: "ten"})))
    assert not problems("aks-lb-idle-timeout", fake(resource("kubernetes:core/v1:Service", "c", {
        "metadata": {"namespace": "s"}, "spec": {"type": "ClusterIP"}})))


def test_multiple_revision_mode_without_a_split_is_caught():
    app = {"configuration": {"activeRevisionsMode": "Multiple", "ingress": {"traffic": [{"latestRevision": True,
                                                                                         "weight": 100}]}}}
    assert "superseded revisions running" in problems("container-apps-revision-mode",
                                                      fake(resource(platform_rules.APP, "a", app)))[0]
    app["configuration"]["activeRevisionsMode"] = "Single"
    assert not problems("container-apps-revision-mode", fake(resource(platform_rules.APP, "a", app)))


def test_azure_monitor_logs_without_a_diagnostic_setting_are_caught():
    env = resource(platform_rules.ENVIRONMENT, "env", {"appLogsConfiguration": {"destination": "azure-monitor"}})
    assert problems("container-apps-log-destination", fake(env))
    setting = resource(platform_rules.DIAGNOSTICS, "d", {"resourceUri": env.id, "workspaceId": "/ws"})
    assert not problems("container-apps-log-destination", fake(env, setting))
    old_query = resource(platform_rules.QUERY_RULE, "q", {"criteria": {"allOf": [{"query": "ContainerAppConsoleLogs_CL"}]}})
    assert problems("container-apps-log-destination", fake(env, setting, old_query))


def test_an_hpa_scaled_deployment_with_replicas_is_caught():
    hpa = resource(platform_rules.HPA, "h", {"spec": {"scaleTargetRef": {"name": "scoring"}}})
    deployment = {"metadata": {"name": "scoring"}, "spec": {"replicas": 2}}
    assert problems("kubernetes-hpa-replicas", fake(hpa, resource(platform_rules.DEPLOYMENT, "d", deployment)))
    del deployment["spec"]["replicas"]
    assert not problems("kubernetes-hpa-replicas", fake(hpa, resource(platform_rules.DEPLOYMENT, "d", deployment)))


def test_container_insights_without_a_data_collection_rule_is_caught():
    cluster = resource(platform_rules.CLUSTER, "aks", {"addonProfiles": {"omsagent": {
        "enabled": True, "config": {"useAADAuth": "true"}}}})
    assert problems("aks-container-insights-dcr", fake(cluster))
    rule = resource("azure-native:monitor:DataCollectionRule", "dcr", {"dataSources": {"extensions": [{
        "streams": ["Microsoft-ContainerInsights-Group-Default"]}]}})
    association = {"resourceUri": cluster.id, "dataCollectionRuleId": rule.id, "associationName": "other"}
    wrong_name = resource("azure-native:monitor:DataCollectionRuleAssociation", "a", association)
    assert problems("aks-container-insights-dcr", fake(cluster, rule, wrong_name))
    right = resource("azure-native:monitor:DataCollectionRuleAssociation", "a",
                     {**association, "associationName": "ContainerInsightsExtension"})
    assert not problems("aks-container-insights-dcr", fake(cluster, rule, right))


def test_two_diagnostic_settings_to_one_workspace_are_caught():
    settings = [resource(platform_rules.DIAGNOSTICS, name, {"resourceUri": "/acr", "workspaceId": "/ws"})
                for name in ("a", "b")]
    assert problems("diagnostic-settings-one-per-destination", fake(*settings))
    assert not problems("diagnostic-settings-one-per-destination", fake(settings[0]))


def test_a_job_without_run_as_is_caught():
    job = {"tasks": [], "runAs": {"servicePrincipalName": "app-id"}}
    assert not problems("databricks-jobs-run-as", fake(resource(platform_rules.JOB, "job", job)))
    del job["runAs"]
    assert problems("databricks-jobs-run-as", fake(resource(platform_rules.JOB, "job", job)))


def test_a_declared_run_as_principal_without_the_deployers_roles_is_caught():
    principal = resource("databricks:index/servicePrincipal:ServicePrincipal", "sp", {})
    principal.outputs["applicationId"] = "app-id"
    job = resource(platform_rules.JOB, "job", {"tasks": [], "runAs": {"servicePrincipalName": "app-id"}})
    both = [{"role": "roles/servicePrincipal.user", "principals": ["servicePrincipals/ci"]},
            {"role": "roles/servicePrincipal.manager", "principals": ["servicePrincipals/ci"]}]
    rules = resource(platform_rules.RULE_SET, "rules", {"name": "accounts/a/servicePrincipals/app-id/ruleSets/default",
                                                        "grantRules": both})
    job.dependencies = [rules.urn]
    assert not problems("databricks-jobs-run-as", fake(principal, job, rules))
    assert "no rule set" in problems("databricks-jobs-run-as", fake(principal, job))[0]
    job.dependencies = []  # created beside the rule set: the Jobs API may see run_as before the role exists
    assert "without waiting for the rule set" in problems("databricks-jobs-run-as", fake(principal, job, rules))[0]
    job.dependencies = [rules.urn]
    rules.inputs["grantRules"] = both[:1]  # authoritative, without manager: the next `up` is locked out
    assert "manager role" in problems("databricks-jobs-run-as", fake(principal, job, rules))[0]


def wheel_file(path: str, version: str) -> Captured:
    import base64
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"pkg-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: pkg\nVersion: {version}\n")
    return resource("databricks:index/file:File", "wheel", {"path": path,
                                                            "contentBase64": base64.b64encode(buffer.getvalue()).decode()})


def test_a_job_wheel_whose_version_does_not_follow_its_content_is_caught():
    """A cluster installs a wheel as pip does: the same name and version again would keep the old code."""
    path = "/Volumes/c/s/job_code/pkg-1.0.0.dev1250999896491-py3-none-any.whl"
    job = resource(platform_rules.JOB, "job", {"tasks": [{"libraries": [{"whl": path}]}]})
    assert not problems("databricks-job-wheel-versioned", fake(job, wheel_file(path, "1.0.0.dev1250999896491")))
    assert "holds another version" in problems("databricks-job-wheel-versioned",
                                               fake(job, wheel_file(path, "1.0.0.dev281474976710655")))[0]
    assert "not a file this stack uploads" in problems("databricks-job-wheel-versioned", fake(job))[0]
    fixed = "/Volumes/c/s/job_code/pkg-1.0.0-py3-none-any.whl"  # no content hash: a new build keeps the name
    job.inputs["tasks"][0]["libraries"] = [{"whl": fixed}]
    assert "content hash" in problems("databricks-job-wheel-versioned", fake(job, wheel_file(fixed, "1.0.0")))[0]
    plus = "/Volumes/c/s/job_code/pkg-1.0.0+0123456789ab-py3-none-any.whl"  # a volume upload reads '+' as a space
    job.inputs["tasks"][0]["libraries"] = [{"whl": plus}]
    assert "no '+'" in problems("databricks-job-wheel-versioned", fake(job, wheel_file(plus, "1.0.0+0123456789ab")))[0]


def test_entra_only_app_insights_without_a_publisher_is_caught():
    job = resource(platform_rules.JOB, "drift", {"tasks": [{"pythonWheelTask": {"entryPoint": "mlops-drift"}}]})
    component = resource("azure-native:applicationinsights:Component", "appi", {"disableLocalAuth": True})
    publisher = resource(platform_rules.ROLE, "pub", {"scope": "/id/appi", "roleDefinitionId":
                         "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/3913510d-42f4-4e42-8a64-420c390055eb"})
    assert not problems("app-insights-entra-ingestion", fake(job, component, publisher))
    assert "no identity may publish" in problems("app-insights-entra-ingestion", fake(job, component))[0]


def test_a_task_value_read_from_a_script_task_is_caught():
    tasks = [{"taskKey": "train", "sparkPythonTask": {}},
             {"taskKey": "gate", "sparkPythonTask": {"parameters": ["--version", "{{tasks.train.values.model_version}}"]}}]
    assert problems("databricks-task-values", fake(resource(platform_rules.JOB, "job", {"tasks": tasks})))
    tasks[0] = {"taskKey": "train", "notebookTask": {"notebookPath": "/x"}}
    assert not problems("databricks-task-values", fake(resource(platform_rules.JOB, "job", {"tasks": tasks})))


def test_an_unqualified_stack_reference_is_caught():
    ref = Captured("pulumi:pulumi:StackReference", "source", {"name": "staging"}, {}, True)
    assert problems("pulumi-stack-reference", fake(ref))


def test_unprotected_state_in_a_protected_stack_is_caught():
    registry = resource("azure-native:containerregistry:Registry", "acr", {})
    assert problems("stateful-resources-kept", fake(registry, config={"protect": True}))
    assert not problems("stateful-resources-kept", fake(registry, config={}))
    model = resource("databricks:index/registeredModel:RegisteredModel", "model", {})
    assert "retainOnDelete" in problems("stateful-resources-kept", fake(model))[0]


def test_an_unreviewed_or_changed_api_version_is_caught(monkeypatch):
    registry = resource("azure-native:containerregistry:Registry", "acr", {"registryName": "crtest01"})
    assert not problems("api-versions", fake(registry))
    monkeypatch.setitem(platform_rules.API_VERSIONS, registry.typ, ("2019-05-01", "GA"))
    assert "review it again" in problems("api-versions", fake(registry))[0]
    monkeypatch.delitem(platform_rules.API_VERSIONS, registry.typ)
    assert "never reviewed" in problems("api-versions", fake(registry))[0]


def test_a_resource_provider_nobody_registers_is_caught(monkeypatch):
    registry = resource("azure-native:containerregistry:Registry", "acr", {})
    monkeypatch.delitem(platform_rules.PROVIDERS, "Microsoft.ContainerRegistry")
    assert problems("resource-providers", fake(registry)) == [
        "Microsoft.ContainerRegistry is not in PROVIDERS (docs/deploy.md's first-time steps register those)"]


def test_a_post_action_in_preview_is_caught():
    """What the program did before: read the workspace's shared key, which a Reader cannot."""
    calls = [("azure-native:operationalinsights:getSharedKeys", {})]
    assert "sharedKeys/action" in problems("preview-permissions", fake(calls=calls))[0]
    aks_credentials = [("azure-native:containerservice:listManagedClusterUserCredentials", {})]
    assert problems("preview-permissions", fake(calls=aks_credentials, target="containerapps"))
    assert not problems("preview-permissions", fake(calls=aks_credentials, target="aks"))


def test_bad_names_are_caught():
    registry = resource("azure-native:containerregistry:Registry", "acr", {"registryName": "cr-house"})
    assert problems("resource-names", fake(registry))
    app = resource(platform_rules.APP, "app", {"containerAppName": "ca--house"})
    assert "resource-name-rules#microsoftapp" in problems("resource-names", fake(app))[0], "each names its source"
    endpoint = resource("azure-native:monitor:DataCollectionEndpoint", "dce",
                        {"dataCollectionEndpointName": "MSProm-northeurope-aks-credit-default-staging"})
    assert "3-44 letters" in problems("resource-names", fake(endpoint))[0]


def test_the_report_names_failures_and_their_documentation():
    ev = fake(resource("azure-native:containerregistry:Registry", "acr", {"registryName": "cr-x"}))
    text = platform_rules.report(platform_rules.check(ev))
    assert "FAIL resource-names" in text and "resource-name-rules" in text


@pytest.mark.parametrize("target", TARGETS)
def test_a_preview_runs_with_the_preview_roles_only(base_overrides, target):
    """`pulumi preview` on a pull request runs as a Reader (plus, on AKS, the cluster-user role): every invoke the
    program makes must be one those roles allow, and the ACR token exchange (a POST) must not run at all."""
    exchanged: list[str] = []

    def token(server: str) -> str:
        exchanged.append(server)
        return mockcloud.FAKE_ACR_TOKEN

    ev = mockcloud.evaluate("dev", {**base_overrides("dev"), "serving.target": target}, env={}, acr_token=token,
                            preview=True)
    assert ev.of_type("docker:index/image:Image"), "the preview still shows the image"
    assert exchanged == []
    assert platform_rules.preview_needs_only_its_roles(ev) == []
    tokens = {call for call, _ in ev.calls} - set(platform_rules.WORKSPACE_READS)  # Databricks' own reads of itself
    assert tokens <= set(platform_rules.INVOKE_ACTIONS)
    posts = {token for token in tokens if not platform_rules.INVOKE_ACTIONS[token].endswith("/read")}
    if target == "aks":  # the one POST a preview needs, granted by the role docs/deploy.md asks for
        assert posts == {"azure-native:containerservice:listManagedClusterUserCredentials"}
    else:
        assert posts == set()


def test_a_first_pull_that_does_not_wait_for_propagation_is_caught():
    """The old declaration: the app depended on the AcrPull assignment's creation only."""
    role = resource(platform_rules.ROLE, "acr-pull", {"roleDefinitionId": f"/x/{platform_rules.ACR_PULL_ROLE}"})
    app = resource(platform_rules.APP, "app", {"configuration": {"registries": [{"identity": "/uai"}]}})
    app.dependencies = [role.urn]
    assert "propagate" in problems("container-apps-identity-pull", fake(role, app))[0]
    wait = resource(platform_rules.RBAC_WAIT, "wait", {})
    wait.dependencies, app.dependencies = [role.urn], [wait.urn]
    assert not problems("container-apps-identity-pull", fake(role, wait, app))


def test_an_aks_cluster_with_local_accounts_is_caught():
    """The old cluster: RBAC on, no Entra integration, local accounts on; and a kubeconfig with a static token."""
    old = resource(platform_rules.CLUSTER, "aks", {"enableRBAC": True})
    assert "disableLocalAccounts" in problems("aks-entra-only", fake(old))[0]
    entra = {"aadProfile": {"managed": True, "enableAzureRBAC": True}, "disableLocalAccounts": True}
    assert not problems("aks-entra-only", fake(resource(platform_rules.CLUSTER, "aks", entra)))
    static = resource("pulumi:providers:kubernetes", "k8s", {"kubeconfig": "users: [{name: u, user: {token: t}}]"})
    assert "token" in problems("aks-entra-only", fake(static))[0]
    venv = "users: [{name: u, user: {exec: {command: /home/me/proj/.venv/bin/python, args: [-m, login]}}}]"
    by_path = resource("pulumi:providers:kubernetes", "k8s", {"kubeconfig": venv})
    assert "found on PATH" in problems("aks-entra-only", fake(by_path))[0]


def test_an_app_public_before_its_auth_config_is_caught():
    """The old declaration: external ingress, no restriction, nothing opening it after the auth config."""
    app = resource(platform_rules.APP, "app", {"containerAppName": "ca-x", "configuration": {"ingress": {"external": True}}})
    auth = resource(platform_rules.AUTH_CONFIG, "auth", {})
    auth.dependencies = [app.urn]
    found = problems("container-apps-closed-until-auth", fake(app, auth))
    assert len(found) == 2 and "nothing opens" in found[0] and "public" in found[1]
    app.inputs["configuration"]["ingress"]["ipSecurityRestrictions"] = [{"action": "Deny", "ipAddressRange": "0.0.0.0/0"}]
    opener = resource(platform_rules.OPENER, "open", {})
    opener.dependencies = [auth.urn]
    assert not problems("container-apps-closed-until-auth", fake(app, auth, opener))


def test_a_preview_downloads_no_model(base_overrides, tmp_path, monkeypatch):
    """What a preview may download: nothing. The PR preview's identity may browse the registry, not read a model
    version's files (Unity Catalog's EXECUTE), so a preview resolves the version and assembles no build context."""
    import mlflow.artifacts

    def refuse(*args, **kwargs):
        raise AssertionError(f"a preview downloaded {args or kwargs}")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", refuse)
    overrides = {**base_overrides("staging"), "image.contextDir": str(tmp_path / "context")}
    ev = mockcloud.evaluate("staging", overrides, env={}, preview=True)
    assert ev.of_type("docker:index/image:Image"), "the version is resolved and the image still shows, its name unknown"
    assert not (tmp_path / "context").exists()


def test_a_container_apps_error_rate_blind_to_the_ingress_is_caught():
    """The app's error lines alone miss every 5xx the ingress answered itself; HTTP logs need their category."""
    env = resource(platform_rules.ENVIRONMENT, "env", {"appLogsConfiguration": {"destination": "azure-monitor"}})
    logs = [{"category": c, "enabled": True} for c in ("ContainerAppConsoleLogs", "ContainerAppSystemLogs")]
    setting = resource(platform_rules.DIAGNOSTICS, "d", {"resourceUri": env.id, "workspaceId": "/ws", "logs": logs})

    def alert(query: str) -> Captured:
        return resource(platform_rules.QUERY_RULE, "observability-alert-error-rate",
                        {"scopes": ["/ws"], "criteria": {"allOf": [{"query": query}]}})

    app_only = alert(kql.alert_error_rate(kql.aks("scoring", "scoring")))
    assert "does not count the 5xx the ingress returned" in problems("container-apps-platform-5xx",
                                                                     fake(env, setting, app_only))[0]
    full = alert(kql.alert_error_rate(kql.container_apps("ca-x")))
    assert "sends no such logs" in problems("container-apps-platform-5xx", fake(env, setting, full))[0]
    setting.inputs["logs"].append({"category": "ContainerAppHTTPLogs", "enabled": True})
    assert not problems("container-apps-platform-5xx", fake(env, setting, full))
    env.inputs["appLogsConfiguration"]["destination"] = "log-analytics"  # no HTTP logs with that destination
    assert problems("container-apps-platform-5xx", fake(env, setting, full))


def test_managed_prometheus_without_its_collection_rule_is_caught():
    cluster = resource(platform_rules.CLUSTER, "aks", {"identity": {"type": "SystemAssigned"},
                                                       "azureMonitorProfile": {"metrics": {"enabled": True}}})
    workspace = resource(platform_rules.MONITOR_WORKSPACE, "amw", {})
    assert problems("aks-managed-prometheus-dcr", fake(cluster, workspace))
    rule = {"dataCollectionEndpointId": "/dce",
            "dataSources": {"prometheusForwarder": [{"streams": ["Microsoft-PrometheusMetrics"]}]},
            "destinations": {"monitoringAccounts": [{"accountResourceId": workspace.id, "name": "m"}]}}
    dcr = resource(platform_rules.DCR, "dcr", rule)
    association = resource(platform_rules.DCRA, "a", {"resourceUri": cluster.id, "dataCollectionRuleId": dcr.id})
    assert not problems("aks-managed-prometheus-dcr", fake(cluster, workspace, dcr, association))
    to_logs = resource(platform_rules.DCR, "dcr", {**rule, "destinations": {"logAnalytics": [{"name": "w"}]}})
    assert problems("aks-managed-prometheus-dcr", fake(cluster, workspace, to_logs, association))
    no_endpoint = resource(platform_rules.DCR, "dcr", {k: v for k, v in rule.items() if k != "dataCollectionEndpointId"})
    assert problems("aks-managed-prometheus-dcr", fake(cluster, workspace, no_endpoint, association))


def test_annotated_pods_in_a_namespace_the_add_on_ignores_are_caught():
    cluster = resource(platform_rules.CLUSTER, "aks", {"azureMonitorProfile": {"metrics": {"enabled": True}}})
    deployment = resource(platform_rules.DEPLOYMENT, "d", {
        "metadata": {"name": "scoring", "namespace": "scoring"},
        "spec": {"template": {"metadata": {"annotations": k8s_manifests.scrape_annotations(8000)}}}})
    assert "no cluster has managed Prometheus" in problems("aks-pod-annotation-scraping", fake(deployment))[0]
    assert "does not match" in problems("aks-pod-annotation-scraping", fake(cluster, deployment))[0]
    settings = resource(platform_rules.CONFIG_MAP, "cm", k8s_manifests.metrics_settings("scoring"))
    assert not problems("aks-pod-annotation-scraping", fake(cluster, deployment, settings))
    elsewhere = resource(platform_rules.CONFIG_MAP, "cm", k8s_manifests.metrics_settings("monitoring"))
    assert problems("aks-pod-annotation-scraping", fake(cluster, deployment, elsewhere))


def test_a_prometheus_rule_group_scoped_elsewhere_or_badly_timed_is_caught():
    workspace = resource(platform_rules.MONITOR_WORKSPACE, "amw", {})
    cluster = resource(platform_rules.CLUSTER, "aks", {"resourceName": "aks-x"})
    alert = {"alert": "A", "expression": "up < 1", "severity": 2, "for": "PT5M",
             "resolveConfiguration": {"autoResolved": True, "timeToResolve": "PT10M"}}
    group = {"scopes": [workspace.id], "interval": "PT1M", "clusterName": "aks-x", "rules": [alert]}
    assert not problems("prometheus-rule-group", fake(workspace, cluster, resource(platform_rules.PROM_RULES, "g", group)))
    for bad, says in (({"scopes": [workspace.id, cluster.id]}, "exactly one"), ({"scopes": [cluster.id]}, "exactly one"),
                      ({"interval": "PT30M"}, "interval"), ({"clusterName": "other"}, "not a declared cluster"),
                      ({"rules": [{**alert, "severity": 7}]}, "severity"),
                      ({"rules": [{**alert, "for": "5m"}]}, "ISO 8601"),
                      ({"rules": [{**alert, "record": "r"}]}, "either an alert or a record")):
        found = problems("prometheus-rule-group", fake(workspace, cluster,
                                                       resource(platform_rules.PROM_RULES, "g", {**group, **bad})))
        assert found and says in found[0], (bad, found)


# ---- who may call the endpoint ----

GOOD_AUTH = {"authConfigName": "current", "identityProviders": {"azureActiveDirectory": {
    "registration": {"clientId": "00000000-0000-0000-0000-0000000000a1"},
    "validation": {"defaultAuthorizationPolicy": {"allowedApplications": ["00000000-0000-0000-0000-0000000000c1"]}}}}}


def _app_and_auth(auth_inputs: dict, ingress: dict | None = None) -> tuple[Captured, Captured]:
    app = resource(platform_rules.APP, "app", {"configuration": {"ingress": {"external": True} if ingress is None
                                                                 else ingress}})
    return app, resource(platform_rules.AUTH_CONFIG, "auth", auth_inputs, dependencies=[app.urn])


def test_the_declared_auth_config_is_one_azure_accepts(evaluate):
    ev = evaluate("prod")
    assert len(ev.of_type(platform_rules.AUTH_CONFIG)) == 1
    assert not problems("container-apps-auth-config", ev)


def test_a_misnamed_auth_config_is_caught():
    assert not problems("container-apps-auth-config", fake(*_app_and_auth(GOOD_AUTH)))
    assert "must be 'current'" in problems("container-apps-auth-config",
                                           fake(*_app_and_auth({**GOOD_AUTH, "authConfigName": "entra"})))[0]


def test_an_allowed_application_that_is_not_a_client_id_is_caught():
    bad = copy.deepcopy(GOOD_AUTH)
    bad["identityProviders"]["azureActiveDirectory"]["validation"]["defaultAuthorizationPolicy"]["allowedApplications"] = [
        "github-smoke-test"]
    assert "'github-smoke-test' is not an application (client) id" in problems("container-apps-auth-config",
                                                                              fake(*_app_and_auth(bad)))[0]


def test_an_auth_config_on_an_app_without_ingress_is_caught():
    assert "has no ingress" in problems("container-apps-auth-config", fake(*_app_and_auth(GOOD_AUTH, ingress={})))[0]
    orphan = resource(platform_rules.AUTH_CONFIG, "auth", GOOD_AUTH)
    assert "belongs to no container app" in problems("container-apps-auth-config", fake(orphan))[0]


def test_an_internal_environment_without_a_subnet_is_caught():
    env = resource(platform_rules.ENVIRONMENT, "env", {"vnetConfiguration": {"internal": True}})
    assert problems("container-apps-internal-environment", fake(env))
    env.inputs["vnetConfiguration"]["infrastructureSubnetId"] = "/subscriptions/s/.../subnets/aca"
    assert not problems("container-apps-internal-environment", fake(env))


def test_network_policies_without_an_engine_are_caught(evaluate):
    declared = evaluate("prod", {"serving.target": "aks"})
    cluster = declared.of_type(platform_rules.CLUSTER)[0]
    policy = declared.of_type(platform_rules.NETWORK_POLICY)[0]
    assert cluster.inputs["networkProfile"]["networkPolicy"] == "cilium" and not problems("aks-network-policy-engine",
                                                                                          declared)
    for profile, says in (({}, "enforces no NetworkPolicy"),
                          ({"networkPlugin": "azure", "networkPolicy": "none"}, "enforces no NetworkPolicy"),
                          ({"networkPlugin": "azure", "networkPolicy": "cilium"}, "go together"),
                          ({"networkPlugin": "kubenet", "networkPolicy": "cilium", "networkDataplane": "cilium"},
                           "needs networkPlugin azure")):
        bare = resource(platform_rules.CLUSTER, "aks", {**cluster.inputs, "networkProfile": profile})
        assert says in problems("aks-network-policy-engine", fake(bare, policy))[0], profile


def test_bad_traffic_labels_and_weights_are_caught():
    app = {"containerAppName": "ca-house-prices-staging", "configuration": {"activeRevisionsMode": "Multiple", "ingress": {
        "traffic": [{"latestRevision": True, "weight": 0, "label": "candidate"},
                    {"revisionName": "ca-house-prices-staging--abc", "weight": 100, "label": "stable"}]}}}
    assert not problems("container-apps-traffic-labels", fake(resource(platform_rules.APP, "a", app)))
    broken = copy.deepcopy(app)
    broken["configuration"]["ingress"]["traffic"][0].update(weight=10, label="stable")
    found = problems("container-apps-traffic-labels", fake(resource(platform_rules.APP, "a", broken)))
    assert any("sum to 110" in p for p in found) and any("given twice" in p for p in found)
    app["configuration"]["activeRevisionsMode"] = "Single"
    app["configuration"]["ingress"]["traffic"][0]["label"] = "Candidate_1"
    found = problems("container-apps-traffic-labels", fake(resource(platform_rules.APP, "a", app)))
    assert any("lowercase" in p for p in found) and any("need Multiple" in p for p in found)


def grant(name: str, principal: str, privileges: list[str], **securable: str) -> Captured:
    return resource(platform_rules.GRANT, name, {"principal": principal, "privileges": privileges, **securable})


def test_two_grants_for_one_principal_on_one_securable_are_caught():
    first, second = grant("a", "sp", ["USE_SCHEMA"], schema="c.s"), grant("b", "sp", ["CREATE_TABLE"], schema="c.s")
    assert "b and a both grant sp privileges on schema c.s" in problems("databricks-grant-per-principal", fake(first, second))
    other = grant("b", "someone-else", ["CREATE_TABLE"], schema="c.s")
    assert not problems("databricks-grant-per-principal", fake(first, other))


@pytest.mark.parametrize(("cron", "zone", "found"), [
    ("0 30 1 * * ?", "Europe/Amsterdam", ""),
    ("0 30 1 * * ? 2030", "UTC", ""),
    ("30 1 * * *", "UTC", "has 5 fields"),  # Unix cron: Databricks wants Quartz
    ("0 30 1 * * MON", "UTC", "exactly one of day-of-month and day-of-week"),
    ("0 30 1 ? * ?", "UTC", "exactly one of day-of-month and day-of-week"),
    ("0 30 1 * * ?", "CEST", "not a Java/IANA time zone"),
])
def test_a_schedule_databricks_refuses_is_caught(cron, zone, found):
    job = resource(platform_rules.JOB, "batch", {"tasks": [], "schedule": {"quartzCronExpression": cron, "timezoneId": zone}})
    result = problems("databricks-job-schedule", fake(job))
    assert (found in result[0]) if found else result == []


def test_a_job_table_without_its_privileges_is_caught():
    params = ["--input-table", "c.s.portfolio", "--output-table", "c.out.predictions", "--rejects-table", "c.out.rejects"]
    job = resource(platform_rules.JOB, "batch", {"runAs": {"servicePrincipalName": "sp"},
                                                 "tasks": [{"pythonWheelTask": {"parameters": params}}]})
    enough = [grant("cat", "sp", ["USE_CATALOG"], catalog="c"), grant("s", "sp", ["USE_SCHEMA"], schema="c.s"),
              grant("in", "sp", ["SELECT"], table="c.s.portfolio"),
              grant("out", "sp", ["CREATE_TABLE", "USE_SCHEMA"], schema="c.out")]
    assert not problems("unity-catalog-table-access", fake(job, *enough))
    found = problems("unity-catalog-table-access", fake(job, *enough[:3]))  # no CREATE_TABLE, no USE_SCHEMA on c.out
    assert "batch: its principal needs USE_SCHEMA on c.out to write c.out.predictions" in found
    assert "batch: its principal needs CREATE_TABLE on c.out to write c.out.rejects" in found
    assert problems("unity-catalog-table-access", fake(job, enough[0], enough[1], enough[3])) == [
        "batch: its principal needs SELECT on c.s.portfolio to read c.s.portfolio"]


# ---- Unity Catalog models, the stack's folder, cluster policies (Databricks audit N2, N5, N7, N8, N14) ----

MODEL = {"catalogName": "prod", "schemaName": "credit", "name": "m"}
OWNER_DEPLOYER, JOBS = "00000000-0000-0000-0000-0000000000d3", "jobs-app-id"


def wheel_job(name: str, entry_point: str, parameters: list[str], principal: str = JOBS, **spec) -> Captured:
    return resource(platform_rules.JOB, name, {"runAs": {"servicePrincipalName": principal}, "tasks": [
        {"taskKey": "t", "pythonWheelTask": {"entryPoint": entry_point, "parameters": parameters}}], **spec})


def test_a_promotion_writing_a_model_the_jobs_own_is_caught():
    """Databricks N2: prod's promotion (the deployer, inside `up`) writes versions and aliases of a model the jobs'
    principal owned; Unity Catalog refuses the alias to anyone but the owner."""
    config = {"promotion": {"sourceStack": "staging"}, "databricks": {"deployer": OWNER_DEPLOYER}}
    owned_by_jobs = resource(platform_rules.MODEL, "model", {**MODEL, "owner": JOBS})
    assert f"{OWNER_DEPLOYER} writes versions or aliases of prod.credit.m, which {JOBS} owns" in problems(
        "unity-catalog-model-owner-writes", fake(owned_by_jobs, config=config))[0]
    owned_by_deployer = resource(platform_rules.MODEL, "model", {**MODEL, "owner": OWNER_DEPLOYER})
    assert not problems("unity-catalog-model-owner-writes", fake(owned_by_deployer, config=config))
    train = wheel_job("train", "mlops-train", [])  # a training stack: the jobs write
    assert problems("unity-catalog-model-owner-writes", fake(owned_by_deployer, train, config={}))
    # ... and a model declared for them is the deployer's at creation: only a metastore admin could give it to them
    given = problems("unity-catalog-model-owner-writes", fake(owned_by_jobs, train, config=config))
    assert any("cannot give it to" in p for p in given), given
    assert not problems("unity-catalog-model-owner-writes", fake(train, config={"databricks": {"deployer": OWNER_DEPLOYER}}))


def test_a_job_acl_naming_its_deployer_is_caught():
    """audit F2: the provider adds whoever runs `up` as the job's IS_OWNER when the ACL names no owner; the old ACL
    named the deployer with CAN_MANAGE as well, two entries for one principal ("exactly one owner")."""
    config = {"databricks": {"deployer": OWNER_DEPLOYER}}
    users = {"groupName": "users", "permissionLevel": "CAN_VIEW"}
    old = resource("databricks:index/permissions:Permissions", "job-acl", {"jobId": "1", "accessControls": [
        {"servicePrincipalName": OWNER_DEPLOYER, "permissionLevel": "CAN_MANAGE"}, users]})
    assert "the job's one owner is the identity that runs `up`" in problems("databricks-job-one-owner",
                                                                           fake(old, config=config))[0]
    owner = resource("databricks:index/permissions:Permissions", "job-acl", {"jobId": "1", "accessControls": [
        {"userName": "someone@example.com", "permissionLevel": "IS_OWNER"}, users]})
    assert problems("databricks-job-one-owner", fake(owner, config=config))
    now = resource("databricks:index/permissions:Permissions", "job-acl", {"jobId": "1", "accessControls": [users]})
    folder = resource("databricks:index/permissions:Permissions", "folder-acl", {"directoryPath": "/x", "accessControls": [
        {"servicePrincipalName": OWNER_DEPLOYER, "permissionLevel": "CAN_MANAGE"}]})  # a folder has no owner
    assert not problems("databricks-job-one-owner", fake(now, folder, config=config))


def test_a_deployer_creating_without_create_privileges_or_revoking_its_own_manage_is_caught():
    """Audit s11 F1, F2: the deployer creates the code volume and a promotion target's model with CREATE_VOLUME and
    CREATE_MODEL on the schema, after its own Grant; that Grant, authoritative for it, keeps MANAGE where it grants
    others."""
    config = {"databricks": {"deployer": OWNER_DEPLOYER}}
    volume = resource(platform_rules.VOLUME, "code", {"catalogName": "prod", "schemaName": "credit", "name": "code"})
    model = resource(platform_rules.MODEL, "model", {"catalogName": "prod", "schemaName": "credit", "name": "m"})
    jobs = grant("jobs", JOBS, ["USE_SCHEMA"], schema="prod.credit")
    narrow = grant("own", OWNER_DEPLOYER, ["USE_SCHEMA", "EXECUTE"], schema="prod.credit")
    found = problems("unity-catalog-deployer-creates", fake(volume, model, jobs, narrow, config=config))
    assert found == [f"code: the deployer {OWNER_DEPLOYER} lacks CREATE_VOLUME on prod.credit",
                     f"model: the deployer {OWNER_DEPLOYER} lacks CREATE_MODEL on prod.credit",
                     "own: the deployer's own Grant on schema prod.credit leaves out MANAGE, which it needs to grant 1 "
                     "other principal(s) there"]
    full = grant("own", OWNER_DEPLOYER, ["USE_SCHEMA", "CREATE_VOLUME", "CREATE_MODEL", "MANAGE"], schema="prod.credit")
    assert problems("unity-catalog-deployer-creates", fake(volume, model, jobs, full, config=config)) == [
        "code: created without waiting for the deployer's own Grant on prod.credit",
        "model: created without waiting for the deployer's own Grant on prod.credit"]
    volume.dependencies, model.dependencies = [full.urn], [full.urn]
    assert not problems("unity-catalog-deployer-creates", fake(volume, model, jobs, full, config=config))


def test_a_trained_models_readers_may_hold_execute_on_the_schema():
    """The jobs create a training stack's model, so no grant can name it before: EXECUTE on the schema is inherited."""
    train = wheel_job("train", "mlops-train", ["--model-name", "prod.credit.m"])
    config = {"databricks": {"deployer": OWNER_DEPLOYER}}
    found = problems("unity-catalog-model-execute", fake(train, config=config))
    assert {line.split(" without ")[1] for line in found} == {"USE_CATALOG on prod", "USE_SCHEMA on prod.credit",
                                                              "EXECUTE on prod.credit.m"}
    grants = [grant("g1", OWNER_DEPLOYER, ["USE_CATALOG"], catalog="prod"),
              grant("g2", OWNER_DEPLOYER, ["USE_SCHEMA", "EXECUTE"], schema="prod.credit")]
    assert not problems("unity-catalog-model-execute", fake(train, *grants, config=config))


def test_a_reader_without_execute_on_the_model_is_caught():
    """Databricks N5: the deployer packages the version, the preview reads it, the batch job scores with it; each
    needs EXECUTE (and USE on the way) unless it owns the model."""
    model = resource(platform_rules.MODEL, "model", {**MODEL, "owner": OWNER_DEPLOYER})
    batch = wheel_job("batch", "mlops-batch", ["--model-uri", "models:/prod.credit.m/1"])
    config = {"databricks": {"deployer": OWNER_DEPLOYER}}
    found = problems("unity-catalog-model-execute", fake(model, batch, config=config))
    assert {line.split(" without ")[1] for line in found} == {"USE_CATALOG on prod", "USE_SCHEMA on prod.credit",
                                                              "EXECUTE on prod.credit.m"}
    grants = [grant("g1", JOBS, ["USE_CATALOG"], catalog="prod"), grant("g2", JOBS, ["USE_SCHEMA"], schema="prod.credit"),
              grant("g3", JOBS, ["EXECUTE"], model="prod.credit.m")]
    assert not problems("unity-catalog-model-execute", fake(model, batch, *grants, config=config))
    assert "databricks.deployer is not set" in problems("unity-catalog-model-execute", fake(model, *grants))[0]
    preview = {"databricks": {"deployer": OWNER_DEPLOYER, "previewReader": "preview-app-id"}}
    assert "the preview (preview-app-id) reads" in problems("unity-catalog-model-execute",
                                                            fake(model, batch, *grants, config=preview))[0]


def test_a_promotion_target_whose_deployer_the_source_does_not_list_is_caught():
    """Prod's deployer copies versions out of staging's model: staging's promotionReaders must name it."""
    listed = settings_of_stack_readers("staging")
    assert listed, "staging lists prod's deployer in databricks.promotionReaders"
    for deployer, found in ((listed[0], []), ("someone-else", ["promotionReaders does not list it"])):
        model = resource(platform_rules.MODEL, "model", {**MODEL, "owner": deployer})  # prod's model: its own
        config = {"promotion": {"sourceStack": "staging"}, "databricks": {"deployer": deployer}}
        assert [p.rsplit(", whose databricks.", 1)[-1][:33] for p in problems("unity-catalog-model-execute",
                                                                             fake(model, config=config))] == found


def settings_of_stack_readers(stack: str) -> list[str]:
    return (stack_files.stack_values(stack).get("databricks") or {}).get("promotionReaders") or []


def test_a_catalog_without_managed_storage_is_caught(evaluate):
    """Databricks N8: with createCatalog the catalog needs a storageRoot (the settings require one)."""
    catalog = {"name": "staging", "isolationMode": "ISOLATED"}
    assert problems("unity-catalog-managed-location", fake(resource("databricks:index/catalog:Catalog", "c", catalog)))
    root = "abfss://uc@stmlopsstaging.dfs.core.windows.net/staging"
    ev = evaluate("staging", {"databricks.createCatalog": True, "databricks.storageRoot": root})
    assert not problems("unity-catalog-managed-location", ev)
    assert ev.one("databricks:index/catalog:Catalog").inputs["storageRoot"] == root
    assert not ev.of_type("databricks:index/workspaceBinding:WorkspaceBinding")  # ISOLATED binds the creator (N11)


def test_an_experiment_under_shared_is_caught():
    """Databricks N7: objects inherit their folder's permissions, and in /Shared every user has Can Manage."""
    experiment = resource("databricks:index/mlflowExperiment:MlflowExperiment", "e", {"name": "/Shared/x-prod"})
    assert problems("databricks-experiment-folder", fake(experiment))
    folder = resource(platform_rules.DIRECTORY, "f", {"path": "/x/prod"})
    acl = resource(platform_rules.PERMISSIONS, "p", {"directoryPath": "/x/prod", "accessControls": []})
    inside = resource("databricks:index/mlflowExperiment:MlflowExperiment", "e", {"name": "/x/prod/x-prod"})
    assert not problems("databricks-experiment-folder", fake(folder, acl, inside))
    assert problems("databricks-experiment-folder", fake(folder, inside))  # a folder without declared permissions
    drift = wheel_job("drift", "mlops-drift", ["--experiment", "/Shared/x-prod-drift"])
    assert "drift: experiment /Shared/x-prod-drift" in problems("databricks-experiment-folder",
                                                                fake(folder, acl, inside, drift))[0]


def test_a_job_cluster_without_its_policy_or_drift_on_the_training_node_is_caught():
    """Databricks N14: every job cluster names a declared policy that admits it; drift runs on its own node type."""
    policy = resource(platform_rules.POLICY, "policy", {"definition": json.dumps({
        "spark_version": {"type": "fixed", "value": "18.x-cpu-ml-scala2.13"},
        "node_type_id": {"type": "fixed", "value": "Standard_F4s"}, "dbus_per_hour": {"type": "range", "maxValue": 10}})})
    cluster = {"jobClusterKey": "drift", "newCluster": {"sparkVersion": "18.x-cpu-ml-scala2.13",
                                                        "nodeTypeId": "Standard_F4s", "policyId": policy.id}}
    drift = wheel_job("drift", "mlops-drift", [], jobClusters=[cluster])
    config = {"databricks": {"nodeType": "Standard_DS4_v2"}}
    assert not problems("databricks-job-cluster-policy", fake(policy, drift, config=config))
    assert "no cluster policy" in problems("databricks-job-cluster-policy", fake(drift, config=config))[0]
    cluster["newCluster"]["nodeTypeId"] = "Standard_DS4_v2"
    drift = wheel_job("drift", "mlops-drift", [], jobClusters=[cluster])
    found = problems("databricks-job-cluster-policy", fake(policy, drift, config=config))
    assert any("not what its policy fixes" in p for p in found)
    assert any("runs on the training node type Standard_DS4_v2" in p for p in found)
    chosen = {**config, "drift": {"nodeType": "Standard_DS4_v2"}}  # on purpose: the training node type is fine
    assert not any("training node type" in p for p in problems("databricks-job-cluster-policy",
                                                                fake(policy, drift, config=chosen)))


def test_a_bad_container_app_secret_name_or_a_dangling_secret_ref_is_caught():
    app = {"configuration": {"secrets": [{"name": "request-log-pseudonym-key", "value": "x"}]},
           "template": {"containers": [{"env": [{"name": "KEY", "secretRef": "request-log-pseudonym-key"}]}]}}
    assert not problems("container-apps-secrets", fake(resource(platform_rules.APP, "a", app)))
    app["configuration"]["secrets"][0]["name"] = "REQUEST_LOG_PSEUDONYM_KEY"
    found = problems("container-apps-secrets", fake(resource(platform_rules.APP, "a", app)))
    assert "must be lowercase letters, digits and '-'" in found[0] and "does not declare" in found[1]


def test_a_pod_reading_a_missing_secret_key_or_not_rolling_with_its_secret_is_caught():
    secret = resource("kubernetes:core/v1:Secret", "s", {"metadata": {"name": "scoring-secrets", "namespace": "scoring"},
                                                         "stringData": {"KEY": "x"}})
    ref = {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "scoring-secrets", "key": "KEY"}}}
    template = {"metadata": {"annotations": {k8s_manifests.SECRET_VERSION: "1"}},
                "spec": {"containers": [{"env": [ref]}]}}
    deployment = {"metadata": {"namespace": "scoring"}, "spec": {"template": template}}
    assert not problems("kubernetes-secret-refs", fake(secret, resource(platform_rules.DEPLOYMENT, "d", deployment)))
    assert "does not hold" in problems("kubernetes-secret-refs",
                                       fake(resource(platform_rules.DEPLOYMENT, "d", deployment)))[0]
    template["metadata"]["annotations"] = {}
    assert "does not roll" in problems("kubernetes-secret-refs",
                                       fake(secret, resource(platform_rules.DEPLOYMENT, "d", deployment)))[0]
