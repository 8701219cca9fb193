"""Request and response models, generated from the model's MLflow signature (via the manifest).

Strict on purpose: a string where a number belongs, a boolean, NaN/Infinity, an unknown field or a
missing one are all rejected rather than coerced. Values may be null: the pipeline imputes them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, TypeAdapter
from typing_extensions import TypedDict

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
Extra = Literal["forbid", "ignore"]


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


def _number_as_text(value: object) -> object:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _boolean_as_number(value: object) -> object:
    return float(value) if isinstance(value, bool) else value


def _typed_dict(name: str, fields: dict[str, Any], config: ConfigDict) -> Any:
    """TypedDict's functional form with field names known only at run time (from the signature): a type no
    static checker can see, hence Any."""
    factory: Any = TypedDict  # mypy accepts the functional form only with a literal dict of fields
    typed_dict = factory(name, fields)
    typed_dict.__pydantic_config__ = config
    return typed_dict


def _bounded_list(item: Any, max_records: int, **field: Any) -> Any:
    """list[item] of 1 to max_records items (built at run time, so Any to a static checker)."""
    return Annotated[list[item], Field(min_length=1, max_length=max_records, **field)]


def record_type(manifest: Manifest, extra: Extra = "forbid", mlflow_lax: bool = False) -> type:
    """A TypedDict per the signature: validated records stay plain dicts (no per-record objects to build).
    `mlflow_lax` accepts what MLflow's schema enforcement lets through: a number where a string belongs
    (as its text: the model sees an unknown category) and a boolean where a number belongs (as 1.0/0.0)."""
    fields: dict[str, Any] = {}
    for field in manifest.inputs:
        if field.type not in PYTHON_TYPES:
            raise ValueError(f"input '{field.name}' has unsupported type {field.type!r}; "
                             f"supported: {', '.join(PYTHON_TYPES)}")
        kind = PYTHON_TYPES[field.type]
        converter = _number_as_text if kind is str else _boolean_as_number
        converters = [BeforeValidator(converter)] if mlflow_lax else []
        fields[field.name] = Annotated[kind | None, *converters, Field(description=f"{field.type}, or null if unknown")]
    config: ConfigDict = {**RECORD_CONFIG, "extra": extra}
    return _typed_dict("Record", fields, config)


def request_adapter(manifest: Manifest, max_records: int) -> TypeAdapter:
    """Validates the raw JSON body in one pass (pydantic-core parses and checks together)."""
    records = _bounded_list(record_type(manifest), max_records, description=f"1 to {max_records} records")
    example: list[JsonValue] = list(manifest.input_example)
    return TypeAdapter(_typed_dict("PredictRequest", {"records": records}, ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"records": example}]})))


def records_adapter(manifest: Manifest, max_records: int, extra: Extra = "forbid", mlflow_lax: bool = False) -> TypeAdapter:
    """A bare list of records (what the other protocols decode to), with /predict's rules. For MLflow's
    protocol, what `mlflow models serve` accepts is accepted: columns outside the signature are
    ignored (extra="ignore"); with mlflow_lax, a number for a string column is taken as its text and a
    boolean for a number as 1.0/0.0 (a Python call per value: used only when the strict rules refuse)."""
    record = record_type(manifest, extra, mlflow_lax=mlflow_lax)
    return TypeAdapter(_bounded_list(record, max_records))


def columns_adapter(manifest: Manifest, max_records: int) -> TypeAdapter:
    """The signature's columns (name -> one value per record), each value under the record rules above and
    as many records as they allow: for protocols that decode to columns (V2), with no records to build."""
    fields = {f.name: _bounded_list(PYTHON_TYPES[f.type] | None, max_records) for f in manifest.inputs}
    return TypeAdapter(_typed_dict("Columns", fields, RECORD_CONFIG))


def request_schemas(adapter: TypeAdapter, ref_prefix: str = "#/components/schemas/") -> dict[str, dict]:
    """The request's JSON schemas (PredictRequest, Record) for the OpenAPI document."""
    schema = adapter.json_schema(ref_template=ref_prefix + "{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, schema.get("title", "PredictRequest"): schema}
