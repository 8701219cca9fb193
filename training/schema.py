"""The credit-card default data contract: one row per card holder.

This module is the single source of truth for column names and types. The loader validates
against it, the pipeline is built from it, and the MLflow signature is derived from it.
"""

from __future__ import annotations

TARGET = "default_payment_next_month"

MONTHS = range(1, 7)

CATEGORICAL: tuple[str, ...] = (
    "sex",
    "education",
    "marriage",
    *(f"repayment_status_{m}" for m in MONTHS),
)

NUMERIC: tuple[str, ...] = (
    "credit_limit",
    "age",
    *(f"bill_amount_{m}" for m in MONTHS),
    *(f"payment_amount_{m}" for m in MONTHS),
)

FEATURES: tuple[str, ...] = CATEGORICAL + NUMERIC

SEX_VALUES = ("female", "male")
EDUCATION_VALUES = ("graduate_school", "university", "high_school", "other")
MARRIAGE_VALUES = ("married", "single", "other")
# Repayment status, as in the public credit-default data: -2 no consumption, -1 paid in full,
# 0 revolving credit (minimum paid, no delay), 1..9 months of delay.
REPAYMENT_VALUES = (
    "no_consumption",
    "duly_paid",
    "no_delay",
    *(f"delay_{k}_month{'s' if k > 1 else ''}" for k in range(1, 10)),
)

AGE_RANGE = (18, 100)
