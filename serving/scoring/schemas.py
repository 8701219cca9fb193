"""Request and response models, generated from the model's MLflow signature (via the manifest).

Strict on purpose: a string where a number belongs, a boolean, NaN/Infinity, an unknown field or a
missing one are all rejected rather than coerced. Values may be null: the pipeline imputes them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from .model import Manifest

PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    "double": float,
    "float": float,
    "long": int,
    "integer": int,
    "boolean": bool,
}

RECORD_CONFIG = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    probability: float = Field(description="predicted probability of default next month")
    label: int = Field(description="1 when probability >= the model's decision threshold")


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[Prediction]


def record_model(manifest: Manifest) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for field in manifest.inputs:
        if field.type not in PYTHON_TYPES:
            raise ValueError(f"input '{field.name}' has unsupported type {field.type!r}; "
                             f"supported: {', '.join(PYTHON_TYPES)}")
        fields[field.name] = (PYTHON_TYPES[field.type] | None, Field(..., description=f"{field.type}, or null if unknown"))
    return create_model("Record", __config__=RECORD_CONFIG, **fields)


def request_model(manifest: Manifest, max_records: int) -> type[BaseModel]:
    record = record_model(manifest)
    records_type = Annotated[list[record], Field(min_length=1, max_length=max_records)]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"records": manifest.input_example}]}),
        records=(records_type, Field(..., description=f"1 to {max_records} records")),
    )
