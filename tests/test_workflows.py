"""The GitHub workflows: actionlint finds nothing, and the delivery rules hold in their structure:
prod needs the smoke test and the protected environment, no long-lived Azure secret anywhere, PRs
cannot deploy, both stacks are previewed, every workflow declares least-privilege permissions, and
deploys of one stack never overlap."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from scripts import job_report
from training.gate import JOB_RUN_TAG

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "node_modules" / "@tktco" / "node-actionlint" / "build" / "index.js"


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(job: dict) -> list[dict]:
    return job.get("steps") or []


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def runs_pulumi(job: dict, command: str) -> bool:
    return any(s.get("with", {}).get("command") == command for s in uses(job, "pulumi/actions")) or any(
        re.search(rf"\bpulumi {command}\b", s.get("run", "")) for s in steps(job))


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    if not ACTIONLINT.exists():  # `make test` installs it first; a bare pytest run installs it here
        subprocess.run(["make", "-s", str(ACTIONLINT.relative_to(ROOT))], cwd=ROOT, check=True, timeout=300)
    node = shutil.which("node")
    assert node, "node is needed for actionlint (make actionlint installs it)"
    return [node, str(ROOT / "scripts" / "actionlint.cjs")]


def test_the_three_workflows_exist():
    assert {f.name for f in FILES} >= {"pr.yml", "model-build.yml", "deploy.yml"}


def test_actionlint_finds_nothing(actionlint):
    result = subprocess.run([*actionlint, *map(str, FILES)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(FILES)} workflow(s), 0 finding(s)" in result.stderr


def test_actionlint_does_fail_on_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ nope.x }}\n")
    result = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and 'undefined variable "nope"' in result.stdout


def test_prod_needs_the_smoke_test_and_the_protected_environment():
    jobs = load("deploy.yml")["jobs"]
    assert runs_pulumi(jobs["staging"], "up") and runs_pulumi(jobs["prod"], "up")
    for job, stack in ((jobs["staging"], "staging"), (jobs["prod"], "prod")):
        assert job["env"]["STACK"].endswith(f"/mlops-credit-default/{stack}")
        assert uses(job, "pulumi/actions")[0]["with"]["stack-name"] == "${{ env.STACK }}"
    smoke = jobs["smoke-staging"]
    assert smoke["needs"] == "staging"
    assert any("serving.smoke" in s.get("run", "") and "--expect-version" in s.get("run", "") for s in steps(smoke))
    needs = jobs["prod"]["needs"]
    assert "smoke-staging" in (needs if isinstance(needs, list) else [needs])
    assert jobs["prod"]["environment"] == "production"
    assert jobs["smoke-prod"]["needs"] == "prod"
    assert any("serving.smoke" in s.get("run", "") for s in steps(jobs["smoke-prod"]))
    # only the prod job may deploy prod, and it is the only one in `production`
    assert [name for name, job in jobs.items() if job.get("environment") == "production"] == ["prod"]


def test_deploys_of_one_stack_never_overlap():
    groups = {}
    for name in ("deploy.yml", "model-build.yml"):
        for job_name, job in load(name)["jobs"].items():
            if runs_pulumi(job, "up") or job_name == "train":
                concurrency = job.get("concurrency")
                assert concurrency, f"{name}:{job_name} changes a stack without a concurrency group"
                assert concurrency["cancel-in-progress"] is False, "a deploy must not be killed half way"
                groups[f"{name}:{job_name}"] = concurrency["group"]
    assert groups["deploy.yml:staging"] != groups["deploy.yml:prod"]
    assert "staging" in groups["deploy.yml:staging"] and "prod" in groups["deploy.yml:prod"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_long_lived_azure_secret_or_registry_password(path):
    text = path.read_text()
    for forbidden in ("AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET", "creds:", "client-secret", "password", "admin-enabled",
                      "--admin", "AZURE_CREDENTIALS"):
        assert forbidden.lower() not in text.lower(), f"{path.name} mentions {forbidden}"
    for job_name, job in load(path.name)["jobs"].items():
        for login in uses(job, "azure/login"):
            assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}, job_name
            assert job["permissions"].get("id-token") == "write", f"{job_name}: OIDC needs id-token: write"
        if any(runs_pulumi(job, c) for c in ("up", "preview")):
            assert job["env"]["ARM_USE_OIDC"] == "true" and "ARM_CLIENT_ID" in job["env"], job_name


def test_pull_requests_cannot_deploy_and_preview_both_stacks():
    pr = load("pr.yml")
    assert set(pr["on"]) == {"pull_request"} and pr["on"]["pull_request"]["branches"] == ["main"]
    text = (WORKFLOWS / "pr.yml").read_text()
    assert not re.search(r"\bpulumi up\b|command:\s*up\b|command:\s*destroy\b", text)
    assert all("environment" not in job for job in pr["jobs"].values()), "no environment: no deploy identity"
    test = pr["jobs"]["test"]
    assert any(s.get("run") == "make lint" for s in steps(test)) and any(s.get("run") == "make test" for s in steps(test))
    preview = pr["jobs"]["preview"]
    assert set(preview["strategy"]["matrix"]["stack"]) == {"staging", "prod"}
    step = uses(preview, "pulumi/actions")[0]["with"]
    assert step["command"] == "preview" and step["comment-on-pr"] is True and step["policyPacks"] == "policy"
    assert "${{ matrix.stack }}" in step["stack-name"]
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    assert "PREVIEW" in preview["env"]["ARM_CLIENT_ID"], "PRs federate as the read-only preview identity"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_least_privilege_permissions_everywhere(path):
    doc = load(path.name)
    assert doc.get("permissions") in ({}, {"contents": "read"}), "top-level permissions must grant nothing extra"
    allowed = {"contents": {"read"}, "id-token": {"write"}, "pull-requests": {"write"}}
    for job_name, job in doc["jobs"].items():
        assert "permissions" in job, f"{path.name}:{job_name} declares no permissions"
        for scope, level in job["permissions"].items():
            assert level in allowed.get(scope, set()), f"{path.name}:{job_name} asks for {scope}: {level}"
        assert "write-all" not in str(job["permissions"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned(path):
    """To a full commit SHA, never a movable tag, the release in a comment (more in tests/test_supply_chain.py)."""
    for line in path.read_text().splitlines():
        match = re.search(r"uses:\s*(\S+)(.*)$", line)
        if match:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), f"unpinned action {match.group(1)}"
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", match.group(2)), f"{match.group(1)}: no `# vX.Y.Z` comment"


def test_model_build_runs_the_staging_job_and_reports_the_gate():
    doc = load("model-build.yml")
    assert "workflow_dispatch" in doc["on"] and doc["on"]["push"]["paths"] == ["training/**"]
    train = doc["jobs"]["train"]
    assert train["environment"] == "staging"
    text = "\n".join(s.get("run", "") for s in steps(train))
    assert "pulumi stack output databricks_job_id" in text and "scripts.job_report" in text


# ---- scripts/job_report.py: the model-build verdict ----

@pytest.fixture
def job_registry(tmp_path):
    """A real MLflow store: versions registered by training runs tagged with the job run that made them."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("/Shared/credit-default-staging", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model("m")

    def register(job_run: str | None, decision: str, champion: bool = False) -> str:
        run = client.create_run(experiment, tags={JOB_RUN_TAG: job_run} if job_run else {})
        version = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version
        client.set_model_version_tag("m", version, "gate.decision", decision)
        if champion:
            client.set_registered_model_alias("m", "champion", version)
        return str(version)
    return client, register


def test_job_report_judges_the_version_its_job_run_registered_not_the_newest(job_registry):
    client, register = job_registry
    register("1000", "promoted", champion=True)  # v1
    register("1001", "rejected")  # v2: this job run's
    register(None, "not gated")  # v3: someone's manual run, registered after it
    report = job_report.gate_report(client, "m", "/Shared/credit-default-staging", 1001, "1")
    assert (report.version, report.decision, report.moved) == ("2", "rejected", False)
    assert report.summary("m") == "gate kept @champion at v1: this run's v2 was rejected"
    register("1002", "promoted", champion=True)  # v4
    report = job_report.gate_report(client, "m", "/Shared/credit-default-staging", 1002, "1")
    assert report.moved and report.summary("m") == "gate PROMOTED m v4 to @champion (was v1)"


def test_job_report_fails_when_its_run_registered_no_version(job_registry, monkeypatch, capsys):
    client, register = job_registry
    register("1000", "promoted", champion=True)
    monkeypatch.setattr(job_report, "Registry", lambda *a: SimpleNamespace(client=lambda: client))

    def succeeded(job_id: int, timeout: timedelta) -> job_report.JobRun:
        return job_report.JobRun(1003, True, "TERMINATED/SUCCESS", "https://adb/run/1003")
    assert job_report.main(["--job-id", "12", "--model-name", "m", "--experiment", "/Shared/credit-default-staging"],
                           runner=succeeded) == 1
    assert "job run 1003 registered 0 version(s) of m" in capsys.readouterr().err


def test_job_report_fails_on_a_failed_run(job_registry, monkeypatch, tmp_path, capsys):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setattr(job_report, "Registry", lambda *a: SimpleNamespace(client=lambda: job_registry[0]))
    seen = []

    def failed(job_id: int, timeout: timedelta) -> job_report.JobRun:
        seen.append((job_id, timeout))
        return job_report.JobRun(77, False, "TERMINATED/FAILED", "https://adb/run/77")
    assert job_report.main(["--job-id", "12", "--model-name", "m", "--experiment", "e"], runner=failed) == 1
    assert seen == [(12, timedelta(minutes=120))]
    assert "did not succeed: TERMINATED/FAILED" in capsys.readouterr().err
    assert "run 77 did not succeed" in summary.read_text()


def test_the_smoke_tests_authenticate_as_the_smoke_identity():
    """Each smoke job logs in with GitHub OIDC as the smoke-test identity (no secret, no environment: it holds no Azure
    role) when the stack reports an Entra audience, and the smoke test asks the Azure CLI for that audience's token."""
    jobs = load("deploy.yml")["jobs"]
    for deploy, smoke in (("staging", "smoke-staging"), ("prod", "smoke-prod")):
        assert "auth_audience" in jobs[deploy]["outputs"]
        assert "auth_audience" in next(s["run"] for s in steps(jobs[deploy]) if s.get("id") == "outputs")
        job = jobs[smoke]
        assert job["permissions"] == {"contents": "read", "id-token": "write"} and "environment" not in job
        step = next(s for s in steps(job) if "serving.smoke" in s.get("run", ""))
        assert step["env"]["AUDIENCE"] == f"${{{{ needs.{deploy}.outputs.auth_audience }}}}"
        assert step["env"]["SMOKE_CLIENT_ID"] == "${{ vars.SMOKE_CLIENT_ID }}"
        run = step["run"]
        assert "--federated-token" in run and "--allow-no-subscriptions" in run
        assert '--token-from-azure-cli "$AUDIENCE"' in run and '"${auth[@]}"' in run
