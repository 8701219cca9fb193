"""A model's example table: what its module's `example_data` makes, written as CSV or Parquet and checked against
its contract before anything trains on it.

    python -m training.data --model credit-default --rows 20000 --seed 7 --out .local/data/credit-default.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from training import contract as contracts
from training.contract import ContractError, ModelModule
from training.loader import validate_frame


def example_table(model: ModelModule, rows: int, seed: int) -> pd.DataFrame:
    """`rows` rows from the model module's example_data, checked against its contract (a generator that breaks
    its own contract is a bug of the module, said as such)."""
    if model.example_data is None:
        raise ContractError(f"{model.module} has no example_data(rows, seed): give your own table (make local DATA=...)")
    frame = model.example_data(rows, seed)
    validate_frame(frame, model.contract)
    return frame


def write_table(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix in {".parquet", ".pq"}:
        frame.to_parquet(out, index=False)
    else:
        raise ValueError(f"--out must end in .csv or .parquet, got '{out.name}'")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the project name or model module (credit-default)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="a .csv or .parquet path")
    args = parser.parse_args(argv)
    model = contracts.load(args.model)
    frame = example_table(model, args.rows, args.seed)
    write_table(frame, args.out)
    print(f"wrote {len(frame)} rows of {model.module}'s example data to {args.out} (seed {args.seed})")


if __name__ == "__main__":
    main()
