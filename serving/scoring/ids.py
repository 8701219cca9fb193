"""The contract's id columns (manifest.contract["ids"], the model module's Contract.ids): what identifies a record, so
that labels known weeks later can be joined to its online prediction through the request log (requestlog.py `ids`).

Every protocol takes them per record beside the features, each optional (absent or null: no id), as a JSON string of
at most MAX_ID_CHARS characters or an integer within ID_RANGE. They are never scored nor passed to the model: only logged. A
wrong id (a float, a boolean, an object, a longer string, a larger integer) is refused like any other value, naming
the record and the id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .model import Manifest

MAX_ID_CHARS = 256  # a key, not a document: longer is a mistake (and one record must fit a log line)
# An integer id: JSON's exact integers (I-JSON, RFC 7493; JavaScript's safe integers), not the whole 64 bits. A JSON
# reader that takes numbers as doubles (JavaScript, and the schema fuzzer the OpenAPI document is checked with) turns
# a larger one into a neighbour: an id that joins the wrong label. A larger id is sent as a string.
ID_RANGE = (-(2 ** 53 - 1), 2 ** 53 - 1)
DESCRIPTION = (f"not scored: logged to join labels. Optional (absent or null: no id); a string of at most {MAX_ID_CHARS} "
               f"characters or an integer of at most {ID_RANGE[1]} either way (2**53 - 1: send a larger one as a "
               "string); a whole number written 303.0 is 303")
RULE = (f"an id must be a string of at most {MAX_ID_CHARS} characters, an integer of at most 2**53 - 1 either way "
        "(send a larger one as a string), or null")

Ids = Mapping[str, Sequence[Any] | None]  # id column -> one value per record, or None when no record has one


def names(manifest: Manifest) -> tuple[str, ...]:
    """The contract's id columns, in its order (none without a contract)."""
    return tuple((manifest.contract or {}).get("ids") or ())


def taken(value: object) -> object:
    """The id a value stands for: a whole number written with a fraction or exponent (303.0, 3e2: JSON Schema's
    integer, and what pandas writes for an integer column with missing values) is that integer."""
    if type(value) is float and value.is_integer() and ID_RANGE[0] <= value <= ID_RANGE[1]:
        return int(value)
    return value


def problem(value: object) -> str | None:
    """Why `value` (as taken()) is not an id, or None when it is one (or null)."""
    if value is None:
        return None
    if type(value) is str:
        return None if len(value) <= MAX_ID_CHARS else f"{RULE}: this one has {len(value)} characters"
    if type(value) is int or (type(value) is float and value.is_integer()):  # a JSON parser's large integer
        return None if type(value) is int and ID_RANGE[0] <= value <= ID_RANGE[1] else f"{RULE}: this one is larger"
    return f"{RULE}, not {_kind(value)}"


def _kind(value: object) -> str:
    kinds = {bool: "a boolean", float: "a number with a fraction or exponent", dict: "an object", list: "a list"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def present(values: Sequence[Any] | None) -> Sequence[Any] | None:
    """The column's values, or None when no record has one: the log writes one null for the column, not one per
    record (requestlog.py)."""
    return None if values is None or values.count(None) == len(values) else values
