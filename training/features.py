"""The usual preprocessing of a contract's features, for a model module's build() to put in front of its estimator.

Numbers: missing values take the training median (then, with `scale=True`, a standard scaling, which linear models
and their solvers want). Categories: a missing value is the category "missing", then one-hot (a value never seen in
training sets no column). Plain scikit-learn steps on purpose: packaging compiles them to ONNX; without scaling,
into one float matrix and the estimator alone (serving/compile.py), the fastest way it serves.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from training.contract import Contract

MISSING_CATEGORY = "missing"


def standard_features(contract: Contract, scale: bool = False) -> ColumnTransformer:
    parts: list = []
    if contract.numbers:
        impute = SimpleImputer(strategy="median")
        numeric = Pipeline([("impute", impute), ("scale", StandardScaler())]) if scale else impute
        parts.append(("numeric", numeric, [f.name for f in contract.numbers]))
    if contract.categories:
        categorical = Pipeline([
            ("impute", SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING_CATEGORY)),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ])
        parts.append(("categorical", categorical, [f.name for f in contract.categories]))
    return ColumnTransformer(parts)
