"""The release sequence CI runs (scripts/release.py), driven against the mocked cloud's stateful evaluation:
every `up` is a real evaluation of the program, whose Container App goes through Azure's revision rules
(platform_rules.RevisionHistory). What stands in for the cloud is only the platform: which revision a URL
reaches, and whether that revision's container passes the smoke test."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from infra import stack_files
from infra.promotion import CANDIDATE_ALIAS
from infra.settings import ConfigError, StackSettings, from_values
from scripts import pulumi_stack, release, smoke_from
from scripts.release import Release, ReleaseFailed, State
from testing import mockcloud
from testing.platform_rules import APP, RevisionHistory, RevisionRefused
from tests.infra.conftest import settings_of

STAGING = f"{mockcloud.ORGANIZATION}/{stack_files.pulumi_project()}/staging"
CPU_1, CPU_2, CPU_1_5 = ({"serving.containerApp.cpu": c, "serving.containerApp.memoryGi": c * 2} for c in (1, 2, 1.5))


def template(ev: mockcloud.Evaluation) -> str:
    return json.dumps(ev.one(APP).inputs.get("template") or {}, sort_keys=True)


@dataclass
class CloudStack:
    """A deployed stack on the mocked cloud: config of this run on top of the stack file, state kept between `up`s."""
    evaluate: Any
    stack: str
    config: dict[str, Any]
    history: RevisionHistory
    base: dict[str, Any] = field(default_factory=dict)  # what differs from a real deployment (the local registry)
    state: mockcloud.Evaluation | None = None
    weights: list[dict[str, int]] = field(default_factory=list)  # the app's traffic after each `up`
    deployed: list[dict[str, str]] = field(default_factory=list)  # the outputs of each `up`
    served: dict[str, str] = field(default_factory=dict)  # revision -> the model version it serves (fixed at creation)
    name: str = STAGING

    def outputs(self) -> dict[str, str]:
        if self.state is None:
            return {}
        out = {k: str(v) for k, v in self.state.outputs.items()}
        latest = self.history.revisions[-1][0] if self.history.revisions else ""
        releasing = self.state.config["serving"]["containerApp"].get("stableRevision")
        # computed by Azure, not by the program: the revision names the platform generated
        return {**out, "latest_revision_name": latest, "serving_revision": releasing or latest}

    def _run(self, config: Mapping[str, Any]) -> mockcloud.Evaluation:
        return self.evaluate(self.stack, {**self.config, **config})

    def template_changes(self, config: Mapping[str, Any]) -> bool | None:
        return None if self.state is None else template(self._run(config)) != template(self.state)

    def up(self, config: Mapping[str, Any]) -> dict[str, str]:
        evaluation = self._run(config)
        for app in evaluation.of_type(APP):  # none in a bootstrap `up`
            self.history.apply(app.inputs)  # Azure refuses here, or routes as told
        self.state = evaluation
        self.weights.append(dict(self.history.weights))
        self.deployed.append(self.outputs())
        if self.history.revisions:
            self.served.setdefault(self.history.revisions[-1][0], self.deployed[-1]["model_version"])
        return self.outputs()

    def deactivate(self, revision: str) -> None:
        self.history.deactivate(revision)

    def settings(self) -> StackSettings:
        values = stack_files.apply_overrides(stack_files.stack_values(self.stack), {**self.base, **self.config})
        return from_values(self.stack, values, {})


@dataclass
class Platform:
    """Where a URL lands (a label URL: its revision; the app URL: every revision with traffic) and whether those
    revisions pass the smoke test: the ones whose template carries a `broken` CPU value fail it, and, as
    serving/smoke.py reads /ready, any that serves another model version than the one expected. Azure splits the app
    URL's requests by weight, so any revision behind it may answer, and a label's URL reaches its one revision
    whatever the weights (learn.microsoft.com/azure/container-apps/traffic-splitting, "Use cases" and labels)."""
    cloud: CloudStack
    broken_cpu: float | None = None
    smoked: list[str] = field(default_factory=list)

    def revisions_behind(self, url: str) -> set[str]:
        label = url.split("---", 1)[1].split(".", 1)[0] if "---" in url else None
        return {self.cloud.history.labels[label]} if label else self.cloud.history.serving()

    def smoke(self, url: str, outputs: Mapping[str, str]) -> None:
        assert outputs["model_version"], "the smoke test expects the version the update declared"
        reached = self.revisions_behind(url)
        self.smoked.append(",".join(sorted(reached)))
        templates = dict(self.cloud.history.revisions)
        if any(self.broken_cpu is not None and f'"cpu": {self.broken_cpu}' in templates[r] for r in reached):
            raise AssertionError(f"/ready: no 200 from {url}")
        others = {self.cloud.served[r] for r in reached} - {outputs["model_version"]}
        if others:
            raise AssertionError(f"/ready: model version {sorted(others)}, expected {outputs['model_version']}")


@pytest.fixture
def cloud(base_overrides):
    def make(stack: str = "staging", **config) -> CloudStack:
        def evaluate(stack: str, overrides: dict) -> mockcloud.Evaluation:
            return mockcloud.evaluate(stack, {**base_overrides(stack), **overrides}, env={})
        return CloudStack(evaluate, stack, dict(config), RevisionHistory(settings_of(stack).names.container_app),
                          base=base_overrides(stack), name=STAGING.replace("/staging", f"/{stack}"))
    return make


def deployed(cloud_stack: CloudStack) -> str:
    """A first release: one `up`, smoke-tested; the revision it made serves."""
    Release(cloud_stack, Platform(cloud_stack).smoke, say=lambda line: None).run()
    return cloud_stack.history.revisions[-1][0]


def test_a_release_moves_traffic_only_after_the_candidates_smoke_test_and_in_the_configured_steps(cloud):
    stack = cloud(**{"serving.containerApp.releaseSteps": [10, 50]})
    stable = deployed(stack)
    stack.config.update(CPU_2)  # the next push: a new template, so a new revision
    platform = Platform(stack)
    outputs = Release(stack, platform.smoke, say=lambda line: None).run()
    candidate = stack.history.revisions[-1][0]
    assert stack.weights[1:] == [{stable: 100, candidate: 0}, {stable: 90, candidate: 10}, {stable: 50, candidate: 50},
                                 {candidate: 100}]
    # every smoke test reached the candidate alone, through its label while users shared the two, then the app's URL
    assert platform.smoked == [candidate] * 4
    assert stack.history.active == {candidate} and outputs["serving_revision"] == candidate


def test_a_candidate_failing_its_smoke_test_never_takes_a_request_and_the_next_release_replaces_it(cloud):
    stack = cloud()
    stable = deployed(stack)
    stack.config.update(CPU_1_5)
    said: list[str] = []
    with pytest.raises(ReleaseFailed, match=rf"failed its smoke test .*never took a request: {stable} still serves 100 %"):
        Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=said.append).run()
    failed = stack.history.revisions[-1][0]
    assert stack.history.serving() == {stable} and stack.history.labels == {"candidate": failed, "stable": stable}
    assert stack.outputs()["serving_revision"] == stable, "the next release must start from the stable revision"
    stack.config.update(CPU_2)  # the fix
    Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=said.append).run()
    fixed = stack.history.revisions[-1][0]
    assert stack.weights[-2] == {stable: 100, fixed: 0} and stack.history.serving() == {fixed}
    assert failed not in stack.history.active


def test_a_failed_candidate_replaced_by_the_next_one_is_deactivated(cloud):
    """audit W2: in Multiple mode a failed candidate at 0 % stays active (minReplicas running) until a release
    completes; the next candidate's release deactivates it once it has lost its label."""
    stack = cloud()
    stable = deployed(stack)
    stack.config.update(CPU_1_5)
    with pytest.raises(ReleaseFailed, match="failed its smoke test"):
        Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=lambda line: None).run()
    first = stack.history.revisions[-1][0]
    stack.config.update({"serving.webConcurrency": 3})  # another push, still broken: a second candidate
    said: list[str] = []
    with pytest.raises(ReleaseFailed, match="failed its smoke test"):
        Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=said.append).run()
    second = stack.history.revisions[-1][0]
    assert second != first and stack.history.active == {stable, second}
    assert f"deactivated {first}, the failed candidate this one replaces" in said
    assert stack.history.serving() == {stable}


def test_completing_deactivates_the_replaced_revision_even_if_the_switch_to_single_mode_does_not(cloud):
    """audit 3 #5: Single mode should leave one revision active, but once left the old one running
    (microsoft/azure-container-apps#679); the release does not rely on it."""
    stack = cloud()
    stable = deployed(stack)
    stack.history.single_keeps_others_active = True
    stack.config.update(CPU_2)
    said: list[str] = []
    Release(stack, Platform(stack).smoke, say=said.append).run()
    candidate = stack.history.revisions[-1][0]
    assert stack.history.active == {candidate} and stack.history.serving() == {candidate}
    assert f"deactivated {stable}, the revision this release replaced" in said


def test_a_refused_deactivate_at_completion_is_noted_and_the_release_still_completes(cloud, monkeypatch):
    """audit 5 #6: the replaced revision's deactivation is hardening (Single mode should already have stopped it): a
    refusal costs replicas, not correctness, so the job says it and passes."""
    stack = cloud()
    stable = deployed(stack)
    stack.history.single_keeps_others_active = True

    def refused(revision: str) -> None:
        raise RevisionRefused(f"{revision}: the revision is being updated")

    monkeypatch.setattr(stack.history, "deactivate", refused)
    stack.config.update(CPU_2)
    said: list[str] = []
    outputs = Release(stack, Platform(stack).smoke, say=said.append).run()
    candidate = stack.history.revisions[-1][0]
    assert outputs["serving_revision"] == candidate and stack.history.serving() == {candidate}
    assert any(line.startswith(f"could not deactivate {stable}, the revision this release replaced") and
               "deactivate it by hand" in line for line in said)


PSEUDONYM_KEY = "pseudonym-key-" + "7" * 30  # what `pulumi config set --secret mlops:requestLogPseudonymKey` holds
PSEUDONYMISE = {"observability.requestLogPersonal": "pseudonymise", "requestLogPseudonymKey": PSEUDONYM_KEY}


def test_leaving_pseudonymise_keeps_the_key_until_no_active_revision_refers_to_it(cloud):
    """audit 2 #1 and 3 #4, over the release's real states: in Multiple mode Azure refuses to remove a secret an active
    revision refers to (platform_rules.RevisionHistory). Leaving pseudonymise with its key still set passes the
    release; the key's removal afterwards is an application-scope change (no revision) and passes too."""
    stack = cloud(**PSEUDONYMISE)
    stable = deployed(stack)
    stack.config["observability.requestLogPersonal"] = "drop"
    Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    dropping = stack.history.revisions[-1][0]
    assert dropping != stable and stack.history.active == {dropping}
    del stack.config["requestLogPseudonymKey"]
    Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    assert stack.history.revisions[-1][0] == dropping and not stack.state.one(APP).inputs["configuration"].get("secrets")


def test_the_key_goes_with_a_template_change_once_the_leaving_release_deactivated_the_old_revision(cloud):
    """Even where the switch to Single mode leaves the pseudonymising revision active (#679), the completed release
    deactivated it: the key's removal may come with a new template, whose candidate runs in Multiple mode."""
    stack = cloud(**PSEUDONYMISE)
    deployed(stack)
    stack.history.single_keeps_others_active = True
    stack.config["observability.requestLogPersonal"] = "drop"
    Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    dropping = stack.history.revisions[-1][0]
    del stack.config["requestLogPseudonymKey"]
    stack.config.update(CPU_2)
    Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    assert stack.history.revisions[-1][0] != dropping and stack.history.active == {stack.history.revisions[-1][0]}


def test_the_key_stays_while_a_failed_leaving_release_leaves_the_old_revision_serving(cloud):
    """A leaving release whose candidate failed leaves the pseudonymising revision serving: a next push that removes
    the key too is refused (and changes nothing) until a leaving release completes."""
    stack = cloud(**PSEUDONYMISE)
    stable = deployed(stack)
    stack.config.update({"observability.requestLogPersonal": "drop", **CPU_1_5})
    with pytest.raises(ReleaseFailed, match="failed its smoke test"):
        Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=lambda line: None).run()
    del stack.config["requestLogPseudonymKey"]
    stack.config.update(CPU_2)  # the fix, with the key removed as well
    with pytest.raises(ReleaseFailed, match=rf"secret '[a-z-]+' is in use by the active revision {stable}"):
        Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=lambda line: None).run()
    assert stack.history.serving() == {stable}
    stack.config["requestLogPseudonymKey"] = PSEUDONYM_KEY  # docs/operate.md's order: the key stays until it completes
    Release(stack, Platform(stack, broken_cpu=1.5).smoke, say=lambda line: None).run()
    assert stack.history.serving() == {stack.history.revisions[-1][0]} != {stable}


def test_removing_the_key_with_the_mode_is_refused_while_the_stable_revision_uses_it(cloud):
    """What docs/operate.md's order prevents: the mode and the key in one change make the candidate's `up` remove a secret
    the stable (pseudonymising) revision refers to; Azure refuses it and the stable revision keeps serving."""
    stack = cloud(**PSEUDONYMISE)
    stable = deployed(stack)
    stack.config["observability.requestLogPersonal"] = "drop"
    del stack.config["requestLogPseudonymKey"]
    with pytest.raises(ReleaseFailed, match=rf"refused \(secret '[a-z-]+' is in use by the active revision {stable}.*"
                                            rf"{stable} still serves 100 %"):
        Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    assert stack.history.serving() == {stable}


def test_a_smoke_test_failing_during_a_shift_moves_the_traffic_back(cloud):
    stack = cloud(**{"serving.containerApp.releaseSteps": [10]})
    stable = deployed(stack)
    stack.config.update(CPU_2)
    platform = Platform(stack)
    with pytest.raises(ReleaseFailed, match=rf"with 10 % on .*traffic moved back: {stable} serves 100 % again"):
        Release(stack, fails_once_users_share_it(platform), say=lambda line: None).run()
    candidate = stack.history.revisions[-1][0]
    assert stack.weights[1:] == [{stable: 100, candidate: 0}, {stable: 90, candidate: 10}, {stable: 100, candidate: 0}]


def test_a_new_stacks_first_release_is_one_up_that_says_what_comes_next(cloud, base_overrides):
    """The first `up` on an empty subscription creates the workspace and no workload (audit F1): the release passes
    without a smoke test, and its summary carries what the account admin does before the next run."""
    stack = cloud()
    stack.evaluate = lambda name, overrides: mockcloud.evaluate(name, {**base_overrides(name), **overrides}, env={},
                                                                greenfield=True)
    said: list[str] = []
    smoked: list[str] = []
    outputs = Release(stack, lambda url, outputs: smoked.append(url), say=said.append).run()
    assert smoked == [] and outputs["endpoint_url"] == "" and stack.history.revisions == []
    assert outputs["bootstrap"].startswith("BOOTSTRAP: this `up` creates the stack's Databricks workspace")
    assert f"no endpoint, nothing to smoke test: {outputs['bootstrap']}" in said


def test_an_update_without_a_new_revision_is_one_up_and_stays_in_single_mode(cloud):
    stack = cloud()
    stable = deployed(stack)
    stack.config.update({"observability.p95LatencyMs": 300})  # an alert threshold: not the app's template
    Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    assert stack.weights[1:] == [{stable: 100}] and len(stack.history.revisions) == 1


def test_a_refused_update_says_what_still_serves(cloud):
    stack = cloud()
    stable = deployed(stack)
    stack.config.update({**CPU_2, "serving.containerApp.releaseSteps": [150]})  # refused by the program's settings
    with pytest.raises(ReleaseFailed, match=rf"releaseSteps must be increasing .*{stable} still serves 100 %"):
        Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    assert stack.history.serving() == {stable}


def test_a_promotion_fails_unless_it_deployed_what_staging_tested():
    tested = "sha256:" + "ab" * 32
    outputs = {"image_ref": f"cr.azurecr.io/{settings_of('prod').image.repository}@{tested}", "model_version": "7"}
    release.check_promoted(outputs, tested, "7")
    with pytest.raises(ReleaseFailed, match=r"deployed digest sha256:abab.* is not the tested sha256:0f0f"):
        release.check_promoted(outputs, "sha256:" + "0f" * 32, "7")
    with pytest.raises(ReleaseFailed, match="deployed model version 7 is not the tested 6"):
        release.check_promoted(outputs, tested, "6")
    first = {"image_ref": "", "model_version": "", "bootstrap": "BOOTSTRAP: this `up` creates the stack's workspace"}
    with pytest.raises(ReleaseFailed, match="nothing promoted yet: BOOTSTRAP: this `up` creates"):  # prod's first
        release.check_promoted(first, tested, "7")


def test_a_pinned_prod_must_serve_its_pin_not_what_staging_tested():
    """A rollback by config (promotion.pinnedDigest) goes through the same release: the check follows the pin."""
    values = stack_files.apply_overrides(stack_files.stack_values("prod"), {
        "promotion.pinnedDigest": "sha256:" + "0f" * 32, "promotion.pinnedModelVersion": "6"})
    pinned = from_values("prod", values, {})
    said: list[str] = []
    assert release.expected_artifact(pinned, "sha256:" + "ab" * 32, "7", said.append) == ("sha256:" + "0f" * 32, "6")
    assert said and "a rollback by config" in said[0]
    following = from_values("prod", stack_files.stack_values("prod"), {})
    assert release.expected_artifact(following, "sha256:" + "ab" * 32, "7", said.append) == ("sha256:" + "ab" * 32, "7")


def test_the_job_fails_and_its_summary_says_what_serves(cloud, tmp_path, monkeypatch):
    """What CI runs (scripts/release.py main): exit 1 and the summary on a failed smoke test; the digest and model
    version for the prod job as outputs of a passed one."""
    for name in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.setenv(name, str(tmp_path / name))
    stack = cloud()
    stable = deployed(stack)
    stack.config.update(CPU_1_5)
    platform = Platform(stack, broken_cpu=1.5)
    assert release.main(["--stack", STAGING], stack_for=lambda name, config: stack, smoke=platform.smoke) == 1
    summary = (tmp_path / "GITHUB_STEP_SUMMARY").read_text()
    assert "### Release FAILED" in summary and f"{stable} still serves 100 %" in summary
    assert "image_digest=\n" in (tmp_path / "GITHUB_OUTPUT").read_text(), "a failed release hands prod nothing"
    stack.config.update(CPU_2)
    assert release.main(["--stack", STAGING], stack_for=lambda name, config: stack, smoke=platform.smoke) == 0
    handed = dict(line.split("=", 1) for line in (tmp_path / "GITHUB_OUTPUT").read_text().splitlines()[-7:])
    assert handed["image_digest"].startswith("sha256:") and handed["model_version"] == stack.outputs()["model_version"]
    assert handed["image_runtime"] == stack.outputs()["image_runtime"] == "onnx", "prod checks its memory for it"
    assert "### Release done" in (tmp_path / "GITHUB_STEP_SUMMARY").read_text()


def test_config_values_for_one_run_must_be_key_value():
    assert release.parse_config(["promotion.testedModelVersion=7", "a.b=x=y"]) == {
        "promotion.testedModelVersion": "7", "a.b": "x=y"}
    with pytest.raises(SystemExit, match="expected key=value"):
        release.parse_config(["promotion.testedDigest"])


# ---- the transition table (scripts/release.py NEXT), state by state, re-runs included ----

BROKEN = 1.5  # Platform(broken_cpu=...): a revision with this CPU fails its smoke test


def test_the_start_state_is_what_the_last_run_left():
    assert release.start_state({}) is State.IDLE  # the first deploy
    assert release.start_state({"serving_revision": "", "latest_revision_name": ""}) is State.IDLE  # AKS: no revisions
    assert release.start_state({"serving_revision": "app--a", "latest_revision_name": "app--a"}) is State.IDLE
    unfinished = {"serving_revision": "app--a", "latest_revision_name": "app--b"}
    assert release.start_state({**unfinished, "candidate_weight": "0"}) is State.FAILED_CANDIDATE
    assert release.start_state({**unfinished, "candidate_weight": "10"}) is State.FAILED_SHIFT


def failed_candidate(stack: CloudStack) -> tuple[str, str]:
    """(stable, failed): a deployed stack whose next candidate failed its smoke test at 0 %."""
    stable = deployed(stack)
    stack.config.update(CPU_1_5)
    with pytest.raises(ReleaseFailed, match="failed its smoke test"):
        Release(stack, Platform(stack, broken_cpu=BROKEN).smoke, say=lambda line: None).run()
    return stable, stack.history.revisions[-1][0]


RERUNS = {  # what the next run changes: nothing for GitHub's "Re-run failed jobs" or a workflow_dispatch
    "re-run failed jobs or workflow_dispatch": {},
    "a push that changes only an alert": {"observability.p95LatencyMs": 300},
}


@pytest.mark.parametrize("rerun", RERUNS)
def test_a_rerun_after_a_failed_candidate_tests_it_again_at_0_percent_and_never_gives_it_traffic_untested(cloud, rerun):
    """(failed candidate, rerun) -> candidate. azure.md N1: today's code gave the failed candidate 100 % at once."""
    stack = cloud()
    stable, failed = failed_candidate(stack)
    assert release.start_state(stack.outputs()) is State.FAILED_CANDIDATE
    stack.config.update(RERUNS[rerun])
    with pytest.raises(ReleaseFailed, match=rf"candidate {failed} failed its smoke test .*{stable} still serves 100 %"):
        Release(stack, Platform(stack, broken_cpu=BROKEN).smoke, say=lambda line: None).run()
    assert stack.weights[-1] == {stable: 100, failed: 0} and len(stack.history.revisions) == 2
    # the failure was the platform's, not the revision's: the next re-run passes it at 0 % first, then moves traffic
    platform = Platform(stack)
    Release(stack, platform.smoke, say=lambda line: None).run()
    assert stack.weights[-2:] == [{stable: 100, failed: 0}, {failed: 100}] and platform.smoked[0] == failed


def fails_once_users_share_it(platform: Platform, error: BaseException | None = None) -> smoke_from.Smoke:
    """The smoke test passes while the candidate takes no users' traffic and raises `error` (a 502: it does not hold
    its share of the load) once it takes some."""
    def smoke(url: str, outputs: Mapping[str, str]) -> None:
        platform.smoke(url, outputs)
        if platform.cloud.history.weights.get(platform.cloud.history.revisions[-1][0], 0) not in (0, 100):
            raise error or AssertionError("/predict: 502")
    return smoke


@pytest.mark.parametrize("rerun", RERUNS)
def test_a_rerun_after_a_failed_shift_starts_again_from_the_candidate_at_0_percent(cloud, rerun):
    """(shift, failed) -> rollback, which leaves a failed candidate; its re-run never skips the candidate step."""
    stack = cloud(**{"serving.containerApp.releaseSteps": [10]})
    stable = deployed(stack)
    stack.config.update(CPU_2)
    with pytest.raises(ReleaseFailed, match="traffic moved back"):
        Release(stack, fails_once_users_share_it(Platform(stack)), say=lambda line: None).run()
    candidate = stack.history.revisions[-1][0]
    stack.config.update(RERUNS[rerun])
    with pytest.raises(ReleaseFailed, match="traffic moved back"):
        Release(stack, fails_once_users_share_it(Platform(stack)), say=lambda line: None).run()
    assert stack.weights[-3:] == [{stable: 100, candidate: 0}, {stable: 90, candidate: 10}, {stable: 100, candidate: 0}]
    assert all(weights.get(candidate, 0) <= 10 for weights in stack.weights)


def test_a_shift_left_holding_traffic_is_moved_back_to_0_percent_before_anything_else(cloud):
    """(failed shift, rerun) -> candidate: the job was cancelled during a shift, the candidate kept its 10 %."""
    stack = cloud(**{"serving.containerApp.releaseSteps": [10, 50]})
    stable = deployed(stack)
    stack.config.update(CPU_2)
    platform = Platform(stack)
    cancelled_during_the_shift = fails_once_users_share_it(platform, KeyboardInterrupt())  # GitHub cancels the job
    with pytest.raises(KeyboardInterrupt):
        Release(stack, cancelled_during_the_shift, say=lambda line: None).run()
    candidate = stack.history.revisions[-1][0]
    assert release.start_state(stack.outputs()) is State.FAILED_SHIFT
    said: list[str] = []
    Release(stack, Platform(stack).smoke, say=said.append).run()
    assert stack.weights[-4:] == [{stable: 100, candidate: 0}, {stable: 90, candidate: 10}, {stable: 50, candidate: 50},
                                  {candidate: 100}]
    assert ": failed shift;" in said[0]


def test_a_refused_rollback_says_the_candidate_still_takes_its_share(cloud):
    """(shift, failed) -> rollback, whose `up` Azure refuses: the job says so, and the next run starts from there."""
    stack = cloud(**{"serving.containerApp.releaseSteps": [10]})
    deployed(stack)
    stack.config.update(CPU_2)
    up = stack.up

    def refused_at_0(config: Mapping[str, Any]) -> dict[str, str]:
        if config.get(release.WEIGHT) == 0 and len(stack.weights) > 2:
            raise RuntimeError("429 Too Many Requests")
        return up(config)
    stack.up = refused_at_0  # type: ignore[method-assign]
    with pytest.raises(ReleaseFailed, match=r"moving the traffic back was refused .*still takes 10 %"):
        Release(stack, fails_once_users_share_it(Platform(stack)), say=lambda line: None).run()
    assert release.start_state(stack.outputs()) is State.FAILED_SHIFT


# ---- what is fixed at the start: the model version (azure.md N6), and what the stable revision serves (N7) ----

@pytest.fixture
def champion(stack_registry):
    """move(): what a training run does meanwhile, a new version of staging's model under @champion; put back after."""
    uri = stack_registry["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = settings_of("staging").model.full_name
    original = client.get_model_version_by_alias(name, "champion")

    def move() -> str:
        version = client.create_model_version(name, original.source, run_id=original.run_id, tags=original.tags)
        client.set_registered_model_alias(name, "champion", version.version)
        return str(version.version)
    yield move
    client.set_registered_model_alias(name, "champion", original.version)


def test_a_new_model_version_released_in_steps_is_smoke_tested_at_its_label_at_every_step(cloud, champion):
    """Audit R1: at 10 % the app's URL reaches the stable revision nine times in ten, which serves the old model
    version; a shift step's smoke test, which expects the candidate's version, tests the candidate at its label."""
    stack = cloud(**{"serving.containerApp.releaseSteps": [10, 50]})
    stable = deployed(stack)
    version = champion()
    stack.config.update(CPU_2)
    platform = Platform(stack)
    outputs = Release(stack, platform.smoke, say=lambda line: None).run()
    candidate = stack.history.revisions[-1][0]
    assert stack.served[stable] != version == stack.served[candidate] == outputs["model_version"]
    assert stack.weights[-3:] == [{stable: 90, candidate: 10}, {stable: 50, candidate: 50}, {candidate: 100}]
    assert platform.smoked == [candidate] * 4


def test_every_step_serves_the_model_version_fixed_at_the_start_though_champion_moves_mid_release(cloud, champion):
    stack = cloud(**{"serving.containerApp.releaseSteps": [10]})
    deployed(stack)
    stack.config.update(CPU_2)
    started = stack.outputs()["model_version"]
    platform, moved = Platform(stack), []

    def training_moves_champion(url: str, outputs: Mapping[str, str]) -> None:
        platform.smoke(url, outputs)
        moved.append(champion())  # after each smoke test, a training run moves @champion again
    Release(stack, training_moves_champion, say=lambda line: None).run()
    assert moved and started not in moved
    assert [outputs["model_version"] for outputs in stack.deployed[1:]] == [started] * 3
    assert len(stack.history.revisions) == 2, "no step built another model than the one the candidate step tested"


def batch_scores_with(evaluation: mockcloud.Evaluation) -> str:
    job = evaluation.named("databricks:index/job:Job", "databricks-batch-job")
    parameters = job.inputs["tasks"][0]["pythonWheelTask"]["parameters"]
    return parameters[parameters.index("--model-uri") + 1].rsplit("/", 1)[1]


def test_the_batch_job_moves_to_the_new_model_version_only_when_the_release_completes(cloud, champion):
    stack = cloud()
    deployed(stack)
    stable_version = stack.outputs()["model_version"]
    new_version = champion()
    stack.config.update(CPU_1_5)  # and a broken CPU: this candidate fails its smoke test
    with pytest.raises(ReleaseFailed, match="failed its smoke test"):
        Release(stack, Platform(stack, broken_cpu=BROKEN).smoke, say=lambda line: None).run()
    assert stack.state is not None and stack.outputs()["model_version"] == new_version
    assert batch_scores_with(stack.state) == stable_version == stack.outputs()["batch_model_version"]
    stack.config.update(CPU_2)
    Release(stack, Platform(stack).smoke, say=lambda line: None).run()
    assert batch_scores_with(stack.state) == new_version == stack.outputs()["batch_model_version"]


def test_prods_registry_alias_and_batch_job_stay_on_the_stable_version_while_a_candidate_is_in_flight(evaluate):
    """azure.md N7: the candidate's copy is registered and verified before any traffic, under @candidate."""
    model_promotion = mockcloud.MODEL_PROMOTION
    in_flight = evaluate("prod", {release.STABLE: "app--stable", release.WEIGHT: 0, release.STABLE_MODEL: "4"})
    assert in_flight.one(model_promotion).inputs["alias"] == CANDIDATE_ALIAS
    assert batch_scores_with(in_flight) == "4" == in_flight.outputs["batch_model_version"]
    complete = evaluate("prod")
    assert complete.one(model_promotion).inputs["alias"] == settings_of("prod").model.alias
    assert batch_scores_with(complete) == complete.outputs["registry_model_version"]


# ---- the documented prod rollback (azure.md N2) ----

def test_a_rollback_pull_request_releases_the_pin_with_the_tested_keys_ci_adds(cloud):
    pin = {"promotion.pinnedDigest": "sha256:" + "0f" * 32, "promotion.pinnedModelVersion": "6"}
    tested = {"promotion.testedDigest": "sha256:" + "ab" * 32, "promotion.testedModelVersion": "7"}
    assert settings_of("prod", {**pin, **tested}).promotion.pinned  # azure.md's reproduction: no ConfigError
    prod = cloud("prod", **pin)  # Pulumi.prod.yaml as the merged pull request left it

    def with_run_config(name: str, config: dict[str, str]) -> CloudStack:
        prod.config.update(config)
        return prod
    argv = ["--stack", prod.name, *(f"--config={key}={value}" for key, value in tested.items()),
            "--expect-digest", tested["promotion.testedDigest"], "--expect-model-version", "7"]  # deploy.yml's prod job
    assert release.main(argv, stack_for=with_run_config, smoke=Platform(prod).smoke) == 0
    assert release.image_digest(prod.outputs()) == pin["promotion.pinnedDigest"] and prod.outputs()["model_version"] == "6"


# ---- every `up` refreshes (azure.md N8): what Azure changed is seen and put back ----

@dataclass
class RecordingAutomationStack:
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def set_config(self, *args: Any, **kwargs: Any) -> None:
        pass

    def up(self, **kwargs: Any) -> Any:
        self.calls.append(("up", kwargs))
        return SimpleNamespace(outputs={})

    def preview(self, **kwargs: Any) -> None:
        self.calls.append(("preview", kwargs))


def test_each_up_and_preview_of_a_release_refreshes_first(tmp_path, monkeypatch):
    from pulumi import automation

    recording = RecordingAutomationStack()
    monkeypatch.setattr(automation, "select_stack", lambda name, work_dir: recording)
    monkeypatch.setattr(pulumi_stack, "ROOT", tmp_path)
    (tmp_path / "Pulumi.staging.yaml").write_text("config: {}\n")
    stack = pulumi_stack.PulumiStack(STAGING, {})
    stack.template_changes({})
    stack.up({})
    assert [(call, kwargs.get("refresh")) for call, kwargs in recording.calls] == [("preview", True), ("up", True)]


# ---- the smoke test runs where the endpoint is reachable (azure.md N11) ----

def test_on_aks_the_smoke_test_runs_inside_the_cluster_through_run_command(tmp_path):
    s = settings_of("staging", {"serving.target": "aks"})
    calls: list[list[str]] = []

    def az(argv: list[str]) -> str:
        calls.append(argv)
        return json.dumps({"exitCode": 0, "logs": "smoke test passed"})
    smoke = smoke_from.smoke_for(s, {"RUNNER_ENVIRONMENT": "github-hosted"}, run=az)
    image = "cr.azurecr.io/scoring@sha256:" + "ab" * 32
    smoke("http://scoring.scoring.svc.cluster.local", {"image_ref": image, "model_version": "3"})
    argv = calls[0]
    assert argv[:4] == ["az", "aks", "command", "invoke"]
    assert argv[argv.index("--resource-group") + 1] == s.names.resource_group
    assert argv[argv.index("--name") + 1] == s.names.aks_cluster
    assert Path(argv[argv.index("--file") + 1]).name == "smoke.py"
    # the command, run by a shell beside the attached smoke.py, starts a pod of the scoring image running smoke.py
    (tmp_path / "smoke.py").write_text(smoke_from.SMOKE_MODULE.read_text())
    (tmp_path / "kubectl").write_text('#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n')
    (tmp_path / "kubectl").chmod(0o755)
    shell = subprocess.run(["bash", "-c", argv[argv.index("--command") + 1]], cwd=tmp_path, capture_output=True,
                           text=True, check=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    kubectl = json.loads(shell.stdout)
    assert kubectl[:2] == ["run", "smoke-test"] and f"--image={image}" in kubectl and "--rm" in kubectl
    assert kubectl[kubectl.index("--") + 1:] == ["python", "-c", smoke_from.SMOKE_MODULE.read_text().rstrip("\n"),
                                                 "http://scoring.scoring.svc.cluster.local", "--wait", "300",
                                                 "--expect-version", "3", "--expect-personal",
                                                 s.observability.request_log_personal]
    calls.clear()
    failing = smoke_from.smoke_in_cluster("rg", "aks", {}, run=lambda argv: json.dumps({"exitCode": 1, "logs": "FAIL /ready"}))
    with pytest.raises(AssertionError, match="exited 1: FAIL /ready"):
        failing("http://10.0.0.4", {"image_ref": image})


def test_in_a_workflow_the_cli_signs_in_again_before_run_command(monkeypatch):
    """`az aks command invoke` gets a token for the cluster's server application when it runs, after the `up`: in a
    workflow the CLI first signs in again with a fresh GitHub assertion (azure/login's has expired by then), and the
    command names the deploy's subscription rather than whichever the login picked."""
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.actions.example/?x=1", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "b",
           "ARM_CLIENT_ID": "deployer", "ARM_TENANT_ID": "tenant", "ARM_SUBSCRIPTION_ID": "sub"}
    assertions = iter(["fresh-1", "fresh-2"])
    monkeypatch.setattr(smoke_from.azure_credential, "github_oidc_token", lambda env: next(assertions))
    calls: list[list[str]] = []

    def az(argv: list[str]) -> str:
        calls.append(argv)
        return json.dumps({"exitCode": 0, "logs": ""})
    smoke = smoke_from.smoke_in_cluster("rg", "aks", env, run=az)
    for _ in range(2):
        smoke("http://10.0.0.4", {"image_ref": "cr.azurecr.io/s@sha256:" + "ab" * 32})
    logins = [argv for argv in calls if argv[:2] == ["az", "login"]]
    assert [argv[argv.index("--federated-token") + 1] for argv in logins] == ["fresh-1", "fresh-2"]
    assert all(argv[argv.index("--username") + 1] == "deployer" and argv[argv.index("--tenant") + 1] == "tenant"
               for argv in logins)
    assert [argv[1] for argv in calls] == ["login", "aks", "login", "aks"]  # each invoke after its own login
    invokes = [argv for argv in calls if argv[:4] == ["az", "aks", "command", "invoke"]]
    assert all(argv[argv.index("--subscription") + 1] == "sub" for argv in invokes)


INTERNAL = {"serving.auth.mode": "internal", "serving.containerApp.infrastructureSubnetId":
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aca"}


def test_an_internal_container_apps_endpoint_is_never_released_from_a_github_hosted_runner(cloud, monkeypatch):
    with pytest.raises(smoke_from.Unreachable, match="self-hosted runner in that VNet"):
        smoke_from.smoke_for(settings_of("staging", INTERNAL), {"RUNNER_ENVIRONMENT": "github-hosted"})
    assert callable(smoke_from.smoke_for(settings_of("staging", INTERNAL), {"RUNNER_ENVIRONMENT": "self-hosted"}))
    stack = cloud(**INTERNAL)
    monkeypatch.setenv("RUNNER_ENVIRONMENT", "github-hosted")
    assert release.main(["--stack", STAGING], stack_for=lambda name, config: stack) == 1
    assert stack.deployed == [], "refused before any `up`"


def test_the_image_declares_the_personal_modes_it_honours_and_a_pinned_release_says_to_check_it():
    """A rollback to an image built before REQUEST_LOG_PERSONAL logs the personal columns (issue 21, audit #3): the
    image says which modes it honours, the release names that label when it deploys a pin."""
    from serving.scoring.privacy import MODES

    dockerfile = Path(release.__file__).resolve().parents[1].joinpath("serving", "Dockerfile").read_text()
    found = re.search(rf'{re.escape(release.PERSONAL_LABEL)}="([^"]*)"', dockerfile)
    assert found and set(found[1].split()) == set(MODES)
    pin = {"promotion.pinnedDigest": "sha256:" + "0f" * 32, "promotion.pinnedModelVersion": "6"}
    said: list[str] = []
    release.expected_artifact(from_values("prod", stack_files.apply_overrides(stack_files.stack_values("prod"), pin), {}),
                              None, None, said.append)
    assert release.PERSONAL_LABEL in said[0] and "promotion.pinnedPersonalChecked" in said[0]


def test_a_pin_on_aks_is_refused_unless_its_image_was_checked():
    """On AKS the Deployment rolls to the pin before its smoke test can ask /ready how it logs the personal columns: the
    settings refuse an unchecked pin, so a preview, `make plan` and a hand-run `up` do too (audits 2 #3, 3 #2); checked,
    or with the columns kept, it goes on, and the smoke test then accepts an image that reports no mode, not a wrong one."""
    pin = {"promotion.pinnedDigest": "sha256:" + "0f" * 32, "promotion.pinnedModelVersion": "6", "serving.target": "aks"}

    def settings(extra: dict) -> StackSettings:
        return from_values("prod", stack_files.apply_overrides(stack_files.stack_values("prod"), {**pin, **extra}), {})
    with pytest.raises(ConfigError, match=r"pinnedDigest on AKS needs .*pinnedPersonalChecked: true"):
        settings({})
    for extra in ({"promotion.pinnedPersonalChecked": True}, {"observability.requestLogPersonal": "keep"}):
        assert release.expected_artifact(settings(extra), None, None, print) == ("sha256:" + "0f" * 32, "6")
    command = []
    smoke_from.smoke_for(settings({"promotion.pinnedPersonalChecked": True}), {},
                         run=lambda argv: command.append(argv) or json.dumps({"exitCode": 0}))(
        "http://10.0.0.4", {"image_ref": "cr.azurecr.io/s@sha256:" + "0f" * 32})
    shell = command[-1][command[-1].index("--command") + 1]
    assert "--expect-personal drop --personal-unreported-ok" in shell, "a checked pin: a reported mode still counts"
    with pytest.raises(ConfigError, match="pinnedPersonalChecked is about a pinned image"):
        from_values("prod", stack_files.apply_overrides(stack_files.stack_values("prod"),
                                                        {"promotion.pinnedPersonalChecked": True}), {})
