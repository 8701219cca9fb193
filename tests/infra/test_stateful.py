"""Two `up`s in a row: evaluate a stack, keep what it declared as the current state, change one setting (or
nothing), evaluate again, and check what the engine would change and what Container Apps would do with it.

Container Apps refuses a revision suffix it has seen before, so a template must never send one twice, and an
unchanged template must send nothing (a no-op `up` makes no revision)."""

from __future__ import annotations

import pytest

from infra import stack_files
from testing import mockcloud, platform_rules
from testing.platform_rules import APP, RevisionHistory, changes
from tests.infra.conftest import settings_of

STAGING = f"{mockcloud.ORGANIZATION}/{stack_files.pulumi_project()}/staging"
STAGING_SETTINGS, PROD_SETTINGS = settings_of("staging"), settings_of("prod")
STAGING_APP, PROD_APP = STAGING_SETTINGS.names.container_app, PROD_SETTINGS.names.container_app
DIGEST_A, DIGEST_B = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32


@pytest.fixture(scope="module")
def run(base_overrides):
    """A fresh evaluation every call (no cache): two calls are two `up`s of the same program."""
    def evaluate(stack: str, overrides: dict | None = None, **kwargs) -> mockcloud.Evaluation:
        return mockcloud.evaluate(stack, {**base_overrides(stack), **(overrides or {})}, env={}, **kwargs)
    return evaluate


def test_a_no_op_up_changes_nothing_and_makes_no_revision(run):
    first, second = run("staging"), run("staging")
    assert changes(first, second) == {}
    history = RevisionHistory(STAGING_APP)
    assert history.apply(first.one(APP).inputs) is not None
    assert history.apply(second.one(APP).inputs) is None


def test_a_cpu_change_without_a_new_image_makes_a_new_uniquely_named_revision(run):
    before = run("staging")
    after = run("staging", {"serving.containerApp.cpu": 2, "serving.containerApp.memoryGi": 4})
    assert changes(before, after) == {f"{APP} containerapp-app": "update"}
    history = RevisionHistory(STAGING_APP)
    first = history.apply(before.one(APP).inputs)
    second = history.apply(after.one(APP).inputs)  # before: the same suffix again, refused by Azure
    assert second and second != first
    assert history.active == {second}, "Single mode: the superseded revision is deactivated"


def staging(digest: str, version: str) -> dict:
    registry = STAGING_SETTINGS.registry.name
    return {STAGING: {"image_ref": f"{registry}.azurecr.io/{STAGING_SETTINGS.image.repository}@{digest}",
                      "model_name": STAGING_SETTINGS.model.full_name, "model_version": version,
                      "model_run_id": f"run-of-v{version}", "databricks_workspace_url": "https://adb-1.1.azuredatabricks.net",
                      "registry_id": f"/subscriptions/{mockcloud.SUBSCRIPTION}/resourceGroups/"
                                     f"{STAGING_SETTINGS.names.resource_group}/providers/"
                                     f"Microsoft.ContainerRegistry/registries/{registry}", "bootstrap": ""}}


def test_prod_promotes_a_new_digest_then_rolls_back_by_pin(run):
    """prod serves staging's digest A, then B, then a pinned rollback to A: three revisions, none refused (the
    rollback's template equals the first one's, so a suffix derived from it would have been refused)."""
    history = RevisionHistory(PROD_APP)
    promoted_a = run("prod", stack_outputs=staging(DIGEST_A, "7"))
    promoted_b = run("prod", stack_outputs=staging(DIGEST_B, "8"))
    pinned_a = run("prod", {"promotion.pinnedDigest": DIGEST_A, "promotion.pinnedModelVersion": "7"},
                   stack_outputs=staging(DIGEST_B, "8"))
    assert changes(promoted_a, run("prod", stack_outputs=staging(DIGEST_A, "7"))) == {}
    plan = changes(promoted_a, promoted_b)
    assert plan[f"{APP} containerapp-app"] == "update"
    assert plan[f"{mockcloud.IMAGE_IMPORT} promotion-image-import"] == "update"  # another digest, another import
    rollback = changes(promoted_b, pinned_a)
    assert rollback[f"{mockcloud.IMAGE_IMPORT} promotion-image-import"] == "delete"  # the pin imports nothing
    names = [history.apply(ev.one(APP).inputs) for ev in (promoted_a, promoted_b, pinned_a)]
    assert None not in names and len(set(names)) == 3
    images = [ev.one(APP).inputs["template"]["containers"][0]["image"] for ev in (promoted_a, promoted_b, pinned_a)]
    assert images[0] == images[2] and images[0].endswith(DIGEST_A) and images[1].endswith(DIGEST_B)
    assert history.active == {names[2]}


def test_a_canary_runs_two_revisions_and_completing_it_deactivates_the_old_one(run):
    history = RevisionHistory(STAGING_APP)
    old = history.apply(run("staging").one(APP).inputs)
    canary = run("staging", {"serving.containerApp.cpu": 2, "serving.containerApp.memoryGi": 4,
                             "serving.containerApp.latestWeight": 10,
                             "serving.containerApp.pinnedRevisions": [{"revision": old, "weight": 90}]})
    new = history.apply(canary.one(APP).inputs)
    assert history.active == {old, new}
    done = run("staging", {"serving.containerApp.cpu": 2, "serving.containerApp.memoryGi": 4})
    assert changes(canary, done) == {f"{APP} containerapp-app": "update"}
    assert history.apply(done.one(APP).inputs) is None  # the template did not change: no revision ...
    assert history.active == {new}  # ... and back in Single mode only the latest stays active


NEW_IMAGE = {"serving.containerApp.cpu": 2, "serving.containerApp.memoryGi": 4}  # any template change: a new revision


def test_a_release_serves_the_candidate_at_0_percent_then_moves_traffic_only_after_its_smoke_test(run):
    """deploy (candidate at 0 %, label URL) -> smoke test -> shift 10 % -> complete; every step a real `up`."""
    history = RevisionHistory(STAGING_APP)
    stable = history.apply(run("staging").one(APP).inputs)
    release = {**NEW_IMAGE, "serving.containerApp.stableRevision": stable, "serving.containerApp.latestWeight": 0}
    deployed = run("staging", release)
    candidate = history.apply(deployed.one(APP).inputs)
    assert candidate and candidate != stable
    assert history.weights == {stable: 100, candidate: 0} and history.serving() == {stable}
    assert history.labels == {"candidate": candidate, "stable": stable}
    assert deployed.outputs["candidate_url"] == f"https://{STAGING_APP}---candidate." + \
        deployed.outputs["endpoint_url"].split(".", 1)[1]  # where the smoke test goes before any user does
    shifted = run("staging", {**release, "serving.containerApp.latestWeight": 10})
    assert changes(deployed, shifted) == {f"{APP} containerapp-app": "update"}
    assert history.apply(shifted.one(APP).inputs) is None  # traffic is application-scope: no new revision
    assert history.weights == {stable: 90, candidate: 10}
    history.apply(run("staging", NEW_IMAGE).one(APP).inputs)  # complete: Single mode again
    assert history.weights == {candidate: 100} and history.active == {candidate}


def test_a_candidate_that_fails_its_smoke_test_never_takes_traffic_and_the_next_release_replaces_it(run):
    history = RevisionHistory(STAGING_APP)
    stable = history.apply(run("staging").one(APP).inputs)
    failed = history.apply(run("staging", {**NEW_IMAGE, "serving.containerApp.stableRevision": stable,
                                           "serving.containerApp.latestWeight": 0}).one(APP).inputs)
    # the workflow stops here: no further `up`, so the stable revision keeps every request
    assert history.serving() == {stable} and history.labels["candidate"] == failed
    fixed = {"serving.containerApp.cpu": 1.5, "serving.containerApp.memoryGi": 3}
    retry = history.apply(run("staging", {**fixed, "serving.containerApp.stableRevision": stable,
                                          "serving.containerApp.latestWeight": 0}).one(APP).inputs)
    assert history.labels == {"candidate": retry, "stable": stable} and history.serving() == {stable}


def test_traffic_to_a_revision_that_is_not_active_is_refused(run):
    history = RevisionHistory(STAGING_APP)
    history.apply(run("staging").one(APP).inputs)
    with pytest.raises(platform_rules.RevisionRefused, match="not an active revision"):
        history.apply(run("staging", {**NEW_IMAGE, "serving.containerApp.stableRevision": f"{STAGING_APP}--gone",
                                      "serving.containerApp.latestWeight": 0}).one(APP).inputs)


def test_a_new_quality_window_updates_the_monitor_and_the_job_and_keeps_the_inference_table(run):
    """The loop's settings are the monitor's and the job's: changing them leaves the inference table (every prediction
    and label so far) untouched, and a second `up` of the same settings changes nothing of the loop."""
    before = run("staging")
    after = run("staging", {"quality.window": "1 hour", "quality.windows": 5, "quality.margin": 0.05})
    assert changes(before, after) == {f"{platform_rules.QUALITY_MONITOR} databricks-quality-monitor": "update",
                                      f"{platform_rules.JOB} databricks-quality-job": "update"}
    again = run("staging", {"quality.window": "1 hour", "quality.windows": 5, "quality.margin": 0.05})
    assert changes(after, again) == {}
