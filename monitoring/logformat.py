"""Reading the request log's prediction lines (serving/scoring/requestlog.py writes them), whichever version wrote
them: a window of Log Analytics rows spans a release, so it holds both while one rolls out.

  schema_version 1: "inputs" is a list of records, [{"<column>": value, ...}, ...]
  schema_version 2: "inputs" is the records by column, {"<column>": [value, ...], ...} (under half the bytes)
Either way "outputs" is one object per record. A line of a model whose contract names ids also has "ids": by id
column, a value or null per record of the line, or one null for an id no record of the request had (ids() below).
"""

from __future__ import annotations

from collections.abc import Iterable
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
