"""Config validation: every stack file is valid, and bad values fail naming the full key."""

from __future__ import annotations

from typing import get_args

import pytest

from infra import settings, stack_files
from infra.settings import MIB, ConfigError
from serving.scoring.privacy import MODES as PERSONAL_MODES
from serving.scoring.settings import MAX_BODY_BYTES, MAX_IN_FLIGHT, MIN_PSEUDONYM_KEY_CHARS
from serving.scoring.settings import Settings as ServiceSettings

PROJECT = settings.NAMESPACE  # every key is mlops:<key>, whatever Pulumi.yaml names the Pulumi project


def load(stack: str, overrides: dict | None = None, env: dict | None = None) -> settings.StackSettings:
    values = stack_files.apply_overrides(stack_files.stack_values(stack), overrides or {})
    return settings.from_values(stack, values, env or {})


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_file_is_valid(stack):
    s = load(stack)
    assert s.environment == stack
    assert s.tags["environment"] == stack and s.tags["project"] == stack_files.project(stack) and s.tags["cost-centre"]


def test_prod_differs_by_values_only():
    dev, prod = load("dev"), load("prod")
    assert prod.serving.container_app.min_replicas >= 2 > dev.serving.container_app.min_replicas
    assert prod.serving.aks.replicas >= 2
    assert prod.registry.sku == "Premium" and prod.registry.zone_redundancy
    assert prod.observability.no_traffic_minutes > 0 and dev.observability.no_traffic_minutes == 0
    assert prod.model.allow_bootstrap is False and dev.model.allow_bootstrap is True


def test_unity_catalog_model_name_and_uris():
    s = load("staging")
    dbx, model = stack_files.stack_values("staging")["databricks"], s.names.registered_model
    assert s.model.full_name == f"{dbx['catalog']}.{dbx['schema']}.{model}"
    assert s.model.uri == f"models:/{s.model.full_name}@champion"
    assert (s.model.tracking_uri, s.model.registry_uri) == ("databricks", "databricks-uc")
    # The deployer's shell does not steer what a stack deploys: `databricks` is the stack's own workspace.
    env = load("staging", env={"MLFLOW_TRACKING_URI": "sqlite:///x.db", "MLFLOW_REGISTRY_URI": "sqlite:///x.db"})
    assert (env.model.tracking_uri, env.model.registry_uri) == ("databricks", "databricks-uc")
    assert env.model.in_stack_workspace


@pytest.mark.parametrize(("overrides", "key", "allowed"), [
    ({"serving.target": "vm"}, f"{PROJECT}:serving.target", "containerapps, aks"),
    ({"registry.sku": "Gold"}, f"{PROJECT}:registry.sku", "Basic, Standard, Premium"),
    ({"observability.retentionDays": 7}, f"{PROJECT}:observability.retentionDays", "30..730"),
    ({"serving.containerApp.cpu": 0.3}, f"{PROJECT}:serving.containerApp.cpu", "multiple of 0.25"),
    ({"serving.containerApp.memoryGi": 3}, f"{PROJECT}:serving.containerApp.memoryGi", "2 x cpu"),
    ({"serving.containerApp.latestWeight": 90}, f"{PROJECT}:serving.containerApp.latestWeight", "sum to 100"),
    ({"serving.containerApp.minReplicas": 3, "serving.containerApp.maxReplicas": 2},
     f"{PROJECT}:serving.containerApp.maxReplicas", "3..300"),
    ({"serving.aks.serviceType": "NodePort"}, f"{PROJECT}:serving.aks.serviceType", "LoadBalancer, ClusterIP"),
    ({"databricks.catalog": stack_files.DELETE}, f"{PROJECT}:databricks.catalog", "is required"),
    ({"databricks.modelRegistry": "mlflow"}, f"{PROJECT}:databricks.modelRegistry", "unityCatalog, workspace"),
    ({"registry.name": "Bad-Name"}, f"{PROJECT}:registry.name", "lowercase letters and digits"),
    ({"registry.zoneRedundancy": True, "registry.sku": "Basic"}, f"{PROJECT}:registry.zoneRedundancy", "Premium"),
    ({"observability.alertEmails": ["not-an-address"]}, f"{PROJECT}:observability.alertEmails", "e-mail"),
    ({"serving.containerApp.minReplica": 2}, f"{PROJECT}:serving.containerApp", "minReplica"),
    ({"location": stack_files.DELETE}, f"{PROJECT}:location", "is required"),
    ({"serving.containerApp.pinnedRevisions": [{"revision": "ca--v1"}]},
     f"{PROJECT}:serving.containerApp.pinnedRevisions[0]", "weight"),
    ({"serving.containerApp.zoneRedundant": True}, f"{PROJECT}:serving.containerApp.zoneRedundant", "infrastructureSubnetId"),
    ({"serving.containerApp.stableRevision": "ca--v1", "serving.containerApp.latestWeight": 10,
      "serving.containerApp.pinnedRevisions": [{"revision": "ca--v0", "weight": 90}]},
     f"{PROJECT}:serving.containerApp.stableRevision", "exclude each other"),
    ({"serving.containerApp.stableRevision": "CA v1"}, f"{PROJECT}:serving.containerApp.stableRevision", "a revision name"),
    ({"observability.requestLogPersonal": "hide"}, f"{PROJECT}:observability.requestLogPersonal",
     "drop, keep, pseudonymise"),
    ({"quality.window": "2 days"}, f"{PROJECT}:quality.window", "5 minutes, 30 minutes, 1 hour, 1 day, 1 week"),
    ({"quality.labelsTable": "outcomes"}, f"{PROJECT}:quality.labelsTable", "catalog.schema.table"),
    ({"quality.windows": 0}, f"{PROJECT}:quality.windows", "1..100"),
    ({"quality.margin": 2}, f"{PROJECT}:quality.margin", "0..1"),
    ({"quality.schedule": "daily"}, f"{PROJECT}:quality.schedule", "Quartz cron"),
    ({"quality.warehouseId": "my-warehouse"}, f"{PROJECT}:quality.warehouseId", "16 hex digits"),
    ({"quality.labelsTable": "dev.credit.outcomes"}, f"{PROJECT}:quality.labelsTable",
     "set it to pseudonymise (with mlops:requestLogPseudonymKey) or keep"),  # the example's ids are personal, dropped
    ({"quality.monitorSchedule": "daily"}, f"{PROJECT}:quality.monitorSchedule", "Quartz cron"),
])
def test_bad_values_name_the_key_and_what_is_allowed(overrides, key, allowed):
    with pytest.raises(ConfigError) as raised:
        load("dev", overrides)
    assert key in str(raised.value)
    assert allowed in str(raised.value)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_contracts_personal_columns_are_dropped_from_the_request_log_unless_a_stack_keeps_them(stack):
    from infra import program

    assert program.container_env(load(stack))["REQUEST_LOG_PERSONAL"] == "drop"
    kept = load(stack, {"observability.requestLogPersonal": "keep"})
    assert program.container_env(kept)["REQUEST_LOG_PERSONAL"] == "keep"


# ---- observability.requestLogPersonal pseudonymise: its key a config secret ----

KEY = "k" * MIN_PSEUDONYM_KEY_CHARS
PSEUDONYMISE = {"observability.requestLogPersonal": "pseudonymise"}


def test_the_stack_offers_every_mode_the_service_has():
    field = settings.ObservabilitySettings.model_fields["request_log_personal"]
    assert set(get_args(field.annotation)) == set(PERSONAL_MODES)


@pytest.mark.parametrize(("overrides", "message"), [
    (PSEUDONYMISE, f"{PROJECT}:requestLogPseudonymKey is required with {PROJECT}:observability.requestLogPersonal "
                   f"pseudonymise: set it with `pulumi config set --secret {PROJECT}:requestLogPseudonymKey"),
    ({**PSEUDONYMISE, "requestLogPseudonymKey": "short-key"},
     f"{PROJECT}:requestLogPseudonymKey must be a secret of at least {MIN_PSEUDONYM_KEY_CHARS} characters, got 9"),
])
def test_the_pseudonym_key_is_required_with_pseudonymise_only_and_long_enough(overrides, message):
    with pytest.raises(ConfigError) as error:
        load("dev", overrides)
    assert message in str(error.value)
    assert "short-key" not in str(error.value), "an error message never shows the secret"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_a_pseudonymising_stack_starts_the_service_with_its_key(stack, monkeypatch):
    """What the stack passes (the plain variables and the secret one) is what the service accepts."""
    from infra import program

    s = load(stack, {**PSEUDONYMISE, "requestLogPseudonymKey": KEY})
    assert KEY not in repr(s) and KEY not in str(program.container_env(s))
    for name, value in program.container_env(s).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUEST_LOG_PSEUDONYM_KEY", s.request_log_pseudonym_key.get_secret_value())
    service = ServiceSettings.from_env()
    assert (service.request_log_personal, service.request_log_pseudonym_key) == ("pseudonymise", KEY.encode())
    assert service.max_in_flight == s.serving.max_in_flight and service.max_body_bytes == s.serving.max_body_bytes


def test_the_scripts_that_read_the_stack_file_take_an_encrypted_key_as_set():
    """The release reads Pulumi.<stack>.yaml itself, where `pulumi config set --secret` leaves ciphertext."""
    s = load("prod", {**PSEUDONYMISE, "requestLogPseudonymKey": {"secure": "v1:c2VjcmV0LWNpcGhlcnRleHQ="}})
    assert s.request_log_pseudonym_key is not None and "v1:" not in s.request_log_pseudonym_key.get_secret_value()


def test_the_pseudonym_key_is_read_only_as_a_config_secret():
    """`pulumi config set` without --secret writes the key in plain text into Pulumi.<stack>.yaml: refused."""
    import pulumi

    from testing.mockcloud import to_pulumi_config

    values = stack_files.apply_overrides(stack_files.stack_values("dev"), {**PSEUDONYMISE,
                                                                           "requestLogPseudonymKey": KEY})
    config, secret = to_pulumi_config(values), [f"{PROJECT}:requestLogPseudonymKey"]
    try:
        pulumi.runtime.settings.reset_options(project=stack_files.pulumi_project(), stack="dev")
        pulumi.runtime.set_all_config(config, [])  # no secret key (None would keep the last test's list)
        with pytest.raises(ConfigError, match=rf"{PROJECT}:requestLogPseudonymKey is in plain text in the stack's "
                                              rf"config: remove it and set it with `pulumi config set --secret"):
            settings.load({})
        pulumi.runtime.set_all_config(config, secret)
        assert settings.load({}).request_log_pseudonym_key.get_secret_value() == KEY
    finally:
        pulumi.runtime.set_all_config({}, [])


# ---- the memory a container's bodies and parses may take (issue 21, audit #6) and the body per record (#7) ----

@pytest.mark.parametrize("target", ["containerapps", "aks"])
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_fits_its_memory_with_the_runtime_the_example_model_uses(stack, target):
    load(stack, {"serving.target": target}).serving.check_memory("onnx")


def test_a_container_that_cannot_hold_its_bodies_names_the_keys_the_need_and_the_memory():
    overrides = {"serving.maxBodyBytes": 8 * MIB}  # dev: 1 worker, 1 Gi
    with pytest.raises(ConfigError) as error:
        load("dev", overrides)
    need = settings.WORKER_MIB["onnx"] + (MAX_IN_FLIGHT + settings.PARSE_FACTOR) * 8  # one worker: no supervisor
    for part in (f"{PROJECT}:serving.webConcurrency (1)", f"{PROJECT}:serving.maxInFlight {MAX_IN_FLIGHT}",
                 f"{PROJECT}:serving.maxBodyBytes 8.0 MiB", f"needs {need} MiB",
                 f"more than {PROJECT}:serving.containerApp.memoryGi (1024 MiB)"):
        assert part in str(error.value)
    assert load("dev", {**overrides, "serving.maxInFlight": 10}).serving.max_in_flight == 10  # fewer bodies fit
    with pytest.raises(ConfigError, match=rf"more than {PROJECT}:serving.aks.memoryLimit \(1024 MiB\)"):
        load("dev", {**overrides, "serving.target": "aks"})
    assert load("dev", {**overrides, "serving.target": "aks", "serving.aks.memoryLimit": "2Gi"})


def test_the_program_checks_memory_again_with_the_runtime_the_model_runs_on():
    """AKS staging: 2 workers in 1Gi hold the onnx runtime's, not the sklearn runtime's (the audit: over 1 GiB)."""
    s = load("staging", {"serving.target": "aks"})
    settings.check_memory(s, "onnx")
    with pytest.raises(ConfigError) as error:
        settings.check_memory(s, "sklearn")
    body = MAX_BODY_BYTES / MIB
    need = settings.SUPERVISOR_MIB + settings.POD_TMPFS_MIB + 2 * (
        settings.WORKER_MIB["sklearn"] + (MAX_IN_FLIGHT + settings.PARSE_FACTOR) * body)
    assert f"needs {need:.0f} MiB, more than {PROJECT}:serving.aks.memoryLimit (1024 MiB)" in str(error.value)
    assert "runs on the sklearn runtime" in str(error.value)


def test_the_in_flight_cap_is_a_stack_key_passed_to_the_service():
    from infra import program

    assert load("dev").serving.max_in_flight == MAX_IN_FLIGHT  # the service's own default
    assert program.container_env(load("dev", {"serving.maxInFlight": 60}))["MAX_IN_FLIGHT"] == "60"
    with pytest.raises(ConfigError, match=rf"{PROJECT}:serving.maxInFlight must be a whole number in 1..10000"):
        load("dev", {"serving.maxInFlight": 0})


def test_the_default_body_limit_admits_max_records_of_the_example_model():
    """A stack with maxRecords 10000 and the 2 MiB default refused valid requests above ~2,500 records (audit #7)."""
    assert load("dev").serving.max_body_bytes == MAX_BODY_BYTES
    assert load("dev", {"serving.maxRecords": 10}).serving.max_body_bytes == MAX_BODY_BYTES
    few = {"serving.maxInFlight": 10}  # bodies of 20 MiB: fewer at once
    big = load("dev", {"serving.maxRecords": 10000, **few,
                       "serving.containerApp.cpu": 1, "serving.containerApp.memoryGi": 2}).serving
    assert big.max_body_bytes == 10_000 * (MAX_BODY_BYTES // 1000)  # the service's 2 MiB per 1000 records, x 10
    assert load("dev", {"serving.maxRecords": 10000, **few, "serving.maxBodyBytes": 4 * MIB,
                        }).serving.max_body_bytes == 4 * MIB, "a body limit the stack sets wins"
    with pytest.raises(ConfigError, match=rf"more than {PROJECT}:serving.containerApp.memoryGi"):
        load("dev", {"serving.maxRecords": 10000})  # 100 bodies of 20 MiB in flight do not fit 1 Gi


def test_numbers_from_cli_strings_are_accepted():
    s = load("dev", {"observability.retentionDays": "60", "image.wheelhouse": "false"})
    assert s.observability.retention_days == 60 and s.image.wheelhouse is False


def test_keys_table_documents_every_nested_key_read():
    documented = set(settings.KEYS)
    for key in ("serving.target", "serving.containerApp.minReplicas", "databricks.schedule", "model.alias",
                "registry.sku", "observability.noTrafficMinutes", "serving.aks.nodeVmSize"):
        assert key in documented


# ---- serving.auth: never anonymous by default ----

SUBNET = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aca"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_authenticates_by_default(stack):
    auth = load(stack).serving.auth
    assert auth.mode == "entra" and auth.allowed_client_applications
    assert auth.audience == f"api://{auth.client_id}"
    assert load(stack, {"serving.target": "aks"}).serving.auth.mode == "internal"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"serving.auth.mode": "open"}, "serving.auth.mode is 'open'; allowed values: entra, internal, anonymous"),
    ({"serving.target": "aks", "serving.auth.mode": "entra"}, "serving.auth.mode is 'entra'; allowed values: internal"),
    ({"serving.target": "aks", "serving.auth.mode": "anonymous"}, "allowed values: internal"),
    ({"serving.auth.mode": "anonymous"}, "serving.auth.anonymousReason"),
    ({"serving.auth.anonymousReason": "demo"}, "anonymousReason is only for"),
    ({"serving.auth.mode": "internal"}, "needs serving.containerApp.infrastructureSubnetId"),
    ({"serving.auth.allowedClientApplications": []}, "must list at least one client application id"),
    ({"serving.auth.allowedClientApplications": ["smoke-test"]}, "application (client) id (a UUID)"),
    ({"serving.auth.clientId": stack_files.DELETE}, "serving.auth.clientId is required"),
    ({"serving.auth.tenantId": "contoso.onmicrosoft.com"}, "serving.auth.tenantId is 'contoso.onmicrosoft.com'"),
    ({"serving.auth.audiences": "api://x"}, "unknown key(s) audiences"),
])
def test_bad_auth_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load("dev", overrides)
    assert message in str(error.value)


def test_other_modes_are_explicit_choices():
    internal = load("dev", {"serving.auth.mode": "internal", "serving.containerApp.infrastructureSubnetId": SUBNET})
    assert internal.serving.auth.mode == "internal"
    anonymous = load("dev", {"serving.auth.mode": "anonymous", "serving.auth.anonymousReason": "synthetic demo data"})
    assert anonymous.serving.auth.anonymous_reason == "synthetic demo data"


@pytest.mark.parametrize(("overrides", "message"), [
    # A list or map where a choice belongs named the key instead of failing with a TypeError.
    ({"serving.target": ["aks"]}, f"{PROJECT}:serving.target is ['aks']; allowed values: containerapps, aks"),
    ({"serving": "aks"}, f"{PROJECT}:serving must be an object (a map of keys), got 'aks'"),
    ({"observability.alertEmails": "ops@example.com"},
     f"{PROJECT}:observability.alertEmails must be a list, got 'ops@example.com'"),
    ({"serving.containerApp.releaseSteps": ["half"]},
     f"{PROJECT}:serving.containerApp.releaseSteps must be a whole number, got 'half'"),
    ({"promotion.testedModelVersion": 1.5, "promotion.testedDigest": "sha256:" + "a" * 64},
     f"{PROJECT}:promotion.testedModelVersion is 1.5; it must be a model version number"),
])
def test_a_value_of_the_wrong_shape_names_the_key_and_the_shape(overrides, message):
    with pytest.raises(ConfigError) as error:
        load("dev", overrides)
    assert message in str(error.value)


def test_a_model_version_written_as_a_yaml_number_is_a_version():
    promotion = load("dev", {"promotion.pinnedModelVersion": 3, "promotion.pinnedDigest": "sha256:" + "a" * 64,
                             "promotion.sourceStack": "staging"}).promotion
    assert promotion.pinned_model_version == "3"


# ---- one name: every name derives from `name`, and each is checked against its service's rule ----

def test_names_derive_from_the_one_name_and_settable_ones_default_to_it():
    s = load("dev", {"name": "house-prices"})
    names = s.names
    assert (names.resource_group, names.container_app, names.registry) == (
        "rg-house-prices-dev", "ca-house-prices-dev", "crhousepricesdev")
    assert (s.registry.name, s.model.short_name, s.model.module, s.image.repository) == (
        "crhousepricesdev", "house_prices", "models.house_prices", "house-prices-scoring")
    assert (s.databricks.experiment, s.databricks.files_root, s.databricks.code_volume, s.drift.secret_scope) == (
        "/house-prices/dev/house-prices-dev", "/house-prices/dev/code", "house_prices_job_code", "house-prices-dev")
    assert s.databricks.folder == "/house-prices/dev"  # outside /Shared, where every user may manage everything
    staging = load("staging")
    assert staging.registry.name == f"cr{staging.project_name.replace('-', '')}staging"  # the stack files set none
    assert load("staging", {"registry.name": "crtakenelsewhere"}).registry.name == "crtakenelsewhere", "an override wins"


@pytest.mark.parametrize(("overrides", "message"), [
    # ca-<name>-<environment> is at most 32 characters
    ({"name": "a-very-long-project-name", "environment": "staging"},
     "mlops:name is 'a-very-long-project-name': the Container App name it makes (environment staging) is "
     "'ca-a-very-long-project-name-staging' (35 characters); a Container App name must be 2-32 lowercase letters"),
    ({"name": "a-very-long-project-name", "environment": "staging"}, "shorten mlops:name to at most 21 characters"),
    ({"name": "a-very-long-project-name", "environment": "staging"}, "resource-name-rules#microsoftapp"),
    ({"name": "house--prices"}, "'ca-house--prices-dev' (20 characters); a Container App name must be 2-32 lowercase "
                                "letters, digits and single '-'"),
    ({"name": "weather"}, "its model module models.weather (models/weather.py) does not exist"),
    # AKS names its node resource group MC_<group>_<cluster>_<location> and refuses one over 80 characters
    ({"name": "house-prices-forecasts", "location": "australiasoutheast", "serving.target": "aks",
      "model.module": "models.house_prices"},
     "the AKS node resource group name it makes (environment dev, location australiasoutheast) is "
     "'MC_rg-house-prices-forecasts-dev_aks-house-prices-forecasts-dev_australiasoutheast' (82 characters)"),
])
def test_a_derived_name_that_breaks_its_rule_names_the_name_key_and_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        load("dev", overrides)
    assert message in str(error.value)


def test_names_only_aks_declares_are_checked_on_aks_and_names_set_by_a_key_are_that_keys():
    long = {"name": "credit-default", "environment": "staging", "location": "southafricanorth"}
    load("dev", long)  # Container Apps: no data collection endpoint
    s = load("dev", {**long, "serving.target": "aks"})  # cut as Microsoft's templates cut it: 44 characters
    assert s.names.prometheus_collection == "MSProm-southafricanorth-aks-credit-default-s"
    # No models/weather.py: model.module names the module instead, and that key is then checked itself.
    assert load("dev", {"name": "weather", "model.module": "models.house_prices"}).model.module == "models.house_prices"
    with pytest.raises(ConfigError, match=r"mlops:model.module is 'models.nope': no such module"):
        load("dev", {"name": "weather", "model.module": "models.nope"})
    with pytest.raises(ConfigError, match=r"mlops:registry.name is 'cr-x'"):
        load("dev", {"registry.name": "cr-x"})


def test_a_key_in_the_pulumi_projects_namespace_is_refused():
    assert stack_files.misplaced(["mlops-house:name", "mlops:environment", "azure-native:location"], "mlops-house") == [
        "mlops-house:name"]
    assert stack_files.misplaced(["mlops:name"], "mlops") == []


def test_the_program_reads_the_mlops_namespace_whatever_pulumi_yaml_names_the_project():
    """A team sharing a Pulumi organization renames the project (stack names are unique per organization and
    project); the keys stay `mlops:<key>`, and one written in the project's namespace is refused, not ignored."""
    import pulumi

    from testing.mockcloud import to_pulumi_config

    values = stack_files.stack_values("dev")
    try:
        pulumi.runtime.settings.reset_options(project="mlops-house", stack="dev")
        pulumi.runtime.set_all_config(to_pulumi_config(values))
        assert settings.load({}).names == load("dev").names
        pulumi.runtime.set_all_config({**to_pulumi_config(values), "mlops-house:name": "house-prices"})
        with pytest.raises(ConfigError, match=r"mlops-house:name: this program reads mlops:<key>, not the Pulumi "
                                              r"project's namespace \(mlops-house\)"):
            settings.load({})
    finally:
        pulumi.runtime.set_all_config({})
        pulumi.runtime.settings.reset_options(project=stack_files.pulumi_project(), stack="dev")



def test_without_a_labels_table_the_loop_runs_and_says_so():
    """quality.labelsTable is optional: the job then records predictions and judges nothing (its record says why)."""
    assert load("dev", {"quality.labelsTable": stack_files.DELETE}).quality.labels_table is None


@pytest.mark.parametrize("mode", ["keep", "pseudonymise"])
def test_a_labels_table_joins_where_the_ids_reach_the_inference_table(mode):
    key = {"requestLogPseudonymKey": "k" * 40} if mode == "pseudonymise" else {}
    loaded = load("dev", {"quality.labelsTable": "dev.credit.outcomes", "observability.requestLogPersonal": mode, **key})
    assert loaded.quality.labels_table == "dev.credit.outcomes"
