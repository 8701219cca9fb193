"""The contract's id columns (manifest.contract["ids"], the model module's Contract.ids): what identifies a record, so
that labels known weeks later can be joined to its online prediction through the request log (requestlog.py `ids`).

Every protocol takes them per record beside the features, each optional (absent or null: no id), as a JSON string of
at most MAX_ID_CHARS characters or a 64-bit integer. They are never scored nor passed to the model: only logged. A
wrong id (a float, a boolean, an object, a longer string, a larger integer) is refused like any other value, naming
the record and the id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .model import Manifest

MAX_ID_CHARS = 256  # a key, not a document: longer is a mistake (and one record must fit a log line)
INT64 = (-2 ** 63, 2 ** 63 - 1)  # what a warehouse's BIGINT holds, and V2's INT64
DESCRIPTION = (f"not scored: logged to join labels. Optional (absent or null: no id); a string of at most {MAX_ID_CHARS} "
               "characters or a 64-bit integer")
RULE = f"an id must be a string of at most {MAX_ID_CHARS} characters, a 64-bit integer, or null"

Ids = Mapping[str, Sequence[Any] | None]  # id column -> one value per record, or None when no record has one


def names(manifest: Manifest) -> tuple[str, ...]:
    """The contract's id columns, in its order (none without a contract)."""
    return tuple((manifest.contract or {}).get("ids") or ())


def problem(value: object) -> str | None:
    """Why `value` is not an id, or None when it is one (or null)."""
    if value is None:
        return None
    if type(value) is str:
        return None if len(value) <= MAX_ID_CHARS else f"{RULE}: this one has {len(value)} characters"
    if type(value) is int or (type(value) is float and value.is_integer() and abs(value) >= 2 ** 63):
        # JSON parsers read an integer beyond 64 bits as an int, or as such a float (orjson)
        return None if type(value) is int and INT64[0] <= value <= INT64[1] else f"{RULE}: this integer is beyond 64 bits"
    return f"{RULE}, not {_kind(value)}"


def _kind(value: object) -> str:
    kinds = {bool: "a boolean", float: "a number with a fraction or exponent", dict: "an object", list: "a list"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def present(values: Sequence[Any] | None) -> Sequence[Any] | None:
    """The column's values, or None when no record has one: the log writes one null for the column, not one per
    record (requestlog.py)."""
    return None if values is None or values.count(None) == len(values) else values
