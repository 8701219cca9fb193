"""The two example models' own data: the generators make tables that look like what they stand for (the tests of
the project's machinery take columns from the contract; these are the examples' own, and name their columns)."""

from __future__ import annotations

import pytest

from models import credit_default, house_prices


@pytest.fixture(scope="module")
def credit():
    return credit_default.example_data(5000, seed=3)


@pytest.fixture(scope="module")
def houses():
    return house_prices.example_data(5000, seed=3)


def test_credit_values_are_plausible(credit):
    assert credit["age"].dropna().between(21, 79).all()
    assert (credit["credit_limit"] > 0).all()
    assert 0.10 < credit["default_payment_next_month"].mean() < 0.40
    assert (credit[[f"payment_amount_{m}" for m in credit_default.MONTHS]].dropna() >= 0).all().all()
    # bill histories are correlated month to month, as real statements are
    assert credit["bill_amount_1"].corr(credit["bill_amount_2"]) > 0.8
    statuses = set(credit[[f"repayment_status_{m}" for m in credit_default.MONTHS]].stack())
    assert {"duly_paid", "no_delay", "delay_2_months"} <= statuses


def test_credit_has_a_few_percent_of_values_missing(credit):
    missing = credit[list(credit_default.COLUMNS_WITH_GAPS)].isna().mean()
    assert ((missing > 0.005) & (missing < 0.05)).all(), missing.to_dict()
    assert credit[["sex", "credit_limit", "default_payment_next_month"]].notna().all().all()


def test_house_prices_follow_area_and_neighbourhood(houses):
    assert houses["sale_price"].between(30_000, 20_000_000).all()
    assert houses["sale_price"].corr(houses["area_m2"]) > 0.6
    per_m2 = (houses["sale_price"] / houses["area_m2"]).groupby(houses["neighbourhood"]).median()
    assert per_m2["centrum"] > per_m2["zuidoost"] * 1.5
    assert (houses.loc[houses["property_type"] == "apartment", "garden_m2"].fillna(0) == 0).mean() > 0.8
