"""The seam between this project and a team's model: what a model module declares, and the one way to load it.

A model module (`models/<name>.py`, where <name> is the stack files' `name` with `-` as `_`) declares:

    CONTRACT      a Contract: a row's features (numbers with their ranges, categories with their values), the target
                  and the task it makes (binary, multiclass, regression), the columns that identify a row and the
                  columns that hold personal data
    build         build(params, seed) -> an unfitted scikit-learn estimator (usually a Pipeline of
                  training.features.standard_features(CONTRACT) and the estimator)
    SEARCH        the search space, {parameter: [values, ...]}: every combination is fitted on the training rows and
                  the best on the validation rows by the gate's metric wins ({} fits build({}, seed) once)
    GATE          a Gate: the metric (a scikit-learn scorer name, or a Metric of the team's own with its direction),
                  the floor a new version must reach and how much worse than the champion it may be
    example_data  optional, example_data(rows, seed) -> a table that follows the contract (what `make local` trains
                  on when no DATA= is given)

Everything else (train, register, gate, package, serve, watch, deploy) calls these and never names a column.
The contract travels with every registered version as `extra_files/contract.json` (`Contract.to_dict`), so the
scoring image, the batch job and the drift job read it from the model, not from this repository.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

CONTRACT_FILE = "contract.json"  # in the version's extra_files/
FORMAT_VERSION = 1
Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
# Columns the batch job and the request log write beside a row's ids and outputs (serving/batch.py): a column of the
# model by one of these names would collide with them.
RESERVED = ("probability", "probabilities", "label", "prediction", "model_name", "model_version", "scoring_run_id",
            "scored_at", "reject_reason", "record")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MODELS_PACKAGE = "models"


class ContractError(ValueError):
    """A model module or its contract is not what the project can use; the message names the module and what to fix."""


@dataclass(frozen=True)
class Number:
    """A numeric feature. Bounds are checked on the training table (and, with them, documented in the API)."""
    name: str
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    greater_than: float | None = None  # exclusive
    less_than: float | None = None  # exclusive
    description: str = ""

    kind = "number"

    def problem(self, value: float) -> str | None:
        """Why `value` breaks this column's bounds, or None."""
        for bound, holds, words in ((self.minimum, lambda b: value >= b, "at least"),
                                    (self.maximum, lambda b: value <= b, "at most"),
                                    (self.greater_than, lambda b: value > b, "greater than"),
                                    (self.less_than, lambda b: value < b, "less than")):
            if bound is not None and not holds(bound):
                return f"must be {words} {bound:g}"
        return None

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "minimum": self.minimum, "maximum": self.maximum,
                "greater_than": self.greater_than, "less_than": self.less_than, "description": self.description}


@dataclass(frozen=True)
class Category:
    """A text feature. With `values`, anything else in the training table is an error (a typo trains a wrong model),
    and the scoring API refuses any other value unless the column is `open` (new values are expected, as a merchant
    name: the model scores an unseen one as it was trained to, by the one-hot encoder's unknown-value rule)."""
    name: str
    values: tuple[str, ...] | None = None
    description: str = ""
    open: bool = False

    kind = "category"

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "values": list(self.values) if self.values is not None else None,
                "description": self.description, "open": self.open}


Feature = Number | Category


@dataclass(frozen=True)
class Target:
    """What the model predicts. `classes` for a classifier, in order (binary: the negative class, then the positive
    one, whose probability /predict answers); none for a regressor. `description` says what a prediction means."""
    name: str
    task: Task
    classes: tuple[Any, ...] | None = None
    description: str = ""

    @property
    def positive(self) -> Any:
        return self.classes[1] if self.task == "binary" and self.classes else None

    def as_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "classes": list(self.classes) if self.classes else None,
                "description": self.description}


@dataclass(frozen=True)
class Contract:
    """One row of the model's table: its features, its target, the ids that identify it, what is personal."""
    features: tuple[Feature, ...]
    target: Target
    ids: tuple[str, ...] = ()
    personal: tuple[str, ...] = ()
    description: str = ""
    slices: tuple[str, ...] = ()  # categories whose values model quality is also reported by (monitoring/quality.py)

    def __post_init__(self) -> None:
        problems = list(_contract_problems(self))
        if problems:
            raise ContractError("; ".join(problems))

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numbers(self) -> list[Number]:
        return [f for f in self.features if isinstance(f, Number)]

    @property
    def categories(self) -> list[Category]:
        return [f for f in self.features if isinstance(f, Category)]

    @property
    def task(self) -> Task:
        return self.target.task

    def to_dict(self, gate: Gate | None = None) -> dict:
        """The JSON form every registered version carries (extra_files/contract.json)."""
        return {"format_version": FORMAT_VERSION, "description": self.description, "target": self.target.as_dict(),
                "ids": list(self.ids), "personal": list(self.personal), "slices": list(self.slices),
                "features": [f.as_dict() for f in self.features], "gate": gate.as_dict() if gate else None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Contract:
        features: list[Feature] = []
        for item in raw["features"]:
            if item["kind"] == "number":
                features.append(Number(item["name"], item.get("minimum"), item.get("maximum"), item.get("greater_than"),
                                       item.get("less_than"), item.get("description", "")))
            else:
                values = item.get("values")
                features.append(Category(item["name"], tuple(values) if values is not None else None,
                                         item.get("description", ""), bool(item.get("open", False))))
        target = raw["target"]
        return cls(tuple(features), Target(target["name"], target["task"],
                                           tuple(target["classes"]) if target.get("classes") else None,
                                           target.get("description", "")),
                   tuple(raw.get("ids", ())), tuple(raw.get("personal", ())), raw.get("description", ""),
                   tuple(raw.get("slices", ())))


def _contract_problems(contract: Contract):
    names = [*contract.feature_names, contract.target.name, *contract.ids]
    if not contract.features:
        yield "CONTRACT declares no features"
    for name in names:
        if not NAME.fullmatch(name):
            yield f"column name {name!r} must be letters, digits and '_' (a SQL and JSON identifier)"
        if name in RESERVED:
            yield f"column name {name!r} is one the batch job and the request log write themselves ({', '.join(RESERVED)})"
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        yield f"each column is a feature, the target or an id, once: {', '.join(duplicates)} appear more than once"
    unknown = [n for n in contract.personal if n not in names]
    if unknown:
        yield f"personal names {', '.join(unknown)}, which are not columns of the contract"
    categories = {c.name for c in contract.categories}
    not_categories = [n for n in contract.slices if n not in categories]
    if not_categories:
        yield (f"slices names {', '.join(not_categories)}: a slice is a category of the contract "
               f"({', '.join(sorted(categories)) or 'it has none'})")
    for number in contract.numbers:
        low = max((b for b in (number.minimum, number.greater_than) if b is not None), default=-math.inf)
        high = min((b for b in (number.maximum, number.less_than) if b is not None), default=math.inf)
        if low >= high:
            yield f"column {number.name!r} has bounds that admit no value"
    for category in contract.categories:
        if category.values is not None and (not category.values or len(set(category.values)) != len(category.values)
                                            or not all(isinstance(v, str) and v for v in category.values)):
            yield f"column {category.name!r}: values must be distinct, non-empty strings"
    target = contract.target
    if target.task not in TASKS:
        yield f"the target's task is {target.task!r}; allowed values: {', '.join(TASKS)}"
    elif target.task == "regression" and target.classes:
        yield "a regression target has no classes"
    elif target.task == "binary" and (not target.classes or len(target.classes) != 2):
        yield "a binary target names its two classes, negative first: classes=(0, 1)"
    elif target.task == "multiclass" and (not target.classes or len(target.classes) < 3):
        yield "a multiclass target names its classes (three or more; two make a binary target)"
    elif target.classes and len(set(target.classes)) != len(target.classes):
        yield "the target's classes must be distinct"


# ---- the gate's metric ----

# The range of scikit-learn's scorers, by name (their sign applied: a `neg_` scorer is a negated loss, so <= 0).
SCORER_BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("accuracy", "balanced_accuracy", "average_precision", "roc_auc", "roc_auc_ovr", "roc_auc_ovo",
                     "roc_auc_ovr_weighted", "roc_auc_ovo_weighted", "f1", "f1_macro", "f1_micro", "f1_weighted",
                     "precision", "precision_macro", "precision_micro", "precision_weighted", "recall",
                     "recall_macro", "recall_micro", "recall_weighted", "jaccard", "jaccard_macro", "jaccard_micro",
                     "jaccard_weighted", "top_k_accuracy"), (0.0, 1.0)),
    "matthews_corrcoef": (-1.0, 1.0),
    **dict.fromkeys(("r2", "explained_variance", "d2_absolute_error_score", "d2_brier_score", "d2_log_loss_score"),
                    (-math.inf, 1.0)),
}


@dataclass(frozen=True)
class Metric:
    """The gate's measure of a model on held-out rows. A scikit-learn scorer by name (`Metric.of("roc_auc")`; its
    direction and range known), or a function of the team's own: function(y_true, response) where the response is
    the predictions ("predict") or the probabilities ("proba": a binary model's of the positive class)."""
    name: str
    function: Callable[[Any, Any], float] | None = None
    greater_is_better: bool = True
    bounds: tuple[float, float] = (-math.inf, math.inf)
    needs: Literal["predict", "proba"] = "predict"

    @classmethod
    def of(cls, name: str) -> Metric:
        from sklearn.metrics import get_scorer_names

        if name not in get_scorer_names():
            raise ContractError(f"GATE metric {name!r} is not a scikit-learn scorer name (sklearn.metrics."
                                f"get_scorer_names()); for a function of your own, give Metric(name, function, ...)")
        low, high = SCORER_BOUNDS.get(name, (-math.inf, 0.0) if name.startswith("neg_") else (-math.inf, math.inf))
        return cls(name, None, True, (low, high))

    def score(self, model: Any, features: Any, target: Any) -> float:
        if self.function is None:
            from sklearn.metrics import get_scorer

            return float(get_scorer(self.name)(model, features, target))
        if self.needs == "proba":
            proba = model.predict_proba(features)
            response = proba[:, 1] if proba.shape[1] == 2 else proba
        else:
            response = model.predict(features)
        return float(self.function(target, response))

    def better(self, a: float, b: float) -> bool:
        return a > b if self.greater_is_better else a < b

    def as_dict(self) -> dict:
        return {"name": self.name, "greater_is_better": self.greater_is_better,
                "bounds": [_json_number(b) for b in self.bounds], "needs": self.needs,
                "scorer": self.function is None}


def _json_number(value: float) -> float | None:
    return None if math.isinf(value) else value


@dataclass(frozen=True)
class Gate:
    """A new version becomes champion when its metric on the held-out rows reaches `floor` (at least it where greater
    is better, at most it where lower is) and is no worse than the champion's by more than `tolerance`."""
    metric: Metric | str
    floor: float
    tolerance: float = 0.01
    measure: Metric = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        measure = Metric.of(self.metric) if isinstance(self.metric, str) else self.metric
        object.__setattr__(self, "measure", measure)
        low, high = measure.bounds
        if not low <= self.floor <= high:
            raise ContractError(f"GATE floor {self.floor:g} is outside {measure.name}'s range "
                                f"{_show(low)}..{_show(high)}")
        width = high - low
        if not 0 <= self.tolerance <= (width if math.isfinite(width) else math.inf):
            raise ContractError(f"GATE tolerance {self.tolerance:g} must be 0 or more (and within {measure.name}'s "
                                "range)")

    @property
    def name(self) -> str:
        return self.measure.name

    def reaches_floor(self, value: float) -> bool:
        return value >= self.floor if self.measure.greater_is_better else value <= self.floor

    def within_tolerance(self, challenger: float, champion: float) -> bool:
        if self.measure.greater_is_better:
            return challenger >= champion - self.tolerance
        return challenger <= champion + self.tolerance

    def with_overrides(self, floor: float | None, tolerance: float | None) -> Gate:
        """The same metric with another floor or tolerance (the train and gate commands' --gate-floor/-tolerance)."""
        return Gate(self.measure, self.floor if floor is None else floor,
                    self.tolerance if tolerance is None else tolerance)

    def as_dict(self) -> dict:
        return {"metric": self.measure.as_dict(), "floor": self.floor, "tolerance": self.tolerance}


def _show(value: float) -> str:
    return "-inf" if value == -math.inf else "inf" if value == math.inf else f"{value:g}"


# ---- the model module ----

@dataclass(frozen=True)
class ModelModule:
    """A loaded model module: what training, the gate and the jobs call."""
    module: str
    contract: Contract
    build: Callable[[dict, int], Any]
    search: dict[str, list]
    gate: Gate
    example_data: Callable[[int, int], Any] | None

    def grid(self) -> list[dict]:
        """Every combination of the search space, in one fixed order (ties go to the earliest, whoever runs them)."""
        import itertools

        return [dict(zip(self.search, values, strict=True)) for values in itertools.product(*self.search.values())]


def module_for(name: str) -> str:
    """The model module of a project name: `credit-default` -> models.credit_default."""
    return f"{MODELS_PACKAGE}.{name.replace('-', '_')}"


def load(module: str) -> ModelModule:
    """Import a model module (dotted name, or a project name) and check what it declares."""
    if "." not in module:
        module = module_for(module)
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            raise ContractError(f"no model module {module} (models/{module.split('.')[-1]}.py): write one, "
                                "docs/bring-your-own-model.md says how") from None
        raise
    return ModelModule(module, _attribute(loaded, "CONTRACT", Contract), _callable(loaded, "build"),
                       _search(loaded), _attribute(loaded, "GATE", Gate), getattr(loaded, "example_data", None))


def _attribute(module: ModuleType, name: str, kind: type) -> Any:
    value = getattr(module, name, None)
    if not isinstance(value, kind):
        raise ContractError(f"{module.__name__}: {name} must be a {kind.__name__} "
                            f"(got {type(value).__name__ if value is not None else 'nothing'})")
    return value


def _callable(module: ModuleType, name: str) -> Callable:
    value = getattr(module, name, None)
    if not callable(value):
        raise ContractError(f"{module.__name__}: {name}(params, seed) must be a function that returns an estimator")
    return value


def _search(module: ModuleType) -> dict[str, list]:
    value = getattr(module, "SEARCH", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, list | tuple) and v
                                              for k, v in value.items()):
        raise ContractError(f"{module.__name__}: SEARCH must map each parameter name to a non-empty list of values")
    return {k: list(v) for k, v in value.items()}
