"""What every protocol does the same with a request it cannot take: the Content-Type rule, JSON that only Python's
parser reads (NaN, Infinity, lone surrogates), and the refusal body's common part.

Content-Type: application/json, with no parameter but `charset=utf-8` (MLflow's rule, kept on every protocol);
/invocations also takes text/csv. /predict and V2 take a request without one as JSON (tritonclient sends none);
/invocations refuses it as `mlflow models serve` does. A type not taken is a 415 naming the accepted ones.
Every refusal carries {"request_id", "problems": [{"record", "field", "problem", "type"}]} besides the protocol's
own keys, so one client-side reader serves all three protocols.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import orjson

from .core import NON_FINITE, InputError, Problem, non_finite_problem

JSON = "application/json"
Where = Callable[[object, list], tuple[int | None, str | None]]  # (document, path of a value) -> (record, field)


def content_type_problem(content_type: str | None, accepted: tuple[str, ...], none_is_json: bool) -> Problem | None:
    """None when the Content-Type is taken, else the Problem a 415 names."""
    if content_type in accepted:  # the common case, as clients send it: nothing to parse
        return None
    if not content_type:
        return None if none_is_json else _refused(content_type, accepted, "no Content-Type")
    kind, *pairs = [part.strip() for part in content_type.split(";")]
    parameters = {key.strip().lower(): value.strip().strip('"').lower()
                  for key, _, value in (pair.partition("=") for pair in pairs if pair)}
    if kind.lower() not in accepted:
        return _refused(content_type, accepted, f"Content-Type {kind!r} is not taken")
    if parameters.get("charset", "utf-8") != "utf-8":
        return _refused(content_type, accepted, "only UTF-8 is read (charset=utf-8)")
    if set(parameters) - {"charset"}:
        return _refused(content_type, accepted, f"unknown Content-Type parameters {sorted(set(parameters) - {'charset'})}")
    return None


def _refused(content_type: str | None, accepted: tuple[str, ...], why: str) -> Problem:
    return Problem(None, "content-type", f"{why}: send {' or '.join(accepted)} (charset=utf-8 or none), got "
                                         f"{content_type!r}", "content_type")


def body(refused: InputError, request_id: str, **own: object) -> bytes:
    """A refusal's JSON: the protocol's own keys, then the request id and the problems."""
    return orjson.dumps({**own, "request_id": request_id, "problems": [p.as_dict() for p in refused.problems]})


class _NonFinite(float):
    """What Python's parser makes of NaN/Infinity here: a marker that remembers the word."""

    word: str


def _non_finite(word: str) -> _NonFinite:
    marker = _NonFinite(word.replace("Infinity", "inf"))
    marker.word = word
    return marker


def loads(body: bytes, nan_is_missing: bool, where: Where) -> object:
    """The JSON document (orjson; Python's parser only for what orjson refuses). NaN is a missing value when
    `nan_is_missing` (MLflow's protocol), else refused; Infinity always is; both named by `where`'s record and
    field. Too deep, not UTF-8, a lone surrogate or an integer beyond 64 bits: a clear refusal, never a 5xx."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        orjson_error = error
    if b"NaN" not in body and b"Infinity" not in body:
        raise InputError.one(f"body is not valid JSON: {orjson_error}", kind="json_invalid")
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_non_finite)
    except RecursionError:
        raise InputError.one("body is not valid JSON: nested too deeply", kind="json_invalid") from None
    except ValueError as error:  # UnicodeDecodeError is one
        raise InputError.one(f"body is not valid JSON: {error}", kind="json_invalid") from None
    found = _first(document, lambda v: isinstance(v, _NonFinite) and not (nan_is_missing and v.word == "NaN"))
    if found is not None and isinstance(found[1], float):
        record, field = where(document, found[0])
        raise InputError([Problem(record, field, non_finite_problem(found[1]), NON_FINITE)])
    if nan_is_missing:
        document = _nan_as_none(document)
    found = _first(document, _unwritable)
    if found is not None:
        record, field = where(document, found[0])
        raise InputError([Problem(record, field, f"cannot be read: {_unwritable(found[1])}", "json_invalid")])
    return document


def _unwritable(value: object) -> str | None:
    """Why the request log could not write this value (orjson's words), or None."""
    if not isinstance(value, str | int):
        return None
    try:
        orjson.dumps(value)
    except TypeError as error:
        return str(error)
    return None


def _walk(document: object) -> Iterator[tuple[list, object]]:
    """(path, value) of every value, depth first, without recursion (the depth is the client's choice)."""
    stack: list[tuple[list, object]] = [([], document)]
    while stack:
        path, value = stack.pop()
        yield path, value
        if isinstance(value, dict):
            stack.extend(([*path, key], item) for key, item in reversed(list(value.items())))
            stack.extend(([*path, key], key) for key in reversed(list(value)))  # keys too: a key may be unreadable
        elif isinstance(value, list):
            stack.extend(([*path, index], item) for index, item in reversed(list(enumerate(value))))


def _first(document: object, wrong: Callable[[object], object]) -> tuple[list, object] | None:
    return next(((path, value) for path, value in _walk(document) if wrong(value)), None)


def _nan_as_none(document: object) -> object:
    """NaN markers as None, in place (containers are the parser's own)."""
    for _, value in _walk(document):
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in list(items):
            if isinstance(item, _NonFinite):
                value[key] = None  # type: ignore[index]
    if isinstance(document, _NonFinite):
        return None
    return document
