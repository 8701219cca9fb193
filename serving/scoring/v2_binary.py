"""The Open Inference Protocol's binary tensor data extension (Triton's "binary_tensor_data"), what tritonclient
sends and asks for by default.

Request: the JSON inference request (v2.py), `Inference-Header-Content-Length` bytes long, then the raw data of
each input whose "parameters" hold "binary_data_size", in input order, without padding. JSON `data` inputs and
binary ones may be mixed in one request.
  numbers, BOOL   little-endian, row-major, each element its native size (BOOL: one byte, 0 or 1)
  BYTES           each element a 4-byte little-endian length, then that many bytes (UTF-8 text here)
A tensor named after one of the contract's ids may be binary too: BYTES or INT64 (v2.py).
A binary input may have the model's own datatype (v2.input_types) or any whose values that datatype holds exactly:
  FP64 input   FP64, FP32, FP16, or any integer type (values within ±2**53); tritonclient users often send float32
  INT64 input  any integer type (values within int64)
  BOOL, BYTES  themselves only
A FP32 value is taken as the exact number it stands for (0.1 in float32 is 0.100000001490116...).
Missing values: NaN in a binary float tensor is a missing value, as `null` is in JSON data; ±Infinity is refused.
Integer, BOOL and BYTES binary tensors cannot hold a missing value (an empty BYTES element is the empty string):
send such an input as JSON `data` with `null` (tritonclient turns None into the text "None" either way).
Response: when the request asks for binary outputs (an output's parameters.binary_data true, or the request's
parameters.binary_data_output true for outputs that do not say; tritonclient's infer() asks by default), the JSON
answer with each binary output's `data` replaced by parameters.binary_data_size, then those outputs' raw data in
order; the `Inference-Header-Content-Length` response header says where the JSON ends. Otherwise JSON (v2.encode).
A malformed request (sizes that do not add up, a header length beyond the body, an element that is not UTF-8, a
datatype not accepted) is a 400 naming the input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection
from typing import NamedTuple

import numpy as np
import orjson

from . import v2
from .core import InputError, Scored
from .model import Manifest

CONTENT_TYPE = "application/octet-stream"
DTYPES = {datatype: np.dtype(code) for datatype, code in {
    "FP64": "<f8", "FP32": "<f4", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4", "INT16": "<i2", "INT8": "i1",
    "UINT64": "<u8", "UINT32": "<u4", "UINT16": "<u2", "UINT8": "u1", "BOOL": "u1"}.items()}
INTEGERS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
ACCEPTED = {"FP64": ("FP64", "FP32", "FP16", *INTEGERS), "INT64": INTEGERS, "BOOL": ("BOOL",), "BYTES": ("BYTES",),
            "ID": ("BYTES", "INT64")}
ID_ACCEPTED = "ID"  # an id tensor's key in ACCEPTED: its own datatype among those
EXACT_FLOAT_INTEGER = 2**53  # beyond it a float64 no longer holds every integer
LENGTH = struct.Struct("<I")


class Request(NamedTuple):
    columns: dict[str, list]  # as v2.decode's: candidate columns, validated by the scoring path
    request_id: str | None
    requested: list[str]
    binary: frozenset[str]  # the requested outputs to answer as binary data
    ids: dict[str, list]  # the id tensors' checked values, by id (v2.decode's)


def applies(body: bytes, header_length: str | None) -> bool:
    """Whether the request may use the extension: binary inputs come with the header; binary outputs can be asked
    for without it, always by a parameter named binary_data*. A JSON request without that name is v2.decode's."""
    return header_length is not None or b'"binary_data' in body


def decode(body: bytes, header_length: str | None, expected: dict[str, str], known: dict[str, dict],
           id_names: Collection[str] = ()) -> Request:
    """The request's columns, id, requested outputs, those to answer as binary, and the id tensors' values; `expected`
    from v2.input_types(), `known` from v2.outputs(), `id_names` the contract's ids. The JSON inputs and outputs are
    v2.decode's."""
    split = _json_length(header_length, len(body))
    document = _document(body[:split])
    data, offset = memoryview(body)[split:], 0
    columns: dict[str, list] = {}
    found: dict[str, list] = {}
    json_inputs = []
    for tensor in document["inputs"]:
        size = _binary_size(tensor)
        if size is None:
            json_inputs.append(tensor)
            continue
        name, datatype, count = _binary_tensor(tensor, {**expected, **dict.fromkeys(id_names, ID_ACCEPTED)})
        if name in columns or name in found:
            raise InputError.one(f"input '{name}' is given twice", field=name, kind="duplicate")
        if offset + size > len(data):
            raise InputError.one(f"input '{name}' has binary_data_size {size} but only {len(data) - offset} bytes of "
                                 "binary data are left", field=name, kind="binary_size")
        chunk = data[offset:offset + size]
        if name in expected:
            columns[name] = _values(chunk, datatype, expected[name], count, name)
        else:  # an id: its own datatype, BYTES or INT64
            found[name] = v2.checked_ids(name, datatype, _values(chunk, datatype, datatype, count, name))
        offset += size
    if offset != len(data):
        raise InputError.one(f"the body holds {len(data) - offset} bytes beyond the inputs' binary_data_size",
                             field="inputs", kind="binary_size")
    for tensor in json_inputs:
        if isinstance(tensor, dict) and isinstance(tensor.get("name"), str) and tensor["name"] in {*columns, *found}:
            raise InputError.one(f"input '{tensor['name']}' is given twice", field=tensor["name"], kind="duplicate")
    rest = orjson.dumps({**document, "inputs": json_inputs})
    json_columns, request_id, requested, json_ids = v2.decode(
        rest, {n: t for n, t in expected.items() if n not in columns}, known, [name for name in id_names if name not in found])
    columns.update(json_columns)
    found.update(json_ids)
    lengths = {len(values) for values in [*columns.values(), *found.values()]}
    if len(lengths) > 1:
        raise InputError.one(f"every input must hold the same number of records, got {sorted(lengths)}", kind="shape")
    ordered = {name: columns[name] for name in expected}  # the signature's order, as JSON clients mostly send it
    return Request(ordered, request_id, requested, _binary_outputs(document, requested), found)


def _json_length(header_length: str | None, body_length: int) -> int:
    if header_length is None:
        return body_length
    if not (header_length.isascii() and header_length.isdigit()):
        raise InputError.one(f"Inference-Header-Content-Length must be a number of bytes, got {header_length!r}",
                             kind="binary_size")
    if int(header_length) > body_length:
        raise InputError.one(f"Inference-Header-Content-Length {header_length} is beyond the body's {body_length} bytes",
                             kind="binary_size")
    return int(header_length)


def _document(header: bytes) -> dict:
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise InputError.one(f"the inference header (the body's first {len(header)} bytes) is not valid JSON: {error}",
                             kind="json_invalid") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InputError.one('the body must be an inference request: {"inputs": [{"name", "datatype", "shape", ...}]}',
                             field="inputs", kind="format")
    return document


def _binary_size(tensor: object) -> int | None:
    """The input's binary_data_size, or None when it is a JSON tensor (v2.decode's)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("parameters"), dict):
        return None
    if "binary_data_size" not in tensor["parameters"]:
        return None
    size, name = tensor["parameters"]["binary_data_size"], tensor.get("name")
    field = name if isinstance(name, str) else "inputs"
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError.one(f"input '{field}' must have a binary_data_size of 0 or more bytes, got {size!r}",
                             field=field, kind="binary_size")
    if "data" in tensor:
        raise InputError.one(f"input '{field}' has both data and binary_data_size: send one", field=field, kind="format")
    return size


def _binary_tensor(tensor: dict, expected: dict[str, str]) -> tuple[str, str, int]:
    """(name, datatype, number of elements) of a binary input, or the InputError naming what is wrong."""
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str):
        raise InputError.one("each input must be an object with a name, datatype and shape", field="inputs", kind="format")
    if name not in expected:
        raise InputError.one(f"input '{name}' is not an input of this model", field=name, kind="unknown_input")
    accepted = ACCEPTED[expected[name]]
    if datatype not in accepted:
        wanted = " or ".join(accepted) if expected[name] == ID_ACCEPTED else expected[name]
        raise InputError.one(f"input '{name}' must have datatype {wanted} (binary data: one of {list(accepted)}), "
                             f"got {datatype!r}", field=name, kind="datatype")
    if (type(shape) is not list or len(shape) not in (1, 2) or type(shape[0]) is not int or shape[0] < 0
            or (len(shape) == 2 and (type(shape[1]) is not int or shape[1] != 1))):
        raise InputError.one(f"input '{name}' must have shape [n] or [n, 1], got {shape!r}", field=name, kind="shape")
    return name, datatype, shape[0]


def _values(chunk: memoryview, datatype: str, target: str, count: int, name: str) -> list:
    """The `count` values of one binary input as the JSON decoder gives them (float, int, bool, str; None missing)."""
    if datatype == "BYTES":
        return _strings(chunk, count, name)
    dtype = DTYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise InputError.one(f"input '{name}' has {count} {datatype} elements ({count * dtype.itemsize} bytes) but "
                             f"binary_data_size {len(chunk)}", field=name, kind="binary_size")
    array = np.frombuffer(chunk, dtype)
    if datatype == "BOOL":
        if (array > 1).any():
            raise InputError.one(f"input '{name}': a BOOL element must be the byte 0 or 1", field=name, kind="bool_type")
        return array.astype(bool).tolist()
    if target == "INT64":
        if datatype == "UINT64" and (array > np.iinfo(np.int64).max).any():
            raise InputError.one(f"input '{name}' holds a value beyond INT64", field=name, kind="int_type")
        return array.tolist()
    if dtype.kind in "iu":
        if count and max(abs(int(array.min())), int(array.max())) > EXACT_FLOAT_INTEGER:
            raise InputError.one(f"input '{name}' holds an integer beyond ±2**53, which FP64 cannot hold exactly",
                                 field=name, kind="float_type")
        return array.astype(np.float64).tolist()
    values = array.tolist() if datatype == "FP64" else array.astype(np.float64).tolist()
    if math.isfinite(sum(values)):  # the common case, in C; an overflowing sum only takes the longer way
        return values
    if np.isinf(array).any():
        raise InputError.one(f"input '{name}' holds Infinity: a number must be finite (NaN is a missing value)",
                             field=name, kind="finite_number")
    return [None if v != v else v for v in values]  # NaN != NaN: a missing value, as JSON's null


def _strings(chunk: memoryview, count: int, name: str) -> list:
    raw, elements, offset, unpack = chunk.tobytes(), [], 0, LENGTH.unpack_from
    try:
        for _ in range(count):
            start = offset + LENGTH.size
            offset = start + unpack(raw, offset)[0]
            elements.append(raw[start:offset])
    except struct.error:
        raise InputError.one(f"input '{name}' ends before its element {len(elements)} ({count} by its shape)",
                             field=name, kind="binary_size") from None
    if offset != len(raw):
        beyond = f"{offset - len(raw)} bytes short of" if offset > len(raw) else f"{len(raw) - offset} bytes beyond"
        raise InputError.one(f"input '{name}': its {count} elements are {beyond} its binary_data_size", field=name,
                             kind="binary_size")
    joined = b"\0".join(elements)  # one UTF-8 decode for all (the loop above is the per-element cost)
    if joined.count(b"\0") == max(count - 1, 0):
        try:
            return joined.decode().split("\0") if count else []
        except UnicodeDecodeError:
            pass
    return [_text(element, index, name) for index, element in enumerate(elements)]


def _text(element: bytes, index: int, name: str) -> str:
    try:
        return element.decode()
    except UnicodeDecodeError:
        raise InputError.one(f"input '{name}': element {index} is not UTF-8 text", field=name,
                             kind="string_unicode") from None


def _binary_outputs(document: dict, requested: list[str]) -> frozenset[str]:
    """The requested outputs to answer as binary data: an output's own binary_data, else the request's
    binary_data_output (default false)."""
    parameters = document.get("parameters")
    default = parameters.get("binary_data_output", False) if isinstance(parameters, dict) else False
    if not isinstance(default, bool):
        raise InputError.one(f"parameters.binary_data_output must be true or false, got {default!r}", field="parameters",
                             kind="bool_type")
    flags = dict.fromkeys(requested, default)
    for output in document.get("outputs") or ():  # v2.decode checked each is an object naming a known output
        own = output.get("parameters")
        flag = own.get("binary_data", default) if isinstance(own, dict) else default
        if not isinstance(flag, bool):
            raise InputError.one(f"output '{output['name']}': parameters.binary_data must be true or false, got {flag!r}",
                                 field=output["name"], kind="bool_type")
        flags[output["name"]] = flag
    return frozenset(name for name, flag in flags.items() if flag)


def encode(scored: Scored, manifest: Manifest, request_id: str | None, requested: list[str], known: dict[str, dict],
           binary: frozenset[str]) -> tuple[bytes, int]:
    """(body, length of its JSON part): v2.encode's answer with the `binary` outputs' data after the JSON."""
    answer = orjson.loads(v2.encode(scored, manifest, request_id, requested, known))
    chunks = []
    for tensor in answer["outputs"]:
        if tensor["name"] in binary:
            raw = _raw(tensor.pop("data"), tensor["datatype"])
            tensor["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(raw)}
            chunks.append(raw)
    header = orjson.dumps(answer)
    return b"".join([header, *chunks]), len(header)


def _raw(values: list, datatype: str) -> bytes:
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in values]
        return b"".join(LENGTH.pack(len(e)) + e for e in encoded)
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()
