"""The validation gate: a new version becomes `challenger`; it becomes `champion` only if it is good enough on its own
(the model module's GATE: its metric reaches the floor) and not worse than the current champion by more than the
tolerance, both scored on the same held-out rows.

    python -m training.gate --model-module models.credit_default --model-name credit-default --version 3
    mlops-gate --model-module models.credit_default --model-name main.credit.credit_default \
        --experiment /Shared/credit-default --job-run-id 123

The training entry point calls `run_gate` directly; this CLI (the job wheel's `mlops-gate`) is the second task of
the Databricks job (train -> gate) and re-gates any version by hand. In the job it finds the version by the job run
id that both tasks receive (`{{job.run_id}}`): task values cannot carry it, because only notebooks can set them, and
the newest version may be another run's.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training import contract as contracts
from training.contract import Gate, ModelModule
from training.loader import load_table
from training.search import features_of, split, target_of

CHAMPION = "champion"
CHALLENGER = "challenger"
JOB_RUN_TAG = "databricks_job_run_id"  # on the training run and the model version: which job run made it


@dataclass(frozen=True)
class GateDecision:
    version: str
    promoted: bool
    reason: str
    metric: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None

    def summary(self) -> str:
        verdict = "PROMOTED to @champion" if self.promoted else "REJECTED (champion unchanged)"
        against = (f"champion v{self.champion_version} {self.metric} {self.champion_score:.4f}"
                   if self.champion_version else "no champion yet")
        return (f"gate: v{self.version} {verdict}: challenger {self.metric} {self.challenger_score:.4f}, "
                f"{against}; {self.reason}")


def decide(challenger: float, champion: float | None, gate: Gate) -> tuple[bool, str]:
    name, floor = gate.name, gate.floor
    if not gate.reaches_floor(challenger):
        side = "below the floor" if gate.measure.greater_is_better else "above the ceiling"
        return False, f"{name} {challenger:.4f} is {side} {floor:.4f}"
    if champion is None:
        return True, f"first model to reach the {'floor' if gate.measure.greater_is_better else 'ceiling'} {floor:.4f}"
    if not gate.within_tolerance(challenger, champion):
        return False, (f"{name} {challenger:.4f} is worse than the champion's {champion:.4f} "
                       f"by more than the tolerance {gate.tolerance:.4f}")
    return True, f"within tolerance {gate.tolerance:.4f} of the champion or better"


def current_champion(client: MlflowClient, model_name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def holdout_score(model_uri: str, holdout: pd.DataFrame, model: ModelModule, gate: Gate | None = None) -> float:
    """The gate's metric of the version at `model_uri` on the held-out rows."""
    loaded = mlflow.sklearn.load_model(model_uri)
    return (gate or model.gate).measure.score(loaded, features_of(holdout, model.contract),
                                              target_of(holdout, model.contract))


def run_gate(client: MlflowClient, model_name: str, version: str, holdout: pd.DataFrame, model: ModelModule,
             gate: Gate | None = None) -> GateDecision:
    """Judge `version` against the champion on `holdout` by `gate` (default: the model module's GATE)."""
    gate, version = gate or model.gate, str(version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    challenger = holdout_score(f"models:/{model_name}/{version}", holdout, model, gate)
    champion_version = current_champion(client, model_name)
    if champion_version == version:
        champion_version = None  # re-gating the champion itself: judge it on the floor alone
    champion = holdout_score(f"models:/{model_name}/{champion_version}", holdout, model, gate) if champion_version else None
    promoted, reason = decide(challenger, champion, gate)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    decision = GateDecision(version, promoted, reason, gate.name, challenger, champion_version, champion)
    _record(client, model_name, decision, gate)
    return decision


def _record(client: MlflowClient, model_name: str, decision: GateDecision, gate: Gate) -> None:
    """Log the decision and both scores on the challenger's run and on the model version."""
    run_id = client.get_model_version(model_name, decision.version).run_id
    outcome = "promoted" if decision.promoted else "rejected"
    client.set_model_version_tag(model_name, decision.version, "gate.decision", outcome)
    if run_id is None:  # a version registered from outside a run: the version's tag is the whole record
        return
    client.log_metric(run_id, f"gate_challenger_{gate.name}", decision.challenger_score)
    if decision.champion_score is not None:
        client.log_metric(run_id, f"gate_champion_{gate.name}", decision.champion_score)
    for key, value in {
        "gate.decision": outcome,
        "gate.reason": decision.reason,
        "gate.metric": gate.name,
        "gate.champion_version": decision.champion_version or "none",
        "gate.floor": str(gate.floor),
        "gate.tolerance": str(gate.tolerance),
    }.items():
        client.set_tag(run_id, key, value)


def load_holdout(data: str, model: ModelModule) -> pd.DataFrame:
    """The held-out rows of the training table, read where they live (behind the table's grants): the test split
    of training/search.py, which puts a row in the same split in every run, so no version carries them."""
    return split(load_table(data, model.contract), model.contract).test


def data_of(client: MlflowClient, model_name: str, version: str) -> str:
    """The table (or file) the version was trained on: its training run's dataset input (mlflow.log_input), or its
    `data_source` tag (runs logged before datasets were)."""
    run_id = client.get_model_version(model_name, version).run_id
    run = client.get_run(run_id) if run_id else None
    source = None
    for item in run.inputs.dataset_inputs if run and run.inputs else []:
        if any(tag.key == "mlflow.data.context" and tag.value == "training" for tag in item.tags):
            origin = json.loads(item.dataset.source)
            source = origin.get("delta_table_name") or origin.get("uri")
    source = source or (run.data.tags.get("data_source") if run else None)
    if not source:
        raise VersionNotFound(f"{model_name} v{version}: its run records no data_source; give --data")
    return source


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="sqlite:///path.db locally, 'databricks' on Databricks (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI"),
                        help="'databricks-uc' for Unity Catalog (default: the tracking URI)")
    parser.add_argument("--model-module", required=True, type=model_module,
                        help="the model module (models.<name>, or the project name): its contract, build and GATE")
    parser.add_argument("--model-name", required=True,
                        help="registered model name (catalog.schema.name with Unity Catalog)")


def model_module(value: str) -> ModelModule:
    try:
        return contracts.load(value)
    except contracts.ContractError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_job_run_arg(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument("--job-run-id", type=job_run_id,
                        help="the Databricks job run ({{job.run_id}}): train tags its version with it, the gate finds it by it")


def job_run_id(value: str) -> str:
    """A reference the job did not resolve arrives as the literal `{{...}}`: refuse it rather than match nothing."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"a job run id is a number, got {value!r} (an unresolved dynamic value reference?)")
    return value


class VersionNotFound(LookupError):
    """No version of the model was registered by the given job run."""


def version_of_job_run(client: MlflowClient, model_name: str, experiment: str, run_id: str) -> str:
    """The version the train task of job run `run_id` registered: its MLflow run carries the tag, and a
    version is looked up by run id (the one filter besides the name that Unity Catalog's registry supports; its
    results carry name and version, no tags). A repaired train task keeps {{job.run_id}} and registers again: the
    newest tagged version is the one the repaired run made, and the one to judge."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.{JOB_RUN_TAG} = '{run_id}'") if found else []
    versions = [int(mv.version) for run in runs for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'")
                if mv.name == model_name]
    if not versions:
        raise VersionNotFound(f"job run {run_id} registered no version of {model_name} in experiment {experiment}: "
                              "did its train task succeed?")
    return str(max(versions))


def add_gate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gate-floor", type=float, help="override the model module's GATE floor (in its metric's units)")
    parser.add_argument("--gate-tolerance", type=float, help="override the model module's GATE tolerance")


def gate_of(args: argparse.Namespace) -> Gate:
    """The model module's GATE, with the command line's overrides (checked against the metric's range)."""
    try:
        return args.model_module.gate.with_overrides(args.gate_floor, args.gate_tolerance)
    except contracts.ContractError as error:
        raise SystemExit(f"--gate-floor/--gate-tolerance: {error}") from None


def configure_tracking(tracking_uri: str | None, registry_uri: str | None) -> MlflowClient:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    return MlflowClient()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_gate_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="version to gate (default: the newest)")
    add_job_run_arg(which)
    parser.add_argument("--experiment", help="where --job-run-id's training run is logged")
    parser.add_argument("--data", help="the training table (default: the version's data_source tag); the gate scores "
                                       "its held-out split")
    args = parser.parse_args(argv)
    gate = gate_of(args)
    client = configure_tracking(args.tracking_uri, args.registry_uri)
    if args.job_run_id:
        if not args.experiment:
            parser.error("--job-run-id needs --experiment (where the training run is logged)")
        version = version_of_job_run(client, args.model_name, args.experiment, args.job_run_id)
    else:
        version = args.version or max(
            (mv.version for mv in client.search_model_versions(f"name='{args.model_name}'")), key=int)
    model = args.model_module
    holdout = load_holdout(args.data or data_of(client, args.model_name, version), model)
    decision = run_gate(client, args.model_name, version, holdout, model, gate)
    print(decision.summary())
    return 0


def cli() -> None:
    """The `mlops-gate` entry point (python_wheel_task): argv holds the declared parameters."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
