"""The release sequence CI runs (scripts/release.py), driven against the mocked cloud's stateful evaluation:
every `up` is a real evaluation of the program, whose Container App goes through Azure's revision rules
(platform_rules.RevisionHistory). What stands in for the cloud is only the platform: which revision a URL
reaches, and whether that revision's container passes the smoke test."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from infra import stack_files
from infra.settings import StackSettings, from_values
from scripts import release
from scripts.release import Release, ReleaseFailed
from testing import mockcloud
from testing.platform_rules import APP, RevisionHistory
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
    state: mockcloud.Evaluation | None = None
    weights: list[dict[str, int]] = field(default_factory=list)  # the app's traffic after each `up`
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
        self.history.apply(evaluation.one(APP).inputs)  # Azure refuses here, or routes as told
        self.state = evaluation
        self.weights.append(dict(self.history.weights))
        return self.outputs()

    def settings(self) -> StackSettings:
        values = stack_files.apply_overrides(stack_files.stack_values(self.stack), self.config)
        return from_values(self.stack, values, {})


@dataclass
class Platform:
    """Where a URL lands (a label URL: its revision; the app URL: every revision with traffic) and whether those
    revisions pass the smoke test: the ones whose template carries a `broken` CPU value fail it."""
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


@pytest.fixture
def cloud(base_overrides):
    def make(**config) -> CloudStack:
        def evaluate(stack: str, overrides: dict) -> mockcloud.Evaluation:
            return mockcloud.evaluate(stack, {**base_overrides(stack), **overrides}, env={})
        return CloudStack(evaluate, "staging", dict(config), RevisionHistory(settings_of("staging").names.container_app))
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
    # the first smoke test reached the candidate alone, through its label, while users reached only the stable one
    assert platform.smoked == [candidate, f"{stable},{candidate}", f"{stable},{candidate}", candidate]
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


def test_a_smoke_test_failing_during_a_shift_moves_the_traffic_back(cloud):
    stack = cloud(**{"serving.containerApp.releaseSteps": [10]})
    stable = deployed(stack)
    stack.config.update(CPU_2)
    platform = Platform(stack)

    def fails_once_users_share_it(url: str, outputs: Mapping[str, str]) -> None:
        platform.smoke(url, outputs)
        if len(platform.revisions_behind(url)) > 1:
            raise AssertionError("/predict: 502")
    with pytest.raises(ReleaseFailed, match=rf"with 10 % on .*traffic moved back: {stable} serves 100 % again"):
        Release(stack, fails_once_users_share_it, say=lambda line: None).run()
    candidate = stack.history.revisions[-1][0]
    assert stack.weights[1:] == [{stable: 100, candidate: 0}, {stable: 90, candidate: 10}, {stable: 100, candidate: 0}]


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


def test_a_pinned_prod_must_serve_its_pin_not_what_staging_tested():
    """A rollback by config (promotion.pinnedDigest) goes through the same release: the check follows the pin."""
    values = stack_files.apply_overrides(stack_files.stack_values("prod"), {
        "promotion.pinnedDigest": "sha256:" + "0f" * 32, "promotion.pinnedModelVersion": "6"})
    pinned = from_values("prod", values, {}).promotion
    said: list[str] = []
    assert release.expected_artifact(pinned, "sha256:" + "ab" * 32, "7", said.append) == ("sha256:" + "0f" * 32, "6")
    assert said and "a rollback by config" in said[0]
    following = from_values("prod", stack_files.stack_values("prod"), {}).promotion
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
    handed = dict(line.split("=", 1) for line in (tmp_path / "GITHUB_OUTPUT").read_text().splitlines()[-6:])
    assert handed["image_digest"].startswith("sha256:") and handed["model_version"] == stack.outputs()["model_version"]
    assert "### Release done" in (tmp_path / "GITHUB_STEP_SUMMARY").read_text()


def test_config_values_for_one_run_must_be_key_value():
    assert release.parse_config(["promotion.testedModelVersion=7", "a.b=x=y"]) == {
        "promotion.testedModelVersion": "7", "a.b": "x=y"}
    with pytest.raises(SystemExit, match="expected key=value"):
        release.parse_config(["promotion.testedDigest"])
