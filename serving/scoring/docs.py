"""OpenAPI documentation of every route, generated from the model: its name, description and contract (what a
prediction means), examples built from its own input example and outputs shaped by its task.

The bodies are read and validated by our decoders (not by FastAPI's parameter parsing, which would cost a
pydantic model per record), so FastAPI cannot infer these documents by itself.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from . import v2
from .model import Manifest

JSON = "application/json"
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


def json_response(example: object, description: str) -> dict:
    return {200: {"description": description, "content": {JSON: {"example": example}}}}


def text_response(example: str, description: str) -> dict:
    return {200: {"description": description, "content": {JSON: {"schema": {"type": "string"}, "example": example}}}}


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


def invocations_body(manifest: Manifest) -> dict:
    names, rows = _columns(manifest)
    records = manifest.input_example
    csv_lines = [",".join(names)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": {"type": "object", "description": "exactly one of dataframe_split, dataframe_records, "
                                                           "instances, inputs (as `mlflow models serve`)"},
               "examples": {
                   "dataframe_split": {"value": {"dataframe_split": {"columns": names, "data": rows}}},
                   "dataframe_records": {"value": {"dataframe_records": records}},
                   "instances": {"value": {"instances": records}},
                   "inputs": {"value": {"inputs": {n: [r.get(n) for r in records] for n in names}}}}},
        "text/csv": {"schema": {"type": "string"}, "example": "\n".join(csv_lines) + "\n"}}}}


def invocations_responses(manifest: Manifest) -> dict:
    classes = list(manifest.classes or ())
    if manifest.predict_fn == "predict_proba" and manifest.is_classifier:
        what = f"per record the probability of each class {classes}"
        example: list = [[round(1 - 0.1342 * (len(classes) - 1), 4), *[0.1342] * (len(classes) - 1)]]
    elif manifest.predict_fn == "predict":
        what = "per record the predicted label" if manifest.is_classifier else "per record the predicted value"
        example = [classes[0]] if manifest.is_classifier else [123.4]
    else:
        what, example = f"what the model's {manifest.predict_fn} answers per record", []
    number = _number_field(manifest)
    return {
        200: {"description": f"{what}, as the version's MLflow pyfunc (predict_fn {manifest.predict_fn}) answers",
              "content": {JSON: {"example": {"predictions": example}}}},
        400: {"description": "bad input, in MLflow's error shape, naming the column",
              "content": {JSON: {"example": {"error_code": "BAD_REQUEST", "message":
                                             f"Invalid input. column '{number}', record 0: Input should be a valid "
                                             "number (got 'forty')"}}}},
        415: {"description": "a content type other than application/json or text/csv"},
    }


def v2_infer_body(manifest: Manifest) -> dict:
    _, rows = _columns(manifest)
    tensors = [{"name": field.name, "datatype": v2.datatype(field.type), "shape": [len(rows)],
                "data": [row[index] for row in rows]} for index, field in enumerate(manifest.inputs)]
    return {"requestBody": {"required": True, "content": {JSON: {
        "schema": {"type": "object", "description": "Open Inference Protocol inference request: one tensor per column"},
        "example": {"id": "request-1", "inputs": tensors}}}}}


def v2_infer_responses(manifest: Manifest, outputs: dict[str, dict]) -> dict:
    prediction = example_prediction(manifest)
    data = {"probability": [prediction.get("probability")], "label": [prediction.get("label")],
            "prediction": [prediction.get("prediction")],
            "probabilities": list(prediction.get("probabilities", {}).values())}
    tensors = [{"name": name, "datatype": meta["datatype"], "shape": [1, *meta["shape"][1:]], "data": data[name],
                **({"parameters": meta["parameters"]} if "parameters" in meta else {})} for name, meta in outputs.items()]
    number = _number_field(manifest)
    return {
        200: {"description": f"typed output tensors ({', '.join(outputs)})", "content": {JSON: {"example": {
            "model_name": manifest.model_name, "model_version": manifest.model_version, "id": "request-1",
            "outputs": tensors}}}},
        400: {"description": "a wrong datatype, shape or name, naming the input",
              "content": {JSON: {"example": {"error": f"input '{number}' must have datatype FP64, got 'BYTES'"}}}},
        404: {"description": "another model name or version"},
    }
