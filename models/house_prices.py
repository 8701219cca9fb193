"""House prices: what will a listed house sell for? The second example model this project ships.

A regressor on one row per sold listing: the house (type, area, rooms, year built, energy label, garden), where it
is (neighbourhood, distance to the centre) and the price it sold for. It differs from credit-default on purpose: a
regressor, a linear estimator, and a gate on a metric of its own where lower is better (the mean absolute
percentage error). `example_data` makes a realistic table; `make local MODEL=house-prices` trains and serves it.

The places a team changes to bring its own model are marked `EDIT:` (docs/bring-your-own-model.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_percentage_error
from sklearn.pipeline import Pipeline

from training.contract import Category, Contract, Gate, Metric, Number, Target
from training.features import standard_features

# Price per square metre by neighbourhood (euros), the generator's ground truth.
NEIGHBOURHOODS = {"centrum": 6200, "oud_west": 5600, "de_pijp": 5900, "oost": 4800, "noord": 3900, "west": 4300,
                  "zuidoost": 3200, "nieuw_west": 3500}
PROPERTY_TYPES = ("apartment", "terraced", "semi_detached", "detached")
ENERGY_LABELS = ("A", "B", "C", "D", "E", "F", "G")

# EDIT: the data contract.
CONTRACT = Contract(
    description="one sold house listing",
    target=Target("sale_price", task="regression", description="the price the house sold for, in euros"),
    features=(
        Category("neighbourhood", tuple(NEIGHBOURHOODS), description="where the house is"),
        Category("property_type", PROPERTY_TYPES),
        Category("energy_label", ENERGY_LABELS, description="EU energy label, A (best) to G"),
        Number("area_m2", minimum=10, maximum=2000, description="living area in square metres"),
        Number("rooms", minimum=1, maximum=40),
        Number("year_built", minimum=1600, maximum=2100),
        Number("distance_to_centre_km", minimum=0, maximum=200),
        Number("garden_m2", minimum=0, maximum=100_000, description="0 when the house has no garden"),
    ),
    ids=("listing_id",),
    personal=(),  # a listing holds no personal data
    slices=("property_type",),  # model quality is also reported per type of property
)

# EDIT: the search space: the ridge penalty.
SEARCH = {"alpha": [0.1, 1.0, 10.0]}


# EDIT: the estimator.
def build(params: dict, seed: int) -> Pipeline:
    return Pipeline([("features", standard_features(CONTRACT)), ("regressor", Ridge(random_state=seed, **params))])


# EDIT: the gate, here on a function of our own where lower is better: a new version must sell-price within 20 %
# on average (MAPE at most 0.20), and be at most 0.01 worse than the champion.
GATE = Gate(metric=Metric("mape", mean_absolute_percentage_error, greater_is_better=False, bounds=(0.0, float("inf"))),
            floor=0.20, tolerance=0.01)


# ---- example data ----

def example_data(rows: int, seed: int) -> pd.DataFrame:
    """`rows` sold listings following CONTRACT, with a listing_id. The price is the neighbourhood's price per square
    metre times the area, adjusted for the type, energy label, age, distance and garden, with 8 % noise; a few
    percent of the year built and garden values are missing, as in listings typed by hand."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    neighbourhood = rng.choice(list(NEIGHBOURHOODS), size=rows, p=[0.08, 0.12, 0.1, 0.16, 0.14, 0.14, 0.12, 0.14])
    kind = rng.choice(PROPERTY_TYPES, size=rows, p=[0.55, 0.25, 0.12, 0.08])
    typical_area = pd.Series(kind).map({"apartment": 72, "terraced": 115, "semi_detached": 140, "detached": 185})
    area = np.clip(np.round(rng.normal(typical_area.to_numpy(), 0.25 * typical_area.to_numpy())), 18, 900)
    rooms = np.clip(np.round(area / 28 + rng.normal(0, 0.7, rows)), 1, 20)
    year = np.clip(np.round(rng.normal(1965, 35, rows)), 1700, 2025)
    label_index = np.clip(np.round((2025 - year) / 25 + rng.normal(0, 1, rows)), 0, 6).astype(int)
    distance = np.round(np.clip(rng.gamma(2.0, 2.5, rows), 0.2, 60), 1)
    garden = np.where(kind == "apartment", np.where(rng.random(rows) < 0.1, np.round(rng.gamma(2, 8, rows)), 0.0),
                      np.round(rng.gamma(2.5, 30, rows)))

    per_m2 = pd.Series(neighbourhood).map(NEIGHBOURHOODS).to_numpy()
    kind_factor = pd.Series(kind).map({"apartment": 1.0, "terraced": 0.95, "semi_detached": 1.02, "detached": 1.12})
    price = (per_m2 * area * kind_factor.to_numpy() * (1.06 - 0.035 * label_index) * (1 - 0.008 * distance)
             + 180 * garden + 25_000)
    price = np.round(price * rng.normal(1.0, 0.08, rows), -3)

    frame = pd.DataFrame({"listing_id": np.arange(1, rows + 1, dtype=np.int64), "neighbourhood": neighbourhood,
                          "property_type": kind, "energy_label": np.asarray(ENERGY_LABELS)[label_index],
                          "area_m2": area, "rooms": rooms, "year_built": year, "distance_to_centre_km": distance,
                          "garden_m2": garden, "sale_price": price})
    for column in ("year_built", "garden_m2", "energy_label"):
        frame.loc[rng.random(rows) < 0.02, column] = None
    return frame[[*CONTRACT.ids, *CONTRACT.feature_names, CONTRACT.target.name]]
