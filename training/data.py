"""Seeded generator of a realistic credit-card default table (the real table is not shipped).

Each holder has a hidden risk score. It drives the repayment history (delays persist from month
to month), card utilisation, how much of each bill gets paid, and finally the default. The
model never sees the risk score, only its traces, which is what gives the table real but
imperfect signal. Month 1 is the most recent month, month 6 the oldest.

    python -m training.data --rows 20000 --seed 7 --out .local/data/credit.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from training import schema

MISSING_RATE = 0.02
# Columns where real extracts have gaps: demographics typed by hand and a few statement months.
COLUMNS_WITH_GAPS = (
    "education",
    "marriage",
    "age",
    "bill_amount_3",
    "bill_amount_5",
    "payment_amount_2",
    "payment_amount_4",
)


def _status_label(code: int) -> str:
    if code == -2:
        return "no_consumption"
    if code == -1:
        return "duly_paid"
    if code == 0:
        return "no_delay"
    return f"delay_{code}_month{'s' if code > 1 else ''}"


def generate(rows: int, seed: int) -> pd.DataFrame:
    """Return `rows` card holders following the data contract in `training.schema`."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)

    sex = rng.choice(schema.SEX_VALUES, size=rows, p=[0.6, 0.4])
    education = rng.choice(schema.EDUCATION_VALUES, size=rows, p=[0.35, 0.47, 0.16, 0.02])
    marriage = rng.choice(schema.MARRIAGE_VALUES, size=rows, p=[0.45, 0.53, 0.02])
    married = marriage == "married"
    age = np.where(married, rng.normal(41, 9, rows), rng.normal(31, 8, rows))
    age = np.clip(np.round(age), 21, 79)

    education_rank = pd.Series(education).map(
        {"graduate_school": 0.0, "university": 1.0, "high_school": 2.0, "other": 1.5}
    ).to_numpy()
    risk = rng.normal(0, 1, rows) + 0.25 * education_rank - 0.015 * (age - 35) + 0.1 * (sex == "male")

    credit_limit = np.exp(11.6 - 0.25 * education_rank + 0.012 * (age - 35) - 0.35 * risk
                          + rng.normal(0, 0.55, rows))
    credit_limit = np.clip(np.round(credit_limit / 10_000) * 10_000, 10_000, 1_000_000)

    # Repayment history: an autocorrelated latent delay, oldest month first.
    status = np.zeros((rows, 6), dtype=int)
    latent = rng.normal(0, 1, rows) * 0.8 + 0.7 * risk
    for month in range(6, 0, -1):
        latent = 0.75 * latent + 0.45 * risk + rng.normal(0, 0.55, rows)
        code = np.where(latent < -0.6, -1, np.where(latent < 1.3, 0, np.ceil((latent - 1.3) / 0.5)))
        code = np.where((code == -1) & (rng.random(rows) < 0.25), -2, code)
        status[:, month - 1] = np.clip(code, -2, 9)

    # Utilisation drifts slowly; riskier holders run their cards fuller.
    utilisation = np.clip(rng.beta(2, 3, rows) + 0.12 * risk, 0.0, 1.1)
    bills = np.zeros((rows, 6))
    for month in range(6, 0, -1):
        utilisation = np.clip(utilisation + rng.normal(0, 0.06, rows), -0.05, 1.2)
        bill = credit_limit * utilisation
        bill = np.where(status[:, month - 1] == -2, 0.0, bill)
        bills[:, month - 1] = np.round(bill)

    # Payment in month m settles (part of) the bill of month m+1.
    payments = np.zeros((rows, 6))
    for month in range(1, 7):
        previous_bill = bills[:, month] if month < 6 else bills[:, 5] * rng.uniform(0.8, 1.2, rows)
        code = status[:, month - 1]
        share = np.where(code <= -1, rng.uniform(0.85, 1.0, rows),
                         np.where(code == 0, rng.beta(1.5, 8, rows), rng.beta(1, 30, rows)))
        payments[:, month - 1] = np.round(np.clip(previous_bill, 0, None) * share)

    recent_delay = np.clip(status[:, 0], 0, None) + 0.5 * np.clip(status[:, 1], 0, None)
    pay_ratio = payments[:, 0] / np.maximum(bills[:, 1], 1.0)
    logit = (-2.6 + 0.55 * recent_delay + 1.1 * np.clip(bills[:, 0] / credit_limit, -0.1, 1.2)
             - 0.9 * np.clip(pay_ratio, 0, 1) + 0.45 * risk + rng.normal(0, 0.6, rows))
    default = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)

    frame = pd.DataFrame({"sex": sex, "education": education, "marriage": marriage})
    for month in schema.MONTHS:
        frame[f"repayment_status_{month}"] = [_status_label(c) for c in status[:, month - 1]]
    frame["credit_limit"] = credit_limit
    frame["age"] = age
    for month in schema.MONTHS:
        frame[f"bill_amount_{month}"] = bills[:, month - 1]
    for month in schema.MONTHS:
        frame[f"payment_amount_{month}"] = payments[:, month - 1]
    frame[schema.TARGET] = default

    for column in COLUMNS_WITH_GAPS:
        frame.loc[rng.random(rows) < MISSING_RATE, column] = None
    return frame[[*schema.FEATURES, schema.TARGET]]


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
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="a .csv or .parquet path")
    args = parser.parse_args(argv)
    frame = generate(args.rows, args.seed)
    write_table(frame, args.out)
    rate = frame[schema.TARGET].mean()
    print(f"wrote {len(frame)} rows to {args.out} (default rate {rate:.1%}, seed {args.seed})")


if __name__ == "__main__":
    main()
