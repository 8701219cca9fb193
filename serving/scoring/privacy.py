"""What the request log keeps of the columns the model's contract marks personal (`personal` in contract.json).

REQUEST_LOG_PERSONAL says it (serving/scoring/settings.py; the stack's observability.requestLogPersonal):
  keep          the values as sent (a log with personal data: its retention and readers are yours to govern)
  drop          the columns are left out of the log's inputs (the default)
  pseudonymise  each column is logged as `<column>#hmac`: the first 32 hex digits of HMAC-SHA256 with the stack's
                secret key (REQUEST_LOG_PSEUDONYM_KEY) over the column's name and its value's JSON; null stays null.
                The same value gives the same pseudonym (requests can be joined, counted), no one without the key
                can test a guess (a column of 100 possible values: a plain hash would be reversed by trying them all).
Scoring always sees the values as sent; only the log line changes. A dropped or pseudonymised column is absent from
the log under its own name, so the drift job (monitoring/drift.py) leaves it out and compares the rest.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import msgspec
import orjson
from msgspec import UNSET

from .model import Manifest

MODES = ("keep", "drop", "pseudonymise")
PSEUDONYM_SUFFIX = "#hmac"  # '#' is in no contract column name (training/contract.py NAME): no collision
PSEUDONYM_HEX_DIGITS = 32  # 128 bits: no two values of a column meet by chance, half the log bytes of 64

Records = list  # dicts, or msgspec Structs (scoring/fastpath.py's typed records): the log encodes either


def _as_dict(record: object) -> dict:
    """A copy of the record as a dict, whichever form validation gave it."""
    return record.copy() if type(record) is dict else msgspec.structs.asdict(record)  # type: ignore[arg-type]


def personal_inputs(manifest: Manifest) -> list[str]:
    """The model's inputs its contract marks personal (ids are not inputs: the request log never holds them)."""
    personal = set((manifest.contract or {}).get("personal") or ())
    return [name for name in manifest.input_names if name in personal]


def for_log(mode: str, manifest: Manifest, key: bytes | None = None) -> Callable[[Records], Records]:
    """records -> the records the request log holds, for `mode` (one of MODES); the identity when nothing changes."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    columns = personal_inputs(manifest)
    if mode == "keep" or not columns:
        return _unchanged
    if mode == "drop":
        return Dropper(columns)
    if not key:
        raise ValueError("pseudonymise needs a key")
    return Pseudonymiser(columns, key)


def _unchanged(records: Records) -> Records:
    return records


class Dropper:
    def __init__(self, columns: list[str]) -> None:
        self.columns = tuple(columns)

    def __call__(self, records: Records) -> Records:
        """The records without the columns. Typed records (scoring/fastpath.py) lose them in place: each column set to
        msgspec's UNSET, which its encoder leaves out. They are the request's own, and the log is their last use
        (ScoringPath.score): 4 attribute writes a record cost a third of building a Struct of the other fields."""
        if not records:
            return records
        if type(records[0]) is not dict:
            for name in self.columns:
                for record in records:
                    setattr(record, name, UNSET)
            return records
        out = []
        for record in records:  # a C copy and a few deletions: a quarter of building each record again key by key
            copy = record.copy()
            for name in self.columns:
                del copy[name]
            out.append(copy)
        return out


class Pseudonymiser:
    CACHE_SIZE = 100_000  # pseudonyms remembered: personal columns repeat their values (few distinct ones)

    def __init__(self, columns: list[str], key: bytes) -> None:
        self.columns = tuple(columns)
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

    def __call__(self, records: Records) -> Records:
        """Each record with its personal columns replaced by `<column>#hmac` (at the end of the record)."""
        out = []
        for record in records:
            logged = _as_dict(record)
            for name in self.columns:
                logged[name + PSEUDONYM_SUFFIX] = self.pseudonym(name, logged.pop(name))
            out.append(logged)
        return out
