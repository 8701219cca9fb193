"""The stack's inference table as its two writers see it: the batch job (serving/batch.py) appends a run's scored rows,
the quality job (monitoring/quality_delta.py, through monitoring/delta_table.py) the request log's. One statement
appends for both, exactly once; one pseudonym, the service's, so labels join both kinds of rows.

Here, not in monitoring: serving imports nothing else of ours (the batch job's module is what its executors import),
and monitoring may import serving. No Spark, no pandas: the Pulumi program imports it through monitoring/delta_table.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence

KEY = ("request_id", "record")  # a prediction: its request (or batch run) and its place there
SCORED_AT = "scored_at"
HMAC_SUFFIX = "_hmac"  # the table's name for a pseudonymised column (the request log's `<column>#hmac`)
PSEUDONYM_HEX_DIGITS = 32  # serving/scoring/privacy.py's


def quote(name: str) -> str:
    return f"`{name.replace('`', '``')}`"


def append_new(table: str, source: str, columns: Sequence[str], since: str | None = None) -> str:
    """Insert the rows of `source` whose (request_id, record) `table` does not hold: a re-run, an overlapping window of
    the log or a repaired batch run adds nothing. An anti-join, not a MERGE: Delta runs an insert-only MERGE as this
    very anti-join (docs.databricks.com/delta/merge, "Data deduplication when writing into Delta tables": an
    insert-only merge), and this one also runs on a plain Parquet
    table, so the local Spark of tests/databricks runs the statement the cluster runs. The columns are named, so the
    source's order does not matter; `source` holds each key once (its writers make sure). `since` (an ISO timestamp)
    bounds the rows the anti-join reads to those scored since then, for a writer whose held rows of the same keys are
    not older (the quality job's: a key's scored_at is its log line's, monitoring/delta_table.py append_predictions
    with its retry span); a batch run's repair, whose first attempt scored earlier, reads the whole table."""
    named = ", ".join(quote(c) for c in columns)
    held = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in KEY)
    if since is not None:
        held += f" AND t.{quote(SCORED_AT)} >= '{since}'"
    return (f"INSERT INTO {table} ({named}) SELECT {', '.join(f's.{quote(c)}' for c in columns)} FROM {source} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {held})")


def pseudonym(key: bytes, column: str, value: object) -> str | None:
    """serving/scoring/privacy.py's pseudonym of a value (the service's: the first 32 hex digits of HMAC-SHA256 over the
    column's name and the value's compact JSON), without the service's packages (orjson is not the runtime's)."""
    if value is None:
        return None
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return hmac.new(key, column.encode() + b"\x00" + encoded, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]
