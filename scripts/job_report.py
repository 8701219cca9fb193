"""Run the staging stack's Databricks training job (train -> gate), wait for it, and say whether the gate
moved @champion. Used by .github/workflows/model-build.yml.

    python -m scripts.job_report --job-id 123 --model-name staging.credit.credit_default \\
        --experiment /credit-default/staging/credit-default-staging [--tracking-uri databricks --registry-uri databricks-uc]

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
from dataclasses import dataclass
from datetime import timedelta

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
    return JobRun(run.run_id, result == RunResultState.SUCCESS,
                  f"{state.life_cycle_state.value if state and state.life_cycle_state else '?'}/"
                  f"{result.value if result else '?'}", run.run_page_url or "")


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


def main(argv: list[str] | None = None, runner=run_job) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--model-name", required=True, help="registered model (catalog.schema.name with Unity Catalog)")
    parser.add_argument("--experiment", required=True, help="the job's MLflow experiment (stack output databricks_experiment)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "databricks"))
    parser.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI", "databricks-uc"))
    parser.add_argument("--timeout-minutes", type=float, default=120)
    args = parser.parse_args(argv)
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
