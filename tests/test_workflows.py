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

from infra import settings, stack_files
from scripts import job_report
from training.gate import JOB_RUN_TAG

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "node_modules" / "@tktco" / "node-actionlint" / "build" / "index.js"
EXPERIMENT = settings.from_values("staging", stack_files.stack_values("staging"), {}).databricks.experiment


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(job: dict) -> list[dict]:
    return job.get("steps") or []


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def runs_pulumi(job: dict, command: str) -> bool:
    """`up` includes a release (scripts/release.py drives `pulumi up` through the Automation API)."""
    return any(s.get("with", {}).get("command") == command for s in uses(job, "pulumi/actions")) or any(
        re.search(rf"\bpulumi {command}\b", s.get("run", "")) or (command == "up" and "scripts.release" in s.get("run", ""))
        for s in steps(job))


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


def release_step(job: dict) -> dict:
    found = [s for s in steps(job) if "-m scripts.release" in s.get("run", "")]
    assert len(found) == 1, "each deploy job runs one release (scripts/release.py)"
    return found[0]


def test_each_deploy_is_a_release_and_prod_needs_staging_and_the_protected_environment():
    jobs = load("deploy.yml")["jobs"]
    for name, stack in (("staging", "staging"), ("prod", "prod")):
        assert jobs[name]["env"]["STACK"] == f"${{{{ vars.PULUMI_ORG }}}}/{stack}"  # the project: Pulumi.yaml's
        assert '--stack "$STACK"' in release_step(jobs[name])["run"]  # candidate, smoke test, traffic: one program
        assert not uses(jobs[name], "pulumi/actions")[0].get("with"), "the action only installs the CLI"
    assert jobs["prod"]["needs"] == "staging" and jobs["prod"]["environment"] == "production"
    # only the prod job may deploy prod, and it is the only one in `production`
    assert [name for name, job in jobs.items() if job.get("environment") == "production"] == ["prod"]


def test_prod_deploys_exactly_what_the_staging_job_tested_and_fails_otherwise():
    jobs = load("deploy.yml")["jobs"]
    release = release_step(jobs["staging"])
    assert jobs["staging"]["outputs"] == {key: f"${{{{ steps.{release['id']}.outputs.{key} }}}}"
                                          for key in ("image_digest", "model_version", "image_runtime")}
    env, run = jobs["prod"]["env"], release_step(jobs["prod"])["run"]
    assert env["TESTED_DIGEST"] == "${{ needs.staging.outputs.image_digest }}"
    assert env["TESTED_MODEL_VERSION"] == "${{ needs.staging.outputs.model_version }}"
    # the runtime staging's image runs on: prod's memory rule before any resource (absent from an older staging)
    assert env["TESTED_RUNTIME"] == "${{ needs.staging.outputs.image_runtime }}"
    assert '${TESTED_RUNTIME:+--config "promotion.testedRuntime=$TESTED_RUNTIME"}' in run
    for flag in ('--config "promotion.testedDigest=$TESTED_DIGEST"',
                 '--config "promotion.testedModelVersion=$TESTED_MODEL_VERSION"',
                 '--expect-digest "$TESTED_DIGEST"', '--expect-model-version "$TESTED_MODEL_VERSION"'):
        assert flag in run, f"prod's release lacks {flag}"
    first = steps(jobs["prod"])[0]["run"]
    assert "exit 1" in first and "$TESTED_DIGEST" in first, "no tested digest (staging bootstrapped): prod fails"


def test_deploy_runs_never_interleave_and_nothing_is_killed_half_way():
    """Workflow-level: a later push waits until this run (its prod approval included) is over, so staging cannot
    change under a prod job that waits for approval."""
    assert load("deploy.yml")["concurrency"] == {"group": "deploy", "cancel-in-progress": False}
    train = load("model-build.yml")["jobs"]["train"]["concurrency"]
    assert train["cancel-in-progress"] is False and "staging" in train["group"]


def test_a_cancelled_deploy_job_unlocks_its_own_stack():
    """GitHub kills a cancelled or timed-out job's process: Pulumi leaves the update "in progress" and the stack locked,
    and the next run's first preview would fail until someone ran `pulumi cancel` (audit B1). The last step of each
    deploy job runs only then, on the job's own stack, after the release step."""
    for name, job in load("deploy.yml")["jobs"].items():
        names = [step.get("id") or step.get("name", "") for step in steps(job)]
        last = steps(job)[-1]
        assert last["if"] == "cancelled()" and last["run"].startswith('pulumi cancel --stack "$STACK" --yes'), name
        assert names.index(next(n for n in names if n == "release" or "Release" in n)) < len(names) - 1, name
        assert job["env"]["STACK"].endswith(f"/{name}"), name


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


def test_pull_requests_cannot_deploy_and_preview_staging_only():
    pr = load("pr.yml")
    assert set(pr["on"]) == {"pull_request"} and pr["on"]["pull_request"]["branches"] == ["main"]
    text = (WORKFLOWS / "pr.yml").read_text()
    assert not re.search(r"\bpulumi up\b|command:\s*up\b|command:\s*destroy\b|scripts\.release", text)
    assert all("environment" not in job for job in pr["jobs"].values()), "no environment: no deploy identity"
    test = pr["jobs"]["test"]
    assert any(s.get("run") == "make lint" for s in steps(test)) and any(s.get("run") == "make test" for s in steps(test))
    preview = pr["jobs"]["preview"]
    step = uses(preview, "pulumi/actions")[0]["with"]
    assert step["command"] == "preview" and step["comment-on-pr"] is True and step["policyPacks"] == "policy"
    assert step["stack-name"] == "${{ vars.PULUMI_ORG }}/staging", "a PR never reads prod's state"
    assert any(s.get("run") == "make plan STACK=prod" for s in steps(preview)), "prod: the mocked cloud, no state"
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    assert "PREVIEW" in preview["env"]["ARM_CLIENT_ID"], "PRs federate as the read-only preview identity"


# ---- credentials per environment (.github/identities.yaml) ----

IDENTITIES = yaml.safe_load((ROOT / ".github" / "identities.yaml").read_text())["subjects"]


def subject(path: Path, job: dict) -> str:
    """The OIDC subject GitHub gives this job: its environment's, or pull_request's."""
    if job.get("environment"):
        return f"environment:{job['environment']}"
    assert "pull_request" in load(path.name)["on"], f"{path.name}: a job with cloud rights needs an environment"
    return "pull_request"


def cloud_jobs() -> list[tuple[Path, str, dict]]:
    return [(path, name, job) for path in FILES for name, job in load(path.name)["jobs"].items()
            if uses(job, "pulumi/auth-actions") or uses(job, "azure/login") or "DATABRICKS_AUTH_TYPE" in job.get("env", {})]


@pytest.mark.parametrize("path,name,job", cloud_jobs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_job_uses_the_identities_of_its_own_subject(path, name, job):
    row = IDENTITIES[subject(path, job)]
    for auth in uses(job, "pulumi/auth-actions"):
        assert auth["with"]["requested-token-type"] == "urn:pulumi:token-type:access_token:team"
        assert auth["with"]["scope"] == f"team:{row['pulumi_team']}", f"{path.name}:{name}"
    env = job.get("env", {})
    if "ARM_CLIENT_ID" in env:
        assert env["ARM_CLIENT_ID"] == f"${{{{ vars.{row['azure_identity']} }}}}", f"{path.name}:{name}"
    for login in uses(job, "azure/login"):
        assert login["with"]["client-id"] == f"${{{{ vars.{row['azure_identity']} }}}}", f"{path.name}:{name}"
    if "DATABRICKS_AUTH_TYPE" in env:  # Databricks' own OIDC exchange: renewed, unlike the Azure CLI's token
        assert env["DATABRICKS_AUTH_TYPE"] == "github-oidc"
        assert env["DATABRICKS_CLIENT_ID"] == f"${{{{ vars.{row['databricks_client']} }}}}", f"{path.name}:{name}"
    if "SMOKE_CLIENT_ID" in env:
        assert env["SMOKE_CLIENT_ID"] == f"${{{{ vars.{row['smoke_identity']} }}}}"


def test_only_production_reaches_prods_state_and_previews_only_read():
    """Pulumi's Stack Read includes decrypt: who must not decrypt prod's state must not read it at all."""
    assert {s for s, row in IDENTITIES.items() if "prod" in row["pulumi_stacks"]} == {"environment:production"}
    assert IDENTITIES["environment:staging"]["pulumi_stacks"] == {"staging": "write"}
    assert set(IDENTITIES["pull_request"]["pulumi_stacks"].values()) == {"read"}
    assert IDENTITIES["environment:production"]["pulumi_stacks"]["staging"] == "read", "prod reads staging's outputs"
    teams = [row["pulumi_team"] for row in IDENTITIES.values()]
    assert len(set(teams)) == len(teams), "one team per subject: a token's rights are its team's"
    for path in FILES:
        assert "PULUMI_ACCESS_TOKEN" not in path.read_text(), f"{path.name}: no long-lived Pulumi token"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_stacks_and_teams_name_no_project(path):
    """Stacks are <org>/<stack>: the project is Pulumi.yaml's, so a project renamed there (two projects in one Pulumi
    organization) needs no workflow change; the teams derive from a repository variable, one set per project."""
    text = path.read_text()
    assert "mlops-" not in text and "credit" not in text.lower()
    for stack in re.findall(r"(?:STACK|stack-name): (.+)", text):
        assert re.fullmatch(r"\$\{\{ vars\.PULUMI_ORG \}\}/(staging|prod)", stack), stack
    for scope in re.findall(r"scope: (.+)", text):
        assert re.fullmatch(r"team:\$\{\{ vars\.PULUMI_TEAM_PREFIX \}\}-(preview|staging|prod)", scope), scope


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
    assert "workflow_dispatch" in doc["on"] and doc["on"]["push"]["paths"] == ["training/**", "models/**"]
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
    experiment = client.create_experiment(EXPERIMENT, artifact_location=str(tmp_path / "artifacts"))
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
    report = job_report.gate_report(client, "m", EXPERIMENT, 1001, "1")
    assert (report.version, report.decision, report.moved) == ("2", "rejected", False)
    assert report.summary("m") == "gate kept @champion at v1: this run's v2 was rejected"
    register("1002", "promoted", champion=True)  # v4
    report = job_report.gate_report(client, "m", EXPERIMENT, 1002, "1")
    assert report.moved and report.summary("m") == "gate PROMOTED m v4 to @champion (was v1)"


def test_model_build_trains_only_once_the_job_runs_this_commits_wheel(job_registry, monkeypatch, capsys):
    """A push to the model starts model-build and the deploy together: the job is run only once the deploy has given it
    the wheel this checkout builds, never the previous deploy's; a deploy that never comes fails the build (B3)."""
    client, register = job_registry
    monkeypatch.setattr(job_report, "Registry", lambda *a: SimpleNamespace(client=lambda: client))
    new = job_report.pushed_wheel("staging")
    seen: list[str] = []

    def wheels(job_id: int) -> set[str]:  # the job's libraries as Databricks returns them: old twice, then new
        seen.append("poll")
        return {new} if len(seen) > 2 else {"mlops_jobs-1.0.0.dev1-py3-none-any.whl"}

    def runner(job_id: int, timeout: timedelta) -> job_report.JobRun:
        seen.append("run")
        register("1004", "promoted", champion=True)
        return job_report.JobRun(1004, True, "TERMINATED/SUCCESS", "https://adb/run/1004")
    argv = ["--job-id", "12", "--model-name", "m", "--experiment", EXPERIMENT, "--wait-for-wheel-of", "staging"]
    assert job_report.main(argv, runner=runner, wheels=wheels, sleep=lambda s: None) == 0
    assert seen == ["poll", "poll", "poll", "run"]
    seen.clear()
    stale = job_report.main([*argv, "--wheel-timeout-minutes", "0"], runner=runner,
                            wheels=lambda job_id: {"old.whl"}, sleep=lambda s: None)
    assert stale == 1 and seen == [] and f"still installs old.whl, not {new}" in capsys.readouterr().err
    build = load("model-build.yml")["jobs"]["train"]
    assert "--wait-for-wheel-of staging" in steps(build)[-1]["run"]


def test_job_report_fails_when_its_run_registered_no_version(job_registry, monkeypatch, capsys):
    client, register = job_registry
    register("1000", "promoted", champion=True)
    monkeypatch.setattr(job_report, "Registry", lambda *a: SimpleNamespace(client=lambda: client))

    def succeeded(job_id: int, timeout: timedelta) -> job_report.JobRun:
        return job_report.JobRun(1003, True, "TERMINATED/SUCCESS", "https://adb/run/1003")
    assert job_report.main(["--job-id", "12", "--model-name", "m", "--experiment", EXPERIMENT],
                           runner=succeeded) == 1
    assert "job run 1003 registered no version of m" in capsys.readouterr().err


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
    """The release's smoke test gets its Entra token as the smoke-test identity (no Azure role) from the job's own
    GitHub OIDC token, fresh for each exchange: no secret, no Azure CLI login that expires mid-release."""
    for name, job in load("deploy.yml")["jobs"].items():
        assert job["permissions"] == {"contents": "read", "id-token": "write"}, name
        assert job["env"]["SMOKE_CLIENT_ID"] == "${{ vars.SMOKE_CLIENT_ID }}", name
        assert job["env"]["AZURE_TENANT_ID"] == "${{ vars.AZURE_TENANT_ID }}", name


def test_the_github_oidc_token_is_requested_with_the_jobs_bearer_for_the_audience(monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from infra import azure_credential
    seen = []

    class Actions(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["Authorization"]))
            body = json.dumps({"value": "github-jwt"}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = HTTPServer(("127.0.0.1", 0), Actions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", f"http://127.0.0.1:{server.server_port}/token?api-version=2.0")
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "job-bearer")
        assert azure_credential.github_oidc_token("api://AzureADTokenExchange") == "github-jwt"
    finally:
        server.shutdown()
    assert seen == [("/token?api-version=2.0&audience=api://AzureADTokenExchange", "bearer job-bearer")]
