"""Run the staging stack's Databricks training job (train -> gate), wait for it, and say whether the gate
moved @champion. Used by .github/workflows/model-build.yml.

    python -m scripts.job_report --job-id 123 --model-name staging.credit.credit_default \\
        [--tracking-uri databricks --registry-uri databricks-uc] [--timeout-minutes 120]

Exit 1 when the run does not succeed. The verdict comes from the registry, not from logs: @champion
before and after the run, and the newest version's `gate.decision` tag (set by training/gate.py).
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
    newest_version: str | None
    newest_decision: str

    @property
    def moved(self) -> bool:
        return self.champion_after is not None and self.champion_after != self.champion_before

    def summary(self, model_name: str) -> str:
        if self.moved:
            return (f"gate PROMOTED {model_name} v{self.champion_after} to @champion "
                    f"(was {'v' + self.champion_before if self.champion_before else 'none'})")
        return (f"gate kept @champion at {'v' + self.champion_before if self.champion_before else 'none'}: "
                f"newest version v{self.newest_version} was {self.newest_decision}")


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


def gate_report(client, model_name: str, champion_before: str | None) -> GateReport:
    versions = client.search_model_versions(f"name='{model_name}'")
    newest = max(versions, key=lambda v: int(v.version), default=None)
    decision = (newest.tags or {}).get("gate.decision", "not gated") if newest else "absent"
    return GateReport(champion_before, champion(client, model_name), str(newest.version) if newest else None, decision)


def main(argv: list[str] | None = None, runner=run_job) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--model-name", required=True, help="registered model (catalog.schema.name with Unity Catalog)")
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
        report = f"training job run {run.run_id} {run.state}; " + gate_report(client, args.model_name, before).summary(
            args.model_name)
        exit_code = 0
    print(report, file=sys.stderr if exit_code else sys.stdout)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(f"### Model build\n\n{report}\n")
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
