"""The validation gate: a new version becomes `challenger`; it becomes `champion` only if it is good
enough on its own (ROC-AUC floor) and not worse than the current champion by more than a tolerance,
both scored on the same held-out rows.

    python -m training.gate --model-name credit-default --version 3
    credit-gate --model-name main.credit.credit_default --experiment /Shared/credit-default --job-run-id 123

The training entry point calls `run_gate` directly; this CLI (the job wheel's `credit-gate`) is the
second task of the Databricks job (train -> gate) and re-gates any version by hand. In the job it finds
the version by the job run id that both tasks receive (`{{job.run_id}}`): task values cannot carry it,
because only notebooks can set them, and the newest version may be another run's.
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
from sklearn.metrics import roc_auc_score

from training import schema
from training.loader import load_table
from training.pipeline import positive_proba, split

CHAMPION = "champion"
CHALLENGER = "challenger"
JOB_RUN_TAG = "databricks_job_run_id"  # on the training run and the model version: which job run made it


@dataclass(frozen=True)
class GatePolicy:
    floor: float = 0.70
    tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not 0.5 <= self.floor <= 1.0:
            raise ValueError(f"gate floor must be between 0.5 and 1.0, got {self.floor}")
        if not 0.0 <= self.tolerance <= 0.5:
            raise ValueError(f"gate tolerance must be between 0 and 0.5, got {self.tolerance}")


@dataclass(frozen=True)
class GateDecision:
    version: str
    promoted: bool
    reason: str
    challenger_roc_auc: float
    champion_version: str | None
    champion_roc_auc: float | None

    def summary(self) -> str:
        verdict = "PROMOTED to @champion" if self.promoted else "REJECTED (champion unchanged)"
        against = (f"champion v{self.champion_version} ROC-AUC {self.champion_roc_auc:.4f}"
                   if self.champion_version else "no champion yet")
        return (f"gate: v{self.version} {verdict}: challenger ROC-AUC {self.challenger_roc_auc:.4f}, "
                f"{against}; {self.reason}")


def decide(challenger_auc: float, champion_auc: float | None, policy: GatePolicy) -> tuple[bool, str]:
    if challenger_auc < policy.floor:
        return False, f"ROC-AUC {challenger_auc:.4f} is below the floor {policy.floor:.4f}"
    if champion_auc is None:
        return True, f"first model to clear the floor {policy.floor:.4f}"
    if challenger_auc < champion_auc - policy.tolerance:
        return False, (f"ROC-AUC {challenger_auc:.4f} is worse than the champion's {champion_auc:.4f} "
                       f"by more than the tolerance {policy.tolerance:.4f}")
    return True, f"within tolerance {policy.tolerance:.4f} of the champion or better"


def current_champion(client: MlflowClient, model_name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def holdout_auc(model_uri: str, holdout: pd.DataFrame) -> float:
    model = mlflow.sklearn.load_model(model_uri)
    return float(roc_auc_score(holdout[schema.TARGET], positive_proba(model, holdout)))


def run_gate(client: MlflowClient, model_name: str, version: str, holdout: pd.DataFrame,
             policy: GatePolicy) -> GateDecision:
    version = str(version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    challenger_auc = holdout_auc(f"models:/{model_name}/{version}", holdout)
    champion_version = current_champion(client, model_name)
    if champion_version == version:
        champion_version = None  # re-gating the champion itself: judge it on the floor alone
    champion_auc = (holdout_auc(f"models:/{model_name}/{champion_version}", holdout)
                    if champion_version else None)
    promoted, reason = decide(challenger_auc, champion_auc, policy)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    decision = GateDecision(version, promoted, reason, challenger_auc, champion_version, champion_auc)
    _record(client, model_name, decision, policy)
    return decision


def _record(client: MlflowClient, model_name: str, decision: GateDecision, policy: GatePolicy) -> None:
    """Log the decision and both scores on the challenger's run and on the model version."""
    run_id = client.get_model_version(model_name, decision.version).run_id
    outcome = "promoted" if decision.promoted else "rejected"
    client.set_model_version_tag(model_name, decision.version, "gate.decision", outcome)
    if run_id is None:  # a version registered from outside a run: the version's tag is the whole record
        return
    client.log_metric(run_id, "gate_challenger_roc_auc", decision.challenger_roc_auc)
    if decision.champion_roc_auc is not None:
        client.log_metric(run_id, "gate_champion_roc_auc", decision.champion_roc_auc)
    for key, value in {
        "gate.decision": outcome,
        "gate.reason": decision.reason,
        "gate.champion_version": decision.champion_version or "none",
        "gate.floor": str(policy.floor),
        "gate.tolerance": str(policy.tolerance),
    }.items():
        client.set_tag(run_id, key, value)


def load_holdout(data: str) -> pd.DataFrame:
    """The held-out rows of the training table, read where they live (behind the table's grants): the test split
    of training/pipeline.py, which puts a row in the same split in every run, so no version carries them."""
    return split(load_table(data)).test


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


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="sqlite:///path.db locally, 'databricks' on Databricks (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI"),
                        help="'databricks-uc' for Unity Catalog (default: the tracking URI)")
    parser.add_argument("--model-name", required=True,
                        help="registered model name (catalog.schema.name with Unity Catalog)")


def add_job_run_arg(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument("--job-run-id", type=job_run_id,
                        help="the Databricks job run ({{job.run_id}}): train tags its version with it, the gate finds it by it")


def job_run_id(value: str) -> str:
    """A reference the job did not resolve arrives as the literal `{{...}}`: refuse it rather than match nothing."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"a job run id is a number, got {value!r} (an unresolved dynamic value reference?)")
    return value


class VersionNotFound(LookupError):
    """No version, or more than one, of the model was registered by the given job run."""


def version_of_job_run(client: MlflowClient, model_name: str, experiment: str, run_id: str) -> str:
    """The version the train task of job run `run_id` registered: its MLflow run carries the tag, and a
    version is looked up by run id (the one filter besides the name that Unity Catalog's registry supports)."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.{JOB_RUN_TAG} = '{run_id}'") if found else []
    versions = [mv for run in runs for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'")
                if mv.name == model_name]
    if len(versions) != 1:
        raise VersionNotFound(f"job run {run_id} registered {len(versions)} version(s) of {model_name} in experiment "
                              f"{experiment} (expected exactly 1): did its train task succeed?")
    return str(versions[0].version)


def add_gate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gate-floor", type=float, default=GatePolicy.floor,
                        help="minimum held-out ROC-AUC to become champion")
    parser.add_argument("--gate-tolerance", type=float, default=GatePolicy.tolerance,
                        help="how much worse than the champion a challenger may be and still win")


def configure_tracking(tracking_uri: str | None, registry_uri: str | None) -> MlflowClient:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    return MlflowClient()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tracking_args(parser)
    add_gate_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="version to gate (default: the newest)")
    add_job_run_arg(which)
    parser.add_argument("--experiment", default="credit-default", help="where --job-run-id's training run is logged")
    parser.add_argument("--data", help="the training table (default: the version's data_source tag); the gate scores "
                                       "its held-out split")
    args = parser.parse_args(argv)
    client = configure_tracking(args.tracking_uri, args.registry_uri)
    if args.job_run_id:
        version = version_of_job_run(client, args.model_name, args.experiment, args.job_run_id)
    else:
        version = args.version or max(
            (mv.version for mv in client.search_model_versions(f"name='{args.model_name}'")), key=int)
    holdout = load_holdout(args.data or data_of(client, args.model_name, version))
    decision = run_gate(client, args.model_name, version, holdout, GatePolicy(args.gate_floor, args.gate_tolerance))
    print(decision.summary())
    return 0


def cli() -> None:
    """The `credit-gate` entry point (python_wheel_task): argv holds the declared parameters."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
