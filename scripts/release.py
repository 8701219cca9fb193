"""One release of one stack, in steps that can be undone: what CI's staging and prod jobs run.

    python -m scripts.release --stack <org>/staging
    python -m scripts.release --stack <org>/prod \\
        --config promotion.testedDigest=sha256:... --config promotion.testedModelVersion=7 --expect-digest sha256:...

On Container Apps, when the update makes a new revision (a new image, CPU, environment...):

  1. candidate  `up` with serving.containerApp.stableRevision=<the revision serving now>, latestWeight=0: the new
                revision is labelled `candidate` and takes no traffic; the one serving stays labelled `stable`
  2. smoke      the smoke test (serving/smoke.py, the same one `make local` runs) against the candidate's label URL,
                expecting the model version this update declares
  3. shift      for each of serving.containerApp.releaseSteps (e.g. [10, 50]): `up` with that latestWeight, and
                the smoke test of the app's own URL
  4. complete   `up` without stableRevision: the candidate takes 100 %, Single mode deactivates the old revision,
                and the smoke test of the app's URL

A smoke test that fails in 2 stops there: the candidate never took a request. One that fails in 3 first puts the
candidate back to 0 %. Either way the stable revision serves every request, the job fails, and says so.
Without a new revision (nothing in the template changed), on AKS, and on the first deploy: one `up`, then the
smoke test of the endpoint. A promotion (prod) also checks that it deployed the digest staging tested.

Each `up` is the Pulumi Automation API on this project directory (the Pulumi CLI must be installed). The
release logic talks to a `Stack` (outputs, changes, up): tests/test_release.py drives it with the mocked cloud's
stateful evaluation instead, so the sequence that CI runs is the one the tests prove.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infra import settings, stack_files
from infra.settings import PromotionSettings, StackSettings

ROOT = Path(__file__).resolve().parent.parent
APP_TYPE = "azure-native:app:ContainerApp"
STABLE, WEIGHT = "serving.containerApp.stableRevision", "serving.containerApp.latestWeight"


class ReleaseFailed(RuntimeError):
    """The release stopped; the message says which revision serves now."""


class Stack(Protocol):
    name: str

    def outputs(self) -> dict[str, str]:
        """The stack's outputs as last deployed ({} before the first deploy)."""

    def template_changes(self, config: Mapping[str, Any]) -> bool | None:
        """Would `up` with `config` change the Container App's revision template? None: there is no app yet."""

    def up(self, config: Mapping[str, Any]) -> dict[str, str]:
        """Deploy with these config values set (on top of the stack file and the run's own values); the outputs."""

    def settings(self) -> StackSettings:
        """The stack's settings for this run (its stack file and this run's config), validated as the program does."""


Smoke = Callable[[str, Mapping[str, str]], None]  # (base URL, the stack outputs it must serve); raises on failure


@dataclass
class Release:
    stack: Stack
    smoke: Smoke
    say: Callable[[str], None] = print
    log: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.log.append(line)
        self.say(line)

    def up(self, config: Mapping[str, Any], serving: str) -> dict[str, str]:
        """One `up`. Refused (by the program, the policy pack or Azure), it changed nothing that serves."""
        try:
            return self.stack.up(config)
        except Exception as error:
            raise refused(error, serving) from error

    def run(self) -> dict[str, str]:
        before = self.stack.outputs()
        stable = before.get("serving_revision") or ""
        try:
            progressive = bool(stable) and self.stack.template_changes({STABLE: stable, WEIGHT: 0}) is True
        except Exception as error:  # the preview already fails: the update would
            raise refused(error, stable) from error
        if not progressive:
            return self._at_once(stable)
        return self._progressive(stable)

    def _at_once(self, serving: str) -> dict[str, str]:
        why = "no revision serves yet" if not serving else "the update makes no new revision, or the target has none"
        self.note(f"{self.stack.name}: one update ({why})")
        after = self.up({}, serving)
        if not after.get("endpoint_url"):
            self.note("no endpoint (bootstrap: no model version yet): nothing to smoke test")
            return after
        self._smoke(after["endpoint_url"], after, "the endpoint")
        return after

    def _progressive(self, stable: str) -> dict[str, str]:
        candidate = self.up({STABLE: stable, WEIGHT: 0}, stable)
        revision = candidate.get("latest_revision_name", "?")
        self.note(f"candidate {revision} deployed at 0 % beside {stable} (100 %), at {candidate['candidate_url']}")
        try:
            self._smoke(candidate["candidate_url"], candidate, f"candidate {revision}")
        except Exception as error:
            raise ReleaseFailed(f"candidate {revision} failed its smoke test ({error}); it never took a request: "
                                f"{stable} still serves 100 %. Fix and push again: the next release replaces the "
                                "candidate.") from error
        for weight in self.stack.settings().serving.container_app.release_steps:
            shifted = self.up({STABLE: stable, WEIGHT: weight}, stable)
            self.note(f"shift: {revision} {weight} %, {stable} {100 - weight} %")
            try:
                self._smoke(shifted["endpoint_url"], shifted, f"the app at {weight} % to {revision}")
            except Exception as error:
                self.stack.up({STABLE: stable, WEIGHT: 0})
                raise ReleaseFailed(f"the smoke test failed with {weight} % on {revision} ({error}); traffic moved "
                                    f"back: {stable} serves 100 % again") from error
        done = self.up({}, stable)
        self.note(f"complete: {done.get('latest_revision_name')} serves 100 %; {stable} is deactivated")
        self._smoke(done["endpoint_url"], done, "the endpoint")
        return done

    def _smoke(self, url: str, outputs: Mapping[str, str], what: str) -> None:
        self.smoke(url, outputs)
        self.note(f"smoke test passed: {what} ({url}) serves model version {outputs.get('model_version')}")


def refused(error: Exception, serving: str) -> ReleaseFailed:
    return ReleaseFailed(f"the update was refused ({error}); "
                         f"{serving + ' still serves 100 %' if serving else 'nothing was serving'}")


def image_digest(outputs: Mapping[str, str]) -> str:
    return outputs.get("image_digest") or outputs.get("image_ref", "").rpartition("@")[2]


def expected_artifact(promotion: PromotionSettings, digest: str | None, version: str | None,
                      say: Callable[[str], None]) -> tuple[str | None, str | None]:
    """What the stack must serve after the release: what staging tested, or, while the stack is pinned (a
    rollback by config), the pinned digest and version."""
    if not promotion.pinned:
        return digest, version
    say(f"pinned to {promotion.pinned_digest} (model version {promotion.pinned_model_version}): a rollback by "
        "config; what staging tested is not promoted until the pin is removed")
    return promotion.pinned_digest, promotion.pinned_model_version


def check_promoted(outputs: Mapping[str, str], expect_digest: str | None, expect_version: str | None) -> None:
    """A promotion deploys exactly what staging tested: fail, never warn, on any difference."""
    if expect_digest and image_digest(outputs) != expect_digest:
        raise ReleaseFailed(f"deployed digest {image_digest(outputs) or '(none)'} is not the tested {expect_digest}")
    if expect_version and str(outputs.get("model_version")) != str(expect_version):
        raise ReleaseFailed(f"deployed model version {outputs.get('model_version')} is not the tested {expect_version}")


# ---- the real cloud: Pulumi Automation API, smoke test with an Entra token from GitHub's OIDC ----

@dataclass
class PulumiStack:
    """A stack of this project driven by the Automation API; `config` (the run's own values, e.g. the tested digest)
    is set before every operation, as `pulumi config set --path` would."""
    name: str
    config: Mapping[str, Any]
    policy_packs: tuple[str, ...] = ("policy",)

    def __post_init__(self) -> None:
        from pulumi import automation

        self._auto = automation
        self._stack = automation.select_stack(self.name, work_dir=str(ROOT))
        self._file = ROOT / f"Pulumi.{self.name.rsplit('/', 1)[-1]}.yaml"
        self._committed = self._file.read_text()

    def _set(self, config: Mapping[str, Any]) -> None:
        """The stack file as committed plus this step's values: a step never inherits the one before's."""
        self._file.write_text(self._committed)
        for key, value in {**self.config, **config}.items():
            self._stack.set_config(f"{stack_files.NAMESPACE}:{key}", self._auto.ConfigValue(json.dumps(value) if not
                                   isinstance(value, str) else value), path=True)

    def outputs(self) -> dict[str, str]:
        return {key: str(value.value) for key, value in self._stack.outputs().items()}

    def template_changes(self, config: Mapping[str, Any]) -> bool | None:
        self._set(config)
        found: list[bool] = []

        def on_event(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre and pre.metadata.type == APP_TYPE:
                found.append(pre.metadata.op.value == "create" or "template" in (pre.metadata.diffs or []))
        self._stack.preview(on_event=on_event, policy_packs=list(self.policy_packs))
        return any(found) if found else None

    def up(self, config: Mapping[str, Any]) -> dict[str, str]:
        self._set(config)
        result = self._stack.up(on_output=print, policy_packs=list(self.policy_packs))
        return {key: str(value.value) for key, value in result.outputs.items()}

    def settings(self) -> StackSettings:
        stack = self.name.rsplit("/", 1)[-1]
        return settings.from_values(stack, stack_files.apply_overrides(stack_files.stack_values(stack), self.config), {})


def github_oidc_token(audience: str) -> str:
    """GitHub's OIDC token for this job (needs `id-token: write`), requested fresh for every exchange: an Entra
    token from it can always be renewed, unlike a CLI login from a token that expires after a few minutes."""
    url, bearer = os.environ["ACTIONS_ID_TOKEN_REQUEST_URL"], os.environ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    request = urllib.request.Request(f"{url}&audience={audience}", headers={"Authorization": f"bearer {bearer}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["value"]


def smoke_with_entra(client_id: str, tenant_id: str) -> Smoke:
    """The smoke test (serving/smoke.py) as the smoke-test identity: it holds no Azure role, it is only one of
    serving.auth.allowedClientApplications. Its Entra token comes from this job's GitHub OIDC token, no secret."""
    from serving import smoke

    def run(url: str, outputs: Mapping[str, str]) -> None:
        token = None
        if outputs.get("auth_audience"):
            from azure.identity import ClientAssertionCredential

            credential = ClientAssertionCredential(tenant_id, client_id,
                                                   lambda: github_oidc_token("api://AzureADTokenExchange"))
            token = credential.get_token(f"{outputs['auth_audience']}/.default").token
        smoke.run(url, expect_version=outputs.get("model_version") or None, wait=300, token=token)
    return run


def write_github(outputs: Mapping[str, str], lines: list[str], ok: bool) -> None:
    """Job outputs for the next job, and what happened for the person reading the run."""
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as out:
            for key in ("endpoint_url", "model_version", "image_ref", "auth_audience", "latest_revision_name"):
                out.write(f"{key}={outputs.get(key, '')}\n")
            out.write(f"image_digest={image_digest(outputs)}\n")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
            summary.write(f"### Release {'done' if ok else 'FAILED'}\n\n" + "".join(f"- {line}\n" for line in lines))


def parse_config(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--config {pair!r}: expected key=value, e.g. promotion.testedModelVersion=7")
        config[key] = value
    return config


def main(argv: list[str] | None = None, stack_for: Callable[[str, dict[str, str]], Stack] = PulumiStack,
         smoke: Smoke | None = None) -> int:
    """`stack_for` and `smoke` are the real cloud's unless a test gives the mocked cloud's."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True, help="<org>/<stack> (the project is Pulumi.yaml's), or <org>/<project>/<stack>")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a config value for this run only (e.g. promotion.testedDigest=sha256:...)")
    parser.add_argument("--expect-digest", help="fail unless the stack then serves this image digest")
    parser.add_argument("--expect-model-version", help="fail unless the stack then serves this model version")
    args = parser.parse_args(argv)
    stack = stack_for(args.stack, parse_config(args.config))
    release = Release(stack, smoke or smoke_with_entra(os.environ.get("SMOKE_CLIENT_ID", ""),
                                                       os.environ.get("AZURE_TENANT_ID", "")))
    outputs: dict[str, str] = {}
    try:
        digest, version = expected_artifact(stack.settings().promotion, args.expect_digest, args.expect_model_version,
                                            release.note)
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
