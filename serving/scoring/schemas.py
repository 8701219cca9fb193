"""Request and response models, generated from the model (via the manifest): the records from its MLflow
signature (each field described from the contract, when the version carries one), the response by its task.

Strict on purpose: a string where a number belongs, a boolean, NaN/Infinity, an unknown field or a
missing one are all rejected rather than coerced. Values may be null: the pipeline imputes them.

The contract is enforced here, for every protocol: a number outside its column's bounds (minimum/maximum inclusive,
greater_than/less_than exclusive) and a text value outside its column's `values` (unless the column is `open`) are
refused, so the model never scores a value it was not built for as if it were an ordinary one.

The contract's ids (scoring/ids.py) are optional fields of every record: never scored, only logged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainValidator,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from . import ids
from .model import InputField, Manifest, rule_text

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


def _label_type(classes: tuple) -> Any:
    """The classes as a Literal (an enum in the schema) when JSON can say them, else their common type."""
    if all(isinstance(c, str | int) for c in classes):
        literal: Any = Literal  # the classes are known only at run time
        return literal[classes]
    return float if all(isinstance(c, int | float) for c in classes) else Any


def prediction_fields(manifest: Manifest) -> dict[str, Any]:
    """One prediction's fields by task, each described from the contract's target (what a prediction means)."""
    target, classes = manifest.target, tuple(manifest.classes or ())
    meaning = f": {target['description']}" if target.get("description") else ""
    if manifest.task == "regression":
        return {"prediction": (float, Field(description=f"the predicted {target['name']}{meaning}"))}
    label = _label_type(classes)
    if manifest.task == "multiclass":
        return {"label": (label, Field(description=f"the likeliest class of {target['name']}{meaning}")),
                "probabilities": (dict[str, float], Field(description=f"each class's probability, by class: {list(classes)}"))}
    rule = (f"{classes[1]!r} when probability >= the model's decision threshold ({manifest.decision_threshold:g}), else "
            f"{classes[0]!r}" if manifest.decision_threshold is not None else "the likelier class (the estimator's rule)")
    return {"probability": (float, Field(description=f"the probability that {target['name']} is {classes[1]!r}{meaning}")),
            "label": (label, Field(description=rule))}


def predict_response(manifest: Manifest) -> type[BaseModel]:
    """/predict's response model for this model's task (OpenAPI documents it; the answer is built by scoring/core.py)."""
    prediction: Any = create_model("Prediction", **prediction_fields(manifest))
    return create_model("PredictResponse", request_id=(str, ...), model=(ModelRef, ...),
                        predictions=(list[prediction], ...))


def field_description(field: InputField) -> str:
    """The contract's description of a column, its bounds and allowed values (a value outside them is refused;
    an open column's listed values are the known ones, another is accepted), and that null means unknown."""
    parts = [field.description] if field.description else []
    if bounds := field.bounds():
        parts.append(f"{' and '.join(rule_text(op, bound) for op, bound in bounds.items())} (another value is refused)")
    if field.values is not None and field.is_string:
        parts.append(f"known values {', '.join(field.values)} (another is accepted: scored as a value the model never "
                     "saw)" if field.open else f"one of {', '.join(field.values)} (another value is refused)")
    parts.append(f"{field.type}, or null if unknown")
    return "; ".join(parts)


def value_type(field: InputField) -> Any:
    """One value of the column, as the contract allows it (not null: the caller adds it): a closed category's
    values as a Literal (an enum in the schema), a number within its bounds (InputField.bounds)."""
    if field.type not in PYTHON_TYPES:
        raise ValueError(f"input '{field.name}' has unsupported type {field.type!r}; "
                         f"supported: {', '.join(PYTHON_TYPES)}")
    kind = PYTHON_TYPES[field.type]
    if field.closed_values is not None:
        literal: Any = Literal  # the values are known only at run time
        return literal[field.closed_values]
    if not (bounds := field.bounds()):
        return kind
    return Annotated[kind, Field(ge=bounds.get("ge"), le=bounds.get("le"), gt=bounds.get("gt"), lt=bounds.get("lt"))]


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


def _valid_id(value: object) -> object:
    """One rule and one refusal for an id (scoring/ids.py), rather than a union's error per alternative."""
    taken = ids.taken(value)
    if (problem := ids.problem(taken)) is not None:
        raise PydanticCustomError("id_type", problem)
    return taken


ID_SCHEMA = {"anyOf": [{"type": "string", "maxLength": ids.MAX_ID_CHARS},
                       {"type": "integer", "minimum": ids.ID_RANGE[0], "maximum": ids.ID_RANGE[1]}, {"type": "null"}],
             "description": ids.DESCRIPTION}
ID_FIELD: Any = NotRequired[Annotated[str | int | None, PlainValidator(_valid_id), WithJsonSchema(ID_SCHEMA)]]


def record_type(manifest: Manifest, extra: Extra = "forbid", mlflow_lax: bool = False) -> type:
    """A TypedDict per the signature and the contract (value_type): validated records stay plain dicts (no
    per-record objects to build). `mlflow_lax` accepts what MLflow's schema enforcement lets through: a number where
    a string belongs (as its text, then under the column's values) and a boolean where a number belongs (as 1.0/0.0,
    then under its bounds)."""
    fields: dict[str, Any] = {}
    for field in manifest.inputs:
        converter = _number_as_text if field.is_string else _boolean_as_number
        converters = [BeforeValidator(converter)] if mlflow_lax else []
        fields[field.name] = Annotated[value_type(field) | None, *converters,
                                       Field(description=field_description(field))]
    fields.update(dict.fromkeys(ids.names(manifest), ID_FIELD))  # the ids: the same rule for every protocol
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
    fields = {f.name: _bounded_list(value_type(f) | None, max_records) for f in manifest.inputs}
    return TypeAdapter(_typed_dict("Columns", fields, RECORD_CONFIG))


def request_schemas(adapter: TypeAdapter, ref_prefix: str = "#/components/schemas/") -> dict[str, dict]:
    """The request's JSON schemas (PredictRequest, Record) for the OpenAPI document."""
    schema = adapter.json_schema(ref_template=ref_prefix + "{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, schema.get("title", "PredictRequest"): schema}
