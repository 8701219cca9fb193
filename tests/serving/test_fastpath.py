"""msgspec's fast path (scoring/fastpath.py) accepts exactly what the pydantic rules accept, with the same values.

The reference is schemas.request_adapter (pydantic: types, strictness, null, unknown/missing fields, 1..max records)
AND the contract's rules stated here (`in_contract`: numeric bounds, closed categories), which the pydantic side
enforces as well once the contract lands there. Every input type and every contract rule is in the manifest below;
each edge value is tried in each field of an otherwise valid record, in /predict's body and as parsed records (the
other protocols), and as V2's columns."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from serving.scoring import requestlog, v2
from serving.scoring.core import InputError, ScoringPath
from serving.scoring.fastpath import FastRecords, FastV2
from serving.scoring.model import InputField, Manifest
from serving.scoring.schemas import columns_adapter, records_adapter, request_adapter
from serving.scoring.settings import Settings

MAX_RECORDS = 5
INPUTS = [
    {"name": "free_double", "type": "double"},
    {"name": "bounded_double", "type": "double", "minimum": 0, "maximum": 100},
    {"name": "open_interval", "type": "float", "greater_than": 0, "less_than": 1},
    {"name": "both_lower", "type": "double", "minimum": 0, "greater_than": 0.5},
    {"name": "free_long", "type": "long"},
    {"name": "age", "type": "integer", "minimum": 18, "maximum": 120},
    {"name": "exclusive_int", "type": "long", "greater_than": -3, "less_than": 3},
    {"name": "rounded_int", "type": "long", "greater_than": 0.5, "maximum": 99.5},  # bounds made integers
    {"name": "flag", "type": "boolean"},
    {"name": "closed", "type": "string", "values": ["red", "blue"]},
    {"name": "open", "type": "string", "values": ["red", "blue"], "open": True},
    {"name": "text", "type": "string"},
]
VALID = {"free_double": 1.5, "bounded_double": 50.0, "open_interval": 0.5, "both_lower": 0.75, "free_long": 7,
         "age": 40, "exclusive_int": 0, "rounded_int": 40, "flag": True, "closed": "red", "open": "red", "text": "x"}
NUMBERS = ["0", "-0", "-0.0", "1", "5", "5.0", "5.5", "100", "100.0", "100.0000001", "99.9999999", "18", "17", "120",
           "121", "17.5", "0.5", "0.50000001", "1e-300", "-1e-300", "1", "0.9999999999", "-3", "-2", "2", "3", "1e2",
           "-1", "1e400", "-1e400", "1.7976931348623157e308", "12345678901234567890123", "-12345678901234567890123",
           "9223372036854775808", "19", "119", "18.5", "99", "99.5", "-3.5", "-2.5", "2.5", "3.5", "-4", "4", "0.4999999",
           "1.0000001", "-0.0000001", "0.0000001"]
OTHERS = ["NaN", "Infinity", "-Infinity", "true", "false", "null", '"5"', '"red"', '"blue"', '"Red"', '"green"', '""',
          '"\\u00e9"', '"\\ud800"', "[1]", "{}", '["red"]']
LITERALS = NUMBERS + OTHERS


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return Manifest.from_dict({"model": {"name": "m", "version": "1"}, "runtime": "onnx", "task": "regression",
                               "inputs": INPUTS, "input_example": [VALID]})


def in_contract(field: InputField, value: Any) -> bool:
    """The contract's rules (issue 21 point 4), as the pydantic side states them: bounds, closed categories."""
    if value is None:
        return True
    if field.values is not None and not field.open:
        return value in field.values
    if isinstance(value, str | bool):
        return True
    return ((field.minimum is None or value >= field.minimum) and (field.maximum is None or value <= field.maximum)
            and (field.greater_than is None or value > field.greater_than)
            and (field.less_than is None or value < field.less_than))


def reference(manifest: Manifest, body: bytes | None = None, parsed: object = None) -> list[dict] | None:
    """What the pydantic adapter (of /predict's body, or of records parsed already) and the contract accept: the
    records, or None."""
    try:
        records = (request_adapter(manifest, MAX_RECORDS).validate_json(body)["records"] if body is not None
                   else records_adapter(manifest, MAX_RECORDS).validate_python(parsed))
    except ValidationError:
        return None
    fields = {f.name: f for f in manifest.inputs}
    ok = all(in_contract(fields[name], value) for record in records for name, value in record.items())
    return records if ok else None


def as_dicts(records: list) -> list[dict]:
    return [{name: getattr(r, name) for name in r.__struct_fields__} for r in records]


def same(fast: list[dict] | None, slow: list[dict] | None) -> bool:
    """Equal records, each value of the same type (5 and 5.0 differ; -0.0 and 0.0 differ)."""
    if fast is None or slow is None:
        return fast is slow
    return json.dumps(fast) == json.dumps(slow) and [[type(v) for v in r.values()] for r in fast] == \
        [[type(v) for v in r.values()] for r in slow] and all(
            math.copysign(1, a) == math.copysign(1, b) for f, s in zip(fast, slow, strict=True)
            for a, b in zip(f.values(), s.values(), strict=True) if isinstance(a, float) and isinstance(b, float))


def with_value(name: str, literal: str) -> bytes:
    """/predict's body of one valid record but for `name`, whose value is the JSON `literal`."""
    fields = [f"{json.dumps(key)}:{literal if key == name else json.dumps(value)}" for key, value in VALID.items()]
    return f'{{"records":[{{{",".join(fields)}}}]}}'.encode()


def bodies() -> list[tuple[str, bytes]]:
    cases = [(f"{name}={literal}", with_value(name, literal)) for name in VALID for literal in LITERALS]
    missing = {k: v for k, v in VALID.items() if k != "age"}
    cases += [
        ("valid", orjson.dumps({"records": [VALID]})),
        ("unknown field", orjson.dumps({"records": [{**VALID, "extra": 1}]})),
        ("missing field", orjson.dumps({"records": [missing]})),
        ("no records", b'{"records": []}'),
        ("max records", orjson.dumps({"records": [VALID] * MAX_RECORDS})),
        ("too many records", orjson.dumps({"records": [VALID] * (MAX_RECORDS + 1)})),
        ("unknown envelope key", orjson.dumps({"records": [VALID], "params": {}})),
        ("no envelope", orjson.dumps([VALID])),
        ("records not a list", orjson.dumps({"records": VALID})),
        ("record not an object", b'{"records": [1]}'),
        ("duplicate key", b'{"records": [' + orjson.dumps(VALID)[:-1] + b', "age": 200}]}'),
        ("not JSON", b'{"records": ['),
        ("empty", b""),
        ("trailing", orjson.dumps({"records": [VALID]}) + b" x"),
    ]
    return cases


def test_every_edge_value_is_in_the_table(manifest):
    """The table covers each field at, just inside and just outside each of its bounds."""
    parsed = [json.loads(n) for n in NUMBERS]
    for field in manifest.inputs:
        for bound in (field.minimum, field.maximum, field.greater_than, field.less_than):
            if bound is not None:
                assert bound in parsed and any(bound - 1 <= p < bound for p in parsed) \
                    and any(bound < p <= bound + 1 for p in parsed), (field.name, bound)


@pytest.mark.parametrize(("case", "body"), bodies(), ids=[case for case, _ in bodies()])
def test_predict_body_accepted_exactly_as_pydantic_and_the_contract(manifest, case, body):
    fast = FastRecords(manifest, MAX_RECORDS).decode(body)
    expected = reference(manifest, body)
    assert same(as_dicts(fast) if fast is not None else None, expected), (case, fast, expected)


@pytest.mark.parametrize(("case", "body"), bodies(), ids=[case for case, _ in bodies()])
def test_parsed_records_and_columns_accepted_exactly_as_pydantic_and_the_contract(manifest, case, body):
    """The other protocols validate records parsed already (MLflow's) or columns (V2's) by the same rules."""
    try:
        document = json.loads(body)
    except ValueError:
        return
    if not isinstance(document, dict) or set(document) != {"records"}:
        return
    candidates = document["records"]
    fast = FastRecords(manifest, MAX_RECORDS).convert(candidates)
    expected = reference(manifest, parsed=candidates)
    assert same(as_dicts(fast) if fast is not None else None, expected), (case, fast, expected)
    if isinstance(candidates, list) and candidates and all(isinstance(r, dict) and set(r) == set(VALID)
                                                              for r in candidates):
        columns = {name: [r[name] for r in candidates] for name in VALID}
        fast_columns = FastRecords(manifest, MAX_RECORDS).convert_columns(columns)
        rows = None if fast_columns is None else [dict(zip(fast_columns, row, strict=True))
                                                  for row in zip(*fast_columns.values(), strict=True)]
        assert same(rows, expected), (case, rows, expected)


def test_mlflow_variant_ignores_unknown_columns(manifest):
    ignoring = FastRecords(manifest, MAX_RECORDS, forbid_unknown=False).convert([{**VALID, "extra": 1}])
    slow = records_adapter(manifest, MAX_RECORDS, extra="ignore").validate_python([{**VALID, "extra": 1}])
    assert ignoring is not None and same(as_dicts(ignoring), slow)


def test_refused_body_gets_pydantics_full_report(manifest):
    """msgspec stops at the first problem; the service's answer still names every record and field (pydantic's)."""
    path = ScoringPath(Settings(model_dir=None, max_records=MAX_RECORDS, request_log=False),  # type: ignore[arg-type]
                       manifest, records_adapter(manifest, MAX_RECORDS), columns_adapter(manifest, MAX_RECORDS))
    bad = [{**VALID, "free_double": "x"}, {**VALID, "free_long": 1.5, "text": 3}]
    from serving.scoring.core import InputError

    with pytest.raises(InputError) as refused:
        path.validate(bad)
    assert {(p.record, p.field) for p in refused.value.problems} == {(0, "free_double"), (1, "free_long"), (1, "text")}


def test_typed_records_log_as_the_dicts_did(manifest):
    """The request log's bytes from msgspec's records equal those from pydantic's dicts (one line and split): both
    reach it as columns (ScoringPath.columns_of), the same values of the same types."""
    count = 800  # several lines
    body = orjson.dumps({"records": [VALID] * count})
    path = ScoringPath(Settings(model_dir=None, max_records=count, request_log=False),  # type: ignore[arg-type]
                       manifest, records_adapter(manifest, count), columns_adapter(manifest, count))
    fast = FastRecords(manifest, count).decode(body)
    slow = request_adapter(manifest, count).validate_json(body)["records"]
    outputs = [{"prediction": 1.0}] * count

    def lines(records: list) -> list[bytes]:
        raw = requestlog.prediction_lines(request_id="r", model_name="m", model_version="1", runtime="onnx",
                                          protocol="predict", inputs=path.logged(path.columns_of(records)),
                                          outputs=outputs, latency_ms=1.0)
        return [line.split(b',"request_id"', 1)[1] for line in raw.splitlines()]  # all but the time

    assert fast is not None and len(lines(fast)) > 1 and lines(fast) == lines(slow)


def mlflow_bodies() -> list[tuple[str, bytes]]:
    names = list(VALID)
    row = [VALID[name] for name in names]
    split = {"columns": names, "data": [row, row]}
    cases = [("records", {"dataframe_records": [VALID, VALID]}), ("split", {"dataframe_split": split}),
             ("split, columns in another order", {"dataframe_split": {"columns": names[::-1], "data": [row[::-1]]}}),
             ("split with an index", {"dataframe_split": {**split, "index": [0, 1]}}),
             ("params ignored", {"dataframe_records": [VALID], "params": {"x": 1}}),
             ("unknown column ignored", {"dataframe_records": [{**VALID, "extra": 1}]}),
             ("split with another column", {"dataframe_split": {"columns": [*names, "extra"], "data": [[*row, 1]]}}),
             ("split missing a column", {"dataframe_split": {"columns": names[1:], "data": [row[1:]]}}),
             ("split row too short", {"dataframe_split": {"columns": names, "data": [row[1:]]}}),
             ("two formats", {"dataframe_records": [VALID], "instances": [VALID]}),
             ("a format and a null one", {"dataframe_records": [VALID], "dataframe_split": None}),
             ("null records", {"dataframe_records": None}), ("no records", {"dataframe_records": []}),
             ("too many records", {"dataframe_records": [VALID] * (MAX_RECORDS + 1)}),
             ("instances", {"instances": [VALID]}), ("inputs as columns", {"inputs": {k: [v] for k, v in VALID.items()}}),
             ("a number for a string (MLflow takes its text)", {"dataframe_records": [{**VALID, "text": 5}]}),
             ("out of contract", {"dataframe_records": [{**VALID, "age": 17}]}),
             ("closed category", {"dataframe_split": {**split, "data": [[*row[:-3], "green", *row[-2:]]]}})]
    return [(case, orjson.dumps(document)) for case, document in cases] + [
        ("NaN", orjson.dumps({"dataframe_records": [VALID]}).replace(b"1.5", b"NaN")), ("not JSON", b"{")]


@pytest.mark.parametrize(("case", "body"), mlflow_bodies(), ids=[case for case, _ in mlflow_bodies()])
def test_invocations_fast_path_takes_only_what_mlflows_decoder_and_the_rules_accept(manifest, case, body):
    """The fast path answers a body only when the protocol's own decoder and validate() would have accepted it, with
    the same records; anything else it leaves to them (None)."""
    from serving.scoring import mlflow_protocol
    from serving.scoring.core import InputError

    path = ScoringPath(Settings(model_dir=None, max_records=MAX_RECORDS, request_log=False),  # type: ignore[arg-type]
                       manifest, records_adapter(manifest, MAX_RECORDS), columns_adapter(manifest, MAX_RECORDS))
    try:
        candidates = mlflow_protocol.decode(body, "application/json", frozenset())
        strict = records_adapter(manifest, MAX_RECORDS, "ignore").validate_python(candidates)  # MLflow's, not lax
        expected = reference(manifest, parsed=strict)
    except (InputError, ValidationError):
        expected = None
    decoded = path.fast_mlflow.decode(body)
    if decoded is None:
        assert case not in ("records", "split", "split, columns in another order", "split with an index",
                            "params ignored", "unknown column ignored"), "the common forms take the fast path"
        return
    fast, found = decoded
    assert found is None, "this contract names no ids"
    records = [dict(zip(fast, r, strict=True)) for r in zip(*fast.values(), strict=True)]
    assert list(fast) == list(VALID), "the signature's columns, in its order"
    assert expected is not None and same(records, expected), (case, records, expected)


def v2_bodies() -> list[tuple[str, bytes]]:
    """V2 requests: every edge value in each input (as bodies() does), and the request's own shapes."""
    types = v2.input_types(Manifest.from_dict({"model": {"name": "m", "version": "1"}, "runtime": "onnx",
                                               "task": "regression", "inputs": INPUTS, "input_example": [VALID]}))

    def tensor(name: str, data: str, **change: Any) -> str:
        fields = {"name": json.dumps(name), "datatype": json.dumps(types[name]), "shape": "[1]", "data": data, **change}
        return "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"

    def request(*tensors: str, rest: str = "") -> bytes:
        return f'{{"inputs": [{", ".join(tensors)}]{rest}}}'.encode()

    valid = [tensor(name, json.dumps([value])) for name, value in VALID.items()]
    cases = [("valid", request(*valid)), ("with an id", request(*valid, rest=', "id": "a"')), ("no inputs", request()),
             ("another order", request(*reversed(valid))), ("another order, an input twice", request(*valid[1:], *valid)),
             ("a tensor without its name", request(valid[0].replace(f'"name": {json.dumps(INPUTS[0]["name"])}, ', ""),
                                                   *valid[1:])),
             ("a tensor named twice", request(valid[0].replace('"name"', '"name": "other", "name"'), *valid[1:])),
             ("two records", request(*(tensor(name, json.dumps([value, value]), shape="[2]")
                                       for name, value in VALID.items()))),
             ("null id", request(*valid, rest=', "id": null')), ("outputs", request(*valid, rest=', "outputs": []')),
             ("an input missing", request(*valid[1:])), ("an input twice", request(valid[0], *valid)),
             ("shape [1, 1]", request(tensor(INPUTS[0]["name"], "[1.5]", shape="[1, 1]"), *valid[1:])),
             ("shape [1, 2]", request(tensor(INPUTS[0]["name"], "[1.5]", shape="[1, 2]"), *valid[1:])),
             ("shape [2]", request(tensor(INPUTS[0]["name"], "[1.5]", shape="[2]"), *valid[1:])),
             ("nested data", request(tensor(INPUTS[0]["name"], "[[1.5]]", shape="[1, 1]"), *valid[1:])),
             ("another datatype", request(tensor(INPUTS[0]["name"], "[1.5]", datatype='"FP32"'), *valid[1:])),
             ("parameters", request(tensor(INPUTS[0]["name"], "[1.5]", parameters="{}"), *valid[1:])),
             ("two records in one input", request(tensor(INPUTS[0]["name"], "[1.5, 2.5]", shape="[2]"), *valid[1:]))]
    for index, field in enumerate(INPUTS):
        for literal in LITERALS:
            changed = [*valid[:index], tensor(field["name"], f"[{literal}]"), *valid[index + 1:]]
            cases.append((f"{field['name']}={literal}", request(*changed)))
    return cases


@pytest.mark.parametrize(("case", "body"), v2_bodies(), ids=[case for case, _ in v2_bodies()])
def test_v2_fast_path_takes_only_what_v2s_decoder_and_the_rules_accept(manifest, case, body):
    """FastV2 answers a body only when v2.decode and the record rules (with the contract) accept it, with the same
    columns and id; whatever it does not take goes to them (None), so refusals keep their full report."""
    expected, known = v2.input_types(manifest), v2.outputs(manifest)
    typed = FastV2(manifest, expected, MAX_RECORDS).decode(body)
    try:
        columns, identity, _, _ = v2.decode(body, expected, known)
        slow = columns_adapter(manifest, MAX_RECORDS).validate_python(columns)
        accepted = all(in_contract(field, value) for field in manifest.inputs for value in slow[field.name])
    except (InputError, ValidationError):
        accepted = False
    if typed is not None:
        assert accepted, f"{case}: the fast path took what the protocol refuses"
        assert ({name: list(values) for name, values in typed[0].items()}, *typed[1:]) == (
            {name: list(values) for name, values in slow.items()}, identity, None)
    assert typed is not None or case not in ("valid", "with an id", "shape [1, 1]", "another order", "two records"), \
        f"{case}: the common form missed"


# The contract's ids (scoring/ids.py): optional fields of every record, a string of at most 256 characters or an
# integer within JSON's exact ones (a whole number written 303.0 is 303: pydantic's to take, msgspec refuses it).
ID_NAMES = ["order_ref", "account_no"]
EMOJI = "\\ud83d\\ude00"  # one character, two UTF-16 escapes: lengths count characters
ID_LITERALS = ['"x"', '""', '"' + "x" * 256 + '"', '"' + "x" * 257 + '"', '"' + EMOJI * 256 + '"',
               '"' + EMOJI * 257 + '"', '"\\ud800"', "0", "-1", "9007199254740991", "9007199254740992",
               "-9007199254740991", "-9007199254740992", "9223372036854775807", "18446744073709551616", "303.0", "3e2",
               "1.5", "-0.0", "1e400", "true", "false", "null", "{}", "[]", '["x"]']


@pytest.fixture(scope="module")
def identified() -> Manifest:
    return Manifest.from_dict({"model": {"name": "m", "version": "1"}, "runtime": "onnx", "task": "regression",
                               "inputs": INPUTS, "input_example": [VALID],
                               "contract": {"ids": ID_NAMES, "personal": [ID_NAMES[1]]}})


def id_bodies() -> list[tuple[str, bytes]]:
    cases = [(f"{name}={literal}", f'{{"records":[{orjson.dumps(VALID).decode()[:-1]},"{name}":{literal}}}]}}'.encode())
             for name in ID_NAMES for literal in ID_LITERALS]
    both = [{**VALID, ID_NAMES[0]: "a", ID_NAMES[1]: 7}, {**VALID, ID_NAMES[1]: None}, VALID]
    return [*cases, ("no ids", orjson.dumps({"records": [VALID]})), ("ids in some records", orjson.dumps({"records": both})),
            ("an unknown field beside the ids", orjson.dumps({"records": [{**VALID, ID_NAMES[0]: "a", "extra": 1}]}))]


def with_ids(record: Any, names: list[str]) -> dict:
    """A typed record (either Struct) or a validated dict as a dict with every id (None when absent)."""
    found = as_dicts([record])[0] if not isinstance(record, dict) else dict(record)
    return {**{key: value for key, value in found.items() if key not in names}, **{name: found.get(name) for name in names}}


@pytest.mark.parametrize(("case", "body"), id_bodies(), ids=[case for case, _ in id_bodies()])
def test_ids_accepted_exactly_as_pydantic_takes_them(identified, case, body):
    """/predict's body and parsed records (the other protocols): msgspec takes an id only when pydantic does, with
    the same value; pydantic may take more (303.0 as 303)."""
    fast = FastRecords(identified, MAX_RECORDS).decode(body)
    try:
        slow = request_adapter(identified, MAX_RECORDS).validate_json(body)["records"]
    except ValidationError:
        slow = None
    assert fast is None or slow is not None, f"{case}: msgspec took what pydantic refuses"
    if fast is not None and slow is not None:
        assert same([with_ids(r, ID_NAMES) for r in fast], [with_ids(r, ID_NAMES) for r in slow]), case
    if slow is not None:
        assert all(type(v) in (str, int, type(None)) for r in slow for n, v in r.items() if n in ID_NAMES), case
    parsed = json.loads(body) if b"\\ud800" not in body and b"1e400" not in body else None
    if parsed is not None:
        converted = FastRecords(identified, MAX_RECORDS).convert(parsed["records"])
        try:
            reference_records = records_adapter(identified, MAX_RECORDS).validate_python(parsed["records"])
        except ValidationError:
            reference_records = None
        assert converted is None or reference_records is not None, case
        if converted is not None and reference_records is not None:
            assert same([with_ids(r, ID_NAMES) for r in converted], [with_ids(r, ID_NAMES) for r in reference_records])


def test_ids_never_reach_the_models_columns_and_are_told_apart(identified):
    path = ScoringPath(Settings(model_dir=None, max_records=MAX_RECORDS, request_log=False),  # type: ignore[arg-type]
                       identified, records_adapter(identified, MAX_RECORDS), columns_adapter(identified, MAX_RECORDS))
    body = orjson.dumps({"records": [{**VALID, ID_NAMES[0]: "a"}, VALID]})
    for records in (path.fast.decode(body), request_adapter(identified, MAX_RECORDS).validate_json(body)["records"]):
        columns, found = path.columns_and_ids(records)
        expected = {ID_NAMES[0]: ("a", None) if not isinstance(records[0], dict) else ["a", None]}
        assert list(columns) == list(VALID) and {name: ids for name, ids in found.items() if ids is not None} == expected
    columns, found = path.columns_and_ids(path.fast.decode(orjson.dumps({"records": [VALID]})))
    assert list(columns) == list(VALID) and found is None


def test_mlflow_and_v2_fast_paths_take_ids_as_their_slow_paths_do(identified):
    path = ScoringPath(Settings(model_dir=None, max_records=MAX_RECORDS, request_log=False),  # type: ignore[arg-type]
                       identified, records_adapter(identified, MAX_RECORDS), columns_adapter(identified, MAX_RECORDS))
    names = list(VALID)
    split = {"dataframe_split": {"columns": [ID_NAMES[1], *names], "data": [[5, *VALID.values()], [None, *VALID.values()]]}}
    decoded = path.fast_mlflow.decode(orjson.dumps(split))
    assert decoded is not None and decoded[1] == {ID_NAMES[1]: [5, None]} and list(decoded[0]) == names
    records = path.fast_mlflow.decode(orjson.dumps({"dataframe_records": [{**VALID, ID_NAMES[0]: "a"}]}))
    assert records is not None and records[1] == {ID_NAMES[0]: ("a",)}  # an id no record has is left out
    for wrong in (1.5, True, "x" * 257):
        bad = {"dataframe_split": {"columns": [*names, ID_NAMES[0]], "data": [[*VALID.values(), wrong]]}}
        assert path.fast_mlflow.decode(orjson.dumps(bad)) is None  # the slow path refuses, naming it
    expected, known = v2.input_types(identified), v2.outputs(identified)
    fast = FastV2(identified, expected, MAX_RECORDS)
    tensors = [{"name": n, "datatype": expected[n], "shape": [1], "data": [VALID[n]]} for n in names]
    for datatype, data, taken in [("BYTES", ["a"], ["a"]), ("INT64", [7], [7]), ("INT64", [None], None),
                                  ("BYTES", [7], "refused"), ("INT64", ["7"], "refused"), ("INT64", [303.0], [303])]:
        body = orjson.dumps({"inputs": [*tensors, {"name": ID_NAMES[0], "datatype": datatype, "shape": [1],
                                                   "data": data}]})
        typed = fast.decode(body)
        try:
            slow = v2.decode(body, expected, known, ID_NAMES)[3][ID_NAMES[0]]
        except InputError:
            slow = "refused"
        assert slow == ("refused" if taken == "refused" else [None] if taken is None else taken), (datatype, data)
        if typed is not None:
            assert taken != "refused" and typed[2] == {ID_NAMES[0]: taken}, (datatype, data, typed)
        else:
            assert taken == "refused" or data == [303.0], (datatype, data)
