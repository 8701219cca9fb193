"""OpenAPI documentation of every route, with an example built from the model's own input example.

The bodies are read and validated by our decoders (not by FastAPI's parameter parsing, which would cost a
pydantic model per record), so FastAPI cannot infer these documents by itself.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from .model import Manifest

JSON = "application/json"
PROMETHEUS = CONTENT_TYPE_LATEST
METRICS_EXAMPLE = (
    "# HELP scoring_http_requests_total HTTP requests by route, method, status and protocol\n"
    "# TYPE scoring_http_requests_total counter\n"
    'scoring_http_requests_total{method="POST",protocol="mlflow",route="/invocations",status="200"} 42.0\n'
    'scoring_model_info{model_name="credit-default",model_version="3",runtime="onnx"} 1.0\n'
)


def mlflow_version(manifest: Manifest) -> str:
    """The MLflow version that logged the model (recorded in the manifest at packaging): what /version answers."""
    return str(manifest.raw.get("mlflow_version") or "unknown")


def json_response(example: object, description: str) -> dict:
    return {200: {"description": description, "content": {JSON: {"example": example}}}}


def text_response(example: str, description: str) -> dict:
    return {200: {"description": description, "content": {JSON: {"schema": {"type": "string"}, "example": example}}}}


def metrics_response() -> dict:
    return {200: {"description": "Prometheus text exposition format: requests, latency and records by protocol, "
                                 "predicted-probability histogram, model info. Scraped on AKS by Azure Monitor "
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


def invocations_responses() -> dict:
    return {
        200: {"description": "per record [P(no default), P(default)], as the MLflow pyfunc (predict_proba) answers",
              "content": {JSON: {"example": {"predictions": [[0.8658, 0.1342]]}}}},
        400: {"description": "bad input, in MLflow's error shape, naming the column",
              "content": {JSON: {"example": {"error_code": "BAD_REQUEST", "message":
                                             "Invalid input. column 'age', record 0: Input should be a valid number "
                                             "(got 'forty')"}}}},
        415: {"description": "a content type other than application/json or text/csv"},
    }


def v2_infer_body(manifest: Manifest) -> dict:
    _, rows = _columns(manifest)
    tensors = [{"name": field.name, "datatype": "BYTES" if field.is_string else "FP64", "shape": [len(rows)],
                "data": [row[index] for row in rows]} for index, field in enumerate(manifest.inputs)]
    return {"requestBody": {"required": True, "content": {JSON: {
        "schema": {"type": "object", "description": "Open Inference Protocol inference request: one tensor per column"},
        "example": {"id": "request-1", "inputs": tensors}}}}}


def v2_infer_responses(manifest: Manifest) -> dict:
    return {
        200: {"description": "typed output tensors", "content": {JSON: {"example": {
            "model_name": manifest.model_name, "model_version": manifest.model_version, "id": "request-1",
            "outputs": [{"name": "probability", "datatype": "FP64", "shape": [1], "data": [0.1342]},
                        {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]}}}},
        400: {"description": "a wrong datatype, shape or name, naming the input",
              "content": {JSON: {"example": {"error": "input 'age' must have datatype FP64, got 'BYTES'"}}}},
        404: {"description": "another model name or version"},
    }
