"""The Open Inference Protocol's binary tensor data extension (serving/scoring/v2_binary.py): its decoder and encoder
against tritonclient's own encoder and parser, and tritonclient's default infer() against the real service,
compared with the JSON V2 and /predict answers for the same records."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import struct

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, serialize_byte_tensor

from serving.scoring import v2, v2_binary
from serving.scoring.core import InputError, Outputs, Scored
from serving.scoring.model import Manifest

# A decoder test's own inputs, one of each datatype a model's input maps to (v2.input_types).
EXPECTED = {"amount": "FP64", "count": "INT64", "flag": "BOOL", "colour": "BYTES"}
KNOWN = {"prediction": {"name": "prediction", "datatype": "FP64", "shape": [-1]}}


def tensor(name: str, array: np.ndarray, binary: bool = True) -> triton.InferInput:
    result = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    return result.set_data_from_numpy(array, binary_data=binary)


def tritonclient_body(inputs: list, outputs: list | None = None, **options) -> tuple[bytes, str | None]:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs, **options)
    return body, None if json_size is None else str(json_size)


def raw_body(header: dict, *chunks: bytes) -> tuple[bytes, str]:
    """A request built by hand: the JSON header, then the binary chunks (for what tritonclient will not send)."""
    encoded = json.dumps(header).encode()
    return encoded + b"".join(chunks), str(len(encoded))


def binary_input(name: str, datatype: str, count: int, size: int, **extra) -> dict:
    return {"name": name, "datatype": datatype, "shape": [count], "parameters": {"binary_data_size": size}, **extra}


def every_input(count: int = 2) -> list:
    return [tensor("amount", np.array([1.5, math.nan][:count])), tensor("count", np.array([3, -4][:count], dtype=np.int64)),
            tensor("flag", np.array([True, False][:count])), tensor("colour", np.array(["red", "bleu é"][:count], dtype=object))]


# ------------------------------------------------------------------ decoding

def test_tritonclient_binary_request_decodes_to_the_json_decoders_columns():
    body, length = tritonclient_body(every_input(), request_id="r-1")
    request = v2_binary.decode(body, length, EXPECTED, KNOWN)
    assert request.columns == {"amount": [1.5, None], "count": [3, -4], "flag": [True, False], "colour": ["red", "bleu é"]}
    assert list(request.columns) == list(EXPECTED)
    assert (request.request_id, request.requested) == ("r-1", ["prediction"])
    assert request.binary == {"prediction"}  # tritonclient asks for binary outputs when it names none


def test_json_and_binary_inputs_mix_and_json_null_is_a_missing_category():
    amount = np.array([2.0, 5.0])
    header = {"inputs": [{"name": "colour", "datatype": "BYTES", "shape": [2], "data": [None, "red"]},
                         binary_input("amount", "FP64", 2, amount.nbytes),
                         {"name": "count", "datatype": "INT64", "shape": [2, 1], "data": [[1], [2]]},
                         {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, None]}],
              "outputs": [{"name": "prediction"}]}
    request = v2_binary.decode(*raw_body(header, amount.astype("<f8").tobytes()), EXPECTED, KNOWN)
    assert request.columns == {"amount": [2.0, 5.0], "count": [1, 2], "flag": [True, None], "colour": [None, "red"]}
    assert request.binary == frozenset()  # nothing asked for binary outputs: the answer is JSON


def test_a_json_request_asking_for_binary_outputs_gets_them():
    inputs = [tensor(t.name(), a, binary=False) for t, a in zip(every_input(), _arrays(), strict=True)]
    body, length = tritonclient_body(inputs)
    assert length is None and v2_binary.applies(body, length)  # no header: the parameter asks
    asked = v2_binary.decode(body, length, EXPECTED, KNOWN)
    assert asked.binary == {"prediction"} and asked.columns["colour"] == ["red", "blue"]
    declined = v2_binary.decode(*tritonclient_body(inputs, [triton.InferRequestedOutput("prediction", binary_data=False)]),
                                EXPECTED, KNOWN)
    assert declined.binary == frozenset()


def _arrays() -> list[np.ndarray]:
    return [np.array([1.5, 2.5]), np.array([3, -4]), np.array([True, False]), np.array(["red", "blue"], dtype=object)]


@pytest.mark.parametrize(("dtype", "values"), [(np.float32, [0.1, -2.5]), (np.float16, [0.5, 3.0]),
                                               (np.int32, [7, -8]), (np.int64, [2**53, -(2**53)]), (np.uint8, [0, 255])])
def test_a_numeric_input_takes_any_datatype_that_holds_its_values_exactly(dtype, values):
    array = np.array(values, dtype=dtype)
    inputs = [tensor("amount", array), *every_input()[1:]]
    columns = v2_binary.decode(*tritonclient_body(inputs), EXPECTED, KNOWN).columns
    assert columns["amount"] == [float(v) for v in array]  # the exact number each element stands for
    assert all(isinstance(v, float) for v in columns["amount"])


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint32])
def test_an_integer_input_takes_narrower_integers(dtype):
    inputs = [every_input()[0], tensor("count", np.array([5, 6], dtype=dtype)), *every_input()[2:]]
    assert v2_binary.decode(*tritonclient_body(inputs), EXPECTED, KNOWN).columns["count"] == [5, 6]


def test_empty_tensors_decode_to_empty_columns():
    inputs = [tensor("amount", np.zeros(0)), tensor("count", np.zeros(0, dtype=np.int64)),
              tensor("flag", np.zeros(0, dtype=bool)), tensor("colour", np.array([], dtype=object))]
    assert v2_binary.decode(*tritonclient_body(inputs), EXPECTED, KNOWN).columns == {name: [] for name in EXPECTED}


def _bad_request(case: str) -> tuple[bytes, str | None]:
    """A malformed binary request, by case: tritonclient's request for every_input(), changed."""
    good = every_input()
    body, length = tritonclient_body(good)
    assert length is not None
    heads, data = json.loads(body[:int(length)])["inputs"], body[int(length):]
    amount, count, flag, colour = heads
    colour_size = colour["parameters"]["binary_data_size"]
    before_colour = data[:-colour_size]

    def swap(name: str, array: np.ndarray) -> tuple[bytes, str | None]:
        return tritonclient_body([tensor(name, array) if t.name() == name else t for t in good])

    def amount_as(replacement: dict) -> tuple[bytes, str]:
        return raw_body({"inputs": [replacement, count, flag, colour]}, data)

    def colour_as(replacement: dict, raw: bytes) -> tuple[bytes, str]:
        return raw_body({"inputs": [amount, count, flag, replacement]}, before_colour, raw)

    one_a = struct.pack("<I", 1) + b"a"
    cases = {
        "header length beyond the body": lambda: (body, str(len(body) + 1)),
        "header length not a number": lambda: (body, "12x"),
        "a byte missing": lambda: (body[:-1], length),
        "a byte too many": lambda: (body + b"\0", length),
        "header not JSON": lambda: (b"[" + body[1:], length),
        "size not shape times width": lambda: amount_as(binary_input("amount", "FP64", 3, 16)),
        "negative size": lambda: amount_as(binary_input("amount", "FP64", 2, -16)),
        "size not a number": lambda: amount_as(binary_input("amount", "FP64", 2, "16")),
        "data and binary_data_size": lambda: amount_as(binary_input("amount", "FP64", 2, 16, data=[1, 2])),
        "unknown datatype": lambda: amount_as({**amount, "datatype": "BF16"}),
        "datatype the input does not take": lambda: swap("colour", np.array([1, 2])),
        "float for an integer input": lambda: swap("count", np.array([1.0, 2.0])),
        "shape [n, 2]": lambda: swap("amount", np.ones((1, 2))),
        "Infinity": lambda: swap("amount", np.array([1.0, math.inf])),
        "integer beyond 2**53 for a number": lambda: swap("amount", np.array([2**53 + 1, 0], dtype=np.int64)),
        "unsigned beyond INT64": lambda: swap("count", np.array([2**64 - 1, 0], dtype=np.uint64)),
        "BOOL byte 2": lambda: raw_body({"inputs": [amount, count, binary_input("flag", "BOOL", 2, 2), colour]},
                                        data[:16 + 16], b"\x01\x02", data[-colour_size:]),
        "BYTES not UTF-8": lambda: swap("colour", np.array([b"\xff", b"a"], dtype=object)),
        "BYTES element beyond its size": lambda: colour_as(binary_input("colour", "BYTES", 2, 9), one_a + struct.pack("<I", 9)),
        "BYTES bytes beyond its elements": lambda: colour_as(binary_input("colour", "BYTES", 1, 6), one_a + b"z"),
        "given twice": lambda: raw_body({"inputs": [*heads, {"name": "colour", "datatype": "BYTES", "shape": [2],
                                                             "data": ["a", "b"]}]}, data),
        "JSON input named by a list": lambda: raw_body({"inputs": [*heads, {"name": ["colour"], "datatype": "BYTES",
                                                                            "shape": [2], "data": ["a", "b"]}]}, data),
        "unknown input": lambda: raw_body({"inputs": [*heads, binary_input("nickname", "BYTES", 0, 0)]}, data),
        "missing input": lambda: raw_body({"inputs": [amount, count, flag]}, before_colour),
        "records disagree": lambda: swap("amount", np.array([1.0])),
        "binary_data not a boolean": lambda: raw_body({"inputs": heads, "outputs": [
            {"name": "prediction", "parameters": {"binary_data": "yes"}}]}, data),
    }
    return cases[case]()


NAMED = {  # each case: what its error names
    "header length beyond the body": "Inference-Header-Content-Length",
    "header length not a number": "Inference-Header-Content-Length",
    "a byte missing": "colour", "a byte too many": "inputs", "header not JSON": "JSON",
    "size not shape times width": "amount", "negative size": "amount", "size not a number": "amount",
    "data and binary_data_size": "amount", "unknown datatype": "amount", "datatype the input does not take": "colour",
    "float for an integer input": "count", "shape [n, 2]": "amount", "Infinity": "amount",
    "integer beyond 2**53 for a number": "amount", "unsigned beyond INT64": "count", "BOOL byte 2": "flag",
    "BYTES not UTF-8": "colour", "BYTES element beyond its size": "colour", "BYTES bytes beyond its elements": "colour",
    "given twice": "colour", "JSON input named by a list": "inputs", "unknown input": "nickname",
    "missing input": "colour", "records disagree": "[1, 2]", "binary_data not a boolean": "prediction",
}


@pytest.mark.parametrize("case", list(NAMED))
def test_a_malformed_binary_request_is_an_input_error_naming_the_input(case):
    with pytest.raises(InputError) as refused:
        v2_binary.decode(*_bad_request(case), EXPECTED, KNOWN)
    assert NAMED[case] in str(refused.value)


def test_random_damage_to_a_binary_request_is_an_input_error_or_a_request_never_a_crash():
    body, length = tritonclient_body(every_input())
    assert length is not None
    rng = np.random.default_rng(21)
    for _ in range(3000):
        damaged = bytearray(body)
        for position in rng.integers(0, len(body), size=rng.integers(1, 4)):
            damaged[position] = int(rng.integers(0, 256))
        cut = len(damaged) - int(rng.integers(0, 3))
        with contextlib.suppress(InputError):  # anything else (an IndexError, a TypeError...) fails the test
            v2_binary.decode(bytes(damaged[:cut]), str(int(length) + int(rng.integers(-2, 3))), EXPECTED, KNOWN)


# ------------------------------------------------------------------ encoding

@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


def _scored(manifest: Manifest, count: int) -> Scored:
    rng = np.random.default_rng(3)
    if manifest.task == "regression":
        array = rng.normal(size=count)
    else:
        array = rng.dirichlet(np.ones(len(manifest.classes or ())), size=count)
    values, labels, outputs = Outputs(manifest).build(array)
    return Scored("r", values, labels, outputs)


def test_binary_answer_parses_in_tritonclient_as_the_json_answer(manifest):
    known, scored = v2.outputs(manifest), _scored(manifest, 5)
    requested = list(known)
    as_json = json.loads(v2.encode(scored, manifest, "r-2", requested, known))
    body, length = v2_binary.encode(scored, manifest, "r-2", requested, known, frozenset(requested[:1]))
    result = triton.InferenceServerClient.parse_response_body(body, header_length=length)
    header = result.get_response()
    assert header["id"] == "r-2" and "binary_data_size" in header["outputs"][0]["parameters"]
    assert "data" not in header["outputs"][0] and "binary_data_size" not in header["outputs"][1].get("parameters", {})
    for output in as_json["outputs"]:
        got = result.as_numpy(output["name"])
        assert list(got.shape) == output["shape"]
        assert [v.decode() if isinstance(v, bytes) else v for v in got.ravel().tolist()] == output["data"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("count", [1, 7])
def test_the_json_answer_is_orjsons_of_the_v2_answer_object(manifest, task, count):
    """v2.Answer writes the constant parts once: its bytes must be those of the answer as a dict, whatever the task,
    the outputs asked for (in the order asked) and the request's id."""
    classes = {"binary": manifest.classes, "multiclass": ["low", "mid", "high"], "regression": None}[task]
    model = dataclasses.replace(manifest, task=task, classes=classes)
    known, scored = v2.outputs(model), _scored(model, count)
    data = {"probability": scored.values, "prediction": scored.values, "label": scored.labels}
    if task == "multiclass":  # a record's probabilities, flat, in the classes' order
        data["probabilities"] = [p for row in scored.values for p in row]
    shapes = {"probabilities": [count, len(classes or ())]}
    for requested in (list(known), list(known)[::-1], list(known)[:1]):
        for request_id in ("r-2", None):
            tensors = [{"name": name, "datatype": known[name]["datatype"], "shape": shapes.get(name, [count]),
                        "data": data[name], **({"parameters": known[name]["parameters"]}
                                               if "parameters" in known[name] else {})} for name in requested]
            expected = {"model_name": model.model_name, "model_version": model.model_version, "outputs": tensors,
                        **({"id": request_id} if request_id is not None else {})}
            assert v2.Answer(model).json(scored, request_id, requested) == orjson.dumps(expected)


# ------------------------------------------------------------------ the real service, through tritonclient

@pytest.fixture(scope="module")
def triton_client(live):
    client = triton.InferenceServerClient(live.url.removeprefix("http://"))
    yield client
    client.close()


def _missing(manifest: Manifest) -> list[str]:
    """The FP64 inputs a test leaves out (NaN in a binary float tensor, null in JSON): the first and the last."""
    numbers = [f.name for f in manifest.inputs if v2.datatype(f.type) == "FP64"]
    return [numbers[0], numbers[-1]]


@pytest.fixture(scope="module")
def records(manifest) -> list[dict]:
    """The model's input example plus a record with missing numbers."""
    rows = [dict(r) for r in manifest.input_example]
    return [*rows, {**rows[0], **dict.fromkeys(_missing(manifest))}]


def tritonclient_inputs(manifest: Manifest, records: list[dict], number_type: type = np.float64) -> list:
    """One binary tensor per input, of the datatype the model's metadata names (FP64 numbers as `number_type`)."""
    inputs = []
    for field in manifest.inputs:
        values, datatype = [r[field.name] for r in records], v2.datatype(field.type)
        if datatype == "FP64":
            array = np.array([math.nan if v is None else v for v in values], dtype=number_type)
        else:
            array = np.array(values, dtype={"BYTES": object, "INT64": np.int64, "BOOL": bool}[datatype])
        inputs.append(tensor(field.name, array))
    return inputs


def v2_json_body(manifest: Manifest, records: list[dict]) -> dict:
    return {"inputs": [{"name": f.name, "datatype": v2.datatype(f.type), "shape": [len(records)],
                        "data": [r[f.name] for r in records]} for f in manifest.inputs]}


def _listed(array: np.ndarray) -> list:
    """A tritonclient output as JSON has it (BYTES elements as text)."""
    return [[_plain(v) for v in row] if isinstance(row, list) else _plain(row) for row in array.tolist()]


def _plain(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def test_tritonclient_default_infer_answers_as_json_v2_and_predict(triton_client, http, manifest, records):
    result = triton_client.infer(manifest.model_name, tritonclient_inputs(manifest, records), request_id="bin-1")
    answer = result.get_response()
    assert answer["id"] == "bin-1"
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in answer["outputs"])  # binary outputs
    as_json = http.post(f"/v2/models/{manifest.model_name}/infer", json=v2_json_body(manifest, records))
    assert as_json.status_code == 200, as_json.text
    for output in as_json.json()["outputs"]:
        assert list(result.as_numpy(output["name"]).shape) == output["shape"]
        assert _listed(result.as_numpy(output["name"]).ravel()) == output["data"]
    predicted = http.post("/predict", json={"records": records}).json()["predictions"]
    for name in predicted[0]:
        want = [list(p[name].values()) if isinstance(p[name], dict) else p[name] for p in predicted]
        assert _listed(result.as_numpy(name)) == want


def test_nan_is_logged_as_the_missing_value_json_null_is(live, triton_client, http, manifest, records):
    missing = records[-1:]
    since = live.log_offset()
    triton_client.infer(manifest.model_name, tritonclient_inputs(manifest, missing), headers={"x-request-id": "v2-binary"})
    http.post(f"/v2/models/{manifest.model_name}/infer", json=v2_json_body(manifest, missing),
              headers={"x-request-id": "v2-json"})
    logged = {line["request_id"]: line for line in live.log_entries(since, 2)}
    assert logged["v2-binary"]["inputs"] == logged["v2-json"]["inputs"]
    assert all(logged["v2-binary"]["inputs"][name] == [None] for name in _missing(manifest))


def test_float32_numbers_score_as_the_float32_values_they_are(triton_client, http, manifest, records):
    present = records[:-1]
    result = triton_client.infer(manifest.model_name, tritonclient_inputs(manifest, present, np.float32))
    numbers = {f.name for f in manifest.inputs if not f.is_string and v2.datatype(f.type) == "FP64"}
    rounded = [{k: (float(np.float32(v)) if k in numbers and v is not None else v) for k, v in r.items()} for r in present]
    as_json = http.post(f"/v2/models/{manifest.model_name}/infer", json=v2_json_body(manifest, rounded)).json()
    for output in as_json["outputs"]:
        assert _listed(result.as_numpy(output["name"]).ravel()) == output["data"]


def test_binary_inputs_with_json_outputs_answer_json(triton_client, manifest, records):
    known = list(v2.outputs(manifest))
    result = triton_client.infer(manifest.model_name, tritonclient_inputs(manifest, records),
                                 outputs=[triton.InferRequestedOutput(known[-1], binary_data=False)])
    assert [o["name"] for o in result.get_response()["outputs"]] == [known[-1]]
    assert len(result.get_response()["outputs"][0]["data"]) == len(records)


def test_server_metadata_advertises_the_extension(triton_client):
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("case", ["header length beyond the body", "a byte missing", "a byte too many"])
def test_malformed_binary_bodies_are_400_naming_the_problem(triton_client, http, manifest, records, case):
    body, length = tritonclient_body(tritonclient_inputs(manifest, records))
    assert length is not None
    body, length = {"header length beyond the body": (body, str(len(body) + 1)), "a byte missing": (body[:-1], length),
                    "a byte too many": (body + b"\0", length)}[case]
    answer = http.post(f"/v2/models/{manifest.model_name}/infer", content=body,
                       headers={"inference-header-content-length": length, "content-type": "application/octet-stream"})
    assert answer.status_code == 400, answer.text
    last = manifest.inputs[-1].name
    named = {"header length beyond the body": "Inference-Header-Content-Length", "a byte missing": last,
             "a byte too many": "inputs"}[case]
    assert {"error", "problems"} <= set(answer.json()) and named in answer.json()["error"]
    assert triton_client.is_server_ready()  # the process keeps serving


def test_bad_utf8_through_tritonclient_names_the_input(triton_client, manifest, records):
    text = next(f.name for f in manifest.inputs if f.is_string)
    inputs = [tensor(text, np.array([b"\xff"] * len(records), dtype=object)) if t.name() == text else t
              for t in tritonclient_inputs(manifest, records)]
    with pytest.raises(InferenceServerException, match=text):
        triton_client.infer(manifest.model_name, inputs)


def test_serialize_byte_tensor_is_what_the_decoder_reads():
    # tritonclient's own BYTES encoding (4-byte little-endian length, then the bytes) is the one decoded here.
    encoded = serialize_byte_tensor(np.array(["a", "bc"], dtype=object)).item()
    assert encoded == struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    header = {"inputs": [binary_input("colour", "BYTES", 2, len(encoded))]}
    assert v2_binary.decode(*raw_body(header, encoded), {"colour": "BYTES"}, KNOWN).columns == {"colour": ["a", "bc"]}
