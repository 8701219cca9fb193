"""The inference table: one row per prediction, online or batch, and the labels joined to it when they arrive.

A row: `request_id` and `record` (the record's place in its request; a batch run's id and the row's place), the id
columns the contract names (as the request log holds them: `<id>#hmac` when pseudonymised), `model_name`,
`model_version`, `source` (the protocol, or `batch`), `scored_at`, the inputs the log keeps, and the outputs by task
(binary `probability`, `label`; multiclass `label`, `probabilities`; regression `prediction`).

Exactly once: (request_id, record) is the row's key. Appending rows whose key the table holds already adds nothing, so
reading the same window of the log twice, or a window that overlaps the last one, leaves one row per prediction.

Labels (a table named in the stack file; a file here): the contract's id columns, the target, and `known_at`, when the
outcome became known. The ids name a prediction's event (an application, a transaction, a customer): the predictions of
those ids scored before the outcome was first known get the label, and, with a horizon (quality.labelHorizonDays),
only those scored within it before then. A prediction scored once the outcome was known is no test of the model (its
inputs may already show the outcome), and a customer scored every night would otherwise count every night's
prediction. A label that arrives twice counts once; one corrected later (a later `known_at`) replaces the earlier's
value; one not yet known at the report's `as_of` is not used; a prediction with no label is counted, not scored.
When the request log pseudonymises an id (serving/scoring/privacy.py), the labels' ids are pseudonymised the same way
(the same key) before the join, so the table never holds the id itself.

Locally the table is a Parquet file (LocalTable); on Databricks a Delta table, appended on the same key by an
anti-join (serving/inference_table.py append_new), by the quality job and the batch job alike.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring import logformat
from serving import inference_table
from serving.inference_table import pseudonym  # the service's pseudonym, the batch job's too

KEY = inference_table.KEY
KNOWN_AT = "known_at"
FIRST_KNOWN_AT = "first_known_at"  # the labels' own: when the ids' outcome was first known (not a table column)
PSEUDONYM_SUFFIX = "#hmac"  # serving/scoring/privacy.py's
OUTPUT_COLUMNS = {"binary": ("probability", "label"), "multiclass": ("label", "probabilities"),
                  "regression": ("prediction",)}
PROVENANCE = ("model_name", "model_version", "source", "scored_at")


class InferenceError(ValueError):
    """The labels or the table cannot be used: the message names the column or file."""


# ---------------------------------------------------------------- rows from the request log

def rows_from_log(lines: Iterable[str | bytes], task: str, counts: Counter | None = None) -> Iterator[dict]:
    """One row per record of each well-formed prediction line (or part: each carries its records' place,
    `first_record`), whichever log version wrote it; what is skipped is counted as monitoring/drift_sources.py counts it."""
    counts = Counter() if counts is None else counts
    outputs_of = OUTPUT_COLUMNS[task]
    for raw in lines:
        entry = logformat.prediction_entry(raw, counts)
        if entry is None:
            continue
        first = entry.get("first_record", 0) if isinstance(entry.get("first_record", 0), int) else 0
        ids = _records_of(logformat.ids(entry.get("ids"), len(entry["outputs"])), len(entry["outputs"]))
        base = {"request_id": str(entry["request_id"]), "model_name": str(entry.get("model_name") or ""),
                "model_version": str(entry["model_version"]), "source": str(entry.get("protocol") or "online"),
                "scored_at": entry["ts"]}
        for offset, (inputs, output) in enumerate(zip(entry["inputs"], entry["outputs"], strict=True)):
            row = {**base, "record": first + offset, **ids[offset], **inputs}
            for name in outputs_of:
                value = output.get(name)
                row[name] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
            yield row


def _records_of(columns: dict[str, list] | None, count: int) -> list[dict]:
    """The line's ids per record (none when the line holds none, or holds them malformed)."""
    if not columns:
        return [{} for _ in range(count)]
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


# ---------------------------------------------------------------- the table

@dataclass
class LocalTable:
    """The inference table as one Parquet file, appended exactly once by KEY (written whole, then renamed)."""
    path: Path

    def read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=[*KEY, *PROVENANCE])
        return pd.read_parquet(self.path)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add the rows whose key is new (and each key once); return how many were added."""
        new = pd.DataFrame(list(rows))
        if new.empty:
            return 0
        new = new.drop_duplicates(list(KEY), keep="first")
        table = self.read()
        if not table.empty:
            held = pd.MultiIndex.from_frame(table[list(KEY)].astype({"record": "int64"}))
            new = new[~pd.MultiIndex.from_frame(new[list(KEY)].astype({"record": "int64"})).isin(held)]
        if new.empty:
            return 0
        combined = pd.concat([table, new], ignore_index=True) if not table.empty else new
        combined["scored_at"] = pd.to_datetime(combined["scored_at"], utc=True, format="ISO8601")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(".parquet.tmp")
        combined.to_parquet(staging, index=False)
        os.replace(staging, self.path)
        return len(new)


# ---------------------------------------------------------------- labels

def read_labels(path: Path) -> pd.DataFrame:
    """A labels file: CSV, JSON lines or Parquet, by its suffix."""
    if not path.exists():
        raise InferenceError(f"labels file {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def latest_labels(labels: pd.DataFrame, ids: list[str], target: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """One label per ids: the latest known at `as_of` (a correction replaces the first; a repeat changes nothing), with
    `first_known_at`, when the first of them was known: the predictions it applies to were scored before then."""
    missing = [name for name in (*ids, target, KNOWN_AT) if name not in labels.columns]
    if missing:
        raise InferenceError(f"the labels lack the column(s) {', '.join(missing)}: they need the contract's ids "
                             f"({', '.join(ids)}), the target {target!r} and {KNOWN_AT!r}")
    try:
        known = labels.assign(**{KNOWN_AT: pd.to_datetime(labels[KNOWN_AT], utc=True, format="ISO8601")})
    except (ValueError, TypeError) as error:
        raise InferenceError(f"the labels' {KNOWN_AT} must be times (ISO 8601): {error}") from None
    known = known[known[KNOWN_AT] <= as_of].sort_values(KNOWN_AT, kind="stable")
    # A reader that holds only the recent labels (the job's lookback) gives each row its ids' first_known_at over all
    # of them (delta_store.read_labels); else the labels given are all there are.
    earliest = known[KNOWN_AT]
    if FIRST_KNOWN_AT in known.columns:
        given = pd.to_datetime(known[FIRST_KNOWN_AT], utc=True, format="ISO8601")
        earliest = given.where(given < earliest, earliest)  # none given (NaT) or a later one: the row's own
    first = (known.assign(**{FIRST_KNOWN_AT: earliest}).groupby(ids, dropna=False, sort=False)[FIRST_KNOWN_AT].min()
             .reset_index())
    latest = known.drop_duplicates(ids, keep="last")[[*ids, target, KNOWN_AT]]
    return latest.merge(first, on=ids, how="left", validate="one_to_one")


def utc(value: str | datetime) -> pd.Timestamp:
    """A time as a UTC timestamp: one without a zone is taken as UTC (Spark's session time on Databricks)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def as_of_time(text: str | None) -> pd.Timestamp:
    """--as-of: an ISO time (UTC when it names no zone), or now."""
    return utc(text) if text else pd.Timestamp.now(tz="UTC")


def horizon(text: str | None) -> pd.Timedelta | None:
    """--label-horizon: a duration (90D, 12h), or none (every prediction scored before the outcome was known)."""
    return positive_duration("--label-horizon", text, "90D or 12h") if text else None


def positive_duration(flag: str, text: str, examples: str) -> pd.Timedelta:
    """A flag's duration in pandas' words (30s, 10min, 1h, 90D), longer than 0, or the error that names the flag."""
    try:
        length = pd.Timedelta(text)
    except ValueError:
        raise InferenceError(f"{flag} {text!r}: a duration such as {examples}") from None
    if length <= pd.Timedelta(0):
        raise InferenceError(f"{flag} {text!r} must be longer than 0")
    return length


def applies(scored_at: pd.Series, first_known_at: pd.Series, horizon: pd.Timedelta | None) -> pd.Series:
    """Whether a label applies to a prediction: scored before its outcome was first known (at that instant too: the
    outcome may be recorded with the answer's own time), and within `horizon` before it when there is one."""
    scored = pd.to_datetime(scored_at, utc=True, format="ISO8601")
    known = pd.to_datetime(first_known_at, utc=True)
    before = scored <= known
    return before & (scored > known - horizon) if horizon is not None else before


def join_labels(table: pd.DataFrame, labels: pd.DataFrame, ids: list[str], target: str, as_of: pd.Timestamp,
                key: bytes | None = None, horizon: pd.Timedelta | None = None) -> pd.DataFrame:
    """The table with `target` and `known_at` from the labels known at `as_of` that apply to each prediction (null where
    none does: `applies`): on the ids as the table holds them (a `<id>#hmac` column is matched with the labels' ids
    pseudonymised by `key`). An id matches as a number or as text alike (a CSV has no types: its 123 meets an id sent
    as 123 or as "123")."""
    held = [name if name in table.columns else name + PSEUDONYM_SUFFIX for name in ids]
    absent = [name for name in held if name not in table.columns]
    if absent:
        raise InferenceError(f"the inference table holds no id column {', '.join(absent)}: the request log drops it "
                             "(observability.requestLogPersonal drop); pseudonymise or keep it to join labels")
    latest = labels_by_held_ids(labels, ids, held, target, as_of, key)
    left = table.drop(columns=[c for c in (target, KNOWN_AT) if c in table.columns]).astype({c: object for c in held})
    joined = left.merge(latest.astype({c: object for c in held}), on=held, how="left")
    labelled = joined[FIRST_KNOWN_AT].notna()
    late = labelled & ~applies(joined["scored_at"], joined[FIRST_KNOWN_AT], horizon).fillna(False)
    for column in (target, KNOWN_AT):
        joined[column] = joined[column].where(~late)
    return joined.drop(columns=[FIRST_KNOWN_AT])


def labels_by_held_ids(labels: pd.DataFrame, ids: list[str], held: list[str], target: str, as_of: pd.Timestamp,
                       key: bytes | None = None) -> pd.DataFrame:
    """The latest label per ids known at `as_of`, keyed by the ids as the table holds them (`held`: each id's name,
    or `<id>#hmac` pseudonymised with `key`), one row per form an id may have been sent in (_id_forms)."""
    latest = latest_labels(labels, ids, target, as_of)
    for name, column in zip(ids, held, strict=True):
        if column.endswith(PSEUDONYM_SUFFIX) and not key:
            raise InferenceError(f"{column} is pseudonymised: the labels' {name} needs the log's pseudonym key")
        latest[column] = latest[name].map(_id_forms)
        latest = latest.explode(column)
        if column.endswith(PSEUDONYM_SUFFIX):
            assert key is not None
            latest[column] = [pseudonym(key, name, value) for value in latest[column]]
    return latest.drop(columns=[name for name in ids if name not in held]).dropna(subset=held)


def _id_forms(value: object) -> list:
    """The forms an id may have been sent in: an integer and its digits (without leading zeros) are the same id."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return [None]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value), str(int(value))]
    if isinstance(value, float) and value.is_integer():
        return [int(value), str(int(value))]
    if isinstance(value, str) and value.lstrip("-").isdigit() and str(int(value)) == value:
        return [value, int(value)]
    return [value]
