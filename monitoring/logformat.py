"""Reading the request log's prediction lines (serving/scoring/requestlog.py writes them), whichever version wrote
them: a window of Log Analytics rows spans a release, so it holds both while one rolls out.

  schema_version 1: "inputs" is a list of records, [{"<column>": value, ...}, ...]
  schema_version 2: "inputs" is the records by column, {"<column>": [value, ...], ...} (under half the bytes)
Either way "outputs" is one object per record.
"""

from __future__ import annotations

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
