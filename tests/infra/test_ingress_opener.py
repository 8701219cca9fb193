"""A new Container App is closed until its auth config exists, then opened once (infra/ingress_opener.py)."""

from __future__ import annotations

import pytest

from infra import ingress_opener
from testing import mockcloud

APP_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca-x"


def restrictions(ev: mockcloud.Evaluation) -> list:
    app = ev.one("azure-native:app:ContainerApp")
    return app.inputs["configuration"]["ingress"].get("ipSecurityRestrictions") or []


def test_a_new_app_is_closed_and_opened_after_its_auth_config(base_overrides):
    ev = mockcloud.evaluate("staging", base_overrides("staging"), env={})
    assert [r["action"] for r in restrictions(ev)] == ["Deny"]
    opener = ev.one("pulumi-python:dynamic/mlops:IngressOpener")
    assert ev.one("azure-native:app:ContainerAppsAuthConfig").urn in opener.dependencies


def test_an_existing_app_is_declared_open(base_overrides):
    from tests.infra.conftest import settings_of

    name = settings_of("staging").names.container_app
    ev = mockcloud.evaluate("staging", base_overrides("staging"), env={}, existing={name: {}})
    assert restrictions(ev) == []


def test_opening_patches_the_ingress_and_waits():
    sent: list[tuple] = []
    closed = {"ingress": {"ipSecurityRestrictions": [{"name": ingress_opener.CLOSED_RULE, "action": "Deny"}]}}
    # the first GET may answer before the update starts: the old Succeeded, still closed (audit N-4)
    states = iter([("Succeeded", closed), ("InProgress", closed), ("Succeeded", {"ingress": {}})])

    def send(method, path, body):
        sent.append((method, path, body))
        if method != "GET":
            return {}
        state, configuration = next(states)
        return {"properties": {"provisioningState": state, "configuration": configuration}}

    ingress_opener.open_ingress(APP_ID, send, poll_s=0)
    assert sent[0] == ("PATCH", APP_ID, {"properties": {"configuration": {"ingress": {"ipSecurityRestrictions": []}}}})
    assert [m for m, _, _ in sent] == ["PATCH", "GET", "GET", "GET"]
    with pytest.raises(ingress_opener.IngressOpenError):
        ingress_opener.open_ingress(APP_ID, lambda m, p, b: {"properties": {"provisioningState": "Failed"}}, poll_s=0)


def test_a_deactivation_is_waited_for_until_the_revision_reads_inactive():
    """scripts/pulumi_stack.py deactivate: the release's next step waits until ARM reads the revision inactive
    (`properties.active` false, Azure's record of the deactivation), and a revision that stays active is an error (the
    release notes it)."""
    sent: list[tuple] = []
    answers = iter([True, True, False])

    def send(method, path, body):
        sent.append((method, path))
        return {"properties": {"active": next(answers)}} if method == "GET" else {}

    ingress_opener.deactivate_revision(APP_ID, "ca-x--old", send, poll_s=0)
    revision = f"{APP_ID}/revisions/ca-x--old"
    assert sent == [("POST", f"{revision}/deactivate"), ("GET", revision), ("GET", revision), ("GET", revision)]
    with pytest.raises(ingress_opener.RevisionStillActive, match="ca-x--old still reads active"):
        ingress_opener.deactivate_revision(APP_ID, "ca-x--old", lambda m, p, b: {"properties": {"active": True}},
                                           timeout_s=0, poll_s=0)


def test_a_throttled_or_failing_read_during_the_wait_is_read_again():
    """Audit 6 #2: the deactivate succeeded; a 429 or a 5xx on a status read is no reason to report it failed."""
    import urllib.error

    answers = iter([urllib.error.HTTPError("u", 429, "Too Many Requests", {}, None),  # type: ignore[arg-type]
                    urllib.error.HTTPError("u", 503, "Service Unavailable", {}, None),  # type: ignore[arg-type]
                    urllib.error.URLError("reset"), {"properties": {"active": False}}])
    reads = []

    def send(method, path, body):
        if method == "POST":
            return {}
        reads.append(path)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ingress_opener.deactivate_revision(APP_ID, "ca-x--old", send, poll_s=0)
    assert len(reads) == 4

    def refused(method, path, body):
        if method == "GET":
            raise urllib.error.HTTPError("u", 403, "Forbidden", {}, None)  # type: ignore[arg-type]
        return {}

    with pytest.raises(urllib.error.HTTPError):  # a refusal is not transient: it is reported at once
        ingress_opener.deactivate_revision(APP_ID, "ca-x--old", refused, poll_s=0)
