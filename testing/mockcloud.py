"""Evaluate the Pulumi program for one stack with the cloud replaced by Pulumi's mocks.

Shared by the tests, `make plan` and `make databricks-test`. Only the cloud APIs are mocked: the config validation, the
MLflow alias resolution and the build-context assembly run for real. Each `evaluate` call starts a
fresh mock runtime, so one process can evaluate several stacks.

    evaluation = evaluate("prod", overrides={"model.trackingUri": "sqlite:///...", "image.wheelhouse": False})
    evaluation.of_type("azure-native:app:ContainerApp")[0].inputs["configuration"]["ingress"]["allowInsecure"]
"""

from __future__ import annotations

import asyncio
import copy
import gc
import hashlib
import json
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks

from infra.settings import PSEUDONYM_KEY
from infra.stack_files import NAMESPACE, apply_overrides, pulumi_project, stack_values, stacks

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
TENANT = "99999999-8888-7777-6666-555555555555"
FAKE_ACR_TOKEN = "fake-acr-refresh-token"
ORGANIZATION = "contoso-ml"  # the Pulumi Cloud organization the mock engine runs the stacks in
DEPLOYER_APPLICATION_ID = "5e1f0c2a-7b3d-4e8f-9a10-2b3c4d5e6f70"  # the identity `pulumi up` runs as, seen by Databricks


def to_pulumi_config(values: Mapping[str, Any], namespace: str = NAMESPACE) -> dict[str, str]:
    """What the engine hands a program: `mlops:<key>` -> string (objects as JSON)."""
    return {f"{namespace}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}


SECRET_KEYS = (PSEUDONYM_KEY,)
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret value
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def unwrap(value: Any, path: str = "", secrets: list[str] | None = None) -> Any:
    """Wire form -> plain values; the paths of secret values go to `secrets`."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_SIG_VALUE:
            if secrets is not None:
                secrets.append(path)
            return unwrap(value.get("value"), path, secrets)
        return {k: unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


@dataclass
class Captured:
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    custom: bool
    provider: str = ""
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    urn: str = ""
    secrets: list[str] = field(default_factory=list)  # input paths that were secret
    protect: bool = False  # the engine refuses to delete it (and so to replace it)
    retain_on_delete: bool = False  # deleting it from the stack leaves it in the cloud
    replace_on_changes: list[str] = field(default_factory=list)  # inputs whose change replaces it
    ignore_changes: list[str] = field(default_factory=list)  # inputs the stack never sets back (the cloud's to change)

    @property
    def id(self) -> str:
        return self.outputs.get("id", "")


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


STACK_REFERENCE = "pulumi:pulumi:StackReference"
IMAGE_IMPORT = "pulumi-python:dynamic/mlops:ImageImport"
MODEL_PROMOTION = "pulumi-python:dynamic/mlops:ModelPromotion"
SECRETS_VERSION = "pulumi-python:dynamic/mlops:SecretsVersion"


class CloudMocks(pulumi.runtime.Mocks):
    """Realistic outputs per resource type: ARM ids, login servers, principal ids, digests, URLs.

    `stack_outputs` maps a referenced stack's name (as the program passes it to StackReference) to its
    outputs; a stack not in it reads as one with no outputs, like a stack that was never deployed."""

    def __init__(self, stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
                 existing: Mapping[str, Mapping[str, Any]] | None = None, greenfield: bool = False) -> None:
        self.resources: list[Captured] = []
        self.calls: list[tuple[str, dict]] = []
        self.stack_outputs = {name: dict(outputs) for name, outputs in (stack_outputs or {}).items()}
        # What already exists in the subscription before this run (name -> properties), for the program's lookups;
        # empty: a greenfield subscription, where every lookup answers 404 as ARM does.
        self.existing = {name: dict(props) for name, props in (existing or {}).items()}
        # The stack's Databricks workspace exists (a stack's every `up` after its first) unless this is the very
        # first `up` on an empty subscription (make plan GREENFIELD=1), where only `existing` exists.
        self.greenfield = greenfield

    def arm_id(self, provider: str, kind: str, name: str, group: str = "rg-mock") -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{provider}/{kind}/{name}"

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        secrets: list[str] = []
        inputs = unwrap(dict(args.inputs), secrets=secrets)
        outputs = {**inputs, **self._outputs(args.typ, args.name, inputs)}
        resource_id = outputs.pop("id", None) or f"{args.name}-id"
        self.resources.append(Captured(args.typ, args.name, inputs, {**outputs, "id": resource_id}, bool(args.custom),
                                       provider=args.provider or "", secrets=secrets))
        return resource_id, outputs

    def _outputs(self, typ: str, name: str, inputs: dict) -> dict:
        group = inputs.get("resourceGroupName", "rg-mock")
        if typ == STACK_REFERENCE:  # read, not created: its state is the referenced stack's outputs
            stack = inputs.get("name", name)
            return {"id": stack, "name": stack, "outputs": copy.deepcopy(self.stack_outputs.get(stack, {})),
                    "secretOutputNames": []}
        if typ == IMAGE_IMPORT:
            return {"id": inputs.get("image_ref", name)}
        if typ == SECRETS_VERSION:  # a new version when the secrets change (infra/containerapp.py)
            return {"version": _digest(json.dumps(inputs.get("secrets"), sort_keys=True))[:32]}
        if typ == MODEL_PROMOTION:  # the first version of the model in the target registry
            return {"id": f"{inputs.get('target_model')}/1", "version": "1",
                    "content_sha256": _digest(str(inputs.get("source_model")), str(inputs.get("source_version"))),
                    "reused": False}
        if typ == "azure-native:resources:ResourceGroup":
            rg = inputs.get("resourceGroupName", name)
            return {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}", "name": rg}
        if typ == "azure-native:operationalinsights:Workspace":
            ws = inputs.get("workspaceName", name)
            return {"id": self.arm_id("Microsoft.OperationalInsights", "workspaces", ws, group), "name": ws,
                    "customerId": _uuid(ws)}
        if typ == "azure-native:applicationinsights:Component":
            appi = inputs.get("resourceName", name)
            return {"id": self.arm_id("Microsoft.Insights", "components", appi, group), "name": appi,
                    "connectionString": f"InstrumentationKey={_uuid('ikey', appi)};"
                                        "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"}
        if typ == "azure-native:containerregistry:Registry":
            acr = inputs.get("registryName", name)
            return {"id": self.arm_id("Microsoft.ContainerRegistry", "registries", acr, group), "name": acr,
                    "loginServer": f"{acr}.azurecr.io"}
        if typ == "azure-native:managedidentity:UserAssignedIdentity":
            uai = inputs.get("resourceName", name)
            return {"id": self.arm_id("Microsoft.ManagedIdentity", "userAssignedIdentities", uai, group), "name": uai,
                    "principalId": _uuid("principal", uai), "clientId": _uuid("client", uai), "tenantId": TENANT}
        if typ == "azure-native:authorization:RoleAssignment":
            return {"id": f"{inputs.get('scope', '')}/providers/Microsoft.Authorization/roleAssignments/{_uuid(name)}"}
        if typ == "azure-native:databricks:AccessConnector":
            connector = inputs.get("connectorName", name)
            return {"id": self.arm_id("Microsoft.Databricks", "accessConnectors", connector, group), "name": connector,
                    "identity": {"type": "SystemAssigned", "principalId": _uuid("principal", connector), "tenantId": TENANT}}
        if typ == "azure-native:databricks:Workspace":
            dbw = inputs.get("workspaceName", name)
            return {"id": self.arm_id("Microsoft.Databricks", "workspaces", dbw, group), "name": dbw,
                    "workspaceUrl": f"adb-{int(_digest(dbw)[:12], 16)}.1.azuredatabricks.net", "workspaceId": "1234567890"}
        if typ == "docker:index/image:Image":
            image_name = inputs.get("imageName", "")
            if not isinstance(image_name, str):  # unknown in a preview (infra/image.py): so is the digest
                return {"repoDigest": image_name}
            repository = image_name.rsplit(":", 1)[0]
            return {"repoDigest": f"{repository}@sha256:{_digest(image_name)}", "baseImageName": image_name}
        if typ == "azure-native:app:ManagedEnvironment":
            env = inputs.get("environmentName", name)
            return {"id": self.arm_id("Microsoft.App", "managedEnvironments", env, group), "name": env,
                    "defaultDomain": f"{_digest(env)[:10]}.westeurope.azurecontainerapps.io"}
        if typ == "azure-native:app:ContainerApp":
            return self._container_app(name, inputs, group)
        if typ == "azure-native:containerservice:ManagedCluster":
            aks = inputs.get("resourceName", name)
            return {"id": self.arm_id("Microsoft.ContainerService", "managedClusters", aks, group), "name": aks,
                    "fqdn": f"{aks}.hcp.westeurope.azmk8s.io",
                    "identityProfile": {"kubeletidentity": {"objectId": _uuid("kubelet", aks), "clientId": _uuid("kc", aks),
                                                            "resourceId": self.arm_id("Microsoft.ManagedIdentity",
                                                                                      "userAssignedIdentities",
                                                                                      f"{aks}-agentpool", f"MC_{aks}")}},
                    "identity": {"type": "SystemAssigned", "principalId": _uuid("cluster", aks), "tenantId": TENANT}}
        if typ == "azure-native:monitor:AzureMonitorWorkspace":
            amw = inputs.get("azureMonitorWorkspaceName", name)
            return {"id": self.arm_id("Microsoft.Monitor", "accounts", amw, group), "name": amw,
                    "accountId": _uuid("amw", amw)}
        if typ == "azure-native:monitor:DataCollectionEndpoint":
            dce = inputs.get("dataCollectionEndpointName", name)
            return {"id": self.arm_id("Microsoft.Insights", "dataCollectionEndpoints", dce, group), "name": dce}
        if typ == "azure-native:monitor:DataCollectionRule":
            dcr = inputs.get("dataCollectionRuleName", name)
            return {"id": self.arm_id("Microsoft.Insights", "dataCollectionRules", dcr, group), "name": dcr}
        if typ == "kubernetes:core/v1:Secret":  # the API server's version of the object: a new one on every change
            return {"metadata": {**(inputs.get("metadata") or {}),
                                 "resourceVersion": str(zlib.crc32(json.dumps(inputs, sort_keys=True).encode()))}}
        if typ == "kubernetes:core/v1:Service":
            return {"status": {"loadBalancer": {"ingress": [{"ip": "20.50.60.70"}]}}}
        if typ == "databricks:index/servicePrincipal:ServicePrincipal":  # Databricks assigns the application id
            principal = inputs.get("displayName", name)  # one per principal, whatever the program calls it
            return {"id": str(int(_digest(typ, principal)[:8], 16)), "applicationId": _uuid("application", principal)}
        if typ.startswith("databricks:index/"):  # an id per object: by the name it has in the workspace where it has one
            physical = next((str(inputs[k]) for k in ("name", "path", "displayName") if inputs.get(k)), name)
            return {"id": str(int(_digest(typ, physical)[:8], 16))}
        if typ.startswith("azure-native:"):
            kind = typ.rsplit(":", 1)[-1]
            return {"id": self.arm_id(f"Microsoft.{typ.split(':')[1]}", kind, name, group), "name": name}
        return {}

    def _container_app(self, name: str, inputs: dict, group: str) -> dict:
        app_name = inputs.get("containerAppName", name)
        configuration = copy.deepcopy(inputs.get("configuration") or {})
        fqdn = f"{app_name}.{_digest(app_name)[:10]}.westeurope.azurecontainerapps.io"
        configuration.setdefault("ingress", {})["fqdn"] = fqdn
        suffix = (inputs.get("template") or {}).get("revisionSuffix", "0000001")
        identity = copy.deepcopy(inputs.get("identity") or {})
        # ARM answers with a map id -> {principalId, clientId} where the request had a list of ids.
        identity["userAssignedIdentities"] = {uai: {"principalId": _uuid("principal", uai.rsplit("/", 1)[-1]),
                                                    "clientId": _uuid("client", uai.rsplit("/", 1)[-1])}
                                              for uai in identity.get("userAssignedIdentities") or []}
        return {"identity": identity,"id": self.arm_id("Microsoft.App", "containerApps", app_name, group), "name": app_name,
                "configuration": configuration, "latestRevisionName": f"{app_name}--{suffix}",
                "latestRevisionFqdn": f"{app_name}--{suffix}.{fqdn.split('.', 1)[1]}"}

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        """(the function's result, its failures as (property, reason): none but a lookup's 404)."""
        self.calls.append((args.token, dict(args.args)))
        if args.token == "azure-native:databricks:getWorkspace":
            name = args.args.get("workspaceName", "")
            if not self.greenfield and name not in self.existing:
                self.existing[name] = {"workspaceUrl": f"adb-{zlib.crc32(name.encode())}.1.azuredatabricks.net"}
            return self._lookup(args.args, "Microsoft.Databricks/workspaces", name)
        if args.token == "azure-native:app:getContainerApp":  # a new app unless the test says it exists
            return self._lookup(args.args, "Microsoft.App/containerApps", args.args.get("containerAppName", ""))
        if args.token == "azure-native:operationalinsights:getSharedKeys":
            return {"primarySharedKey": "bW9jay1wcmltYXJ5LWtleQ==", "secondarySharedKey": "bW9jay1zZWNvbmRhcnk="}, []
        if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
            import base64

            kubeconfig = ("apiVersion: v1\nkind: Config\nclusters: [{name: aks, cluster: {server: 'https://aks.example'}}]\n"
                          "contexts: [{name: aks, context: {cluster: aks, user: user}}]\ncurrent-context: aks\n"
                          "users: [{name: user, user: {token: mock}}]\n")
            return {"kubeconfigs": [{"name": "clusterUser", "value": base64.b64encode(kubeconfig.encode()).decode()}]}, []
        if args.token == "databricks:index/getCurrentUser:getCurrentUser":  # SCIM Me, for a service principal
            return {"id": "4711", "userName": DEPLOYER_APPLICATION_ID,
                    "aclPrincipalId": f"servicePrincipals/{DEPLOYER_APPLICATION_ID}"}, []
        return {}, []


    def _lookup(self, args: dict, kind: str, name: str) -> tuple[dict, list[tuple[str, str]]]:
        """An ARM GET: the existing resource's properties, or the 404 ARM answers on an empty subscription."""
        if name in self.existing:
            group = args.get("resourceGroupName", "rg-mock")
            namespace, kind_name = kind.split("/")
            return {"id": self.arm_id(namespace, kind_name, name, group), "name": name, **self.existing[name]}, []
        # pulumi-azure-native's own text for a failed GET (since Dec 2024; azcore's multi-line form before)
        group = args.get("resourceGroupName")
        return {}, [("", f"request failed /subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{kind}/{name}: "
                         f'Status=404 Code="ResourceGroupNotFound" Message="Resource group \'{group}\' could not be '
                         'found."')]


class CapturingMonitor(pulumi_mocks.MockMonitor):
    """Records what the mock hides from `new_resource`: parent, provider and explicit dependencies."""

    def __init__(self, mocks: CloudMocks) -> None:
        super().__init__(mocks)
        self.cloud = mocks

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        # Registrations run on several threads: find this one by type and name, not by position.
        for captured in self.cloud.resources:
            if captured.typ == request.type and captured.name == request.name and not captured.urn:
                captured.urn, captured.parent = response.urn, request.parent
                captured.dependencies = list(request.dependencies)
                captured.protect, captured.retain_on_delete = bool(request.protect), bool(request.retainOnDelete)
                captured.replace_on_changes = list(request.replaceOnChanges)
                captured.ignore_changes = list(request.ignoreChanges)
                break
        return response


def _uuid(*parts: str) -> str:
    h = _digest(*parts)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass
class Evaluation:
    stack: str
    resources: list[Captured]
    outputs: dict[str, Any]
    calls: list[tuple[str, dict]]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)  # the stack's config values as evaluated (overrides applied)

    def of_type(self, typ: str) -> list[Captured]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Captured:
        found = self.of_type(typ)
        if len(found) != 1:
            raise AssertionError(f"expected one {typ}, found {len(found)}: {[r.name for r in found]}")
        return found[0]

    def named(self, typ: str, name: str) -> Captured:
        """The resource of this type with this (logical) name, where a stack holds several of the type."""
        found = [r for r in self.of_type(typ) if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {typ} named {name}, found {[r.name for r in self.of_type(typ)]}")
        return found[0]

    def by_urn(self, urn: str) -> Captured | None:
        return next((r for r in self.resources if r.urn == urn), None)

    @property
    def custom(self) -> list[Captured]:
        return [r for r in self.resources if r.custom and not r.typ.startswith("pulumi:providers:")]


def source_outputs(values: Mapping[str, Any], overrides: Mapping[str, Any], env: Mapping[str, str] | None,
                   acr_token: Callable[[str], str], existing: Mapping[str, Mapping[str, Any]] | None = None,
                   greenfield: bool = False) -> dict[str, dict[str, Any]]:
    """A promotion target's StackReference, answered by evaluating the source stack of this project under
    mocks with the same overrides (minus promotion.*): prod then imports what staging's mocks exported."""
    name = (values.get("promotion") or {}).get("sourceStack")
    if not name or name not in stacks():
        return {}
    source = f"{ORGANIZATION}/{pulumi_project()}/{name}"
    own = {k: v for k, v in overrides.items() if not k.startswith("promotion.") and k != "promotion"}
    key = json.dumps([source, own, dict(env or {}), dict(existing or {}), greenfield], sort_keys=True, default=str)
    if key not in _SOURCE_OUTPUTS:
        _SOURCE_OUTPUTS[key] = evaluate(name, own, env=env, acr_token=acr_token, existing=existing,
                                        greenfield=greenfield).outputs
    return {source: copy.deepcopy(_SOURCE_OUTPUTS[key])}


_SOURCE_OUTPUTS: dict[str, dict[str, Any]] = {}


def retire_abandoned_futures() -> None:
    """After a program failed: cancel Pulumi's pending tasks and mark every failed future as retrieved.

    A failed program leaves hundreds of output futures holding its exception, never awaited. Freed later, each
    logs "exception was never retrieved" with a formatted traceback, and CPython 3.11 formats a traceback with
    `ast.parse` (for its ^^^ carets). When the garbage collector frees one in the middle of another `ast.parse`,
    the nested parse corrupts the AST constructor's recursion depth and the outer one fails with "AST
    constructor recursion depth mismatch" in an unrelated test. The failure itself is reported by the caller."""
    loop = asyncio.get_event_loop()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending and not loop.is_running():
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled():
            obj.exception()


def evaluate(stack: str, overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
             acr_token: Callable[[str], str] = lambda server: FAKE_ACR_TOKEN,
             stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
             existing: Mapping[str, Mapping[str, Any]] | None = None, preview: bool = False,
             greenfield: bool = False) -> Evaluation:
    """Run infra.program.run() for `stack` (its real Pulumi.<stack>.yaml plus overrides) under fresh mocks.

    `stack_outputs`: what StackReferences read ({stack name: outputs}); by default a promotion target's
    source stack is evaluated first (see `source_outputs`)."""
    from infra import program

    project = pulumi_project()
    values = apply_overrides(stack_values(stack), overrides or {})
    if stack_outputs is None:
        stack_outputs = source_outputs(values, overrides or {}, env, acr_token, existing, greenfield)
    started = time.perf_counter()
    # Secret keys as `pulumi config set --secret` leaves them: marked secret (infra/settings.py reads them only so).
    pulumi.runtime.set_all_config(to_pulumi_config(values), [f"{NAMESPACE}:{k}" for k in values if k in SECRET_KEYS])
    cloud = CloudMocks(stack_outputs, existing, greenfield)
    pulumi.runtime.settings.reset_options(project=project, stack=stack, preview=preview, organization=ORGANIZATION)
    pulumi.runtime.set_mocks(cloud, project=project, stack=stack, preview=preview, organization=ORGANIZATION,
                             monitor=CapturingMonitor(cloud))
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def body() -> pulumi.Output:
        declared = program.run(acr_token=acr_token, env=env)
        return pulumi.Output.all(**declared).apply(outputs.update)

    try:
        body()
    except BaseException:
        retire_abandoned_futures()
        raise
    return Evaluation(stack, cloud.resources, outputs, cloud.calls, time.perf_counter() - started, values)

