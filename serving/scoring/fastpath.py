"""The fast path for valid input: msgspec decodes and validates a body in one pass into typed records.

msgspec does what pydantic-core does for the records (scoring/schemas.py), several times faster (bench/serving.py's
profile), but its error says only the first problem. So a body msgspec refuses is validated again by the pydantic
adapter: that gives the full report (every record and field at fault) in the one error format, and whatever
pydantic accepts that msgspec does not (stricter here and there, see below) is still served as before. msgspec never
accepts what pydantic refuses: tests/serving/test_fastpath.py compares them value by value.

The rules, per input of the manifest (scoring/model.py InputField), as schemas.py states them:
  string -> str, double/float -> float, long/integer -> int, boolean -> bool; each may be null (the pipeline imputes)
  strict: no boolean for a number, no number for a string, an integer is taken for a float (as a float),
          NaN and +-Infinity refused (not JSON; a float literal beyond the float range would be infinity)
  the contract's bounds as InputField.bounds() gives them (ge/gt, le/lt: one a side)
  a closed category (InputField.closed_values) -> one of its values; an open one, any string
  no unknown field, no missing one; 1..max_records records
  the contract's ids (scoring/ids.py), each optional: a string of at most 256 characters, an integer in ID_RANGE, or null
Records are msgspec Structs in the signature's order (then the ids): a column is one attribute per record, and msgspec
encodes them for the request log without a dict per record. A body without ids is decoded by a Struct without them
(tried first): the ids cost such a request nothing, not even a column of nulls.
"""

from __future__ import annotations

import sys
from operator import attrgetter
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec.structs import astuple

from . import ids as contract_ids
from .model import Columns, InputField, Manifest

INT64 = (-2 ** 63, 2 ** 63 - 1)  # V2's integers: beyond 64 bits refused, as scoring/refusal.py's parser does

DATA, SHAPE = attrgetter("data"), attrgetter("shape")  # a V2 tensor's
TYPES: dict[str, type] = {"string": str, "double": float, "float": float, "long": int, "integer": int, "boolean": bool}


def _bounds(field: InputField, finite: bool, int64: bool = False) -> dict[str, float]:
    """msgspec.Meta's bounds: the contract's (InputField.bounds, one a side as msgspec takes them), and on a side
    without one, for a float the float range (a literal beyond it is infinity), for V2's integers the 64-bit range."""
    bounds = field.bounds()
    if finite or int64:
        least, most = (-sys.float_info.max, sys.float_info.max) if finite else INT64
        if not bounds.keys() & {"ge", "gt"}:
            bounds["ge"] = least
        if not bounds.keys() & {"le", "lt"}:
            bounds["le"] = most
    return bounds


def value_type(field: InputField, int64: bool = False) -> Any:
    """One input's type: its JSON type with the contract's bounds or closed values, or null."""
    kind = TYPES[field.type]
    if field.closed_values is not None:
        literal: Any = Literal  # the values are known only at run time
        return literal[field.closed_values] | None
    bounds = _bounds(field, finite=kind is float, int64=int64) if kind in (int, float) else {}
    meta: Any = msgspec.Meta  # its overloads want literal keywords; these are known at run time
    return Annotated[kind, meta(**bounds)] | None if bounds else kind | None


def id_type() -> Any:
    """One id (scoring/ids.py): a short string, an integer in ID_RANGE, or null (a whole number written 303.0 is
    pydantic's to take: msgspec refuses it, rarely sent)."""
    return (Annotated[str, msgspec.Meta(max_length=contract_ids.MAX_ID_CHARS)]
            | Annotated[int, msgspec.Meta(ge=contract_ids.ID_RANGE[0], le=contract_ids.ID_RANGE[1])] | None)


def bounded_list(item: Any, max_records: int) -> Any:
    """list[item] of 1 to max_records items (a type built at run time: Any to a static checker)."""
    return Annotated[list[item], msgspec.Meta(min_length=1, max_length=max_records)]


def record_struct(manifest: Manifest, forbid_unknown: bool = True, ids: tuple[str, ...] = ()) -> type[msgspec.Struct]:
    """A Struct per the signature: every field required (null allowed), then the `ids`, each optional (null when
    absent); unknown ones refused or ignored."""
    fields: list[tuple] = [(field.name, value_type(field)) for field in manifest.inputs]
    fields += [(name, id_type(), None) for name in ids]
    # gc=False: a record holds only strings and numbers (no cycles), so the collector need not track 100s per request.
    return msgspec.defstruct("Record", fields, forbid_unknown_fields=forbid_unknown, gc=False)


class FastRecords:
    """Decoders for one manifest: /predict's body, and a list of records already parsed (the other protocols).
    Records come as one of two Struct types: `record` (the signature's fields only) or, when the contract names ids,
    `identified` (its ids too). Refusing unknown fields, a body is tried without ids first (the common case, as fast
    as without a contract); ignoring them (MLflow's variant), the ids must be read, so only `identified` is used."""

    def __init__(self, manifest: Manifest, max_records: int, forbid_unknown: bool = True) -> None:
        self.names, self.ids = manifest.input_names, contract_ids.names(manifest)
        self.value_types = [value_type(field) for field in manifest.inputs]
        self.record: Any = record_struct(manifest, forbid_unknown)  # a Struct type made at run time
        self.identified: Any = record_struct(manifest, forbid_unknown, self.ids) if self.ids else self.record
        self.records_type = bounded_list(self.identified, max_records)  # what the ids-aware decoders take
        plain = bounded_list(self.record, max_records)
        self.attempts = [self.records_type] if not forbid_unknown or not self.ids else [plain, self.records_type]
        self.decoders = [msgspec.json.Decoder(msgspec.defstruct("PredictRequest", [("records", records)],
                                                                forbid_unknown_fields=True))
                         for records in self.attempts]
        self.columns_type = msgspec.defstruct("Columns", [
            (field.name, bounded_list(value_type(field), max_records)) for field in manifest.inputs],
            forbid_unknown_fields=True)

    def decode(self, body: bytes) -> list | None:
        """/predict's records, or None when msgspec refuses the body (then pydantic says why, or accepts)."""
        for decoder in self.decoders:
            try:
                envelope: Any = decoder.decode(body)  # a Struct type made at run time
                return envelope.records
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # the slow path says what is wrong
                continue
        return None

    def convert(self, candidates: object) -> list | None:
        """Parsed records (dicts) as typed records, or None when msgspec refuses them."""
        for records in self.attempts:
            try:
                return msgspec.convert(candidates, records, strict=True)
            except (msgspec.ValidationError, UnicodeEncodeError):  # a lone surrogate in a string: pydantic says
                continue
        return None

    def convert_columns(self, columns: dict[str, list]) -> dict[str, list] | None:
        """Columns (name -> one value per record, V2's form) validated by the record rules, or None when msgspec
        refuses them."""
        try:
            return dict(zip(self.names, astuple(msgspec.convert(columns, self.columns_type, strict=True)),
                            strict=True))
        except (msgspec.ValidationError, UnicodeEncodeError):
            return None

    def columns(self, records: list) -> Columns:
        """Typed records' values by column: each record's tuple (in signature order), transposed."""
        return self.split(records)[0]

    def split(self, records: list) -> tuple[Columns, contract_ids.Ids | None]:
        """Typed records' values by column, and their ids by id column: only the ids some record has, None when no
        record has one (the request log then writes its constant line part, scoring/core.py log_ids)."""
        if not self.ids or type(records[0]) is self.record:  # decoded without ids: none was sent
            return dict(zip(self.names, zip(*map(astuple, records), strict=True), strict=True)), None
        values = list(zip(*map(astuple, records), strict=True))
        found = {name: present for name, column in zip(self.ids, values[len(self.names):], strict=True)
                 if (present := contract_ids.present(column)) is not None}
        # zip stops at the signature's end; no id in any record is None, as for records decoded without ids
        return dict(zip(self.names, values, strict=False)), found or None


class FastMlflow:
    """MLflow's JSON body (scoring/mlflow_protocol.py) decoded and validated in one pass, for the common forms:
    {"dataframe_records": [...]} and {"dataframe_split": {"columns": <the signature's names, then any of the
    contract's ids, in any order>, "data": ...}}, other keys ignored as MLflow does. Anything else (another format, two
    formats, other columns, NaN, a value msgspec refuses) is None: the protocol's own decoder and validate() take it, as
    before."""

    def __init__(self, fast: FastRecords, max_records: int) -> None:
        self.fast, self.names, self.ids = fast, fast.names, fast.ids
        absent = msgspec.Raw()  # an empty Raw: the key was not there (msgspec takes no Raw in a union)
        records: Any = fast.records_type | msgspec.UnsetType  # a type built at run time
        # dataframe_records (the common form) typed in the body's own pass: a second pass over a Raw cost a third of
        # a 100-record decode.
        self.body = msgspec.json.Decoder(msgspec.defstruct("MlflowBody", [
            ("dataframe_records", records, msgspec.UNSET),
            *((key, msgspec.Raw, absent) for key in ("dataframe_split", "instances", "inputs"))]))
        self.split = msgspec.json.Decoder(msgspec.defstruct("Split", [("columns", list[str]), ("data", msgspec.Raw)]))
        self.max_records = max_records
        self.types = {**dict(zip(self.names, fast.value_types, strict=True)), **dict.fromkeys(self.ids, id_type())}
        self.row_decoders: dict[tuple[str, ...], Any] = {}  # by the order of the columns a client sends

    def rows(self, columns: list[str]) -> Any:
        """A decoder of dataframe_split's rows with these columns (the signature's, in any order): each value typed by
        its column, in one pass. At most a few orders are kept (a client sends one)."""
        order = tuple(columns)
        decoder = self.row_decoders.get(order)
        if decoder is None:
            tuple_of: Any = tuple  # the row's types, known at run time
            decoder = msgspec.json.Decoder(bounded_list(tuple_of[tuple(self.types[name] for name in order)],
                                                        self.max_records))
            if len(self.row_decoders) < 8:
                self.row_decoders[order] = decoder
        return decoder

    def decode(self, body: bytes) -> tuple[Columns, contract_ids.Ids | None] | None:
        """(the validated columns in the signature's order, the ids or None), or None (see the class)."""
        try:
            document: Any = self.body.decode(body)  # Struct types made at run time
            records, split_raw = document.dataframe_records, document.dataframe_split  # an absent Raw is empty
            if (records is not msgspec.UNSET) + bool(split_raw) + bool(document.instances) + bool(document.inputs) != 1:
                return None  # none, or two formats: MLflow's decoder says what is wrong
            if records is not msgspec.UNSET:
                return self.fast.split(records)
            if not split_raw:
                return None
            split: Any = self.split.decode(split_raw)
            if not self.takes(split.columns):
                return None  # other columns (MLflow ignores them), or some missing: the protocol's decoder
            rows = self.rows(split.columns).decode(split.data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # the slow path says what is wrong
            return None
        by_name = dict(zip(split.columns, map(list, zip(*rows, strict=True)), strict=True))
        found = {name: contract_ids.present(by_name[name]) for name in self.ids if name in by_name}
        return {name: by_name[name] for name in self.names}, found or None

    def takes(self, columns: list[str]) -> bool:
        """The signature's columns, each once, and maybe some of the contract's ids, in any order."""
        if len(columns) == len(self.names):
            return set(columns) == set(self.names)
        given = set(columns)
        return len(given) == len(columns) and given >= set(self.names) and given - set(self.names) <= set(self.ids)


class FastV2:
    """Open Inference Protocol's JSON request (scoring/v2.py) decoded and validated in one pass, for its common form:
    {"inputs": [...], "id": "..."} with each of the model's inputs once (and maybe a tensor per contract id, BYTES of
    strings or INT64 of integers), its own datatype, shape [n] or [n, 1], flat data. Anything else (requested outputs,
    parameters, nested data, another datatype, NaN, a value msgspec refuses) is None: v2.decode and the record rules
    take it and name what is wrong, as before. Each input is its own Struct, told apart by its name (a tagged union), so
    its data is decoded by its column's type and contract in the same pass and the columns need no second validation.

    One record with the inputs in the signature's order and shape [1] (what a client scoring one at a time sends) is
    tried first, by types that say all of it: a tuple of the inputs in order, each shape [1] and data of one value. Its
    columns need no check afterwards (the lengths, the shapes, the order), which were a third of its decode. Any other
    body is decoded as any order and count: a body of more records stops the first attempt at its first shape; one with
    id tensors or in another order is decoded twice."""

    def __init__(self, manifest: Manifest, expected: dict[str, str], max_records: int) -> None:
        self.names = list(expected)
        literal: Any = Literal  # types known only at run time
        tensors = [tensor_struct(f"Input{index}", field.name, literal[expected[field.name]], list[int],
                                 bounded_list(value_type(field, int64=True), max_records))
                   for index, field in enumerate(manifest.inputs)]
        self.tensors = tensors  # in the signature's order: one Struct type per input
        self.ids = {tensor_struct(f"Id{index}", name, Literal["BYTES", "INT64"], list[int],
                                  bounded_list(id_type(), max_records)): name
                    for index, name in enumerate(contract_ids.names(manifest))}
        # Its name a field, not a tag: outside a union msgspec takes a tagged Struct without its tag.
        one_value: Any = tuple  # a tuple type of types known at run time
        one_record = [msgspec.defstruct(f"One{index}", [
            ("name", literal[field.name]), ("datatype", literal[expected[field.name]]), ("shape", tuple[Literal[1]]),
            ("data", one_value[value_type(field, int64=True)])], forbid_unknown_fields=True, gc=False)
            for index, field in enumerate(manifest.inputs)]
        union: Any = Union[(*tensors, *self.ids)]
        ordered: Any = one_value[tuple(one_record)]
        self.one_record, self.request = (request_decoder(inputs) for inputs in (
            ordered, Annotated[list[union], msgspec.Meta(min_length=1)]))  # no inputs: v2.decode names them

    def decode(self, body: bytes) -> tuple[Columns, str | None, contract_ids.Ids | None] | None:
        """(the validated columns in the signature's order, the request's id, the ids or None), or None (see the
        class)."""
        try:
            one: Any = self.one_record.decode(body)
            return dict(zip(self.names, map(DATA, one.inputs), strict=True)), identity(one), None
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass  # any other form, or bad input
        try:
            request: Any = self.request.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # the slow path says what is wrong
            return None
        inputs = request.inputs
        data = list(map(DATA, inputs))
        count, shapes = len(data[0]), list(map(SHAPE, inputs))
        if list(map(len, data)).count(count) != len(inputs) or (
                shapes.count(one := [count]) != len(inputs) and shapes.count(one) + shapes.count([count, 1]) != len(inputs)):
            return None  # inputs of different lengths, or a shape other than [n] or [n, 1] (checked in C: no loop)
        found = None
        if list(map(type, inputs)) != self.tensors:  # not the signature's inputs in its order without ids
            by_type = dict(zip(map(type, inputs), inputs, strict=True))
            if len(by_type) != len(inputs) or len(inputs) != len(self.tensors) + len(by_type.keys() & self.ids.keys()):
                return None  # an input missing or given twice
            data = [by_type[kind].data for kind in self.tensors]
            if len(inputs) > len(self.tensors) and (found := self.found_ids(by_type)) is None:
                return None
        # the names and data are as long: the signature's inputs, one tensor each
        return dict(zip(self.names, data, strict=False)), identity(request), found

    def found_ids(self, by_type: dict) -> contract_ids.Ids | None:
        """The id tensors' data by id, or None when one holds values of the other datatype (v2.decode says which)."""
        found: dict[str, Any] = {}
        for kind, name in self.ids.items():
            tensor = by_type.get(kind)
            if tensor is not None:
                wanted = str if tensor.datatype == "BYTES" else int
                if any(value is not None and type(value) is not wanted for value in tensor.data):
                    return None
                found[name] = contract_ids.present(tensor.data)
        return found


def tensor_struct(kind: str, name: str, datatype: Any, shape: Any, data: Any) -> Any:
    """A V2 tensor named `name`, the tag of a union of them, with these types: a Struct type made at run time."""
    return msgspec.defstruct(kind, [("datatype", datatype), ("shape", shape), ("data", data)], tag_field="name", tag=name,
                             forbid_unknown_fields=True, gc=False)


def request_decoder(inputs: Any) -> msgspec.json.Decoder:
    """A decoder of V2's inference request whose inputs are of this type; its id present or absent (null is
    v2.decode's to refuse)."""
    return msgspec.json.Decoder(msgspec.defstruct("InferenceRequest", [
        ("inputs", inputs), ("id", str | msgspec.UnsetType, msgspec.UNSET)], forbid_unknown_fields=True))


def identity(request: Any) -> str | None:
    """A decoded request's id, None when it has none."""
    return None if request.id is msgspec.UNSET else request.id
