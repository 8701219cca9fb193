"""The inference table: every prediction once, whatever is read twice; labels joined late, twice, corrected or never;
ids pseudonymised by the service joined with the labels' own ids. Lines are written by the service's own code
(serving/scoring/requestlog.py); the columns come from the model's contract."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from monitoring import inference
from serving.scoring import privacy
from tests.monitoring.loglines import log_lines
from training import data

KEY = b"k" * 32
AS_OF = pd.Timestamp("2026-12-07T12:00:00Z")
SCORED = "2026-11-30T00:00:00Z"  # the log lines' time: before every label below


@pytest.fixture(scope="module")
def rows(model):
    return data.example_table(model, 300, seed=11)


def test_each_prediction_is_one_row_however_often_the_log_is_read(model, rows, tmp_path):
    table = inference.LocalTable(tmp_path / "inference.parquet")
    big = log_lines(model, rows.iloc[:200], "req-big", scored_at=SCORED)  # split over several lines (16 KiB each)
    small = log_lines(model, rows.iloc[200:203], "req-small", scored_at=SCORED)
    assert big.count(b"\n") > 1
    assert table.append(inference.rows_from_log(big.splitlines(), model.contract.task)) == 200
    assert table.append(inference.rows_from_log((big + small).splitlines(), model.contract.task)) == 3  # overlap
    assert table.append(inference.rows_from_log((big + small).splitlines(), model.contract.task)) == 0  # a re-run
    held = table.read()
    assert len(held) == 203 and not held.duplicated(list(inference.KEY)).any()
    assert sorted(held.loc[held["request_id"] == "req-big", "record"]) == list(range(200))
    id_name = model.contract.ids[0]
    assert list(held.sort_values(["request_id", "record"])[id_name].iloc[:200]) == list(rows[id_name].iloc[:200])


def test_the_parts_of_one_request_arriving_in_two_reads_make_its_rows_once(model, rows, tmp_path):
    table = inference.LocalTable(tmp_path / "inference.parquet")
    lines = log_lines(model, rows.iloc[:150], "req", scored_at=SCORED).splitlines()
    table.append(inference.rows_from_log(lines[:1], model.contract.task))
    table.append(inference.rows_from_log(lines, model.contract.task))
    assert len(table.read()) == 150


def labels_frame(model, ids: list, values: list, known: list[str]) -> pd.DataFrame:
    return pd.DataFrame({model.contract.ids[0]: ids, model.contract.target.name: values, inference.KNOWN_AT: known})


def test_labels_late_twice_corrected_or_never(model, rows, tmp_path):
    contract = model.contract
    id_name, target = contract.ids[0], contract.target.name
    table = inference.LocalTable(tmp_path / "t.parquet")
    table.append(inference.rows_from_log(log_lines(model, rows.iloc[:4], "r", scored_at=SCORED).splitlines(), contract.task))
    held = table.read()
    first, second, third, _never = (int(v) for v in rows[id_name].iloc[:4])
    negative, positive = contract.target.classes
    labels = labels_frame(model, [first, first, second, second, third],
                          [positive, positive, negative, positive, positive],
                          ["2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z",  # the same label twice
                           "2026-12-01T00:00:00Z", "2026-12-05T00:00:00Z",  # corrected later
                           "2026-12-20T00:00:00Z"])  # known after AS_OF: not yet
    joined = inference.join_labels(held, labels, [id_name], target, AS_OF).set_index(id_name)
    assert joined.loc[first, target] == positive and joined.loc[second, target] == positive
    assert joined[target].isna().sum() == 2 and len(joined) == 4  # third: late; the fourth: never
    later = inference.join_labels(held, labels, [id_name], target, pd.Timestamp("2026-12-31T00:00:00Z"))
    assert later[target].notna().sum() == 3
    before_correction = inference.join_labels(held, labels, [id_name], target, pd.Timestamp("2026-12-03T00:00:00Z"))
    assert before_correction.set_index(id_name).loc[second, target] == negative


def test_a_label_applies_to_the_predictions_scored_before_its_outcome_was_first_known(model, rows, tmp_path):
    """One id scored five times (a customer scored again and again): 30 and 10 days before its outcome was first known,
    at that instant (the outcome recorded with the answer's own time), a minute after, and after the correction. The
    label, corrected, is the first three's; with a 10-day horizon the last two of those (the bound excluded)."""
    contract = model.contract
    id_name, target = contract.ids[0], contract.target.name
    negative, positive = contract.target.classes
    known = pd.Timestamp("2026-12-01T00:00:00Z")
    times = {"d30": known - pd.Timedelta(days=30), "d10": known - pd.Timedelta(days=10), "at": known,
             "after": known + pd.Timedelta(minutes=1), "corrected": known + pd.Timedelta(days=3)}
    table = inference.LocalTable(tmp_path / "t.parquet")
    for name, at in times.items():
        table.append(inference.rows_from_log(log_lines(model, rows.iloc[:1], name, scored_at=at.isoformat())
                                             .splitlines(), contract.task))
    labels = labels_frame(model, [int(rows[id_name].iloc[0])] * 2, [negative, positive],
                          [known.isoformat(), (known + pd.Timedelta(days=2)).isoformat()])
    for horizon, labelled in ((None, ["d30", "d10", "at"]), (pd.Timedelta(days=10), ["at"]),
                              (pd.Timedelta(days=10, seconds=1), ["d10", "at"])):
        joined = inference.join_labels(table.read(), labels, [id_name], target, AS_OF, horizon=horizon)
        by_request = joined.set_index("request_id")[target]
        assert sorted(by_request.dropna().index) == sorted(labelled), horizon
        assert set(by_request.dropna()) == {positive}  # the correction's value
        assert joined.set_index("request_id").loc[[n for n in times if n not in labelled], inference.KNOWN_AT].isna().all()
    with pytest.raises(inference.InferenceError, match="--label-horizon '-1D'"):
        inference.horizon("-1D")


def test_an_id_matches_as_a_number_or_as_text(model, rows, tmp_path):
    """A CSV has no types: its 123 is the id a client sent as 123 (or as "123")."""
    contract = model.contract
    id_name, target = contract.ids[0], contract.target.name
    table = inference.LocalTable(tmp_path / "t.parquet")
    table.append(inference.rows_from_log(log_lines(model, rows.iloc[:3], "r", scored_at=SCORED).splitlines(), contract.task))
    path = tmp_path / "labels.csv"
    labels_frame(model, [int(v) for v in rows[id_name].iloc[:3]], [*contract.target.classes, contract.target.classes[0]],
                 ["2026-12-01T00:00:00Z"] * 3).to_csv(path, index=False)
    joined = inference.join_labels(table.read(), inference.read_labels(path), [id_name], target, AS_OF)
    assert joined[target].notna().all()


def test_pseudonymised_ids_join_with_the_labels_ids_under_the_same_key(model, rows, tmp_path):
    contract = model.contract
    id_name, target = contract.ids[0], contract.target.name
    hashed = id_name + inference.PSEUDONYM_SUFFIX
    service = privacy.Pseudonymiser([id_name], [id_name], KEY)
    table = inference.LocalTable(tmp_path / "t.parquet")
    lines = []
    for line in log_lines(model, rows.iloc[:5], "r", scored_at=SCORED).splitlines():
        entry = json.loads(line)
        entry["ids"] = {hashed: [service.pseudonym(id_name, v) for v in entry["ids"][id_name]]}
        lines.append(json.dumps(entry))
    table.append(inference.rows_from_log(lines, contract.task))
    held = table.read()
    assert hashed in held.columns and id_name not in held.columns  # the table never holds the id itself
    labels = labels_frame(model, [str(int(v)) for v in rows[id_name].iloc[:5]], [contract.target.classes[1]] * 5,
                          ["2026-12-01T00:00:00Z"] * 5)
    joined = inference.join_labels(held, labels, [id_name], target, AS_OF, KEY)
    assert joined[target].notna().all() and id_name not in joined.columns
    with pytest.raises(inference.InferenceError, match=f"{hashed} is pseudonymised"):
        inference.join_labels(held, labels, [id_name], target, AS_OF)
    wrong_key = inference.join_labels(held, labels, [id_name], target, AS_OF, b"x" * 32)
    assert wrong_key[target].isna().all()


def test_a_dropped_id_is_named_with_the_setting_that_dropped_it(model, rows, tmp_path):
    contract = model.contract
    table = inference.LocalTable(tmp_path / "t.parquet")
    lines = [json.dumps({k: v for k, v in json.loads(line).items() if k != "ids"})
             for line in log_lines(model, rows.iloc[:2], "r", scored_at=SCORED).splitlines()]
    table.append(inference.rows_from_log(lines, contract.task))
    with pytest.raises(inference.InferenceError, match="requestLogPersonal"):
        inference.join_labels(table.read(), labels_frame(model, [1], [contract.target.classes[0]], ["2026-12-01"]),
                              list(contract.ids), contract.target.name, AS_OF)


@pytest.mark.parametrize("value", [0, 7, -12, 2 ** 62, "C-001", "00123", "é-ü", 'quote " and \\ backslash', "\u2028"])
def test_the_jobs_pseudonym_is_the_services(value):
    assert inference.pseudonym(KEY, "some_id", value) == privacy.Pseudonymiser(["some_id"], ["some_id"], KEY).pseudonym(
        "some_id", value)


def test_a_known_at_that_is_no_time_is_refused_naming_the_column(model):
    contract = model.contract
    labels = labels_frame(model, [1, 2], list(contract.target.classes), ["2026-12-01T00:00:00Z", "N/A"])
    with pytest.raises(inference.InferenceError, match="known_at must be times"):
        inference.latest_labels(labels, list(contract.ids), contract.target.name, AS_OF)


def test_labels_without_the_ids_or_the_target_are_refused_naming_them(model):
    contract = model.contract
    with pytest.raises(inference.InferenceError, match=contract.target.name):
        inference.latest_labels(pd.DataFrame({contract.ids[0]: [1], inference.KNOWN_AT: ["2026-12-01"]}),
                                list(contract.ids), contract.target.name, AS_OF)
