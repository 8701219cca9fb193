"""OpenAPI documentation of every route, generated from the model: its name, description and contract (what a
prediction means), examples built from its own input example and outputs shaped by its task.

The bodies are read and validated by our decoders (not by FastAPI's parameter parsing, which would cost a
pydantic model per record), so FastAPI cannot infer these documents by itself.

Why one module: the routes' schemas are built from the same few pieces (records, refusals, examples) and read
as one API document (tests/serving/test_schemathesis.py holds it to what the app does).
"""

from __future__ import annotations

import re

from prometheus_client import CONTENT_TYPE_LATEST

from . import ids, v2
from .model import Manifest

JSON = "application/json"
TEXT = "text/plain"
PROMETHEUS = CONTENT_TYPE_LATEST
METRICS_EXAMPLE = (
    "# HELP scoring_http_requests_total HTTP requests by route, method, status and protocol\n"
    "# TYPE scoring_http_requests_total counter\n"
    'scoring_http_requests_total{method="POST",protocol="mlflow",route="/invocations",status="200"} 42.0\n'
    'scoring_model_info{model_name="my-model",model_version="3",runtime="onnx"} 1.0\n'
)
TASK_WORDS = {"binary": "a binary classifier", "multiclass": "a multiclass classifier", "regression": "a regressor"}


def description(manifest: Manifest) -> str:
    """The API's description: the model, what a row is, what it predicts and what a prediction means."""
    contract, target = manifest.contract or {}, manifest.target
    lines = [f"Model `{manifest.model_name}` version {manifest.model_version}: {TASK_WORDS[manifest.task]}"
             + (f" of `{target['name']}`" if contract else "") + f", served by the {manifest.runtime} runtime."]
    if manifest.description:
        lines.append(manifest.description)
    if contract.get("description"):
        lines.append(f"A record is {contract['description']}.")
    lines.append(prediction_meaning(manifest))
    lines.append("Three protocols share one validation and scoring path: `/predict`, MLflow's `/invocations` "
                 "and the Open Inference Protocol (`/v2/...`).")
    if names := ids.names(manifest):
        lines.append(f"Each record may carry its id ({', '.join(f'`{name}`' for name in names)}: a field of the record, "
                     f"a column, or a V2 tensor of that name, BYTES or INT64): {ids.DESCRIPTION}.")
    return "\n\n".join(lines)


def prediction_meaning(manifest: Manifest) -> str:
    target, classes = manifest.target, list(manifest.classes or ())
    meaning = f" ({target['description']})" if target.get("description") else ""
    if manifest.task == "binary":
        rule = (f"`label` is {classes[1]!r} when the probability reaches {manifest.decision_threshold:g}, else "
                f"{classes[0]!r}" if manifest.decision_threshold is not None
                else f"`label` is the likelier class of {classes[0]!r} and {classes[1]!r}")
        return f"Each prediction's `probability` is the probability of class {classes[1]!r}{meaning}; {rule}."
    if manifest.task == "multiclass":
        return (f"Each prediction's `label` is the likeliest of the classes {classes}{meaning}, and `probabilities` "
                "gives each class's probability.")
    return f"Each prediction is the predicted `{target['name']}`{meaning}."


def output_names(manifest: Manifest) -> list[str]:
    """The fields of one /predict prediction (and of the request log's outputs)."""
    return {"binary": ["probability", "label"], "multiclass": ["label", "probabilities"],
            "regression": ["prediction"]}[manifest.task]


def example_prediction(manifest: Manifest) -> dict:
    classes = list(manifest.classes or ())
    if manifest.task == "binary":
        return {"probability": 0.1342, "label": classes[0]}
    if manifest.task == "multiclass":
        share = round(1 / len(classes), 4)
        return {"label": classes[0], "probabilities": {str(c): share for c in classes}}
    return {"prediction": 123.4}


def _number_field(manifest: Manifest) -> str:
    return next((f.name for f in manifest.inputs if not f.is_string), manifest.inputs[0].name)


def mlflow_version(manifest: Manifest) -> str:
    """The MLflow version that logged the model (recorded in the manifest at packaging): what /version answers."""
    return str(manifest.raw.get("mlflow_version") or "unknown")


def text_response(example: str, description: str) -> dict:
    return {200: {"description": description, "content": {TEXT: {"schema": {"type": "string"}, "example": example}}}}


def ping_responses() -> dict:
    return {**text_response("\n", "the model is loaded (MLflow's clients read only the status)"),
            404: {"description": "the model is not loaded yet (as `mlflow models serve`)",
                  "content": {TEXT: {"schema": {"type": "string"}, "example": "\n"}}}}



def metrics_response() -> dict:
    return {200: {"description": "Prometheus text exposition format: requests, latency and records by protocol, "
                                 "predicted-probability histogram (binary models), model info. Scraped on AKS by Azure Monitor "
                                 "managed Prometheus (pod annotations); on Container Apps nothing collects it",
                  "content": {PROMETHEUS: {"schema": {"type": "string"}, "example": METRICS_EXAMPLE}}}}


def predict_body() -> dict:
    """The schema is generated from the signature; its `examples` hold the model's input example."""
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": {"$ref": "#/components/schemas/PredictRequest"}}}}}


def _columns(manifest: Manifest) -> tuple[list[str], list[list]]:
    names = manifest.input_names
    return names, [[record.get(name) for name in names] for record in manifest.input_example]


# ---------------------------------------------------------------- schemas: every body written out (a schema fuzzer
# reaches every decoder only through them). Built from the record rules (scoring/schemas.py) so any model's
# contract (types, bounds, categories) shows the same on every protocol.

PROBLEM = {"type": "object", "required": ["record", "field", "problem", "type"], "additionalProperties": False,
           "properties": {"record": {"type": ["integer", "null"], "description": "the record's index, if one"},
                          "field": {"type": ["string", "null"], "description": "the field (or header, key) at fault"},
                          "problem": {"type": "string", "description": "what was wrong, and what to send instead"},
                          "type": {"type": "string", "description": "a stable code (pydantic's error types and ours)"}}}
COMMON_REFUSAL = {"request_id": {"type": "string"}, "problems": {"type": "array", "items": PROBLEM, "minItems": 1}}
STRING = {"type": "string"}
PARAMETERS = {"type": "object", "additionalProperties": {}, "description": "the protocol's parameters: any, none read"}
ANY = {"description": "any JSON value: ignored, as MLflow ignores it"}


def _object(properties: dict, required: list[str] | None = None, **extra: object) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False, **extra}


def _refusal(**own: dict) -> dict:
    return _object({**own, **COMMON_REFUSAL})


PREDICT_REFUSAL = _refusal(error=STRING)
MLFLOW_REFUSAL = _refusal(error_code={"const": "BAD_REQUEST"}, message=STRING)
V2_REFUSAL = _refusal(error=STRING)


def _json(schema: dict, description: str, example: object = None) -> dict:
    content: dict = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {JSON: content}}


def refusals(schema: dict, status: int) -> dict:
    """The refusals every scoring route shares besides its own status for bad input (`status`)."""
    return {status: _json(schema, "bad input: each problem names the record and field, and what was wrong"),
            408: _json(schema, "the body did not arrive whole within BODY_TIMEOUT_S"),
            413: _json(schema, "the body is over MAX_BODY_BYTES, or holds more records than MAX_RECORDS"),
            415: _json(schema, "a Content-Type not taken: the problem names the accepted ones")}


def value_schemas(record_schema: dict, names: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """Each named field's value schema (an input's type, bounds, categories, nullable; an id's) from the /predict
    Record schema."""
    return {name: {k: v for k, v in record_schema["properties"][name].items() if k != "title"} for name in names}


def _lax(schema: dict) -> dict:
    """What MLflow's protocol also takes for a column (a number for text, a boolean for a number), unless the column
    has categories or bounds the converted value would have to meet."""
    alternatives = schema.get("anyOf", [schema])
    kinds = {a.get("type") for a in alternatives}
    if any(key in a for a in alternatives for key in ("enum", "const", "minimum", "maximum", "exclusiveMinimum",
                                                        "exclusiveMaximum")):
        return schema
    if "string" in kinds:
        return {**schema, "anyOf": [*alternatives, {"type": "number"}]}
    if kinds & {"number", "integer"}:
        return {**schema, "anyOf": [*alternatives, {"type": "boolean"}]}
    return schema


def mlflow_record(values: dict[str, dict]) -> dict:
    # Columns outside the signature are ignored by MLflow's protocol, whatever they hold (the contract's ids aside:
    # said in the request's description, not as properties here, see invocations_request).
    return {**_object({name: _lax(schema) for name, schema in values.items()}), "additionalProperties": ANY}


def invocations_request(manifest: Manifest, values: dict[str, dict], max_records: int,
                        id_values: dict[str, dict] | None = None) -> dict:
    """The four JSON formats as oneOf, each with its real shape. Shapes JSON Schema cannot relate (a split's rows as
    long as its columns, columns of equal length) are shown for one record in the signature's order; any equal
    length and order is accepted. The contract's ids are told in the description: as properties of the record they
    would change what the fuzzer draws for this operation's CSV body too, whose pattern knows no bounds (a number
    below a column's minimum would be drawn as valid)."""
    record = mlflow_record(values)
    records = {"type": "array", "items": record, "minItems": 1, "maxItems": max_records}
    names = manifest.input_names
    row = {"type": "array", "prefixItems": [_lax(values[n]) for n in names], "minItems": len(names),
           "maxItems": len(names)}
    split = {**_object({"columns": {"type": "array", "prefixItems": [{"const": n} for n in names],
                                    "minItems": len(names), "maxItems": len(names)},
                        "data": {"type": "array", "items": row, "minItems": 1, "maxItems": max_records}}),
             "additionalProperties": ANY}  # pandas' "index" among them
    one = {"type": "array", "minItems": 1, "maxItems": 1}
    one_column = {**_object({n: {**one, "items": _lax(values[n])} for n in names}), "additionalProperties": one}
    formats = {"dataframe_split": split, "dataframe_records": records,
               "instances": {"oneOf": [records, one_column]}, "inputs": {"oneOf": [records, one_column]}}
    # Other top-level keys ("params" among them) are ignored, as MLflow does; another format's key is refused.
    return {"oneOf": [{**_object({key: schema, **{other: False for other in formats if other != key}}, required=[key]),
                       "additionalProperties": ANY, "title": key} for key, schema in formats.items()],
            "description": "exactly one of dataframe_split, dataframe_records, instances, inputs (as `mlflow models "
                           "serve`); NaN is read as a missing value; columns outside the signature are ignored, but "
                           "for the contract's ids: " + (", ".join(id_values) if id_values else "none") +
                           f" ({ids.DESCRIPTION}; in CSV, text)"}


def csv_pattern(manifest: Manifest, values: dict[str, dict]) -> str:
    """text/csv as a pattern: the header, then rows of unquoted cells (a number column's cells numbers, a column
    with categories one of them; any cell may be empty: a missing value)."""
    number, text = r"-?[0-9]{1,6}(\.[0-9]{1,6})?", r"[^,\"\r\n]*"
    cells = []
    for field in manifest.inputs:
        categories = next((a["enum"] for a in values[field.name].get("anyOf", [values[field.name]]) if "enum" in a), None)
        cell = ("|".join(re.escape(str(c)) for c in categories) if categories
                else text if field.is_string else number)
        cells.append(f"({cell})?")
    header = ",".join(re.escape(name) for name in manifest.input_names)
    return f"^{header}\\r?\\n({','.join(cells)}\\r?\\n)+$"


def invocations_body(manifest: Manifest, values: dict[str, dict], max_records: int,
                     id_values: dict[str, dict] | None = None) -> dict:
    names, rows = _columns(manifest)
    records = manifest.input_example
    csv_lines = [",".join(names)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": invocations_request(manifest, values, max_records, id_values),
               "examples": {
                   "dataframe_split": {"value": {"dataframe_split": {"columns": names, "data": rows}}},
                   "dataframe_records": {"value": {"dataframe_records": records}},
                   "instances": {"value": {"instances": records}},
                   "inputs": {"value": {"inputs": {n: [r.get(n) for r in records] for n in names}}}}},
        "text/csv": {"schema": {"type": "string", "pattern": csv_pattern(manifest, values),
                                "description": "a header row naming the columns, then one row per record; an empty "
                                              "cell is a missing value (quoted cells are read too)"},
                     "example": "\n".join(csv_lines) + "\n"}}}}


def _label_schema(manifest: Manifest) -> dict:
    classes = list(manifest.classes or ())
    return {"enum": classes} if classes else {"type": "number"}


def invocations_responses(manifest: Manifest) -> dict:
    classes = list(manifest.classes or ())
    if manifest.predict_fn == "predict_proba" and manifest.is_classifier:
        what = f"per record the probability of each class {classes}"
        example: list = [[round(1 - 0.1342 * (len(classes) - 1), 4), *[0.1342] * (len(classes) - 1)]]
        item: dict = {"type": "array", "items": {"type": "number"}, "minItems": len(classes), "maxItems": len(classes)}
    elif manifest.predict_fn == "predict":
        what = "per record the predicted label" if manifest.is_classifier else "per record the predicted value"
        example = [classes[0]] if manifest.is_classifier else [123.4]
        item = _label_schema(manifest) if manifest.is_classifier else {"type": "number"}
    else:
        what, example, item = f"what the model's {manifest.predict_fn} answers per record", [], {}
    number = _number_field(manifest)
    answer = _object({"predictions": {"type": "array", "items": item}})
    return {
        200: _json(answer, f"{what}, as the version's MLflow pyfunc (predict_fn {manifest.predict_fn}) answers",
                   {"predictions": example}),
        **refusals(MLFLOW_REFUSAL, 400),
        400: _json(MLFLOW_REFUSAL, "bad input, in MLflow's error shape (plus request_id and problems), naming the "
                                   "column", {"error_code": "BAD_REQUEST", "message": f"Invalid input. column '{number}', "
                                              "record 0: Input should be a valid number (got 'forty')",
                                              "request_id": "3f2a", "problems": [{
                                                  "record": 0, "field": number, "type": "float_parsing",
                                                  "problem": "Input should be a valid number (got 'forty')"}]}),
        503: _json(_object({"error_code": STRING, "message": STRING}), "the model is not ready"),
    }


def predict_responses(manifest: Manifest) -> dict:
    return {**refusals(PREDICT_REFUSAL, 422),
            503: _json(_object({"error": STRING, "problem": STRING}), "the model is not ready")}


V2_PATH = [{"name": "name", "in": "path", "required": True, "schema": STRING, "description": "the model's name"}]
V2_VERSION = {"name": "version", "in": "path", "required": True, "schema": STRING, "description": "the model's version"}
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
             "BYTES"]


def v2_tensor(name: str, datatype: str, value: dict) -> dict:
    """One input tensor as this model takes it (shown for one record: shape [1] or [1, 1])."""
    return _object({"name": {"const": name}, "datatype": {"const": datatype, "enum": DATATYPES},
                    "shape": {"enum": [[1], [1, 1]]},
                    "data": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"anyOf": [
                        value, {"type": "array", "items": value, "minItems": 1, "maxItems": 1}]}},
                    "parameters": PARAMETERS}, required=["name", "datatype", "shape", "data"])


def v2_id_tensor(name: str, value: dict) -> dict:
    """A tensor named after a contract id: BYTES of strings or INT64 of integers (null: no id)."""
    alternatives = value["anyOf"]
    text = [a for a in alternatives if a.get("type") in ("string", "null")]
    number = [a for a in alternatives if a.get("type") in ("integer", "null")]
    return {"oneOf": [v2_tensor(name, "BYTES", {"anyOf": text}), v2_tensor(name, "INT64", {"anyOf": number})],
            "description": f"the record's `{name}`: {ids.DESCRIPTION}"}


def v2_infer_request(manifest: Manifest, values: dict[str, dict], outputs: dict[str, dict],
                     id_values: dict[str, dict] | None = None) -> dict:
    tensors = [v2_tensor(f.name, v2.datatype(f.type), values[f.name]) for f in manifest.inputs]
    id_tensors = [v2_id_tensor(name, value) for name, value in (id_values or {}).items()]
    requested = _object({"name": {"enum": list(outputs)}, "parameters": PARAMETERS}, required=["name"])
    inputs = {"type": "array", "prefixItems": tensors, "minItems": len(tensors),
              "maxItems": len(tensors) + len(id_tensors), **({"items": {"anyOf": id_tensors}} if id_tensors else {})}
    return _object({"id": STRING, "parameters": PARAMETERS, "inputs": inputs,
                    "outputs": {"type": "array", "items": requested}}, required=["inputs"],
                   description="Open Inference Protocol inference request: one tensor per column, each named once, "
                               "in any order, all of one length n with shape [n] or [n, 1] (shown for n = 1, in the "
                               "signature's order); null is a missing value; NaN and Infinity are refused. A tensor "
                               "per contract id may follow, named after it (not scored: logged to join labels)")


def v2_infer_body(manifest: Manifest, values: dict[str, dict], outputs: dict[str, dict],
                  id_values: dict[str, dict] | None = None) -> dict:
    _, rows = _columns(manifest)
    tensors = [{"name": field.name, "datatype": v2.datatype(field.type), "shape": [len(rows)],
                "data": [row[index] for row in rows]} for index, field in enumerate(manifest.inputs)]
    return {"parameters": V2_PATH, "requestBody": {"required": True, "content": {JSON: {
        "schema": v2_infer_request(manifest, values, outputs, id_values),
        "example": {"id": "request-1", "inputs": tensors}}}}}


def v2_versioned_infer_body(manifest: Manifest, values: dict[str, dict], outputs: dict[str, dict],
                            id_values: dict[str, dict] | None = None) -> dict:
    return {**v2_infer_body(manifest, values, outputs, id_values), "parameters": [*V2_PATH, V2_VERSION]}


def v2_output_tensor(outputs: dict[str, dict], manifest: Manifest) -> dict:
    labels = _label_schema(manifest)
    data = {"probability": {"type": "number"}, "prediction": {"type": "number"}, "probabilities": {"type": "number"},
            "label": labels}
    return {"oneOf": [_object({"name": {"const": name}, "datatype": {"const": meta["datatype"]},
                               "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                               "data": {"type": "array", "items": data[name]},
                               **({"parameters": _object({key: {} for key in meta["parameters"]})}
                                  if "parameters" in meta else {})})
                      for name, meta in outputs.items()]}


def v2_infer_responses(manifest: Manifest, outputs: dict[str, dict]) -> dict:
    prediction = example_prediction(manifest)
    data = {"probability": [prediction.get("probability")], "label": [prediction.get("label")],
            "prediction": [prediction.get("prediction")],
            "probabilities": list(prediction.get("probabilities", {}).values())}
    tensors = [{"name": name, "datatype": meta["datatype"], "shape": [1, *meta["shape"][1:]], "data": data[name],
                **({"parameters": meta["parameters"]} if "parameters" in meta else {})} for name, meta in outputs.items()]
    number = _number_field(manifest)
    answer = _object({"model_name": {"const": manifest.model_name}, "model_version": {"const": manifest.model_version},
                      "id": STRING, "outputs": {"type": "array", "items": v2_output_tensor(outputs, manifest)}},
                     required=["model_name", "model_version", "outputs"])
    return {
        200: _json(answer, f"typed output tensors ({', '.join(outputs)})", {
            "model_name": manifest.model_name, "model_version": manifest.model_version, "id": "request-1",
            "outputs": tensors}),
        **refusals(V2_REFUSAL, 400),
        400: _json(V2_REFUSAL, "a wrong datatype, shape or name, naming the input", {
            "error": f"column '{number}': input '{number}' must have datatype FP64, got 'BYTES'", "request_id": "3f2a",
            "problems": [{"record": None, "field": number, "type": "datatype",
                          "problem": f"input '{number}' must have datatype FP64, got 'BYTES'"}]}),
        404: _json(V2_REFUSAL, "another model name or version"),
        503: _json(_object({"error": STRING}), "the model is not ready"),
    }


def v2_metadata_responses(meta: dict) -> dict:
    parameters = _object({"positive_class": {}, "classes": {"type": "array"}}, required=[])
    tensor = _object({"name": STRING, "datatype": {"enum": DATATYPES}, "shape": {"type": "array", "items": {
        "type": "integer"}}, "parameters": parameters}, required=["name", "datatype", "shape"])
    schema = _object({"name": STRING, "versions": {"type": "array", "items": STRING}, "platform": STRING,
                      "inputs": {"type": "array", "items": tensor}, "outputs": {"type": "array", "items": tensor},
                      "parameters": _object({"task": {"enum": list(TASK_WORDS)}, "classes": {"type": "array"}},
                                            required=["task"])})
    return {200: _json(schema, "model metadata: inputs (one tensor per column) and outputs", meta),
            404: _json(V2_REFUSAL, "another model name or version")}


def v2_ready_responses(name: str) -> dict:
    schema = _object({"name": STRING, "ready": {"type": "boolean"}})
    return {200: _json(schema, "the model is ready", {"name": name, "ready": True}),
            503: _json(schema, "not yet"), 404: _json(V2_REFUSAL, "another model name or version")}


def v2_server_responses(metadata: dict) -> dict:
    return {200: _json(_object({"name": STRING, "version": STRING, "extensions": {"type": "array", "items": STRING}}),
                       "server metadata", metadata)}


def flag_responses(key: str, description: str, not_yet: bool) -> dict:
    """{"<key>": true} answers (/v2/health/live, /v2/health/ready); 503 with false when `not_yet` applies."""
    schema = _object({key: {"type": "boolean"}})
    return {200: _json(schema, description, {key: True}), **({503: _json(schema, "not yet")} if not_yet else {})}


def health_responses() -> dict:
    return {200: _json(_object({"status": {"const": "alive"}}), "the process is alive", {"status": "alive"})}


def ready_responses(example: dict) -> dict:
    model = _object({"name": STRING, "version": STRING})
    ready = _object({"status": {"const": "ready"}, "model": model, "runtime": STRING, "task": {"enum": list(TASK_WORDS)},
                     "classes": {"type": ["array", "null"]}, "outputs": {"type": "array", "items": STRING},
                     "request_log_personal": {"enum": ["keep", "drop", "pseudonymise"]}})
    not_ready = _object({"status": {"const": "not ready"}, "problem": {"type": ["string", "null"]}})
    return {200: _json(ready, "the model is loaded and warmed up", example),
            503: _json(not_ready, "model not loaded or warm-up failed")}
