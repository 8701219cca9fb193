"""A new Container App is created closed and opened once its auth config exists (N14); ARM calls on its revisions.

Azure creates an app's auth config only after the app (it is a child resource), and an app created with external
ingress answers anyone until then. So the program creates a new app with a deny-all IP restriction, and this dynamic
resource, created after the auth config, removes it with one JSON Merge Patch of the app's ingress. It runs once
per app: the next `up` finds the app (a read, so a Reader's preview may look) and declares it without restriction.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

from infra import arm, azure_credential

ARM = "https://management.azure.com"
APP_API_VERSION = "2025-01-01"  # Container Apps' GA API: PATCH is a JSON Merge Patch of the app
ARM_SCOPE = "https://management.azure.com/.default"
CLOSED_RULE = "closed-until-auth"
FAILED_STATES = ("Failed", "Canceled")


class IngressOpenError(RuntimeError):
    pass


Send = Callable[[str, str, dict | None], dict]  # (method, ARM path, body) -> the JSON answer


@functools.cache
def _credential() -> Any:
    """One credential per process: it caches its token, so a wait's polls make no new token exchange each."""
    return azure_credential.arm_credential()


def arm_send(method: str, path: str, body: dict | None) -> dict:
    token = _credential().get_token(ARM_SCOPE).token
    request = urllib.request.Request(f"{ARM}{path}?api-version={APP_API_VERSION}", method=method,
                                     # a POST without a body still says Content-Length: 0 (ARM answers 411 without)
                                     data=json.dumps(body).encode() if body is not None else b"" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read()
    return json.loads(text) if text else {}


class RevisionStillActive(RuntimeError):
    pass


def deactivate_revision(app_id: str, revision: str, send: Send = arm_send, timeout_s: float = 180,
                        poll_s: float = 5) -> None:
    """POST revisions/{revision}/deactivate (synchronous in the Microsoft.App spec: 200), then wait until the revision
    reads inactive (`properties.active`, RevisionProperties' read-only flag): Azure's record of the deactivation, read
    back before what comes next (the release's last smoke test, the key's removal). A throttled (429), failing (5xx)
    or unreachable read during the wait is read again until the deadline: the deactivate itself has succeeded."""
    path = f"{app_id}/revisions/{revision}"
    send("POST", f"{path}/deactivate", None)
    deadline = time.monotonic() + timeout_s
    while _reads_active(send, path):
        if time.monotonic() > deadline:
            raise RevisionStillActive(f"{revision} still reads active {timeout_s:g} s after its deactivation")
        time.sleep(poll_s)


def _reads_active(send: Send, path: str) -> bool:
    try:
        return bool((send("GET", path, None).get("properties") or {}).get("active", True))
    except urllib.error.HTTPError as error:
        if error.code == 429 or error.code >= 500:
            return True  # read again after the poll interval
        raise
    except (urllib.error.URLError, TimeoutError):
        return True


def open_ingress(app_id: str, send: Send = arm_send, timeout_s: float = 600, poll_s: float = 5) -> None:
    """Remove the app's IP restrictions (the closed rule), and wait until the app has applied it: Succeeded with no
    restriction left. A GET right after the PATCH may still show the old Succeeded, before the update starts."""
    send("PATCH", app_id, {"properties": {"configuration": {"ingress": {"ipSecurityRestrictions": []}}}})
    deadline = time.monotonic() + timeout_s
    while True:
        properties = send("GET", app_id, None).get("properties") or {}
        state = properties.get("provisioningState")
        ingress = (properties.get("configuration") or {}).get("ingress") or {}
        if state == "Succeeded" and not ingress.get("ipSecurityRestrictions"):
            return
        if state in FAILED_STATES or time.monotonic() > deadline:
            raise IngressOpenError(f"opening {app_id}'s ingress ended {state or 'without a state'}")
        time.sleep(poll_s)


class IngressOpenerProvider(dynamic.ResourceProvider):
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        open_ingress(str(props["app_id"]))
        return dynamic.CreateResult(id_=str(props["app_id"]), outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = olds.get("app_id") != news.get("app_id")  # another app is opened again; the same one never
        return dynamic.DiffResult(changes=changed, replaces=["app_id"] if changed else [], delete_before_replace=True)


class IngressOpener(dynamic.Resource, module="mlops", name="IngressOpener"):
    def __init__(self, name: str, app_id: pulumi.Input[str], auth_config: pulumi.CustomResource,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(IngressOpenerProvider(), name, {"app_id": app_id, "auth_config_id": auth_config.id},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[auth_config])))


async def app_exists(resource_group_name: str, app_name: str) -> bool:
    """An ARM GET of the app: whether an earlier `up` created it (and so opened it already)."""
    try:
        await pulumi.runtime.invoke_async("azure-native:app:getContainerApp",
                                          {"resourceGroupName": resource_group_name, "containerAppName": app_name})
    except Exception as error:  # the engine raises a plain Exception naming the ARM error code
        if arm.not_found(error):
            return False
        raise
    return True


def closed(exists: bool) -> list[dict[str, str]] | None:
    """The ingress's IP restrictions: none for an app that exists, deny-all for one this `up` creates."""
    if exists:
        return None
    return [{"name": CLOSED_RULE, "action": "Deny", "ipAddressRange": "0.0.0.0/0",
             "description": "closed until its auth config exists (infra/ingress_opener.py)"}]
