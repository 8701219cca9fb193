"""MLflow's scoring protocol (`mlflow models serve`, Databricks Model Serving): decoder and encoder.

Accepted like MLflow's scoring server does for a model with a column-based signature:
  application/json  {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                    {"dataframe_records": [{...}, ...]}
                    {"instances": [{...}, ...] or {"col": [...], ...}}
                    {"inputs": [{...}, ...] or {"col": [...], ...}}
                    exactly one of these keys (other keys, "params" included, are ignored as MLflow does)
  text/csv          a header row and one row per record; an empty cell is a missing value
Answered as MLflow's scoring server answers for the version's pyfunc (`mlflow.pyfunc.load_model(uri).predict`,
written as {"predictions": <its array as nested lists>}), by the MLmodel's predict_fn:
  predict_proba   a classifier's probabilities, one list per record in the classes' order (binary: [1 - p, p])
  predict         a classifier's labels (their own JSON type), a regressor's values
  anything else   what the runtime's model answers to that method (scoring/model.py Scorer.answer)
Columns that are not in the signature are ignored and a number in a string column is taken as its text,
as MLflow does; a missing column or text in a numeric column is refused.
NaN is read as a missing value (MLflow parses with json.loads); Infinity is refused, naming the record and column.
Errors in MLflow's shape: {"error_code": "BAD_REQUEST", "message": "..."} with status 400 (415 for a content type
not taken), plus the request id and problems every protocol's refusal carries (scoring/refusal.py).
"""

from __future__ import annotations

import csv
import io
import math

import orjson

from . import refusal
from .core import InputError, Scored, too_many_records

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
CONTENT_TYPES = (*JSON_TYPES, *CSV_TYPES)
BAD_REQUEST = "BAD_REQUEST"


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str, numeric: frozenset[str], integers: frozenset[str] = frozenset(),
           max_records: int = 100_000) -> list:
    """The body as candidate records (not yet validated); `integers`, the numeric columns of integer type; more than
    `max_records` rows or columns' values are refused before records are built from them."""
    kind = media_type(content_type)
    if kind in CSV_TYPES:
        return decode_csv(body, numeric, integers, max_records)
    if kind in JSON_TYPES:
        return decode_json(body, max_records)
    raise InputError.one(f"unsupported content type {kind or '(none)'!r}: use application/json or text/csv",
                         kind="content_type")


def decode_json(body: bytes, max_records: int = 100_000) -> list:
    # MLflow parses with json.loads, which reads NaN (a missing value to pandas): so does this, nothing else of it.
    document = refusal.loads(body, nan_is_missing=True, where=_where)
    # Like MLflow: other top-level keys ("params" included: this model takes none) are ignored.
    if not isinstance(document, dict) or len([key for key in document if key in FORMATS]) != 1:
        received = list(document) if isinstance(document, dict) else f"a {type(document).__name__}"
        raise InputError.one(f"The input must be a JSON dictionary with exactly one of the input fields "
                             f"{{{', '.join(repr(f) for f in FORMATS)}}}. Received: {received}", kind="format")
    key = next(key for key in document if key in FORMATS)
    payload = document[key]
    if key == "dataframe_split":
        return _split_records(payload, max_records)
    if key == "dataframe_records":
        if not isinstance(payload, list):
            raise InputError.one("dataframe_records must be a list of records", field=key, kind="format")
        return payload
    return _instances(payload, key, max_records)


def _where(document: object, path: list) -> tuple[int | None, str | None]:
    """The record and column of a value at `path` in one of the four JSON formats (for a refusal naming them)."""
    key, rest = (path[0], path[1:]) if path else (None, [])
    if not isinstance(key, str):
        return None, None
    payload = document.get(key) if isinstance(document, dict) else None
    if key == "dataframe_split" and rest[:1] == ["data"] and len(rest) > 2:
        columns = payload.get("columns") if isinstance(payload, dict) else None
        index = rest[2]
        named = columns[index] if isinstance(columns, list) and isinstance(index, int) and index < len(columns) else None
        return rest[1], named if isinstance(named, str) else str(index)
    if isinstance(payload, list) and len(rest) > 1 and isinstance(rest[1], str):
        return rest[0], rest[1]
    if isinstance(payload, dict) and len(rest) > 1 and isinstance(rest[1], int):
        return rest[1], rest[0]
    return None, key


def _split_records(payload: object, max_records: int) -> list:
    if not isinstance(payload, dict) or not isinstance(payload.get("columns"), list) \
            or not isinstance(payload.get("data"), list):
        raise InputError.one('dataframe_split must be {"columns": [...], "data": [[...], ...]}',
                             field="dataframe_split", kind="format")
    columns, rows = payload["columns"], payload["data"]
    wrong = next((index for index, name in enumerate(columns) if not isinstance(name, str)), None)
    if wrong is not None:
        raise InputError.one(f"column names must be strings: column {wrong} is {type(columns[wrong]).__name__} "
                             f"{columns[wrong]!r}", field="dataframe_split", kind="format")
    if len(rows) > max_records:
        raise too_many_records(max_records, len(rows))
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InputError.one(f"row has {len(row) if isinstance(row, list) else 'no'} values for "
                                 f"{len(columns)} columns", field="dataframe_split", kind="format", record=index)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _instances(payload: object, key: str, max_records: int) -> list:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict) and all(isinstance(v, list) for v in payload.values()):
        lengths = {len(v) for v in payload.values()}
        if len(lengths) > 1:
            raise InputError.one(f"the columns of '{key}' have different lengths {sorted(lengths)}", field=key,
                                 kind="format")
        if lengths and (count := lengths.pop()) > max_records:
            raise too_many_records(max_records, count)
        names = list(payload)
        return [dict(zip(names, row, strict=True)) for row in zip(*payload.values(), strict=True)]
    raise InputError.one(f"'{key}' must be a list of records or an object of columns", field=key, kind="format")


def decode_csv(body: bytes, numeric: frozenset[str], integers: frozenset[str] = frozenset(),
               max_records: int = 100_000) -> list[dict]:
    """Header row + rows; numeric columns as numbers (an integer column's whole numbers as ints; an empty cell is
    missing), others as strings."""
    try:
        reader = csv.reader(io.StringIO(body.decode("utf-8-sig")))
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError.one(f"body is not UTF-8 CSV: {error}", kind="csv_invalid") from None
    if not header:
        raise InputError.one("the CSV body has no header row", kind="csv_invalid")
    records: list[dict] = []
    try:
        for index, row in enumerate(reader):
            if not row:
                continue
            if len(records) == max_records:
                raise too_many_records(max_records)
            if len(row) != len(header):
                raise InputError.one(f"row has {len(row)} values for {len(header)} columns", kind="csv_invalid",
                                     record=index)
            records.append({name: _csv_value(name, cell, name in numeric, index, name in integers)
                            for name, cell in zip(header, row, strict=True)})
    except csv.Error as error:  # raised by the reader while rows are read: a cell over its limit, a NUL byte
        raise InputError.one(f"CSV row {reader.line_num - 1} cannot be read: {_csv_reason(error)}", kind="csv_invalid",
                             record=len(records)) from None
    return records


def _csv_reason(error: csv.Error) -> str:
    if "field larger than field limit" in str(error):
        return f"a cell is longer than {csv.field_size_limit()} characters"
    return str(error)


def _csv_value(name: str, cell: str, is_number: bool, record: int, is_integer: bool = False) -> object:
    if cell == "":
        return None
    if not is_number:
        return cell
    if is_integer and cell.strip().lstrip("+-").isdigit():
        return int(cell)
    try:
        value = float(cell)
    except ValueError:
        raise InputError.one(f"Input should be a valid number (got {cell!r})", field=name, kind="float_parsing",
                             record=record) from None
    return None if math.isnan(value) else value


def encode(scored: Scored, task: str) -> bytes:
    """`scored.answer` when the path computed the pyfunc's own answer (scoring/core.py), else the scores."""
    if scored.answer is not None:
        return orjson.dumps({"predictions": scored.answer})
    if task == "binary":
        return orjson.dumps({"predictions": [[1.0 - p, p] for p in scored.values]})
    return orjson.dumps({"predictions": scored.values})


def error_body(error: InputError, request_id: str) -> bytes:
    """MLflow's error shape, plus the request id and the problems every protocol's refusal carries."""
    return refusal.body(error, request_id, error_code=BAD_REQUEST, message=f"Invalid input. {error}")
