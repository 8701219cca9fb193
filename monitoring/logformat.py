"""Reading the request log's prediction lines (serving/scoring/requestlog.py writes them), whichever version wrote
them: a window of Log Analytics rows spans a release, so it holds both while one rolls out.

  schema_version 1: "inputs" is a list of records, [{"<column>": value, ...}, ...]
  schema_version 2: "inputs" is the records by column, {"<column>": [value, ...], ...} (under half the bytes)
Either way "outputs" is one object per record. A line of a model whose contract names ids also has "ids": by id
column, a value or null per record of the line, or one null for an id no record of the request had (ids() below).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any


def records(inputs: Any, count: int) -> list[dict] | None:
    """A line's (or part's) `inputs` as one dict per record, for a line of `count` records (its outputs); None when
    they are not well formed: not a list of `count` objects, nor an object of lists of `count` values each."""
    if isinstance(inputs, list):
        return inputs if len(inputs) == count and all(isinstance(record, dict) for record in inputs) else None
    if not isinstance(inputs, dict) or not all(isinstance(values, list) and len(values) == count
                                               for values in inputs.values()):
        return None
    names = list(inputs)
    return [dict(zip(names, values, strict=True)) for values in zip(*inputs.values(), strict=True)] if names else [
        {} for _ in range(count)]


REQUIRED_FIELDS = ("ts", "model_version", "inputs", "outputs")


def parse_ts(value: object) -> datetime | None:
    """A line's `ts` (ISO 8601, `Z` or an offset) as an aware datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def prediction_entry(raw: str | bytes, counts: Counter) -> dict | None:
    """One line as a well-formed prediction entry (or part), its `inputs` as one dict per record; else None, the reason
    counted in `counts` (lines, malformed, error_lines, other_log_type). Never raises on a bad line."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not raw.strip():
        return None
    counts["lines"] += 1
    try:
        entry = json.loads(raw)
    except ValueError:
        counts["malformed"] += 1
        return None
    if not isinstance(entry, dict):
        counts["malformed"] += 1
        return None
    log_type = entry.get("log_type")
    if log_type != "prediction":
        counts["error_lines" if log_type == "error" else "other_log_type"] += 1
        return None
    outputs = entry.get("outputs")
    part, parts = entry.get("part", 1), entry.get("parts", 1)
    inputs = records(entry.get("inputs"), len(outputs)) if isinstance(outputs, list) else None
    if (parse_ts(entry.get("ts")) is None or any(f not in entry for f in REQUIRED_FIELDS) or inputs is None
            or not all(isinstance(o, dict) for o in entry["outputs"])
            or not isinstance(part, int) or not isinstance(parts, int) or not 1 <= part <= parts):
        counts["malformed"] += 1
        return None
    entry["inputs"] = inputs
    return entry


def ids(line_ids: Any, count: int, names: Iterable[str] = ()) -> dict[str, list] | None:
    """A line's (or part's) `ids` as one list of `count` values per id column, each value or None: a column logged as
    null, and one of `names` the line does not hold (a line written before ids were logged, or with no `ids` at all),
    are `count` Nones. None when they are not well formed: not an object of lists of `count` values (or nulls)."""
    if line_ids is None:
        line_ids = {}
    if not isinstance(line_ids, dict) or not all(values is None or (isinstance(values, list) and len(values) == count)
                                                 for values in line_ids.values()):
        return None
    found = {name: [None] * count if values is None else values for name, values in line_ids.items()}
    return {**{name: [None] * count for name in names if name not in found}, **found}
