"""The one scoring path every protocol shares.

A protocol (/predict, MLflow's /invocations, Open Inference Protocol V2) is a decoder that turns its
body into candidate records and an encoder that turns `Scored` into its answer. Between them, this
module validates the records against the model's signature (one set of rules, one error format:
record, field, problem), scores them, observes the metrics and writes the request log.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from . import ids, metrics, privacy, requestlog
from .fastpath import FastMlflow, FastRecords
from .model import Columns, Manifest, Scorer, rule_text
from .settings import Settings


@dataclass(frozen=True)
class Problem:
    record: int | None
    field: str | None
    problem: str
    type: str

    def as_dict(self) -> dict:
        return {"record": self.record, "field": self.field, "problem": self.problem, "type": self.type}

    def sentence(self) -> str:
        where = [f"column '{self.field}'" if self.field is not None else "",
                 f"record {self.record}" if self.record is not None else ""]
        place = ", ".join(part for part in where if part)
        return f"{place}: {self.problem}" if place else self.problem


class InputError(Exception):
    """The request cannot be scored; each problem names the record and field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.sentence() for p in problems))
        self.problems = problems

    @classmethod
    def one(cls, problem: str, field: str | None = None, kind: str = "invalid", record: int | None = None) -> InputError:
        return cls([Problem(record, field, problem, kind)])

    @classmethod
    def from_pydantic(cls, error: ValidationError, records_key: str | None = "records") -> InputError:
        return cls([describe_error(e, records_key) for e in error.errors()])


NON_FINITE = "finite_number"  # pydantic's error type for NaN/Infinity, kept for the same refusal by every protocol


def non_finite_problem(value: float) -> str:
    """NaN/Infinity are not JSON numbers; a client that writes them usually means a missing value."""
    word = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return f"{word} is not a number this service takes: send null for a missing value"


def too_many_records(max_records: int, count: int | None = None) -> InputError:
    """More records than MAX_RECORDS (a 413 on every protocol), refused before they are built: a column or CSV row of
    tiny values per record would swell to a million dicts within the body limit."""
    found = f"{count} records" if count is not None else f"more than {max_records} records"
    return InputError.one(f"{found}: at most {max_records} per request (MAX_RECORDS)", kind="too_long")


def id_problems(name: str, values: list) -> list[Problem]:
    """Each wrong id (scoring/ids.py, as taken) of a decoded id column, naming its record and the id."""
    return [Problem(record, name, f"{problem} (got {value!r:.80})", "id_type")
            for record, value in enumerate(values) if (problem := ids.problem(value)) is not None]


class NotReady(Exception):
    """The model is not loaded (or its warm-up failed): a 503."""


def describe_error(error: Any, records_key: str | None = "records") -> Problem:
    """One pydantic error as a Problem: enough to fix the request without guessing.
    `records_key` is the envelope key of the record list ("records" for /predict), None for a bare list."""
    location = [part for part in error.get("loc", ()) if part != "body"]
    if records_key is not None and location[:1] == [records_key] and len(location) > 1 and isinstance(location[1], int):
        record, field_at = location[1], 2
    elif records_key is None and location and isinstance(location[0], int):
        record, field_at = location[0], 1
    else:
        record, field_at = None, 0
    field = location[field_at] if len(location) > field_at else None
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        problem = "unknown field"
    elif kind == "missing":
        problem = "field required"
    elif not location and kind in {"dict_type", "model_attributes_type"}:
        problem = 'the body must be a JSON object: {"records": [...]}'
    elif isinstance(error.get("input"), float) and not math.isfinite(error["input"]):
        problem = non_finite_problem(error["input"])
    elif kind == "json_invalid":
        field, problem = None, f"body is not valid JSON: {error.get('ctx', {}).get('error', '')}".rstrip(": ")
    elif kind in CONTRACT_ERRORS:
        problem = f"{contract_problem(kind, error.get('ctx', {}))} (got {error.get('input')!r})"
    else:
        problem = error.get("msg", "invalid value")
        if "input" in error and kind not in {"too_short", "too_long"} and not isinstance(error["input"], dict | list):
            problem += f" (got {error['input']!r})"
    return Problem(record, None if field is None else str(field), problem, kind)


# pydantic's error types for a value outside the contract (schemas.value_type) -> the rule (model.RULE_WORDS).
CONTRACT_ERRORS = {"greater_than_equal": "ge", "less_than_equal": "le", "greater_than": "gt", "less_than": "lt",
                   "literal_error": "in"}


def contract_problem(kind: str, context: dict) -> str:
    """'must be at least 18', 'must be one of 'a', 'b' or 'c'': the bound or the values the contract allows."""
    rule = CONTRACT_ERRORS[kind]
    return f"must be {rule_text(rule, context.get('expected' if rule == 'in' else rule))}"


class Scored(NamedTuple):  # built on every request: a NamedTuple is cheaper to make than a frozen dataclass
    request_id: str
    values: list  # binary: P(classes[1]) per record; multiclass: each record's probabilities; regression: its value
    labels: list | None  # a classifier's label per record (/predict's rule); None for a regressor
    outputs: list[dict]  # /predict's answer per record and the request log's, built once (see Outputs)
    answer: Any = None  # what MLflow's pyfunc answers, when it is not `values` (MLflow's protocol asked for it)
    outputs_json: bytes | None = None  # orjson.dumps(outputs), as the request log encoded them (None: no log)


class Outputs:
    """The model's outputs per record, by task: one implementation for every protocol and the request log.

        binary      {"probability": P(classes[1]), "label": class}: with a decision threshold, classes[1] iff the
                    probability reaches it; without one, the estimator's own rule (classes[1] iff p1 > p0)
        multiclass  {"label": the likeliest class, "probabilities": {"<class>": p, ...}}
        regression  {"prediction": value}
    Labels keep the classes' JSON types (0/1 stay numbers)."""

    def __init__(self, manifest: Manifest) -> None:
        self.task, self.threshold = manifest.task, manifest.decision_threshold
        self.classes = list(manifest.classes or ())
        self.keys = [str(c) for c in self.classes]
        self.build = {"binary": self.binary, "multiclass": self.multiclass, "regression": self.regression}[self.task]

    def binary(self, array: np.ndarray) -> tuple[list, list, list[dict]]:
        probabilities = array[:, 1].tolist()
        negative, positive = self.classes
        if self.threshold is not None:
            threshold = self.threshold  # float64 compared either way; no numpy call
            labels = [positive if p >= threshold else negative for p in probabilities]
        else:
            labels = [positive if p1 > p0 else negative for p0, p1 in zip(array[:, 0].tolist(), probabilities, strict=True)]
        return probabilities, labels, [{"probability": p, "label": label}
                                       for p, label in zip(probabilities, labels, strict=True)]

    def multiclass(self, array: np.ndarray) -> tuple[list, list, list[dict]]:
        rows, classes, keys = array.tolist(), self.classes, self.keys
        labels = [classes[i] for i in array.argmax(axis=1).tolist()]
        return rows, labels, [{"label": label, "probabilities": dict(zip(keys, row, strict=True))}
                              for label, row in zip(labels, rows, strict=True)]

    def regression(self, array: np.ndarray) -> tuple[list, None, list[dict]]:
        values = array.tolist()
        return values, None, [{"prediction": v} for v in values]


class ScoringPath:
    """Validate -> score -> metrics -> request log, for records decoded by any protocol."""

    def __init__(self, settings: Settings, manifest: Manifest, records: TypeAdapter,
                 columns: TypeAdapter | None = None) -> None:
        self.settings, self.manifest, self.records, self.columns = settings, manifest, records, columns
        self.names = manifest.input_names
        self.outputs = Outputs(manifest)
        # msgspec's decoders for valid input (scoring/fastpath.py): /predict's and the other protocols' (`records`
        # given to validate() is MLflow's variant, which ignores unknown columns); pydantic says why when they refuse.
        self.fast = FastRecords(manifest, settings.max_records)
        self.fast_ignoring = FastRecords(manifest, settings.max_records, forbid_unknown=False)
        self.fast_mlflow = FastMlflow(self.fast_ignoring, settings.max_records)
        # A record's values in signature order, in C (itemgetter of one name returns the bare value).
        self.row = operator.itemgetter(*self.names) if len(self.names) > 1 else lambda r: (r[self.names[0]],)
        # What the request log holds of the validated columns: the contract's personal ones kept, dropped or
        # pseudonymised (scoring/privacy.py).
        self.logged: privacy.Logged = privacy.for_log(settings.request_log_personal, manifest,
                                                      settings.request_log_pseudonym_key)
        # The contract's ids, logged by the same rule (never scored); a request without any logs a null per id.
        self.ids = ids.names(manifest)
        self.logged_ids = (privacy.for_ids(settings.request_log_personal, manifest, settings.request_log_pseudonym_key)
                           if self.ids else None)
        self.no_ids: ids.Ids = dict.fromkeys(self.ids)
        # The common case, a request without ids: its `ids` JSON made once (the same for every part of every line).
        self.logged_no_ids = None if self.logged_ids is None else orjson.dumps(self.logged_ids(self.no_ids))
        self.log_stream = requestlog.Turn(requestlog.stream())  # stdout, a write per turn of the event loop
        self.scorer: Scorer | None = None
        self.problem: str | None = "model not loaded yet"
        # The predicted-probability histogram is a binary model's (no per-class or per-value metrics are invented).
        self.probability = (metrics.PROBABILITY.labels(manifest.model_name, manifest.model_version)
                            if manifest.task == "binary" else None)
        self.records_scored = {protocol: metrics.RECORDS.labels(manifest.model_name, manifest.model_version, protocol)
                               for protocol in set(metrics.PROTOCOLS.values())}
        # What MLflow's pyfunc answers comes from the scores unless it is something else (a classifier's labels).
        self.own_answer = manifest.predict_fn != ("predict_proba" if manifest.is_classifier else "predict")

    def validate(self, candidates: object, records: TypeAdapter | None = None,
                 lenient: TypeAdapter | None = None) -> list:
        """Strict validation of decoded records (Python objects) against the signature: msgspec's typed records
        (fastpath.py), or when msgspec refuses, pydantic's dicts or its full report. `records` is a
        variant of the same rules (MLflow's protocol ignores unknown columns); `lenient`, when the strict
        rules refuse, is tried before giving up (MLflow's conversions, too slow to run on every value)."""
        typed = (self.fast if records is None else self.fast_ignoring).convert(candidates)
        if typed is not None:
            return typed
        try:
            return (records or self.records).validate_python(candidates)
        except ValidationError as error:
            if lenient is None:
                raise InputError.from_pydantic(error, records_key=None) from None
        try:
            return lenient.validate_python(candidates)
        except ValidationError as error:
            raise InputError.from_pydantic(error, records_key=None) from None

    def valid_columns(self, columns: dict[str, list]) -> dict[str, list] | None:
        """The columns, validated by the record rules in one call per request, or None when some value breaks
        them: then validate() on the records says which record and field, in the one error format."""
        typed = self.fast.convert_columns(columns)
        if typed is not None or self.columns is None:
            return typed
        try:
            return self.columns.validate_python(columns)
        except ValidationError:
            return None

    def score_records(self, records: list, request_id: str, protocol: str, started: float,
                      answer: bool = False) -> Scored:
        """score() for validated records: fastpath's typed records, or plain dicts holding the signature's fields
        (and maybe the contract's ids)."""
        columns, found = self.columns_and_ids(records)
        return self.score(columns, request_id, protocol, started, answer, found)

    def score(self, columns: Columns, request_id: str, protocol: str, started: float, answer: bool = False,
              found_ids: ids.Ids | None = None) -> Scored:
        """Score validated columns (the signature's names -> one value per record); `answer`, also what MLflow's
        pyfunc answers when that is not the scores (from the same call of the model where the runtime can: MLflow's
        protocol only). `found_ids` (validated, by id column) are only logged; None: no record had one."""
        if self.scorer is None:
            raise NotReady(self.problem)
        if answer and self.own_answer:  # both from one call of the model where the runtime can
            array, own = self.scorer.predict_and_answer(self.manifest.predict_fn, columns)
        else:
            array, own = self.scorer.predict(columns), None
        values, labels, outputs = self.outputs.build(array)
        if self.probability is not None:
            metrics.observe_probabilities(self.probability, array[:, 1])
        self.records_scored[protocol].inc(len(outputs))
        if not self.settings.request_log:
            return Scored(request_id, values, labels, outputs, own)
        log = self.log_stream
        lines, outputs_json = requestlog.prediction_log(
            request_id=request_id, model_name=self.manifest.model_name, model_version=self.manifest.model_version,
            runtime=self.manifest.runtime, protocol=protocol, inputs=self.logged(columns), outputs=outputs,
            latency_ms=(time.perf_counter() - started) * 1000, ids=self.log_ids(found_ids), max_line=log.max_line)
        log.write(lines)
        return Scored(request_id, values, labels, outputs, own, outputs_json)

    def log_ids(self, found: ids.Ids | None) -> dict | bytes | None:
        """The line's `ids`: None when the contract names none (no key), else each id column's values or None."""
        if self.logged_ids is None or found is None:
            return self.logged_no_ids
        return self.logged_ids({**self.no_ids, **found})

    def columns_of(self, records: list) -> Columns:
        """The validated records' values by column: a typed record's as its tuple, a dict's by the signature."""
        return self.columns_and_ids(records)[0]

    def columns_and_ids(self, records: list) -> tuple[Columns, ids.Ids | None]:
        """The validated records' values by column, and their ids by id column (None: the contract names none, or the
        records are typed without them)."""
        if records and type(records[0]) is not dict:
            return self.fast.split(records)
        columns = dict(zip(self.names, zip(*map(self.row, records), strict=True), strict=True))
        if not self.ids:
            return columns, None
        return columns, {name: ids.present([record.get(name) for record in records]) for name in self.ids}
