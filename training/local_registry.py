"""A local sqlite MLflow registry holding a champion trained on the model module's example data (or a table given):
what `make plan` and `make bench` need before they can resolve `models:/<name>@champion` (trained once, then
reused)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path


def ensure_champion(state: Path, model_name: str, *, rows: int, seed: int, environment: str, module: str,
                    table: Path | None = None, say: Callable[[str], None] = print) -> tuple[str, str]:
    """(tracking URI, champion version) of the registry under `state`, training `module`'s model on `table` (default:
    its example data) if the registry has none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    state.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{state / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        return uri, str(client.get_model_version_by_alias(model_name, "champion").version)
    except MlflowException:
        pass
    from training import contract, data
    from training import train as training

    model = contract.load(module)
    if table is None:
        if model.example_data is None:
            raise contract.ContractError(f"{model.module} has no example_data(rows, seed) to train a local champion on: "
                                         "give your table (make plan DATA=your_table.parquet)")
        table = state / "data" / f"{model.module.split('.')[-1]}.parquet"
        if not table.exists():
            data.write_table(data.example_table(model, rows, seed), table)
    say(f"training {model_name} on {table} into {uri} (once)")
    with contextlib.redirect_stdout(io.StringIO()):  # the training log is not this caller's output
        training.main(["--data", str(table), "--tracking-uri", uri, "--model-name", model_name, "--seed", str(seed),
                       "--model-module", model.module,
                       "--artifact-root", (state / "mlartifacts").as_uri(), "--environment", environment])
    return uri, str(client.get_model_version_by_alias(model_name, "champion").version)
