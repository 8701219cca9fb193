"""The rows a model learns from and is judged on, and the search over its candidates.

A row goes to train, validation or test (60/20/20) by a hash of its features, so it lands in the same split in every
run: when a later run on grown data scores the current champion on its test rows, the champion never trained on
them. Every point of the model module's SEARCH is fitted on train and scored on validation by the gate's metric;
the best wins, the first in grid order on a tie, so the choice never depends on who ran the candidates (here one
after another, or as Spark tasks: training/tuning.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from training import contract as contracts
from training.contract import Contract, ModelModule


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class SearchResult:
    model: Any
    params: dict
    candidates: list[dict]  # each: params + the validation score (valid_<metric>) + fit seconds


def split(frame: pd.DataFrame, contract: Contract) -> Splits:
    """60/20/20 by a hash of each row's features (see the module's docstring)."""
    bucket = pd.util.hash_pandas_object(features_of(frame, contract), index=False).to_numpy() % 10
    parts = [frame[mask].reset_index(drop=True) for mask in (bucket >= 4, (bucket >= 2) & (bucket < 4), bucket < 2)]
    return Splits(*parts)


def features_of(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    return frame[contract.feature_names]


def target_of(frame: pd.DataFrame, contract: Contract) -> pd.Series:
    return frame[contract.target.name]


Runner = Callable[[Callable[[dict], dict], list[dict]], list[dict]]


def sequential(fit: Callable[[dict], dict], candidates: list[dict]) -> list[dict]:
    """One candidate after another in this process (a laptop, `make local`)."""
    return [fit(params) for params in candidates]


def valid_key(model: ModelModule) -> str:
    return f"valid_{model.gate.name}"


def fit_candidate(params: dict, splits: Splits, seed: int, module: str) -> dict:
    """Fit one candidate and score it on the validation split: the unit of work a Spark task runs. The model module
    travels by name (a Spark task imports it from the jobs' wheel)."""
    model = contracts.load(module)
    started = time.perf_counter()
    fitted = model.build(params, seed).fit(features_of(splits.train, model.contract), target_of(splits.train, model.contract))
    score = model.gate.measure.score(fitted, features_of(splits.valid, model.contract), target_of(splits.valid, model.contract))
    return {"params": params, "model": fitted, valid_key(model): score, "fit_seconds": time.perf_counter() - started,
            **where_it_ran()}


def where_it_ran() -> dict:
    """The Spark stage and task that ran this candidate (none when it ran outside a Spark task)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return {}
    task = TaskContext.get()
    return {"spark_stage_id": task.stageId(), "spark_task_attempt_id": task.taskAttemptId()} if task else {}


def search(model: ModelModule, splits: Splits, seed: int, progress: Callable[[str], None] = print,
           runner: Runner = sequential, fit: Callable[[dict], dict] | None = None) -> SearchResult:
    """Every candidate of the model's grid, fitted by `runner`; the best validation score wins (see choose)."""
    candidates, key = model.grid(), valid_key(model)
    fitted = runner(fit or functools.partial(fit_candidate, splits=splits, seed=seed, module=model.module), candidates)
    for index, result in enumerate(fitted, start=1):
        progress(f"  [{index}/{len(fitted)}] {result['params']} valid {model.gate.name} {result[key]:.4f} "
                 f"({result['fit_seconds']:.1f}s)")
    best = choose(fitted, model)
    summaries = [{**r["params"], **{k: v for k, v in r.items() if k not in ("params", "model")}} for r in fitted]
    return SearchResult(model=best["model"], params=best["params"], candidates=summaries)


def choose(fitted: list[dict], model: ModelModule) -> dict:
    """The best validation score by the gate's metric (its direction); the earliest candidate among equals."""
    if not fitted:
        raise ValueError("the search fitted no candidate")
    key, sign = valid_key(model), 1 if model.gate.measure.greater_is_better else -1
    return max(enumerate(fitted), key=lambda item: (sign * item[1][key], -item[0]))[1]
