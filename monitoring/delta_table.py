"""The inference table on Databricks: its columns for a model's contract, and the SQL that fills it exactly once.

One module for both sides, so the table the stack declares (infra/databricks.py, a databricks.SqlTable) and the rows
the quality job writes into it (monitoring/quality_delta.py) cannot disagree: the columns are monitoring/inference.py's
(the local table's), typed for Delta. The batch job (serving/batch.py) writes into the table as it finds it, by the same
names and with the same statement (serving/inference_table.py).

Names: the request log calls a pseudonymised column `<column>#hmac` (serving/scoring/privacy.py). `#` is no character
of a plain SQL identifier: every MERGE, every slicing expression of the monitor and every analyst's query would have to
quote it, and a Delta table without column mapping takes it only quoted too. So the table calls it `<column>_hmac`
(`delta_name`); a contract column that already ends in `_hmac` would meet it, and is refused (`columns`).

Types: ids are STRING whatever the log held (an id sent as 123 and one sent as "123" are one id, as the local join
says; a pseudonym is text anyway); numbers DOUBLE, categories STRING; classification outputs and the target STRING
(Lakehouse Monitoring compares the prediction and the label column as values of one type), regression DOUBLE; the
multiclass probabilities a JSON string (the log's object); `scored_at` and `known_at` TIMESTAMP.

This module imports no Spark: the Pulumi program imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from monitoring import inference
from serving import inference_table
from training.contract import Category, Contract

HMAC_SUFFIX = inference_table.HMAC_SUFFIX  # the table's name for the log's `#hmac` (the batch job's too)
PERSONAL_MODES = ("keep", "drop", "pseudonymise")  # observability.requestLogPersonal
PROBLEM_TYPES = {"binary": "PROBLEM_TYPE_CLASSIFICATION", "multiclass": "PROBLEM_TYPE_CLASSIFICATION",
                 "regression": "PROBLEM_TYPE_REGRESSION"}
PREDICTION_COLUMN = {"binary": "label", "multiclass": "label", "regression": "prediction"}
MODEL_ID, TIMESTAMP = "model_version", inference_table.SCORED_AT
RETRY_SPAN = pd.Timedelta(days=1)  # how far back a client's retry may share a request id (append_predictions)


@dataclass(frozen=True)
class Column:
    name: str  # the table's
    type: str  # Delta SQL type
    logged_as: str  # the request log's (and monitoring/inference.py's) name
    nullable: bool = True


def delta_name(logged: str) -> str:
    """The table's name of a column the log names `logged` (`<column>#hmac` -> `<column>_hmac`)."""
    if logged.endswith(inference.PSEUDONYM_SUFFIX):
        return logged[: -len(inference.PSEUDONYM_SUFFIX)] + HMAC_SUFFIX
    return logged


def _logged(name: str, contract: Contract, personal: str) -> str | None:
    """How the log holds a contract column: as sent, pseudonymised, or not at all (dropped)."""
    if name not in contract.personal or personal == "keep":
        return name
    return name + inference.PSEUDONYM_SUFFIX if personal == "pseudonymise" else None


def columns(contract: Contract, personal: str) -> list[Column]:
    """The inference table's columns for this contract and the stack's observability.requestLogPersonal."""
    if personal not in PERSONAL_MODES:
        raise ValueError(f"requestLogPersonal {personal!r}: one of {', '.join(PERSONAL_MODES)}")
    clash = [name for name in (*contract.ids, *contract.feature_names) if name.endswith(HMAC_SUFFIX)]
    if clash:
        raise ValueError(f"the contract's column(s) {', '.join(clash)} end in {HMAC_SUFFIX}, the inference table's name "
                         "for a pseudonymised column: rename them")
    found = [Column("request_id", "STRING", "request_id", False), Column("record", "BIGINT", "record", False)]
    for name in contract.ids:
        if (logged := _logged(name, contract, personal)) is not None:
            found.append(Column(delta_name(logged), "STRING", logged))
    found += [Column(name, "STRING" if name != TIMESTAMP else "TIMESTAMP", name) for name in inference.PROVENANCE]
    for feature in contract.features:
        if (logged := _logged(feature.name, contract, personal)) is not None:
            plain = isinstance(feature, Category) or logged != feature.name
            found.append(Column(delta_name(logged), "STRING" if plain else "DOUBLE", logged))
    regression = contract.task == "regression"
    for name in inference.OUTPUT_COLUMNS[contract.task]:
        found.append(Column(name, "DOUBLE" if name in ("probability", "prediction") else "STRING", name))
    found += [Column(contract.target.name, "DOUBLE" if regression else "STRING", contract.target.name),
              Column(inference.KNOWN_AT, "TIMESTAMP", inference.KNOWN_AT)]
    return found


def id_columns(contract: Contract, personal: str) -> list[Column]:
    """The id columns the table holds (a dropped id is none: no label can be joined to it)."""
    names = {delta_name(name) for name in (_logged(i, contract, personal) for i in contract.ids) if name}
    return [c for c in columns(contract, personal) if c.name in names]


def slicing_exprs(contract: Contract, personal: str) -> list[str]:
    """The monitor's slices: the contract's `slices` by the table's names (a dropped column is no slice)."""
    held = {c.logged_as: c.name for c in columns(contract, personal)}
    return [held[logged] for name in contract.slices if (logged := _logged(name, contract, personal)) in held]


quote = inference_table.quote


def append_predictions(table: str, source: str, columns: list[Column], since: pd.Timestamp) -> str:
    """Append the rows of `source` whose key the table lacks: a re-run, or an overlapping window, adds nothing. The
    batch job's statement (serving/inference_table.py append_new): one exactly-once rule for both writers. `since`
    bounds what the anti-join reads: the oldest new row's scored_at less RETRY_SPAN. A log line holds its time, so a
    row read again has the scored_at it had; a request id can also come from the client (x-request-id), and a
    client's retry with the same id within RETRY_SPAN is still the same prediction, kept once."""
    return inference_table.append_new(table, source, [c.name for c in columns], since.isoformat())


def same_ids(ids: list[str]) -> str:
    """A prediction `t` and a label `s` of the same ids (the labels' MERGE condition, with applies_in_time)."""
    return " AND ".join(f"t.{quote(i)} = s.{quote(i)}" for i in ids)


def applies_in_time(horizon: pd.Timedelta | None = None) -> str:
    """monitoring/inference.py applies, in SQL: `t` scored at or before `s`'s outcome was first known, and within
    `horizon` before it when given."""
    first, scored = quote(inference.FIRST_KNOWN_AT), quote(TIMESTAMP)
    within = (f" AND t.{scored} > s.{first} - INTERVAL {int(horizon.total_seconds())} SECONDS"
              if horizon is not None else "")
    return f"t.{scored} <= s.{first}{within}"


def merge_labels(table: str, source: str, ids: list[str], target: str, horizon: pd.Timedelta | None = None) -> str:
    """Set the label of each prediction of its ids that it applies to from `source` (one latest label per ids,
    monitoring/inference.py latest_labels, with `first_known_at`): a label already held and as recent changes nothing
    (twice = once), a later one replaces it (a correction). A held label that no longer applies (a horizon set or
    shortened since, or set before labels kept to the predictions before the outcome) is taken off, so the table
    holds what the local join computes afresh."""
    known, applies = quote(inference.KNOWN_AT), applies_in_time(horizon)
    return (f"MERGE INTO {table} t USING {source} s ON {same_ids(ids)} "
            f"WHEN MATCHED AND {applies} AND (t.{known} IS NULL OR t.{known} < s.{known}) "
            f"THEN UPDATE SET t.{quote(target)} = s.{quote(target)}, t.{known} = s.{known} "
            f"WHEN MATCHED AND NOT ({applies}) AND t.{known} IS NOT NULL "
            f"THEN UPDATE SET t.{quote(target)} = NULL, t.{known} = NULL")
