"""Promotion under Pulumi's mocks: prod deploys the digest its (mocked) staging StackReference exported,
never builds or trains, rolls back to a pinned artifact, and fails clearly when staging has no image.
The two cloud steps run for real against local stand-ins: two sqlite MLflow registries, a fake ARM."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar, get_args

import pytest
from azure.core.credentials import AccessToken
from pulumi.dynamic.dynamic import serialize_provider

from infra import promote, stack_files
from infra.promote import PromotionError
from infra.promotion import ImageImportProvider, ModelPromotionProvider
from infra.settings import ConfigError, Runtime
from serving.scoring.model import RUNTIMES
from testing import mockcloud
from testing.unity_catalog import searching_like_uc
from tests.infra.conftest import settings_of

# Every name from the stacks' settings: these tests hold for any project `name`.
STAGING_SETTINGS, PROD_SETTINGS = settings_of("staging"), settings_of("prod")
STAGING = f"{mockcloud.ORGANIZATION}/{stack_files.pulumi_project()}/staging"
DIGEST = "sha256:" + "ab" * 32
OLD_DIGEST = "sha256:" + "0f" * 32
STAGING_ACR = f"/subscriptions/{mockcloud.SUBSCRIPTION}/resourceGroups/{STAGING_SETTINGS.names.resource_group}/" \
              f"providers/Microsoft.ContainerRegistry/registries/{STAGING_SETTINGS.registry.name}"
REPOSITORY = PROD_SETTINGS.image.repository
assert STAGING_SETTINGS.image.repository == REPOSITORY, "prod imports into the repository staging pushed to"
APP = "azure-native:app:ContainerApp"


def staging_outputs(**changes) -> dict:
    outputs = {"image_ref": f"{STAGING_SETTINGS.registry.name}.azurecr.io/{REPOSITORY}@{DIGEST}",
               "model_name": STAGING_SETTINGS.model.full_name, "model_version": "7", "model_run_id": "run-of-v7",
               "registry_id": STAGING_ACR, "databricks_workspace_url": "https://adb-111.1.azuredatabricks.net",
               "bootstrap": "", "endpoint_url": f"https://{STAGING_SETTINGS.names.container_app}.example"}
    return {**outputs, **changes}


@pytest.fixture(scope="module")
def prod(base_overrides):
    """prod against a mocked staging (digest, version 7, run id) instead of staging's own evaluation."""
    def run(outputs: dict | None = None, **overrides) -> mockcloud.Evaluation:
        merged = {**base_overrides("prod"), **overrides}
        return mockcloud.evaluate("prod", merged, env={}, stack_outputs={STAGING: staging_outputs() if outputs is None
                                                                         else outputs})
    return run


@pytest.fixture(scope="module")
def promoted(prod) -> mockcloud.Evaluation:
    return prod()


def test_prod_deploys_exactly_the_digest_staging_exported(promoted):
    acr = promoted.one("azure-native:containerregistry:Registry")
    expected = f"{acr.outputs['loginServer']}/{REPOSITORY}@{DIGEST}"
    container = promoted.one(APP).inputs["template"]["containers"][0]
    assert container["image"] == expected
    assert promoted.outputs["image_ref"] == expected and promoted.outputs["image_digest"] == DIGEST
    assert promoted.outputs["source_image_ref"] == staging_outputs()["image_ref"]
    assert promoted.outputs["promoted_from"] == STAGING
    assert promoted.outputs["model_version"] == "7" and promoted.outputs["model_run_id"] == "run-of-v7"
    assert promoted.outputs["model_name"] == PROD_SETTINGS.model.full_name


def test_prod_imports_by_digest_server_side(promoted):
    copy = promoted.one(mockcloud.IMAGE_IMPORT)
    acr = promoted.one("azure-native:containerregistry:Registry")
    assert copy.inputs["source_registry_id"] == STAGING_ACR and copy.inputs["target_registry_id"] == acr.id
    assert copy.inputs["source_image"] == f"{REPOSITORY}@{DIGEST}"
    assert copy.inputs["target_tags"] == [f"{REPOSITORY}:v7-{DIGEST[7:19]}"]


def test_prod_never_builds_and_never_trains(promoted):
    types = {r.typ for r in promoted.resources}
    assert "docker:index/image:Image" not in types
    # the drift and quality jobs (prod is where the traffic is) and the batch scoring job: no task of prod runs an entry
    # point that trains, and the quality job starts none (prod has no training job: it alerts)
    jobs = {job.inputs["name"]: job for job in promoted.of_type("databricks:index/job:Job")}
    assert set(jobs) == {PROD_SETTINGS.names.job(kind) for kind in ("drift", "batch", "quality")}
    assert {t["pythonWheelTask"]["entryPoint"] for job in jobs.values() for t in job.inputs["tasks"]} == {
        "mlops-drift", "mlops-batch", "mlops-quality"}
    assert not any("--training-job-id" in t["pythonWheelTask"]["parameters"] for job in jobs.values()
                   for t in job.inputs["tasks"])
    # kept: the workspace, the experiment (promotion runs) and the registered model the copy goes into
    assert {"azure-native:databricks:Workspace", "databricks:index/mlflowExperiment:MlflowExperiment",
            "databricks:index/registeredModel:RegisteredModel"} <= types
    assert promoted.outputs["databricks_job_id"] == ""


def test_prod_runs_the_drift_job_on_its_own_request_log(promoted):
    [job] = [j for j in promoted.of_type("databricks:index/job:Job") if j.name == "databricks-drift-job"]
    assert job.inputs["schedule"]["quartzCronExpression"] == stack_files.stack_values("prod")["drift"]["schedule"]
    params = job.inputs["tasks"][0]["pythonWheelTask"]["parameters"]
    # the log names staging's model and version; prod's jobs read prod's copies of it, never staging's model
    assert params[params.index("--model-name") + 1] == PROD_SETTINGS.model.full_name
    assert not any(STAGING_SETTINGS.model.full_name in str(p) for p in params)
    workspace = promoted.one("azure-native:operationalinsights:Workspace")
    assert params[params.index("--workspace-id") + 1] == workspace.outputs["customerId"]
    assert params[params.index("--app-name") + 1] == PROD_SETTINGS.names.container_app
    assert job.inputs["emailNotifications"]["onFailures"] == ["ml-platform-oncall@example.com"]
    assert promoted.outputs["databricks_drift_job_id"] == job.id
    rule = next(r for r in promoted.of_type("azure-native:monitor:ScheduledQueryRule") if r.name.endswith("alert-drift"))
    assert rule.inputs["criteria"]["allOf"][0]["query"].startswith("union isfuzzy=true (AppTraces)")


def test_prod_registers_the_same_version_with_lineage_before_serving(promoted):
    registration = promoted.one(mockcloud.MODEL_PROMOTION)
    assert {k: registration.inputs[k] for k in ("source_model", "source_version", "source_run_id", "source_workspace",
                                                "target_model", "alias", "image_digest")} == {
        "source_model": STAGING_SETTINGS.model.full_name, "source_version": "7", "source_run_id": "run-of-v7",
        "source_workspace": "https://adb-111.1.azuredatabricks.net", "target_model": PROD_SETTINGS.model.full_name,
        "alias": "champion", "image_digest": DIGEST}
    assert registration.inputs["experiment"] == PROD_SETTINGS.databricks.experiment
    copy, app = promoted.one(mockcloud.IMAGE_IMPORT), promoted.one(APP)
    assert copy.urn in registration.dependencies
    assert registration.urn in app.dependencies and copy.urn in app.dependencies
    model = promoted.one("databricks:index/registeredModel:RegisteredModel")
    assert model.urn in registration.dependencies
    # its run goes to the declared experiment, in the stack's folder: both exist before the copy (audit B2)
    for typ in ("databricks:index/mlflowExperiment:MlflowExperiment", "databricks:index/directory:Directory",
                "databricks:index/permissions:Permissions"):
        assert {r.urn for r in promoted.of_type(typ)} & set(registration.dependencies), typ
    assert promoted.outputs["registry_model_version"] == "1"


def test_the_registered_models_aliases_are_never_the_stacks(promoted):
    """Audit s12 F6: @champion and @candidate are moved by the promotion and the gate; a provider that manages a
    registered model's aliases would delete them on the next `up` unless the stack leaves them alone."""
    [model] = promoted.of_type("databricks:index/registeredModel:RegisteredModel")
    assert model.ignore_changes == ["aliases"] and "aliases" not in model.inputs


def test_prod_batch_scores_with_the_promoted_copy_prod_serves(promoted):
    """Prod's batch job names prod's own copy of the version staging tested (registry_model_version), not an alias
    that a later promotion could move under a night's run."""
    [job] = [j for j in promoted.of_type("databricks:index/job:Job") if j.name == "databricks-batch-job"]
    params = job.inputs["tasks"][0]["pythonWheelTask"]["parameters"]
    copy = promoted.outputs["registry_model_version"]
    assert params[params.index("--model-uri") + 1] == f"models:/{PROD_SETTINGS.model.full_name}/{copy}"
    assert promoted.outputs["databricks_batch_job_id"] == job.id


def test_prod_follows_the_real_staging_evaluation(evaluate):
    """Without mocked outputs, the mock layer evaluates staging first: prod serves staging's own digest."""
    staging, prod = evaluate("staging"), evaluate("prod")
    assert "@sha256:" in staging.outputs["image_ref"]
    assert prod.outputs["image_digest"] == staging.outputs["image_ref"].split("@", 1)[1]
    assert prod.outputs["model_version"] == staging.outputs["model_version"]
    assert prod.one(APP).inputs["template"]["containers"][0]["image"].endswith(prod.outputs["image_digest"])


def test_pinned_rollback_deploys_the_pinned_artifact(prod):
    ev = prod(**{"promotion.pinnedDigest": OLD_DIGEST, "promotion.pinnedModelVersion": 5})
    acr = ev.one("azure-native:containerregistry:Registry")
    app = ev.one(APP)
    assert app.inputs["template"]["containers"][0]["image"] == f"{acr.outputs['loginServer']}/{REPOSITORY}@{OLD_DIGEST}"
    assert "revisionSuffix" not in app.inputs["template"]  # Azure names it: an old suffix again would be refused
    assert ev.outputs["image_digest"] == OLD_DIGEST and ev.outputs["model_version"] == "5"
    assert not ev.of_type(mockcloud.IMAGE_IMPORT), "a rollback deploys what prod already holds"
    registration = ev.one(mockcloud.MODEL_PROMOTION)
    assert registration.inputs["source_version"] == "5" and registration.inputs["image_digest"] == OLD_DIGEST


def test_pinned_rollback_works_while_staging_is_in_bootstrap(prod):
    outputs = staging_outputs(image_ref="", bootstrap="BOOTSTRAP: no version yet")
    ev = prod(outputs, **{"promotion.pinnedDigest": OLD_DIGEST, "promotion.pinnedModelVersion": "5"})
    assert ev.outputs["image_digest"] == OLD_DIGEST


def test_staging_without_an_image_fails_prod_clearly(prod):
    outputs = staging_outputs(image_ref="", model_version="", model_run_id="",
                              bootstrap=f"BOOTSTRAP: {STAGING_SETTINGS.model.uri} has no registered version")
    with pytest.raises(PromotionError, match=rf"source stack {STAGING} has no image to promote.*bootstrap"):
        prod(outputs)


def test_a_never_deployed_or_outdated_staging_fails_naming_what_is_missing(prod):
    with pytest.raises(PromotionError, match=rf"{STAGING} has no image"):
        prod({})
    with pytest.raises(PromotionError, match=r"lacks the output.*registry_id"):
        prod({k: v for k, v in staging_outputs().items() if k != "registry_id"})
    with pytest.raises(PromotionError, match="not an image reference by digest"):
        prod(staging_outputs(image_ref=f"{STAGING_SETTINGS.registry.name}.azurecr.io/{REPOSITORY}:latest"))


def test_prod_checks_its_own_memory_for_the_runtime_stagings_image_runs_on(prod, base_overrides):
    """audit 2 #5: staging checks its containers for the runtime its image's model runs on (infra/program.py
    image_runtime); prod's may be smaller (AKS, 1Gi): prod checks them again with the runtime staging exports, in its
    preview too (a StackReference's outputs are known there), before any resource of the promotion."""
    on_aks = {"serving.target": "aks", "serving.aks.memoryLimit": "1Gi"}
    for preview in (False, True):
        # raised in the StackReference's apply: the engine reports it as the program's error (the test runner wraps it)
        with pytest.raises(ValueError, match=r"more than mlops:serving\.aks\.memoryLimit \(1024 MiB\).*runs on the "
                                              r"sklearn runtime"):
            mockcloud.evaluate("prod", {**base_overrides("prod"), **on_aks}, env={}, preview=preview,
                               stack_outputs={STAGING: staging_outputs(image_runtime="sklearn")})
    assert prod(staging_outputs(image_runtime="onnx"), **on_aks).outputs["image_runtime"] == "onnx"
    # CI passes the runtime staging tested (promotion.testedRuntime): refused before any resource is declared
    with pytest.raises(ConfigError, match=r"runs on the sklearn runtime"):
        prod(**on_aks, **{"promotion.testedRuntime": "sklearn"})
    assert settings_of("prod").promotion.tested_runtime is None
    assert get_args(Runtime) == RUNTIMES, "the runtimes a manifest names are those the memory rule knows"
    assert prod(staging_outputs(), **on_aks).outputs["image_runtime"] == "", "a staging from before the output"
    assert prod(staging_outputs(image_runtime="sklearn")).outputs["image_digest"] == DIGEST, "4 Gi hold it"


def test_prod_refuses_when_staging_no_longer_serves_what_this_run_tested(prod):
    """A later push redeployed staging while this run waited for approval: prod must not promote the newer image."""
    tested = {"promotion.testedDigest": OLD_DIGEST, "promotion.testedModelVersion": "6"}
    with pytest.raises(PromotionError, match=rf"now serves {DIGEST} \(model version 7\), not what this run's staging "
                                             rf"job tested: {OLD_DIGEST} \(model version 6\)"):
        prod(**tested)
    with pytest.raises(PromotionError, match="not what this run's staging job tested"):  # same image, other version
        prod(**{"promotion.testedDigest": DIGEST, "promotion.testedModelVersion": "6"})
    ev = prod(**{"promotion.testedDigest": DIGEST, "promotion.testedModelVersion": 7})
    assert ev.outputs["image_digest"] == DIGEST and ev.outputs["model_version"] == "7"


def test_a_refused_promotion_leaves_no_failed_future_behind(prod):
    """The refused program's output futures must not log their exception later, from inside the garbage
    collector: CPython 3.11 formats that traceback with ast.parse, and a collection during another parse then
    fails an unrelated test with "AST constructor recursion depth mismatch" (seen in CI)."""
    with pytest.raises(PromotionError):
        prod(**{"promotion.testedDigest": OLD_DIGEST, "promotion.testedModelVersion": "6"})
    # _log_traceback: asyncio's own flag for "will log 'exception was never retrieved' when freed"
    unretrieved = [f for f in gc.get_objects() if isinstance(f, asyncio.Future) and f.done() and not f.cancelled()
                   and f._log_traceback]
    assert unretrieved == []


def test_an_image_missing_from_the_source_registry_is_refused(tls):
    class Missing(FakeArm):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": {"code": "ManifestUnknown"}}')
    server = serve_arm(Missing, tls)
    try:
        with pytest.raises(PromotionError, match=rf"r@{DIGEST} is not in the source registry {STAGING_ACR}"):
            promote.import_image(STAGING_ACR, STAGING_ACR, f"r@{DIGEST}", ["r:v1"], credential=Entra(),
                                 endpoint=f"https://127.0.0.1:{server.server_port}", poll_s=0.01, ca_bundle=tls[0])
    finally:
        server.shutdown()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"promotion.pinnedDigest": OLD_DIGEST}, "go together"),
    ({"promotion.testedDigest": DIGEST}, "testedDigest and .*testedModelVersion go together"),
    ({"promotion.pinnedDigest": "sha256:abc", "promotion.pinnedModelVersion": 1}, "sha256:<64 hex digits>"),
    ({"promotion.sourceStack": stack_files.DELETE, "promotion.pinnedDigest": OLD_DIGEST,
      "promotion.pinnedModelVersion": 1}, "only a promotion target can pin"),
    # The organization is the engine's: a placeholder one would only work on a self-managed backend.
    ({"promotion.sourceStack": f"organization/{stack_files.pulumi_project()}/staging"},
     r"mlops:promotion\.sourceStack .*the source stack's name only"),
])
def test_promotion_config_is_validated(prod, overrides, message):
    with pytest.raises(ConfigError, match=message):
        prod(**overrides)


# ---- the dynamic providers' real work, against local stand-ins ----

def test_model_promotion_provider_copies_into_a_local_prod_registry(registry, tmp_path, monkeypatch):
    unpatched = promote.Registry.client  # prod's registry is databricks-uc: its searches return no tags
    monkeypatch.setattr(promote.Registry, "client", lambda self: searching_like_uc(unpatched(self)))
    prod_uri = f"sqlite:///{tmp_path / 'prod.db'}"
    props = {"source_tracking_uri": registry["tracking_uri"], "source_registry_uri": "",
             "source_model": registry["model_name"], "source_version": registry["version"], "source_workspace": "staging-ws",
             "source_run_id": registry["summary"]["run_id"], "target_tracking_uri": prod_uri, "target_registry_uri": "",
             "target_model": "promoted-copy", "alias": "champion", "experiment": "promotions",
             "image_digest": DIGEST}
    # The experiment exists with its own artifact store (Databricks picks one); else MLflow's is ./mlruns in the cwd.
    promote.Registry(prod_uri).client().create_experiment("promotions", artifact_location=(tmp_path / "art").as_uri())
    provider = ModelPromotionProvider()
    created = provider.create(dict(props))
    assert created.outs["version"] == "1" and created.outs["reused"] is False
    client = promote.Registry(prod_uri).client()
    copy = client.get_model_version_by_alias("promoted-copy", "champion")
    assert copy.tags["source_run_id"] == registry["summary"]["run_id"] and copy.tags["image_digest"] == DIGEST
    # the source's score at approval, on the copy's run: prod's quality job reads its reference there (audit s11 F3)
    source_run = promote.Registry(registry["tracking_uri"]).client().get_run(registry["summary"]["run_id"])
    approval = {k: v for k, v in source_run.data.metrics.items() if k.startswith("gate_challenger_")}
    assert approval and client.get_run(copy.run_id).data.metrics == approval
    again = provider.update(created.id, created.outs, dict(props))
    assert again.outs["version"] == "1" and again.outs["reused"] is True, "re-running must not copy twice"
    with pytest.raises(PromotionError, match="outputs are stale"):
        provider.create({**props, "source_run_id": "some-other-run"})


def test_a_reused_copy_gets_the_approval_scores_it_lacks_once(registry, tmp_path):
    """Audit s11 F3: a copy made before copies carried the source's scores at approval (reused by a re-run, a new image
    of the same version, or a rollback) gets them when promoted again; a copy that holds them is left alone."""
    source = promote.ModelSource(promote.Registry(registry["tracking_uri"]), registry["model_name"], registry["version"],
                                 "staging-ws")
    prod_uri = f"sqlite:///{tmp_path / 'prod.db'}"
    client = promote.Registry(prod_uri).client()
    experiment = client.create_experiment("promotions", artifact_location=(tmp_path / "art").as_uri())
    old_run = client.create_run(experiment).info.run_id  # an older copy's promotion run: no scores
    client.create_registered_model("copy")
    copy = client.create_model_version("copy", (tmp_path / "art" / "m").as_uri(), run_id=old_run)
    expected = promote.approval_scores(source.registry.client(), registry["summary"]["run_id"])
    assert expected  # the gated source version has its score
    promote.carry_approval(source, client, copy)
    promote.carry_approval(source, client, copy)  # again: nothing logged twice
    assert client.get_run(old_run).data.metrics == expected
    assert len(client.get_metric_history(old_run, next(iter(expected)))) == 1


def test_approval_scores_of_a_missing_run_are_none_and_a_refusal_fails(registry):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    client = promote.Registry(registry["tracking_uri"]).client()
    assert promote.approval_scores(client, "0" * 32) == {}  # no such run: no score to carry

    class Refusing:  # the tracking server refuses (a permission, throttling): retried, not a copy without scores
        def get_run(self, run_id):
            raise MlflowException("denied", error_code=PERMISSION_DENIED)

    with pytest.raises(MlflowException, match="denied"):
        promote.approval_scores(Refusing(), "0" * 32)


def test_an_interrupted_copy_is_not_reused_and_only_a_missing_model_means_no_copy():
    """Audit s12 F1: a copy interrupted before its files arrived (PENDING_REGISTRATION, FAILED) is no copy: the newest
    READY one is reused, else a new copy is made; the target model not existing yet means no copy, any other refusal
    fails (a second copy of the same version would split the lineage)."""
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    source = promote.ModelSource(promote.Registry("unused"), "main.staging.credit", "4", "https://adb-1")
    lineage = {"source_workspace": "https://adb-1", "source_model": "main.staging.credit", "source_version": "4"}

    class Prod:
        def __init__(self, statuses: dict[str, str], refusal: int | None = None) -> None:
            self.statuses, self.refusal = statuses, refusal

        def client(self):
            return self

        def search_model_versions(self, query: str) -> list:
            if self.refusal is not None:
                raise MlflowException("refused", error_code=self.refusal)
            return [SimpleNamespace(version=number) for number in self.statuses]  # no tags, as Unity Catalog's

        def get_model_version(self, name: str, version: str):
            return SimpleNamespace(version=version, status=self.statuses[version], tags=lineage)

    def found(registry: Prod) -> str | None:
        copy = promote.find_promoted(promote.ModelTarget(registry, "main.prod.credit", "promotions"), source)
        return None if copy is None else copy.version

    assert found(Prod({"1": "READY", "2": "PENDING_REGISTRATION"})) == "1"
    assert found(Prod({"1": "FAILED_REGISTRATION", "2": "PENDING_REGISTRATION"})) is None
    assert found(Prod({"1": "READY", "2": "READY"})) == "2"
    assert found(Prod({}, refusal=RESOURCE_DOES_NOT_EXIST)) is None
    with pytest.raises(MlflowException, match="refused"):
        found(Prod({}, refusal=TEMPORARILY_UNAVAILABLE))


class Entra:
    """Stands in for Entra ID (azure-identity): the token the ARM client sends."""
    def get_token(self, *scopes, **kwargs) -> AccessToken:
        assert scopes == (promote.ARM_SCOPE,)
        return AccessToken("entra-token", int(time.time()) + 3600)


class FakeArm(BaseHTTPRequestHandler):
    """ARM's importImage: 202 + Azure-AsyncOperation, then the operation's status."""
    requests: ClassVar[list[tuple[str, str, dict | None]]] = []
    bearers: ClassVar[list[str]] = []
    outcome: ClassVar[str] = "Succeeded"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeArm.requests.append(("POST", self.path, body))
        FakeArm.bearers.append(self.headers["Authorization"])
        self.send_response(202)
        self.send_header("Azure-AsyncOperation", f"https://127.0.0.1:{self.server.server_port}/operations/1")
        self.end_headers()

    def do_GET(self):
        FakeArm.requests.append(("GET", self.path, None))
        payload = json.dumps({"status": FakeArm.outcome, "error": {"message": "source manifest unknown"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[str, str]:
    """A certificate for 127.0.0.1: the ARM client sends a bearer token over HTTPS only, as it should."""
    root = tmp_path_factory.mktemp("tls")
    cert, key = str(root / "cert.pem"), str(root / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def serve_arm(handler: type, tls: tuple[str, str]) -> HTTPServer:
    server = HTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def arm(tls):
    FakeArm.requests, FakeArm.bearers, FakeArm.outcome = [], [], "Succeeded"
    server = serve_arm(FakeArm, tls)
    yield f"https://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_import_image_calls_acr_import_and_waits(arm, tls):
    target = STAGING_ACR.replace(STAGING_SETTINGS.registry.name, PROD_SETTINGS.registry.name)
    promote.import_image(target, STAGING_ACR, f"{REPOSITORY}@{DIGEST}", [f"{REPOSITORY}:v7"],
                         credential=Entra(), endpoint=arm, poll_s=0.01, ca_bundle=tls[0])
    method, path, body = FakeArm.requests[0]
    assert (method, path) == ("POST", f"{target}/importImage?api-version={promote.ACR_API_VERSION}")
    assert body == {"source": {"resourceId": STAGING_ACR, "sourceImage": f"{REPOSITORY}@{DIGEST}"},
                    "targetTags": [f"{REPOSITORY}:v7"], "mode": "Force"}
    assert FakeArm.requests[-1][:2] == ("GET", "/operations/1")
    assert FakeArm.bearers == ["Bearer entra-token"]


def test_import_image_failure_is_an_error(arm, tls):
    FakeArm.outcome = "Failed"
    with pytest.raises(PromotionError, match=r"failed: source manifest unknown: the source registry does not hold it"):
        promote.import_image(STAGING_ACR, STAGING_ACR, f"r@{DIGEST}", ["r:v1"], credential=Entra(), endpoint=arm,
                             poll_s=0.01, ca_bundle=tls[0])


def test_image_import_diff_replaces_on_a_new_digest():
    olds = {"target_registry_id": "a", "source_registry_id": "b", "source_image": f"r@{OLD_DIGEST}", "target_tags": ["r:v1"]}
    diff = ImageImportProvider().diff("id", olds, {**olds, "source_image": f"r@{DIGEST}"})
    assert diff.changes and diff.replaces == ["source_image"]
    assert not ImageImportProvider().diff("id", olds, dict(olds)).changes


@pytest.mark.parametrize("provider", [ImageImportProvider(), ModelPromotionProvider()])
def test_providers_load_in_a_fresh_process(provider):
    """The dynamic provider host unpickles the provider in another process started in the project root."""
    serialized = serialize_provider(provider)
    code = ("import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read())); "
            "print(type(p).__module__, type(p).__name__)")
    result = subprocess.run([sys.executable, "-c", code], input=serialized, capture_output=True, text=True,
                            cwd=stack_files.ROOT, timeout=120, check=True)
    assert result.stdout.split() == ["infra.promotion", type(provider).__name__]
    assert base64.b64decode(serialized)
