"""What the request log keeps of the columns the model's contract marks personal (`personal` in contract.json).

REQUEST_LOG_PERSONAL says it (serving/scoring/settings.py; the stack's observability.requestLogPersonal):
  keep          the values as sent (a log with personal data: its retention and readers are yours to govern)
  drop          the columns are left out of the log's inputs (the default)
  pseudonymise  each column is logged as `<column>#hmac`: the first 32 hex digits of HMAC-SHA256 with the stack's
                secret key (REQUEST_LOG_PSEUDONYM_KEY) over the column's name and its value's JSON; null stays null.
                The same value gives the same pseudonym (requests can be joined, counted), no one without the key
                can test a guess (a column of 100 possible values: a plain hash would be reversed by trying them all).
Scoring always sees the values as sent; only the log line changes. A dropped or pseudonymised column is absent from
the log under its own name, so the drift job (monitoring/drift_stats.py compare) leaves it out and compares the rest.
The contract's ids (scoring/ids.py, the log line's `ids`) follow the same rule when the contract marks them personal:
kept, left out, or logged as `<id>#hmac` with the same HMAC (a pseudonymised id still joins labels whose ids are
pseudonymised with the same key). An id column no record had (None) stays None.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from . import ids
from .model import Columns, Manifest

MODES = ("keep", "drop", "pseudonymise")
PSEUDONYM_SUFFIX = "#hmac"  # '#' is in no contract column name (training/contract.py NAME): no collision
PSEUDONYM_HEX_DIGITS = 32  # 128 bits: no two values of a column meet by chance, half the log bytes of 64

Logged = Callable[[Columns], dict[str, Sequence[Any]]]
LoggedIds = Callable[[ids.Ids], dict[str, Sequence[Any] | None]]  # an id column no record had stays None


def personal_inputs(manifest: Manifest) -> list[str]:
    """The model's inputs its contract marks personal."""
    return _personal(manifest, manifest.input_names)


def personal_ids(manifest: Manifest) -> list[str]:
    """The contract's ids it marks personal."""
    return _personal(manifest, list(ids.names(manifest)))


def _personal(manifest: Manifest, names: list[str]) -> list[str]:
    personal = set((manifest.contract or {}).get("personal") or ())
    return [name for name in names if name in personal]


def for_log(mode: str, manifest: Manifest, key: bytes | None = None) -> Logged:
    """The validated columns -> the columns the request log holds, for `mode` (one of MODES): the signature's columns in
    its order, the personal ones kept, left out, or replaced by their pseudonyms (after the others)."""
    return _for_columns(mode, manifest.input_names, personal_inputs(manifest), key)


def for_ids(mode: str, manifest: Manifest, key: bytes | None = None) -> LoggedIds:
    """The ids (id column -> values, or None) -> the line's `ids`, by the same rule as for_log."""
    return _for_columns(mode, list(ids.names(manifest)), personal_ids(manifest), key)


def _for_columns(mode: str, names: list[str], personal: list[str], key: bytes | None) -> Kept | Pseudonymiser:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "keep" or not personal:
        return Kept(names)
    if mode == "drop":
        return Kept([name for name in names if name not in personal])
    if not key:
        raise ValueError("pseudonymise needs a key")
    return Pseudonymiser(names, personal, key)


class Kept:
    """The named columns, in that order: the others (dropped ones) are left out. No value is copied."""

    def __init__(self, names: list[str]) -> None:
        self.names = tuple(names)

    def __call__(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        return {name: columns[name] for name in self.names}


class Pseudonymiser:
    CACHE_SIZE = 100_000  # pseudonyms remembered: personal columns repeat their values (few distinct ones)

    def __init__(self, names: list[str], personal: list[str], key: bytes) -> None:
        self.kept = Kept([name for name in names if name not in personal])
        self.columns = tuple(personal)
        self.key = key
        self.cache: dict[tuple[str, type, object], str | None] = {}

    def pseudonym(self, column: str, value: object) -> str | None:
        """Remembered by (column, the value's type, the value): 1, 1.0 and True are equal keys of a dict."""
        cached = (column, type(value), value)
        if cached in self.cache:
            return self.cache[cached]
        if len(self.cache) >= self.CACHE_SIZE:
            self.cache.clear()
        found = None if value is None else hmac.new(self.key, column.encode() + b"\x00" + orjson.dumps(value),
                                                    hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]
        self.cache[cached] = found
        return found

    def __call__(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """The other columns, then each personal one as `<column>#hmac`: its values' pseudonyms."""
        logged = self.kept(columns)
        for name in self.columns:
            values = columns[name]
            logged[name + PSEUDONYM_SUFFIX] = None if values is None else [self.pseudonym(name, v) for v in values]
        return logged
