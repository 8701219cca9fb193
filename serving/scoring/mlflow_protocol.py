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
Errors in MLflow's shape: {"error_code": "BAD_REQUEST", "message": "..."} with status 400.
"""

from __future__ import annotations

import csv
import io
import json
import math

import orjson

from .core import InputError, Scored, too_many_records

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
BAD_REQUEST = "BAD_REQUEST"


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def refused_content_type(content_type: str) -> str | None:
    """MLflow's 415 text for a content type, charset or parameter it does not take; None if accepted."""
    kind, *pairs = [part.strip() for part in content_type.split(";")]
    parameters = {key.strip().lower(): value.strip() for key, _, value in (pair.partition("=") for pair in pairs if pair)}
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        return "The scoring server only supports UTF-8"
    if set(parameters) - {"charset"}:
        return f"Unrecognized content type parameters: {', '.join(sorted(set(parameters) - {'charset'}))}."
    if kind.lower() not in (*JSON_TYPES, *CSV_TYPES):
        return (f"This predictor only supports the following content types: Types: {[*JSON_TYPES, *CSV_TYPES]}. "
                f"Got '{content_type}'.")
    return None


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
    document = _loads(body)
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


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        # MLflow parses with json.loads, which reads NaN (a missing value to pandas). orjson does not.
        if b"NaN" not in body:
            raise InputError.one(f"body is not valid JSON: {error}", kind="json_invalid") from None
    try:
        return json.loads(body, parse_constant=_nan_only)
    except ValueError as error:
        raise InputError.one(f"body is not valid JSON: {error}", kind="json_invalid") from None


def _nan_only(constant: str) -> None:
    if constant != "NaN":
        raise ValueError(f"{constant} is not a valid value (only NaN, meaning missing, is accepted)")
    return None


def _split_records(payload: object, max_records: int) -> list:
    if not isinstance(payload, dict) or not isinstance(payload.get("columns"), list) \
            or not isinstance(payload.get("data"), list):
        raise InputError.one('dataframe_split must be {"columns": [...], "data": [[...], ...]}',
                             field="dataframe_split", kind="format")
    columns, rows = payload["columns"], payload["data"]
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
    for index, row in enumerate(reader):
        if not row:
            continue
        if len(records) == max_records:
            raise too_many_records(max_records)
        if len(row) != len(header):
            raise InputError.one(f"row has {len(row)} values for {len(header)} columns", kind="csv_invalid", record=index)
        records.append({name: _csv_value(name, cell, name in numeric, index, name in integers)
                        for name, cell in zip(header, row, strict=True)})
    return records


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


def error_body(error: InputError) -> bytes:
    return orjson.dumps({"error_code": BAD_REQUEST, "message": f"Invalid input. {error}"})
