"""The traffic generator, and the KQL queries evaluated on lines written by the real service.

The KQL check is a tiny evaluator of exactly the forms infra/kql.py uses: `parse_json(tostring(
<message column>))`, `where tostring(entry.log_type) == '...'`, and `name = toX(entry.field)`
projections. Each query is taken from infra/kql.py itself, so renaming a field in the log format or
in a query breaks this test."""

from __future__ import annotations

import json
import re

import pytest

from infra import kql
from monitoring import traffic
from serving.scoring import requestlog

CASTS = {"tostring": lambda v: None if v is None else str(v), "toint": lambda v: None if v is None else int(v),
         "todouble": lambda v: None if v is None else float(v), "": lambda v: v}


def evaluate(query: str, row: dict) -> dict | None:
    """Run the where/project steps of one of kql.py's queries on one table row; None when filtered out."""
    parse = re.search(r"extend (\w+) = parse_json\((\w+)\)|extend entry = parse_json\(tostring\((\w+)\)\)", query)
    if parse.group(3):
        entry = json.loads(str(row[parse.group(3)]))
    else:
        line_column = re.search(r"extend line = tostring\((\w+)\)", query)
        row = {**row, "line": str(row[line_column.group(1)])} if line_column else row
        entry = json.loads(row[parse.group(2)])
    for field, value in re.findall(r"tostring\(entry\.(\w+)\) == '(\w+)'", query):
        if str(entry.get(field)) != value:
            return None
    for field, values in re.findall(r"tostring\(entry\.(\w+)\) in \(([^)]*)\)", query):
        if ("" if entry.get(field) is None else str(entry[field])) not in re.findall(r"'([^']*)'", values):
            return None
    projection = re.search(r"\| project (.+?)(\n\||$)", query, re.S)
    if projection is None:  # a summarize follows: the row passed the filters
        return entry
    project = projection.group(1)
    out = {}
    for name, cast, field in re.findall(r"(\w+) = (tostring|toint|todouble|)\(?entry\.(\w+)\)?", project):
        assert field in entry, f"the query reads entry.{field}, which the log line lacks"
        out[name] = CASTS[cast](entry[field])
    if "line" in [p.strip() for p in project.split(",")]:
        out["line"] = row["line"]
    return out


@pytest.fixture(scope="module")
def real_lines(window):
    lines = window("clean").read_text().splitlines()
    error = requestlog.error_line(request_id="r-1", model_name="m", model_version="1", route="/predict", status=503,
                                  error="not ready: loading").decode().strip()
    return [json.loads(line) for line in lines[:3]], error, lines[:3]


@pytest.mark.parametrize("source", [kql.container_apps("ca-scoring-dev", "azure-monitor"),
                                    kql.container_apps("ca-scoring-dev", "log-analytics"), kql.aks("scoring", "scoring")],
                         ids=["containerapps-azure-monitor", "containerapps-log-analytics", "aks"])
def test_prediction_queries_read_real_lines(real_lines, source, model):
    parsed, error, raw = real_lines
    for entry, line in zip(parsed, raw, strict=True):
        row = {source.message_column: line, source.app_column: source.app_name}
        got = evaluate(kql.predictions(source), row)
        assert got == {"request_id": entry["request_id"], "model_name": entry["model_name"],
                       "model_version": entry["model_version"], "n_records": 5, "latency_ms": entry["latency_ms"],
                       "outputs": entry["outputs"]}
        assert all(0 <= o["probability"] <= 1 and o["label"] in (0, 1) for o in got["outputs"])
        assert "todouble(output.probability)" in kql.probability_distribution(source)
        assert evaluate(kql.errors(source), row) is None
        lines = evaluate(kql.prediction_lines(source), row)
        assert json.loads(lines["line"])["inputs"].keys() == set(model.contract.feature_names)
    error_row = {source.message_column: error, source.app_column: source.app_name}
    assert evaluate(kql.predictions(source), error_row) is None
    assert evaluate(kql.prediction_lines(source), error_row) is None
    assert evaluate(kql.errors(source), error_row) == {"line": error}


def test_drift_alert_query_reads_the_drift_record():
    record = {"log_type": "drift", "status": "drift", "model_version": "3", "drifted": ["some_feature"]}
    assert evaluate(kql.alert_drift(), {"Message": json.dumps(record)}) is not None
    assert evaluate(kql.alert_drift(), {"Message": json.dumps({**record, "status": "no drift"})}) is None
    assert "Message" in kql.alert_drift() and "drifted_versions" in kql.alert_drift()


def test_traffic_refuses_other_hosts():
    for url in ("http://10.0.0.1:8000", "https://127.0.0.1:8000", "http://example.com", "http://127.0.0.1.nip.io"):
        with pytest.raises(ValueError, match="only to the local service"):
            traffic.check_url(url)
    assert traffic.check_url("http://localhost:8000/") == "http://localhost:8000"
    assert traffic.main(["--url", "http://192.168.1.1:8000", "--requests", "1"]) == 2


def test_shifts_parse_and_apply(model, shifts):
    c = model.contract
    (numeric, number), (categorical, category) = shifts["numeric"], shifts["categorical"]
    value = categorical.split("=")[1]
    assert traffic.Shift.parse(numeric, c) == traffic.Shift(number, factor=3.0)
    assert traffic.Shift.parse(f"{number}=x1.5", c).factor == 1.5
    assert traffic.Shift.parse(f"{categorical}:0.5", c) == traffic.Shift(category, value=value, share=0.5)
    closed = not next(f for f in c.categories if f.name == category).open  # the service refuses an unlisted value
    for bad in (f"{number}=lots", "nickname=3", category, f"{categorical}:2", *[f"{category}=unlisted"] * closed):
        with pytest.raises(ValueError):
            traffic.Shift.parse(bad, c)
    plain = traffic.records(model, 400, 5, [])
    shifted = traffic.records(model, 400, 5, [traffic.Shift.parse(numeric, c), traffic.Shift.parse(f"{categorical}:0.5", c)])
    assert all(set(r) == set(c.feature_names) for r in shifted)
    assert all(s[number] == (None if p[number] is None else 3 * p[number]) for p, s in zip(plain, shifted, strict=True))
    native, share = (sum(r[category] == value for r in records) / 400 for records in (plain, shifted))
    assert abs(share - (0.5 + 0.5 * native)) < 0.08  # half the records set to the value, the rest as they were
    assert any(v is None for r in plain for v in r.values())  # missing values travel as null


def test_traffic_reaches_the_service_and_is_bounded(service, model):
    messages = []
    summary = traffic.send(model, service["url"], 5, rate=100, seed=3, progress=messages.append)
    assert summary["statuses"] == {200: 5} and summary["records"] == 5 and messages
    summary = traffic.send(model, service["url"], 1000, rate=1, seed=3, max_seconds=1.5, progress=messages.append)
    assert summary["requests"] <= 3 and "max-seconds" in messages[-1]


@pytest.mark.parametrize("source", [kql.container_apps("ca-scoring-dev"), kql.aks("scoring", "scoring")],
                         ids=["containerapps", "aks"])
def test_a_request_logged_in_parts_counts_once_and_keeps_every_output(real_lines, source):
    """The 5xx-rate, latency and traffic queries count a 1000-record request once, not once per 16 KiB part;
    the probability histogram and the drift job's query see every part's records."""
    first = {name: values[0] for name, values in real_lines[0][0]["inputs"].items()}  # a real line's first record
    lines = requestlog.prediction_lines(request_id="big", model_name="m", model_version="3", runtime="onnx",
                                        protocol="predict", inputs={name: [v] * 1000 for name, v in first.items()},
                                        outputs=[{"probability": 0.25, "label": 0}] * 1000, latency_ms=12.5)
    rows = [{source.message_column: line, source.app_column: source.app_name} for line in lines.decode().splitlines()]
    assert len(rows) > 10
    counted = [got for row in rows if (got := evaluate(kql.predictions(source), row)) is not None]
    assert len(counted) == 1 and counted[0]["n_records"] == 1000 and counted[0]["latency_ms"] == 12.5
    every = [got for row in rows if (got := evaluate(kql.predictions(source, every_part=True), row)) is not None]
    assert sum(len(got["outputs"]) for got in every) == 1000
    assert "entry.part" in kql.predictions(source) and "entry.part" not in kql.probability_distribution(source)
    assert all(evaluate(kql.prediction_lines(source), row) is not None for row in rows)
