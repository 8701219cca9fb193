"""One release of one stack, as a small state machine: what CI's staging and prod jobs run.

    python -m scripts.release --stack <org>/staging
    python -m scripts.release --stack <org>/prod --config promotion.testedDigest=sha256:... \\
        --config promotion.testedModelVersion=7 --expect-digest sha256:... --expect-model-version 7

It starts where the last one left (start_state: idle, a failed candidate at 0 %, or a failed shift still holding
traffic). Each state's action is one `up` and the smoke test, whose result picks the next state (NEXT): candidate
(the new revision at 0 % behind the label `candidate`, tested there), shift (the next of releaseSteps, tested there
too), complete (the candidate at 100 %), update (the first deploy, no new revision, or AKS), rollback (back to 0 %;
the job fails). A failed candidate or shift goes through `candidate` again, whatever the next run changes. Fixed
once at the start: the version @champion names and, while in flight, the one the stable revision serves (the batch
job's). Every `up` refreshes first; the smoke test runs where the endpoint is reachable (scripts/smoke_from.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from infra import model_source
from infra.settings import StackSettings
from scripts import smoke_from
from scripts.pulumi_stack import PulumiStack

# The scoring image's label naming the REQUEST_LOG_PERSONAL modes it honours (serving/Dockerfile). Not read here: the
# release knows a pinned image by its digest only, and reading its config would take a registry pull. What enforces it:
# the smoke test (scripts/smoke_from.py), which refuses a candidate whose /ready does not report the stack's mode.
PERSONAL_LABEL = "io.mlops.request-log-personal"
STABLE, WEIGHT = "serving.containerApp.stableRevision", "serving.containerApp.latestWeight"
STABLE_MODEL, MODEL_VERSION = "serving.containerApp.stableModelVersion", "model.version"


class ReleaseFailed(RuntimeError):
    """The release stopped; the message says which revision serves now."""


class State(Enum):
    IDLE = "nothing in flight"
    FAILED_CANDIDATE = "failed candidate"
    FAILED_SHIFT = "failed shift"
    CANDIDATE = "candidate at 0 %"
    SHIFT = "a shift in progress"
    COMPLETE = "complete"
    UPDATE = "one update"
    ROLLBACK = "rollback"


class Event(Enum):
    NEW_REVISION = "the update makes a new revision"
    NO_NEW_REVISION = "the update makes no new revision"
    RERUN = "a release starts"
    PASSED = "smoke test passed, steps left"
    LAST_PASSED = "smoke test passed, no step left"
    FAILED = "smoke test failed"


S, E = State, Event
# (state, event) -> next state. A state missing as a key is where a release ends: idle-like (COMPLETE, UPDATE
# passed) or failed (FAILED_CANDIDATE, ROLLBACK, or COMPLETE / UPDATE failed).
NEXT: dict[tuple[State, Event], State] = {
    (S.IDLE, E.NEW_REVISION): S.CANDIDATE,
    (S.IDLE, E.NO_NEW_REVISION): S.UPDATE,
    (S.FAILED_CANDIDATE, E.RERUN): S.CANDIDATE,  # never `up` at 100 % from here
    (S.FAILED_SHIFT, E.RERUN): S.CANDIDATE,      # back to 0 %, smoke-tested again
    (S.CANDIDATE, E.PASSED): S.SHIFT,
    (S.CANDIDATE, E.LAST_PASSED): S.COMPLETE,
    (S.CANDIDATE, E.FAILED): S.FAILED_CANDIDATE,
    (S.SHIFT, E.PASSED): S.SHIFT,
    (S.SHIFT, E.LAST_PASSED): S.COMPLETE,
    (S.SHIFT, E.FAILED): S.ROLLBACK,
}


class Stack(Protocol):
    """outputs(): as last deployed ({} before the first deploy). template_changes(config): would `up` with it change
    the Container App's revision template (None: no app yet)? up(config): deploy with these values on top of the stack
    file and the run's own; the outputs. settings(): validated as the program does. deactivate(revision): stop a
    revision that neither serves nor is tested (Azure refuses one with traffic or a label)."""
    name: str

    def outputs(self) -> dict[str, str]: ...
    def template_changes(self, config: Mapping[str, Any]) -> bool | None: ...
    def up(self, config: Mapping[str, Any]) -> dict[str, str]: ...
    def settings(self) -> StackSettings: ...
    def deactivate(self, revision: str) -> None: ...


def start_state(outputs: Mapping[str, str]) -> State:
    """What the last run left: a candidate beside the stable revision is an unfinished release."""
    stable, latest = outputs.get("serving_revision") or "", outputs.get("latest_revision_name") or ""
    if not stable or stable == latest:
        return State.IDLE
    return State.FAILED_SHIFT if int(outputs.get("candidate_weight") or 0) > 0 else State.FAILED_CANDIDATE


def pinned_version(s: StackSettings, outputs: Mapping[str, str]) -> str | None:
    """The version @alias names now, read once (None: a promotion target, which serves what staging tested, or no
    registry or version yet, when the one `up` of a first deploy resolves it)."""
    if s.promotion.enabled or s.model.version:
        return s.model.version
    host = outputs.get("databricks_workspace_url") or ""
    workspace = model_source.Workspace(model_source.https(host), None) if host else None
    return model_source.alias_version(s.model, workspace)


SAYS = {  # what each action's `up` did, for the job's log and summary
    State.CANDIDATE: "candidate {r.revision} at 0 % beside {r.stable} (100 %)",
    State.SHIFT: "shift: {r.revision} {r.weight} %, {r.stable} the rest",
    State.COMPLETE: "complete: {r.revision} serves 100 % (Single mode)",
    State.UPDATE: "one update: the first deploy, no new revision, or none on the target"}
FAILED_IN = {  # where a failed release ends, and what serves then
    State.FAILED_CANDIDATE: "candidate {r.revision} failed its smoke test ({r.error}); it never took a request: "
                            "{r.stable} still serves 100 %. Fix and push again, or re-run: the next release tests "
                            "the candidate again at 0 %.",
    State.ROLLBACK: "the smoke test failed with {r.weight} % on {r.revision} ({r.error}); traffic moved back: "
                    "{r.stable} serves 100 % again"}
AFTER_100 = ("the smoke test failed after the update ({r.error}); it serves 100 %: roll back by config "
             "(docs/operate.md, Roll back)")


@dataclass
class Release:
    stack: Stack
    smoke: smoke_from.Smoke
    say: Callable[[str], None] = print
    log: list[str] = field(default_factory=list)
    stable: str = ""  # fixed at the start: the revision serving 100 % (labelled `stable` while in flight)
    fixed: dict[str, Any] = field(default_factory=dict)  # config of every `up`: the model version
    in_flight: dict[str, Any] = field(default_factory=dict)  # ... and of every `up` beside the stable revision
    steps: list[int] = field(default_factory=list)  # the shifts still to come
    outputs: dict[str, str] = field(default_factory=dict)  # what the last action left
    revision: str = "?"
    weight: int = 0
    error: Exception | None = None

    def note(self, line: str) -> None:
        self.log.append(line)
        self.say(line)

    def run(self) -> dict[str, str]:
        before = self.stack.outputs()
        self.stable = before.get("serving_revision") or ""
        s = self.guard(self.stack.settings)  # the program would refuse the config the same way
        version = pinned_version(s, before)
        self.fixed = {MODEL_VERSION: version} if version else {}
        stable_model = {STABLE_MODEL: before["batch_model_version"]} if before.get("batch_model_version") else {}
        self.in_flight = {**self.fixed, STABLE: self.stable, **stable_model}
        self.steps = [*s.serving.container_app.release_steps]
        state = start_state(before)
        if state is not State.IDLE:
            self.revision = before.get("latest_revision_name") or "?"  # the failed candidate
        self.note(f"{self.stack.name}: {state.value}" + (f"; model version {version}, fixed for this release"
                                                          if version else ""))
        event = self.first_event(state)
        while (state, event) in NEXT:
            state = NEXT[state, event]
            event = self.enter(state) or event
        if event is Event.FAILED:
            raise ReleaseFailed(FAILED_IN.get(state, AFTER_100).format(r=self))
        return self.outputs

    def first_event(self, state: State) -> Event:
        if state is not State.IDLE:
            return Event.RERUN
        changes = self.stable and self.guard(lambda: self.stack.template_changes({**self.in_flight, WEIGHT: 0}))
        return Event.NEW_REVISION if changes is True else Event.NO_NEW_REVISION

    def enter(self, state: State) -> Event | None:
        """The state's action: an `up`, then the smoke test whose result is the next event. None: the release stops
        here with nothing to do (a failed candidate never took a request)."""
        if state is State.ROLLBACK:
            return self.rollback()
        if state not in SAYS:
            return None
        self.weight = self.steps.pop(0) if state is State.SHIFT else 0
        beside_stable = state in (State.CANDIDATE, State.SHIFT)
        self.outputs = self.guard(lambda: self.stack.up({**self.in_flight, WEIGHT: self.weight} if beside_stable
                                                        else self.fixed))
        self.revision, replaced = self.outputs.get("latest_revision_name", "?"), self.revision
        self.note(SAYS[state].format(r=self))
        if state is State.CANDIDATE and replaced not in ("?", self.stable, self.revision):
            self.retire(replaced, "the failed candidate this one replaces", "it stops when this release completes")
        if state is State.COMPLETE:  # before the smoke test, which then checks the app serves without it
            self.retire(self.stable, "the revision this release replaced")
        # Beside the stable revision, the candidate's label URL: the app's URL splits requests by weight, so at 10 %
        # the stable revision would answer most of a smoke test that expects the candidate's model version (audit R1).
        url = self.outputs.get("candidate_url" if beside_stable else "endpoint_url")
        if not url:  # a bootstrap `up` (no workspace yet, or no model version) declares no workload
            self.note(f"no endpoint, nothing to smoke test: {self.outputs.get('bootstrap') or 'no workload declared'}")
            return Event.LAST_PASSED
        try:
            self.smoke(url, self.outputs)
        except Exception as error:
            self.error = error
            self.note(f"smoke test FAILED: {state.value} ({url}): {error}")
            return Event.FAILED
        self.note(f"smoke test passed: {state.value} ({url}) serves model version {self.outputs.get('model_version')}")
        return Event.PASSED if self.steps else Event.LAST_PASSED

    def retire(self, revision: str, what: str,
               after: str = "if `az containerapp revision list` still shows it active, deactivate it by hand") -> None:
        """Deactivate a revision no traffic reaches: a failed candidate the new one replaced (in Multiple mode it stays
        active at 0 %, minReplicas running, until a release completes), or at completion the replaced stable one. The
        switch to Single mode should stop that one, but did not always (microsoft/azure-container-apps#679), and while
        it runs it holds on to the app's secrets: leaving pseudonymise removes the key only once no active revision
        refers to it (docs/operate.md, A release). A refusal costs replicas, not correctness: noted, not failed."""
        if not revision or revision == self.revision:
            return
        try:
            self.stack.deactivate(revision)
            self.note(f"deactivated {revision}, {what}")
        except Exception as error:
            self.note(f"could not deactivate {revision}, {what} ({error}); {after}")

    def rollback(self) -> Event:
        try:
            self.stack.up({**self.in_flight, WEIGHT: 0})
        except Exception as error:
            raise ReleaseFailed(f"moving the traffic back was refused ({error}): {self.revision} still takes "
                                f"{self.weight} %; the next release (a re-run) moves it back to 0 % first") from error
        self.note(f"rollback: {self.stable} serves 100 % again")
        return Event.FAILED

    def guard(self, call: Callable[[], Any]) -> Any:
        """A preview or `up` refused (by the program, the policy pack or Azure) changed nothing that serves."""
        try:
            return call()
        except Exception as error:
            serving = f"{self.stable} still serves 100 %" if self.stable else "nothing was serving"
            raise ReleaseFailed(f"the update was refused ({error}); {serving}") from error


def image_digest(outputs: Mapping[str, str]) -> str:
    return outputs.get("image_digest") or outputs.get("image_ref", "").rpartition("@")[2]


def expected_artifact(s: StackSettings, digest: str | None, version: str | None,
                      say: Callable[[str], None]) -> tuple[str | None, str | None]:
    """What the stack must serve after the release: what staging tested, or, while the stack is pinned (a
    rollback by config), the pinned digest and version."""
    promotion = s.promotion
    if not promotion.pinned:
        return digest, version
    say(f"pinned to {promotion.pinned_digest} (model version {promotion.pinned_model_version}): a rollback by "
        "config; what staging tested is not promoted until the pin is removed"
        + ("" if promotion.pinned_personal_checked else
           ". An image older than /ready's report of how it logs the personal columns (request_log_personal) fails "
           f"its smoke test unless promotion.pinnedPersonalChecked says you checked it (label {PERSONAL_LABEL}, or "
           "when it was built: docs/operate.md, Roll back)"))
    return promotion.pinned_digest, promotion.pinned_model_version


def check_promoted(outputs: Mapping[str, str], expect_digest: str | None, expect_version: str | None) -> None:
    """A promotion deploys exactly what staging tested: fail, never warn, on any difference."""
    if (expect_digest or expect_version) and outputs.get("bootstrap"):
        raise ReleaseFailed(f"nothing promoted yet: {outputs['bootstrap']}")
    if expect_digest and image_digest(outputs) != expect_digest:
        raise ReleaseFailed(f"deployed digest {image_digest(outputs) or '(none)'} is not the tested {expect_digest}")
    if expect_version and str(outputs.get("model_version")) != str(expect_version):
        raise ReleaseFailed(f"deployed model version {outputs.get('model_version')} is not the tested {expect_version}")


def write_github(outputs: Mapping[str, str], lines: list[str], ok: bool) -> None:
    """Job outputs for the next job, and what happened for the person reading the run."""
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as out:
            for key in ("endpoint_url", "model_version", "image_ref", "image_runtime", "auth_audience",
                        "latest_revision_name"):
                out.write(f"{key}={outputs.get(key, '')}\n")
            out.write(f"image_digest={image_digest(outputs)}\n")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
            summary.write(f"### Release {'done' if ok else 'FAILED'}\n\n" + "".join(f"- {line}\n" for line in lines))


def parse_config(pairs: list[str]) -> dict[str, str]:
    if bad := [pair for pair in pairs if not pair.partition("=")[0] or "=" not in pair]:
        raise SystemExit(f"--config {bad[0]!r}: expected key=value, e.g. promotion.testedModelVersion=7")
    return dict(pair.split("=", 1) for pair in pairs)


def main(argv: list[str] | None = None, stack_for: Callable[[str, dict[str, str]], Stack] = PulumiStack,
         smoke: smoke_from.Smoke | None = None) -> int:
    """`stack_for` and `smoke` are the real cloud's unless a test gives the mocked cloud's."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True, help="<org>/<stack> (the project is Pulumi.yaml's), or <org>/<project>/<stack>")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a config value for this run only (e.g. promotion.testedDigest=sha256:...)")
    parser.add_argument("--expect-digest", help="fail unless the stack then serves this image digest")
    parser.add_argument("--expect-model-version", help="fail unless the stack then serves this model version")
    args = parser.parse_args(argv)
    stack = stack_for(args.stack, parse_config(args.config))
    release = Release(stack, smoke or (lambda url, outputs: None))
    outputs: dict[str, str] = {}
    try:
        s = stack.settings()
        release.smoke = smoke or smoke_from.smoke_for(s, os.environ)
        digest, version = expected_artifact(s, args.expect_digest, args.expect_model_version, release.note)
        outputs = release.run()
        check_promoted(outputs, digest, version)
    except Exception as failure:  # a refused `up` included: say what serves, fail the job
        release.note(f"FAILED: {failure}")
        write_github(outputs, release.log, ok=False)
        return 1
    write_github(outputs, release.log, ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
