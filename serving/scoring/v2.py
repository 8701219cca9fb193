"""Open Inference Protocol (KServe V2, spoken by KServe, MLServer, Triton): decoder and encoder.

Request: one tensor per signature column, named after it, shape [n] or [n, 1]:
  {"id": "optional", "inputs": [{"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["red", "blue"]},
                                {"name": "size", "datatype": "FP64", "shape": [2, 1], "data": [31, null]}, ...],
   "outputs": [{"name": "label"}]}                 # optional: which outputs to return (default all)
BYTES for string columns, FP64 for numeric ones (INT64 for integer ones, BOOL for booleans); `null` is a missing
value (the pipeline imputes it). A tensor may also be named after one of the contract's ids (scoring/ids.py): BYTES
of strings or INT64 of integers, null for a record without one, shape [n] or [n, 1] as the inputs; never scored, only
logged (to join labels).
Response: {"model_name", "model_version", "id", "outputs": [...]}, the outputs describing the model's task:
  binary      probability FP64 [n] (of the positive class, classes[1]), label [n]
  multiclass  label [n], probabilities FP64 [n, k] (row-major; its "parameters" name the k classes in order)
  regression  prediction FP64 [n]
A label is INT64 for integer classes, BYTES for text ones (BOOL, FP64 for those); the model metadata lists the
outputs, and its "parameters" say the task and the classes.
Errors: {"error": "...", "request_id", "problems": [...]} with 400 (an unknown model or version: 404), naming the
input (scoring/refusal.py). A key outside the protocol's, NaN and Infinity (send null) are refused, naming them.
The binary tensor data extension (tritonclient's default: binary inputs after the JSON, binary outputs when asked
for) is v2_binary.py's, on top of this decoder and encoder.
"""

from __future__ import annotations

from collections.abc import Collection

import orjson

from . import ids, refusal
from .core import InputError, Problem, Scored, id_problems
from .model import Manifest

BINARY_HEADER = "inference-header-content-length"
PLATFORMS = {"onnx": "onnxruntime_onnx", "sklearn": "sklearn", "pyfunc": "mlflow"}
SERVER_NAME = "mlops-scoring"
INPUT_TYPES = {"string": "BYTES", "long": "INT64", "integer": "INT64", "boolean": "BOOL"}
# The keys the protocol defines; any other is refused, naming it (as /predict refuses an unknown field).
REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
TENSOR_KEYS = frozenset({"name", "datatype", "shape", "data", "parameters"})
OUTPUT_KEYS = frozenset({"name", "parameters"})
ID_TYPES = {"BYTES": str, "INT64": int}  # an id tensor's datatypes, and what its values must be


def datatype(field_type: str) -> str:
    return INPUT_TYPES.get(field_type, "FP64")


def label_datatype(classes: tuple | list) -> str:
    """The V2 datatype of a classifier's labels: the classes' own JSON type."""
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


def outputs(manifest: Manifest) -> dict[str, dict]:
    """The model's output tensors by name (metadata form: name, datatype, shape, and parameters where useful)."""
    if manifest.task == "regression":
        return {"prediction": {"name": "prediction", "datatype": "FP64", "shape": [-1]}}
    classes = list(manifest.classes or ())
    label = {"name": "label", "datatype": label_datatype(classes), "shape": [-1]}
    if manifest.task == "binary":
        return {"probability": {"name": "probability", "datatype": "FP64", "shape": [-1],
                                "parameters": {"positive_class": classes[1]}}, "label": label}
    return {"label": label, "probabilities": {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)],
                                              "parameters": {"classes": classes}}}


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": "2", "extensions": ["binary_tensor_data"]}  # Triton's name for it


def metadata(manifest: Manifest) -> dict:
    return {
        "name": manifest.model_name,
        "versions": [manifest.model_version],
        "platform": PLATFORMS.get(manifest.runtime, manifest.runtime),
        "inputs": [{"name": f.name, "datatype": datatype(f.type), "shape": [-1]} for f in manifest.inputs],
        "outputs": list(outputs(manifest).values()),
        "parameters": {"task": manifest.task, **({"classes": list(manifest.classes)} if manifest.classes else {})},
    }


def input_types(manifest: Manifest) -> dict[str, str]:
    """Each input's name -> its V2 datatype: what decode() expects (computed once, not per request)."""
    return {f.name: datatype(f.type) for f in manifest.inputs}


def decode(body: bytes, expected: dict[str, str], known: dict[str, dict], id_names: Collection[str] = (),
           ) -> tuple[dict[str, list], str | None, list[str], dict[str, list]]:
    """(candidate columns, request id or None, requested output names, the id tensors' checked values by id);
    `expected` from input_types(), `known` from outputs(), `id_names` the contract's ids a tensor may be named after."""
    document = refusal.loads(body, nan_is_missing=False, where=_where)
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InputError.one('the body must be an inference request: {"inputs": [{"name", "datatype", "shape", "data"}]}',
                             field="inputs", kind="format")
    _known_keys(document, REQUEST_KEYS, "the inference request")
    if not isinstance(document.get("parameters", {}), dict):
        raise InputError.one("parameters must be an object", field="parameters", kind="format")
    columns: dict[str, list] = {}
    found: dict[str, list] = {}
    for tensor in document["inputs"]:
        if id_names and type(tensor) is dict and tensor.get("name") in id_names:
            id_name, values = _id_tensor(tensor, found)
            found[id_name] = values
            continue
        name = _plain_tensor(tensor, expected)
        if name is not None and name not in columns:
            columns[name] = tensor["data"]
            continue
        name, values = _tensor(tensor, expected)
        if name in columns:
            raise InputError.one(f"input '{name}' is given twice", field=name, kind="duplicate")
        columns[name] = values
    if len(columns) != len(expected):  # no duplicates and no unknown names (refused above): some are missing
        missing = [name for name in expected if name not in columns]
        raise InputError([InputError.one(f"input '{name}' is missing", field=name, kind="missing").problems[0]
                          for name in missing])
    lengths = {len(values) for values in [*columns.values(), *found.values()]}
    if len(lengths) > 1:
        raise InputError.one(f"every input must hold the same number of records, got {sorted(lengths)}", kind="shape")
    request_id = document.get("id")
    if "id" in document and not isinstance(request_id, str):
        raise InputError.one(f"id must be a string, got {request_id!r}", field="id", kind="format")
    requested = _requested(document["outputs"], known) if "outputs" in document else list(known)
    return columns, request_id, requested, found


def _id_tensor(tensor: dict, found: dict[str, list]) -> tuple[str, list]:
    """(name, values) of a tensor named after an id, or the InputError naming what is wrong: the input tensors' form
    (_tensor), a datatype of ID_TYPES, and values that are ids of that datatype."""
    name, datatype = tensor["name"], tensor.get("datatype")
    if name in found:
        raise InputError.one(f"input '{name}' is given twice", field=name, kind="duplicate")
    if not isinstance(datatype, str) or datatype not in ID_TYPES:  # a dict key: an object or a list is no datatype
        raise InputError.one(f"id '{name}' must have datatype BYTES (strings) or INT64 (integers), got {datatype!r}",
                             field=name, kind="datatype")
    _, values = _tensor(tensor, {name: datatype})
    return name, checked_ids(name, datatype, values)


def checked_ids(name: str, datatype: str, values: list) -> list:
    """An id tensor's values as ids (scoring/ids.py: 303.0 is 303), each of its datatype's kind, or the InputError
    naming each record at fault."""
    values = [ids.taken(value) for value in values] if datatype == "INT64" else values
    problems = id_problems(name, values)
    wanted = ID_TYPES[datatype]
    wrong = {problem.record for problem in problems}
    problems += [Problem(record, name, f"id '{name}' has datatype {datatype}: each value must be "
                                       f"{'a string' if wanted is str else 'an integer'} or null (got {value!r:.80})",
                         "id_type")
                 for record, value in enumerate(values)
                 if record not in wrong and value is not None and type(value) is not wanted]
    if problems:
        raise InputError(sorted(problems, key=lambda problem: problem.record or 0))
    return values


def _where(document: object, path: list) -> tuple[int | None, str | None]:
    """The record and input named by a value at `path` (["inputs", k, "data", i, ...]), for a refusal."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if len(path) > 3 and path[0] == "inputs" and path[2] == "data" and isinstance(inputs, list):
        tensor = inputs[path[1]]
        name = tensor.get("name") if isinstance(tensor, dict) else None
        return path[3], name if isinstance(name, str) else f"inputs[{path[1]}]"
    return None, str(path[0]) if path else None


def _known_keys(found: dict, known: frozenset[str], what: str) -> None:
    unknown = [key for key in found if key not in known]
    if unknown:
        raise InputError([InputError.one(f"unknown field: not a key of {what} (keys: {', '.join(sorted(known))})",
                                         field=key, kind="extra_forbidden").problems[0] for key in unknown])


def records(columns: dict[str, list]) -> list[dict]:
    """Columns of equal length as records (what the request log holds and record validation names)."""
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _plain_tensor(tensor: object, expected: dict[str, str]) -> str | None:
    """The name of a well-formed input tensor with flat data ([n] or [n, 1], ints not booleans), else None.
    A few exact type checks, inlined: 23 tensors per request, and the full checks (_tensor) cost more than
    scoring one record did. Anything else takes _tensor."""
    if type(tensor) is not dict or not tensor.keys() <= TENSOR_KEYS or type(tensor.get("parameters", {})) is not dict:
        return None
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if type(name) is not str or type(data) is not list or type(shape) is not list or not shape:
        return None
    kind = expected.get(name)
    if kind is None or tensor.get("datatype") != kind or type(shape[0]) is not int or shape[0] != len(data):
        return None
    if len(shape) != 1 and (len(shape) != 2 or type(shape[1]) is not int or shape[1] != 1):
        return None
    return name if not data or type(data[0]) is not list else None


def _tensor(tensor: object, expected: dict[str, str]) -> tuple[str, list]:
    """(name, flat data) of one input tensor, or the InputError that names what is wrong with it."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InputError.one("each input must be an object with a name, datatype, shape and data", field="inputs",
                             kind="format")
    name = tensor["name"]
    _known_keys(tensor, TENSOR_KEYS, f"input tensor '{name}'")
    if not isinstance(tensor.get("parameters", {}), dict):
        raise InputError.one(f"input '{name}': parameters must be an object", field=name, kind="format")
    if name not in expected:
        raise InputError.one(f"unknown input '{name}': not an input of this model", field=name, kind="unknown_input")
    if tensor.get("datatype") != expected[name]:
        raise InputError.one(f"input '{name}' must have datatype {expected[name]}, got {tensor.get('datatype')!r}",
                             field=name, kind="datatype")
    shape, data = tensor.get("shape"), tensor.get("data")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1)):
        raise InputError.one(f"input '{name}' must have shape [n] or [n, 1], got {shape!r}", field=name, kind="shape")
    if not isinstance(data, list):
        raise InputError.one(f"input '{name}' has no data list", field=name, kind="format")
    if data and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]  # row-major nested form of an [n, 1] tensor
    if len(data) != shape[0]:
        raise InputError.one(f"input '{name}' has shape {shape} but {len(data)} values", field=name, kind="shape")
    return name, data


def _requested(requested: object, known: dict[str, dict]) -> list[str]:
    outputs = requested if isinstance(requested, list) and all(isinstance(o, dict) for o in requested) else None
    if outputs is None or not all(isinstance(o.get("name"), str) and o["name"] in known for o in outputs):
        raise InputError.one(f"requested outputs must be among {list(known)}, got {requested!r}", field="outputs",
                             kind="unknown_output")
    for output in outputs:
        _known_keys(output, OUTPUT_KEYS, f"requested output '{output['name']}'")
        if not isinstance(output.get("parameters", {}), dict):
            raise InputError.one(f"requested output '{output['name']}': parameters must be an object", field="outputs",
                                 kind="format")
    return [output["name"] for output in outputs]


def encode(scored: Scored, manifest: Manifest, request_id: str | None, requested: list[str],
           known: dict[str, dict]) -> bytes:
    """V2's JSON answer (Answer's, made for this one call; the route keeps its own). `known` is outputs(manifest)."""
    return Answer(manifest).json(scored, request_id, requested)


class Answer:
    """V2's JSON answer for the requested outputs: the bytes of orjson.dumps({"model_name", "model_version",
    "outputs": [{"name", "datatype", "shape", "data", and "parameters" where outputs() has them}, ...], "id" if the
    request had one}), the constant parts encoded once: a dict per tensor for orjson to walk cost a microsecond a
    request, as much as decoding a one-record request's 23 tensors takes over the plain parse."""

    def __init__(self, manifest: Manifest) -> None:
        self.multiclass, self.width = manifest.task == "multiclass", len(manifest.classes or ())
        self.head = orjson.dumps({"model_name": manifest.model_name, "model_version": manifest.model_version})[:-1]
        self.tensors = {name: (b'{"name":%s,"datatype":%s,"shape":[' % (orjson.dumps(name), orjson.dumps(spec["datatype"])),
                               b"}" if "parameters" not in spec else b',"parameters":%s}' % orjson.dumps(spec["parameters"]))
                        for name, spec in outputs(manifest).items()}

    def json(self, scored: Scored, request_id: str | None, requested: list[str]) -> bytes:
        n = len(scored.outputs)
        if self.multiclass:
            data = {"label": (b"%d" % n, scored.labels),
                    "probabilities": (b"%d,%d" % (n, self.width), [p for row in scored.values for p in row])}
        else:
            shape = b"%d" % n
            data = {"probability": (shape, scored.values), "label": (shape, scored.labels),
                    "prediction": (shape, scored.values)}
        tensors = []
        for name in requested:
            (start, end), (shape, values) = self.tensors[name], data[name]
            tensors.append(b'%s%s],"data":%s%s' % (start, shape, orjson.dumps(values), end))
        identity = b"" if request_id is None else b',"id":%s' % orjson.dumps(request_id)
        return b'%s,"outputs":[%s]%s}' % (self.head, b",".join(tensors), identity)


def error_body(error: InputError, request_id: str) -> bytes:
    """V2's {"error": message}, plus the request id and the problems every protocol's refusal carries."""
    return refusal.body(error, request_id, error=str(error))
