"""Credit-card default: will a card holder miss next month's payment? The example model this project ships.

A binary classifier on one row per card holder: demographics, the credit limit, and six months of repayment
status, bills and payments. Month 1 is the most recent month, month 6 the oldest. The real table is not shipped:
`example_data` makes a realistic one (see its docstring), which `make local` trains on.

The places a team changes to bring its own model are marked `EDIT:` (docs/bring-your-own-model.md walks
through them); nothing outside this file names these columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from training.contract import Category, Contract, Gate, Number, Target
from training.features import standard_features

MONTHS = range(1, 7)
SEX = ("female", "male")
EDUCATION = ("graduate_school", "university", "high_school", "other")
MARRIAGE = ("married", "single", "other")
# Repayment status, as in the public credit-default data: -2 no consumption, -1 paid in full,
# 0 revolving credit (minimum paid, no delay), 1..9 months of delay.
REPAYMENT_VALUES = ("no_consumption", "duly_paid", "no_delay",
                    *(f"delay_{k}_month{'s' if k > 1 else ''}" for k in range(1, 10)))

# EDIT: the data contract. Every column the model reads, with its type and what values it may take (the loader
# refuses a training table that breaks it), the target and its task, the columns that identify a row (not
# features: the batch job copies them beside each prediction) and those that hold personal data.
CONTRACT = Contract(
    description="one card holder at the end of a month",
    target=Target("default_payment_next_month", task="binary", classes=(0, 1),
                  description="1 when the card holder misses next month's payment"),
    features=(
        Category("sex", SEX),
        Category("education", EDUCATION),
        Category("marriage", MARRIAGE),
        *(Category(f"repayment_status_{m}", REPAYMENT_VALUES, description=f"repayment status {m} month(s) ago")
          for m in MONTHS),
        Number("credit_limit", greater_than=0, description="credit limit of the card"),
        Number("age", minimum=18, maximum=100, description="age in years"),
        *(Number(f"bill_amount_{m}", description=f"statement balance {m} month(s) ago") for m in MONTHS),
        *(Number(f"payment_amount_{m}", description=f"amount paid {m} month(s) ago") for m in MONTHS),
    ),
    ids=("customer_id",),
    personal=("customer_id", "sex", "education", "marriage", "age"),
    # Model quality is also reported per value of these (monitoring/quality.py): last month's repayment status.
    slices=("repayment_status_1",),
)

# EDIT: the search space. Every combination is fitted on the training rows; the best on the validation rows by
# the gate's metric wins. Small on purpose: a handful of fits keeps a training run to seconds on a laptop.
SEARCH = {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]}


# EDIT: the estimator, built from one point of the search space. Plain scikit-learn parts compile to ONNX, the
# fastest way the image serves; anything else is served too (serving/compile.py says which runtime and why).
def build(params: dict, seed: int) -> Pipeline:
    classifier = HistGradientBoostingClassifier(random_state=seed, max_iter=200, l2_regularization=1.0,
                                                early_stopping=False, **params)
    return Pipeline([("features", standard_features(CONTRACT)), ("classifier", classifier)])


# EDIT: the gate. Any scikit-learn scorer name (or a Metric of your own, with its direction); the floor is in the
# metric's own range, the tolerance how much worse than the champion a new version may be on the same rows.
GATE = Gate(metric="roc_auc", floor=0.70, tolerance=0.005)


# ---- example data (a team with its own table has no need of this) ----

MISSING_RATE = 0.02
# Columns where real extracts have gaps: demographics typed by hand and a few statement months.
COLUMNS_WITH_GAPS = ("education", "marriage", "age", "bill_amount_3", "bill_amount_5", "payment_amount_2",
                     "payment_amount_4")


def _status_label(code: int) -> str:
    return REPAYMENT_VALUES[code + 2] if code <= 0 else f"delay_{code}_month{'s' if code > 1 else ''}"


def example_data(rows: int, seed: int) -> pd.DataFrame:
    """`rows` card holders following CONTRACT, with a customer_id. Each holder has a hidden risk score: it drives the
    repayment history (delays persist from month to month), card utilisation, how much of each bill gets paid, and
    finally the default. The model never sees the risk score, only its traces: real but imperfect signal."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    sex = rng.choice(SEX, size=rows, p=[0.6, 0.4])
    education = rng.choice(EDUCATION, size=rows, p=[0.35, 0.47, 0.16, 0.02])
    marriage = rng.choice(MARRIAGE, size=rows, p=[0.45, 0.53, 0.02])
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

    frame = pd.DataFrame({"customer_id": np.arange(1, rows + 1, dtype=np.int64), "sex": sex, "education": education,
                          "marriage": marriage})
    for month in MONTHS:
        frame[f"repayment_status_{month}"] = [_status_label(c) for c in status[:, month - 1]]
    frame["credit_limit"] = credit_limit
    frame["age"] = age
    for month in MONTHS:
        frame[f"bill_amount_{month}"] = bills[:, month - 1]
    for month in MONTHS:
        frame[f"payment_amount_{month}"] = payments[:, month - 1]
    frame[CONTRACT.target.name] = default

    for column in COLUMNS_WITH_GAPS:
        frame.loc[rng.random(rows) < MISSING_RATE, column] = None
    return frame[[*CONTRACT.ids, *CONTRACT.feature_names, CONTRACT.target.name]]
