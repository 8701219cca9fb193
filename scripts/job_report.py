"""Run the staging stack's Databricks training job (train -> gate), wait for it, and say whether the gate
moved @champion. Used by .github/workflows/model-build.yml.

    python -m scripts.job_report --job-id 123 --model-name staging.credit.credit_default \\
        --experiment /credit-default/staging/credit-default-staging [--tracking-uri databricks --registry-uri databricks-uc]

With --wait-for-wheel-of <stack>, it first waits until the job runs the wheel this checkout builds: a push that changes
the model or the training code starts this workflow and the deploy together, and the job has the new code only once
the deploy's `up` has uploaded it (audit B3).

Exit 1 when the run does not succeed, or when it registered no version. The verdict comes from the registry,
not from logs: @champion before and after the run, and the `gate.decision` tag of exactly the version this
job run registered (found by its job run id, as the gate task finds it: not the newest version, which a
manual run beside this one may have made).
Written to $GITHUB_STEP_SUMMARY when that is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from infra import jobwheel, settings, stack_files
from infra.promote import Registry

CHAMPION = "champion"  # training/gate.py's alias


@dataclass(frozen=True)
class JobRun:
    run_id: int
    succeeded: bool
    state: str  # e.g. "TERMINATED/SUCCESS", "TERMINATED/FAILED"
    url: str


@dataclass(frozen=True)
class GateReport:
    champion_before: str | None
    champion_after: str | None
    version: str  # the version this job run registered
    decision: str

    @property
    def moved(self) -> bool:
        return self.champion_after is not None and self.champion_after != self.champion_before

    def summary(self, model_name: str) -> str:
        if self.moved:
            return (f"gate PROMOTED {model_name} v{self.champion_after} to @champion "
                    f"(was {'v' + self.champion_before if self.champion_before else 'none'})")
        return (f"gate kept @champion at {'v' + self.champion_before if self.champion_before else 'none'}: "
                f"this run's v{self.version} was {self.decision}")


def run_job(job_id: int, timeout: timedelta) -> JobRun:
    """Trigger the job and wait: Databricks SDK, auth from the environment (DATABRICKS_HOST + azure-cli in CI)."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.jobs import RunResultState

    run = WorkspaceClient().jobs.run_now(job_id=job_id).result(timeout=timeout)
    state = run.state
    result = state.result_state if state else None
    return JobRun(run.run_id or 0, result == RunResultState.SUCCESS,
                  f"{state.life_cycle_state.value if state and state.life_cycle_state else '?'}/"
                  f"{result.value if result else '?'}", run.run_page_url or "")


def pushed_wheel(stack: str) -> str:
    """The file name of the jobs' wheel this checkout builds for `stack`, as its `up` does (infra/databricks.py)."""
    s = settings.from_values(stack, stack_files.stack_values(stack), {})
    with tempfile.TemporaryDirectory() as tmp:
        return jobwheel.build(Path(tmp), s.names.wheel_distribution, s.model.module).name


def job_wheels(job_id: int) -> set[str]:
    """The wheels the job's tasks install now (file names)."""
    from databricks.sdk import WorkspaceClient

    job = WorkspaceClient().jobs.get(job_id)
    tasks = (job.settings.tasks if job.settings else None) or []
    return {Path(library.whl).name for task in tasks for library in task.libraries or [] if library.whl}


def wait_for_wheel(job_id: int, wheel: str, timeout: timedelta, wheels: Callable[[int], set[str]] = job_wheels,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Until the job installs `wheel`; a deploy that fails or never comes leaves the job on older code: refuse."""
    deadline = time.monotonic() + timeout.total_seconds()
    while wheel not in (found := wheels(job_id)):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} still installs {', '.join(sorted(found)) or 'no wheel'}, not {wheel} "
                               f"after {timeout}: the deploy of this commit has not reached staging (failed, or waits)")
        sleep(30)


def champion(client, model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def gate_report(client, model_name: str, experiment: str, job_run_id: int, champion_before: str | None) -> GateReport:
    """Raises training.gate.VersionNotFound when the run registered no version (or, impossibly, several)."""
    from training.gate import version_of_job_run

    version = version_of_job_run(client, model_name, experiment, str(job_run_id))
    decision = (client.get_model_version(model_name, version).tags or {}).get("gate.decision", "not gated")
    return GateReport(champion_before, champion(client, model_name), version, decision)


def main(argv: list[str] | None = None, runner=run_job, wheels: Callable[[int], set[str]] = job_wheels,
         sleep: Callable[[float], None] = time.sleep) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--model-name", required=True, help="registered model (catalog.schema.name with Unity Catalog)")
    parser.add_argument("--experiment", required=True, help="the job's MLflow experiment (stack output databricks_experiment)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "databricks"))
    parser.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI", "databricks-uc"))
    parser.add_argument("--timeout-minutes", type=float, default=120)
    parser.add_argument("--wait-for-wheel-of", metavar="STACK", help="first wait until the job installs the wheel "
                        "this checkout builds for STACK (the deploy of this commit)")
    parser.add_argument("--wheel-timeout-minutes", type=float, default=60)
    args = parser.parse_args(argv)
    if args.wait_for_wheel_of:
        try:
            wait_for_wheel(args.job_id, pushed_wheel(args.wait_for_wheel_of),
                           timedelta(minutes=args.wheel_timeout_minutes), wheels, sleep)
        except TimeoutError as error:
            print(error, file=sys.stderr)
            return 1
    client = Registry(args.tracking_uri, args.registry_uri).client()
    before = champion(client, args.model_name)
    run = runner(args.job_id, timedelta(minutes=args.timeout_minutes))
    if not run.succeeded:
        report = f"training job {args.job_id} run {run.run_id} did not succeed: {run.state} {run.url}"
        exit_code = 1
    else:
        from training.gate import VersionNotFound

        try:
            verdict = gate_report(client, args.model_name, args.experiment, run.run_id, before).summary(args.model_name)
            exit_code = 0
        except VersionNotFound as error:
            verdict, exit_code = str(error), 1
        report = f"training job run {run.run_id} {run.state}; {verdict}"
    print(report, file=sys.stderr if exit_code else sys.stdout)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(f"### Model build\n\n{report}\n")
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
