"""The request log's split into lines the container runtime keeps whole."""

from __future__ import annotations

import json
import random

from serving.scoring import requestlog


def lines_for(records: list[dict], request_id: str = "r" * 128) -> list[bytes]:
    outputs = [{"probability": random.random(), "label": random.randint(0, 1)} for _ in records]
    raw = requestlog.prediction_lines(request_id=request_id, model_name="credit-default", model_version="12",
                                      runtime="onnx", protocol="mlflow", inputs=records, outputs=outputs,
                                      latency_ms=1.5)
    return raw.splitlines(keepends=True)


def test_a_small_request_is_one_line_and_a_large_one_parts_under_the_limit():
    rng = random.Random(3)
    records = [{"sex": rng.choice(["female", "male"]), "age": rng.uniform(18, 100), "note": "x" * rng.randint(0, 200)}
               for _ in range(3000)]
    [single] = lines_for(records[:5])
    assert json.loads(single)["parts"] == 1
    lines = lines_for(records)
    parts = [json.loads(line) for line in lines]
    assert max(len(line) for line in lines) <= requestlog.MAX_LINE_BYTES and len(lines) > 10
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert [p["part"] for p in parts] == list(range(1, len(parts) + 1)) and {p["parts"] for p in parts} == {len(parts)}
    assert [r for p in parts for r in p["inputs"]] == records and {p["n_records"] for p in parts} == {3000}
    # Parts are filled: the next record would not have fitted (so lines are not needlessly many).
    assert min(len(line) for line in lines[:-1]) > requestlog.MAX_LINE_BYTES - 2000


def test_a_record_too_big_for_any_line_has_its_long_texts_cut_in_the_log():
    records = [{"sex": "female", "age": 30.0}, {"sex": "é" * 50_000, "age": 40.0}, {"sex": "male", "age": 50.0}]
    lines = lines_for(records)
    assert max(len(line) for line in lines) <= requestlog.MAX_LINE_BYTES
    logged = [r for line in lines for r in json.loads(line)["inputs"]]
    assert logged[1]["sex"] == "é" * requestlog.MAX_LOGGED_STRING + "…" and logged[1]["age"] == 40.0
    assert logged[0] == records[0] and logged[2] == records[2]
    assert records[1]["sex"] == "é" * 50_000  # the caller's records (what was scored) are untouched
