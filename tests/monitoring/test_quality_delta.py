"""The quality job on Databricks (monitoring/quality_delta.py): what it writes into the inference table and what it
decides, run over the service's own log lines.

The append is an anti-join INSERT (serving/inference_table.py), which runs on a plain Parquet table too: the job's
`Store.append` runs it for real on the runtime's local Spark (test_the_append_adds_each_prediction_once_on_spark, with
`make databricks-test`). The labels' MERGE cannot run here: it needs Delta Lake, whose jars come from Maven Central,
which this machine does not reach (the delta-spark wheel on PyPI holds only Python), and so does the retention's
DELETE. So `FrameStore` stands in for the Delta table in the job's tests, because of those two: its `label` applies
the MERGE's documented semantics (set the label of each row of its ids that it applies to, when the row has none or an
older one), its `forget` the DELETE's, its `append` the anti-join's. The Spark test holds the append to the real
statement, and the MERGE's condition (which predictions a label applies to) to monitoring/inference.py's, as a join
on the same Spark; the rest of the MERGE's text is checked on its own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring import delta_table, inference, quality_delta
from scripts import databricks_local
from tests.monitoring.loglines import log_lines
from training import data


class FrameStore:
    """The inference table for quality_delta.run, without Delta Lake: only because the labels' MERGE and the
    retention's DELETE need Delta (see the module's docstring); the append's statement runs on a real Spark below."""

    def __init__(self, columns: list[delta_table.Column]) -> None:
        self.columns = columns
        self.frame = pd.DataFrame(columns=[c.name for c in columns])

    def append(self, rows: pd.DataFrame) -> int:
        held = set(zip(self.frame["request_id"], self.frame["record"], strict=True))
        new = rows.drop_duplicates(list(inference.KEY))
        new = new[np.array([key not in held for key in zip(new["request_id"], new["record"], strict=True)], dtype=bool)]
        self.frame = pd.concat([self.frame, new], ignore_index=True) if len(self.frame) else new.reset_index(drop=True)
        return len(new)

    def label(self, labels: pd.DataFrame, ids: list[str], target: str, horizon: pd.Timedelta | None) -> None:
        assert not labels.duplicated(ids).any(), "a MERGE refuses two source rows for one target row"
        self.frame = self.frame.astype({inference.KNOWN_AT: object, target: object})
        for _, label in labels.iterrows():
            match = np.logical_and.reduce([self.frame[i] == label[i] for i in ids])
            applies = inference.applies(self.frame["scored_at"],
                                        pd.Series(label[inference.FIRST_KNOWN_AT], index=self.frame.index), horizon)
            held = self.frame[inference.KNOWN_AT].notna()
            older = ~held | (pd.to_datetime(self.frame[inference.KNOWN_AT], utc=True) < label[inference.KNOWN_AT])
            self.frame.loc[match & applies & older, [target, inference.KNOWN_AT]] = [label[target],
                                                                                     label[inference.KNOWN_AT]]
            self.frame.loc[match & ~applies & held, [target, inference.KNOWN_AT]] = [None, None]

    def read(self, since: pd.Timestamp, max_rows: int) -> pd.DataFrame:
        rows = self.frame[pd.to_datetime(self.frame["scored_at"], utc=True) >= since]
        return rows.sample(max_rows, random_state=7) if len(rows) > max_rows else rows.copy()

    def forget(self, before: pd.Timestamp) -> int:
        older = pd.to_datetime(self.frame["scored_at"], utc=True) < before
        self.frame = self.frame[~older].reset_index(drop=True)
        return int(older.sum())


NOW = datetime.now(UTC)
SCORED = (NOW - timedelta(minutes=5)).isoformat()  # the log lines' time: before the labels' (NOW)


def args(model, **given) -> argparse.Namespace:
    values = {"model_module": model.module, "model_name": "", "personal": "keep", "window": "1 hour", "windows": 1,
              "margin": None, "min_labelled": 20, "drift_windows": 3, "min_records": 200,
              "psi_threshold": 0.2, "p_value": 0.01, "lookback_windows": 30, "retention_days": 730,
              "max_rows": 500_000, "resamples": 20, "label_horizon": None, "labels_table": None,
              "as_of": (NOW + timedelta(minutes=30)).isoformat(), "training_job_id": None, "tracking_uri": None,
              **given}
    return argparse.Namespace(**values)


@pytest.fixture(scope="module")
def rows(model):
    return data.example_table(model, 120, seed=5)


def labels_for(model, rows, right: bool) -> pd.DataFrame:
    """Each row's true label: the one the logged probability calls (right) or the other (wrong)."""
    negative, positive = model.contract.target.classes
    spread = np.linspace(0.05, 0.95, len(rows))
    called = [positive if p >= 0.5 else negative for p in spread]
    truth = called if right else [negative if c == positive else positive for c in called]
    return pd.DataFrame({model.contract.ids[0]: [int(v) for v in rows[model.contract.ids[0]]],
                         model.contract.target.name: truth, inference.KNOWN_AT: NOW.isoformat()})


def run(model, store, lines, labels, **given):
    sent, started = [], []
    code, record = quality_delta.run(args(model, **given), store, lines, labels, sent.extend,
                                     lambda job, since, token: started.append(job) or 77)
    assert sent == [record] and record["log_type"] == "quality"
    return code, record, started


def test_a_rerun_adds_nothing_and_labels_late_twice_or_corrected_count_once(model, rows):
    contract = model.contract
    store = FrameStore(delta_table.columns(contract, "keep"))
    lines = log_lines(model, rows, "req", scored_at=SCORED).splitlines()
    _, first, _ = run(model, store, lines, None)
    assert first["added"] == len(rows) and not first["labels"] and "no labels table" in first["reasons"][0]
    _, again, _ = run(model, store, lines, None)
    assert again["added"] == 0 and len(store.frame) == len(rows)  # a re-run, or an overlapping window
    wrong, right = labels_for(model, rows, right=False), labels_for(model, rows, right=True)
    late = wrong.assign(**{inference.KNOWN_AT: (NOW + timedelta(days=1)).isoformat()})  # after as_of: not yet
    run(model, store, [], late)
    assert store.frame[contract.target.name].isna().all()
    run(model, store, [], pd.concat([wrong, wrong]))  # twice: once
    assert store.frame[contract.target.name].notna().sum() == len(rows)
    corrected = right.assign(**{inference.KNOWN_AT: (NOW + timedelta(minutes=1)).isoformat()})
    run(model, store, [], pd.concat([wrong, corrected]))
    held = store.frame.set_index(contract.ids[0])[contract.target.name]
    expected = {str(k): str(v) for k, v in right.set_index(contract.ids[0])[contract.target.name].items()}
    assert {str(k): str(v) for k, v in held.items()} == expected


def test_a_label_marks_only_the_predictions_scored_before_its_outcome_was_known_within_the_horizon(model, rows):
    """The same ids scored two hours before the outcome was known, five minutes before, and five minutes after (a
    portfolio scored again and again): the label is the earlier ones', and with a one-hour horizon the nearest one's."""
    contract = model.contract
    target = contract.target.name
    times = {"early": NOW - timedelta(hours=2), "near": NOW - timedelta(minutes=5), "after": NOW + timedelta(minutes=5)}
    lines = [line for name, at in times.items()
             for line in log_lines(model, rows, name, scored_at=at.isoformat()).splitlines()]
    for horizon, labelled in ((None, {"early", "near"}), ("1h", {"near"})):
        store = FrameStore(delta_table.columns(contract, "keep"))
        _, record, _ = run(model, store, lines, labels_for(model, rows, right=True), label_horizon=horizon)
        held = store.frame.groupby("request_id")[target].count().to_dict()
        assert held == {name: len(rows) if name in labelled else 0 for name in times}, horizon
        assert record["labelled"] == len(rows) * len(labelled)
    # a horizon set later (a config-only change): the labels it no longer covers are taken off, as the local join has it
    run(model, store := FrameStore(delta_table.columns(contract, "keep")), lines, labels_for(model, rows, right=True))
    run(model, store, [], labels_for(model, rows, right=True), label_horizon="1h")
    assert store.frame.groupby("request_id")[target].count().to_dict() == {"early": 0, "near": len(rows), "after": 0}


def test_a_first_run_before_any_traffic_records_nothing_and_says_so(model):
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    code, record, started = run(model, store, [], None, training_job_id="42")
    assert code == quality_delta.EXIT_OK and record["added"] == 0 and record["predictions"] == 0 and started == []


def test_quality_below_the_floor_starts_the_training_job_and_nothing_else(model, rows):
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    lines = log_lines(model, rows, "req", scored_at=SCORED).splitlines()
    code, record, started = run(model, store, lines, labels_for(model, rows, right=False), training_job_id="42")
    assert code == quality_delta.EXIT_RETRAIN and record["retrain"] and started == [42]
    assert record["training_run"] == 77 and any("the training job 42: run 77" in r for r in record["reasons"])
    # prod: no training job, the record (and the alert on it) only
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    code, record, started = run(model, store, lines, labels_for(model, rows, right=False))
    assert code == quality_delta.EXIT_RETRAIN and started == [] and "no training job" in record["reasons"][-1]
    # good answers: no retraining
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    code, record, started = run(model, store, lines, labels_for(model, rows, right=True), training_job_id="42")
    assert code == quality_delta.EXIT_OK and not record["retrain"] and started == []


def test_pseudonymised_ids_are_held_as_hmac_columns_and_join_with_the_logs_key(model, rows, monkeypatch):
    contract = model.contract
    id_name = contract.ids[0]
    if id_name not in contract.personal:
        pytest.skip("the model's ids are not personal")
    key = b"k" * 32
    monkeypatch.setenv("REQUEST_LOG_PSEUDONYM_KEY", key.decode())
    labels = labels_for(model, rows, right=True)
    frame = quality_delta.label_rows(labels, contract, "pseudonymise", pd.Timestamp(NOW) + pd.Timedelta("1h"), key)
    assert f"{id_name}_hmac" in frame.columns and id_name not in frame.columns
    assert frame[f"{id_name}_hmac"].iloc[0] == inference.pseudonym(key, id_name, int(labels[id_name].iloc[0]))
    with pytest.raises(inference.InferenceError, match="drop"):
        quality_delta.label_rows(labels, contract, "drop", pd.Timestamp(NOW), key)


def test_the_append_names_its_columns_and_the_labels_merge_replaces_only_older_labels(model):
    columns = delta_table.columns(model.contract, "keep")
    sql = delta_table.append_predictions("c.s.t", "v", columns, pd.Timestamp("2026-12-01T00:00:00Z"))
    named = ", ".join(f"`{c.name}`" for c in columns)
    assert sql.startswith(f"INSERT INTO c.s.t ({named}) SELECT s.`request_id`, s.`record`, ")
    assert sql.endswith("WHERE NOT EXISTS (SELECT 1 FROM c.s.t t WHERE t.`request_id` = s.`request_id` AND "
                        "t.`record` = s.`record` AND t.`scored_at` >= '2026-12-01T00:00:00+00:00')")  # Delta skips files
    labels = delta_table.merge_labels("c.s.t", "l", ["id_hmac"], "y")
    assert (" ON t.`id_hmac` = s.`id_hmac` WHEN MATCHED AND t.`scored_at` <= s.`first_known_at` AND "
            "(t.`known_at` IS NULL OR t.`known_at` < s.`known_at`) THEN UPDATE SET t.`y` = s.`y`") in labels
    assert ("WHEN MATCHED AND NOT (t.`scored_at` <= s.`first_known_at`) AND t.`known_at` IS NOT NULL "
            "THEN UPDATE SET t.`y` = NULL, t.`known_at` = NULL") in labels  # one that no longer applies is taken off
    within = delta_table.merge_labels("c.s.t", "l", ["id_hmac"], "y", pd.Timedelta(days=90))
    assert "t.`scored_at` > s.`first_known_at` - INTERVAL 7776000 SECONDS AND (t.`known_at` IS NULL" in within
    assert "WHEN NOT MATCHED" not in labels  # a label of no prediction adds no row


def named(lines: list[bytes], name: str, version: str) -> list[bytes]:
    """The log lines as the served version writes them (its registered name and version)."""
    import json

    return [json.dumps({**json.loads(line), "model_name": name, "model_version": version}).encode() for line in lines]


def test_drift_that_persists_retrains_by_the_drift_jobs_test_and_the_versions_baseline(model, registry, monkeypatch):
    """No labels yet, inputs far from the version's training baseline: the drift job's own test, on the baseline the
    version carries in the registry, says retrain once the drift holds for quality.driftWindows windows, not before."""
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry["tracking_uri"])
    rows = data.example_table(model, 240, seed=8)
    number = model.contract.numbers[0].name
    shifted = rows.assign(**{number: rows[number] * 50 + 1000})
    lines = named(log_lines(model, shifted, "req", scored_at=SCORED).splitlines(), registry["model_name"],
                  str(registry["version"]))
    for windows, retrains in ((1, True), (2, False)):  # the log spans one window: drift in one, not yet in two
        store = FrameStore(delta_table.columns(model.contract, "keep"))
        code, record, _ = run(model, store, lines, None, tracking_uri=registry["tracking_uri"], min_records=100,
                              drift_windows=windows)
        assert record["retrain"] is retrains, record["reasons"]
        assert code == (quality_delta.EXIT_RETRAIN if retrains else quality_delta.EXIT_OK)
        assert any("drifted" in reason for reason in record["reasons"]) is retrains


class Jobs:
    """databricks-sdk's JobsAPI as far as start_training calls it, answering with the SDK's own classes: runs newest
    first, `active_only` those not yet terminated, `start_time_from` in epoch milliseconds."""

    def __init__(self, *runs: tuple[int, datetime, bool]) -> None:
        from databricks.sdk.service import jobs

        self.runs = [jobs.BaseRun(run_id=run_id, start_time=int(at.timestamp() * 1000), state=jobs.RunState(
            life_cycle_state=jobs.RunLifeCycleState.RUNNING if active else jobs.RunLifeCycleState.TERMINATED))
            for run_id, at, active in runs]
        self.started: list[tuple[int, str | None]] = []

    def list_runs(self, *, job_id: int, active_only: bool | None = None, start_time_from: int | None = None,
                  limit: int | None = None):
        from databricks.sdk.service import jobs

        for run in self.runs:
            running = run.state is not None and run.state.life_cycle_state == jobs.RunLifeCycleState.RUNNING
            if (not active_only or running) and (start_time_from is None or (run.start_time or 0) >= start_time_from):
                yield run

    def run_now(self, job_id: int, *, idempotency_token: str | None = None):
        from databricks.sdk.service._internal import Wait
        from databricks.sdk.service.jobs import RunNowResponse

        self.started.append((job_id, idempotency_token))
        return Wait(lambda **_: None, response=RunNowResponse(run_id=900), run_id=900)


def test_training_starts_once_per_fall_not_while_a_run_is_active_nor_again_within_the_windows_judged():
    since = pd.Timestamp(NOW - timedelta(days=3))
    idle = Jobs((5, NOW - timedelta(days=10), False))
    assert quality_delta.start_training(idle, 42, since, "t1") == "900 (started)"
    assert idle.started == [(42, "t1")]
    running = Jobs((6, NOW - timedelta(days=5), True))
    assert "none started" in quality_delta.start_training(running, 42, since, "t2") and running.started == []
    recent = Jobs((7, NOW - timedelta(days=1), False), (5, NOW - timedelta(days=10), False))
    assert quality_delta.start_training(recent, 42, since, "t3").startswith("7 ") and recent.started == []


def test_the_run_asks_to_start_training_since_the_windows_judged_with_one_token_per_window(model, rows):
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    asked: list = []
    as_of = NOW + timedelta(minutes=30)
    quality_delta.run(args(model, training_job_id="42", as_of=as_of.isoformat()), store,
                      log_lines(model, rows, "req", scored_at=SCORED).splitlines(), labels_for(model, rows, right=False),
                      lambda _: None, lambda *given: asked.append(given) or "1 (started)")
    [(job_id, since, token)] = asked
    assert job_id == 42 and since == pd.Timestamp(as_of) - pd.Timedelta(hours=1)  # windows=1 of 1 hour
    assert token == f"mlops-quality-42-{pd.Timestamp(as_of).floor('1h'):%Y%m%dT%H%M}" and len(token) <= 64


def test_predictions_older_than_the_retention_are_deleted_and_the_rest_kept(model, rows):
    """quality.retentionDays: the table keeps the log's columns (personal ones pseudonymised where kept) no longer."""
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    lines = log_lines(model, rows, "req", scored_at=SCORED).splitlines()
    later = NOW + timedelta(days=40)
    _, record, _ = run(model, store, lines, None, as_of=later.isoformat(), retention_days=60)
    assert record["removed"] == 0 and len(store.frame) == len(rows)
    _, record, _ = run(model, store, lines, None, as_of=later.isoformat(), retention_days=30)
    assert record["removed"] == len(rows) and store.frame.empty and record["added"] == 0


APPEND_ON_SPARK = """
import json, sys
import pandas as pd
from pyspark.sql import SparkSession
from monitoring import delta_store, delta_table, inference, quality_delta
from training import contract
module, log, warehouse = sys.argv[1:]
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.sql.warehouse.dir", warehouse).getOrCreate())
task = contract.load(module).contract
columns = delta_table.columns(task, "keep")
spark.sql("CREATE TABLE t (" + ", ".join(f"{delta_table.quote(c.name)} {c.type}" for c in columns) + ") USING parquet")
store = delta_store.Store(spark, "t", columns)
rows = quality_delta.table_rows(inference.rows_from_log(open(log, "rb"), task.task), columns)
half = rows.iloc[: len(rows) // 2]
added = [store.append(half), store.append(rows), store.append(rows), store.append(pd.concat([half, half]))]
held = spark.table("t").toPandas()
newest = store.newest_online(pd.Timestamp("2020-01-01", tz="UTC")).isoformat()  # what hours_to_read takes
# The labels' MERGE condition, as a join on this Spark: the predictions each label applies to. Each row's ids scored at
# base + i minutes, its label first known OFFSETS[i % 4] minutes later (before it, at that instant, or 5 or 40 minutes
# after), known again later with the other class (a correction); `first` there is bounded by the first.
base = pd.Timestamp("2026-12-01T00:00:00Z")
spread = rows.assign(scored_at=[base + pd.Timedelta(minutes=i) for i in range(len(rows))])
spark.sql("CREATE TABLE u (" + ", ".join(f"{delta_table.quote(c.name)} {c.type}" for c in columns) + ") USING parquet")
delta_store.Store(spark, "u", columns).append(spread)
key, target = task.ids[0], task.target.name
first = [base + pd.Timedelta(minutes=i + [-1, 0, 5, 40][i % 4]) for i in range(len(rows))]
labels = pd.concat([pd.DataFrame({key: spread[key].astype("int64"), target: task.target.classes[0], "known_at": first}),
                    pd.DataFrame({key: spread[key].astype("int64"), target: task.target.classes[1],
                                  "known_at": [f + pd.Timedelta(hours=2) for f in first]})])
as_of = base + pd.Timedelta(days=1)
source = quality_delta.label_rows(labels.assign(known_at=labels["known_at"].map(pd.Timestamp.isoformat)), task, "keep",
                                  as_of, None)
wanted = [c for c in columns if c.name in (key, target, inference.KNOWN_AT)]
first_column = delta_table.Column(inference.FIRST_KNOWN_AT, "TIMESTAMP", inference.FIRST_KNOWN_AT)
delta_store.Store(spark, "u", columns)._view(source, "l", [*wanted, first_column])
applied = {}
for horizon in (None, "30min", "3650D"):
    on = f"{delta_table.same_ids([key])} AND {delta_table.applies_in_time(inference.horizon(horizon))}"
    on_spark = spark.sql(f"SELECT t.record FROM u t JOIN l s ON {on}").toPandas()["record"]
    local = inference.join_labels(spread.astype({key: object}), labels.astype({"known_at": str}), [key], target, as_of,
                                  None, inference.horizon(horizon))
    applied[str(horizon)] = {"spark": sorted(int(r) for r in on_spark),
                             "local": sorted(int(r) for r in local.loc[local[target].notna(), "record"]),
                             "value": sorted({quality_delta._text(v) for v in local[target].dropna()})}
# The job's labels read (read_labels): only the lookback's labels, each with its ids' first known time over all of them.
times = [pd.Timestamp(day, tz="UTC") for day in ("2026-01-01", "2026-02-01", "2026-03-01", "2026-03-01")]
spark.createDataFrame(pd.DataFrame({key: [7, 7, 7, 8], target: [task.target.classes[0]] * 4, "known_at": times})
                      ).write.saveAsTable("outcomes")
read = delta_store.read_labels(spark, "outcomes", task, pd.Timestamp("2026-02-15", tz="UTC"),
                              pd.Timestamp("2026-03-15", tz="UTC"))
latest = inference.latest_labels(read, [key], target, pd.Timestamp("2026-03-15", tz="UTC"))
first_known = {str(k): pd.Timestamp(v).isoformat() for k, v in zip(latest[key], latest[inference.FIRST_KNOWN_AT])}
# known_at as text: one row no time (try_cast), one a placeholder beyond pandas' range (until): neither fails the run
spark.createDataFrame(pd.DataFrame({key: [7, 7, 9, 9, 11, 11], target: [task.target.classes[0]] * 6,
                                    "known_at": ["2026-01-01T00:00:00", "unknown", "2026-03-01T00:00:00",
                                                 "9999-12-31T00:00:00", "0001-01-01T00:00:00", "2026-03-02T00:00:00"]})
                      ).write.saveAsTable("outcomes_text")
text = delta_store.read_labels(spark, "outcomes_text", task, pd.Timestamp("2026-02-15", tz="UTC"),
                              pd.Timestamp("2026-03-15", tz="UTC"))
first_known_text = {str(k): pd.Timestamp(v).isoformat() for k, v in zip(text[key], text[inference.FIRST_KNOWN_AT])}
print(json.dumps({"added": added, "held": len(held), "keys": len(held[["request_id", "record"]].drop_duplicates()),
                  "columns": list(held.columns), "rows": len(rows), "applied": applied, "read": len(read),
                  "first_known": first_known, "first_known_text": first_known_text, "newest": newest,
                  "scored": rows["scored_at"].max().isoformat()}))
"""


@pytest.mark.databricks
def test_the_append_adds_each_prediction_once_on_spark(model, rows, tmp_path):
    """delta_store.Store.append, as the job runs it, on the runtime's Spark (.venv-runtime, as tests/databricks) over a
    Parquet table with the declared columns: a window, then one that overlaps it, then the same again, then duplicates
    of rows held: each prediction is held once, and a re-run adds nothing."""
    python = databricks_local.runtime_python()
    assert python == str(databricks_local.RUNTIME_PYTHON), "run `make databricks-test`: it builds .venv-runtime"
    log = tmp_path / "log.jsonl"
    log.write_bytes(log_lines(model, rows, "req", scored_at=SCORED))
    env = {**os.environ, "PYTHONPATH": str(Path(databricks_local.ROOT)), "PYSPARK_PYTHON": python}
    result = subprocess.run([python, "-c", APPEND_ON_SPARK, model.module, str(log), str(tmp_path / "warehouse")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    half = found["rows"] // 2
    assert found["added"] == [half, found["rows"] - half, 0, 0]
    assert found["held"] == found["keys"] == found["rows"] == len(rows)
    assert found["columns"] == [c.name for c in delta_table.columns(model.contract, "keep")]
    # Issue 22, audit pass 2 #8: a label applies to the predictions of its ids scored before its outcome was first known
    # (at that instant too), within the horizon; the MERGE's condition on Spark and the local join agree on which.
    records = range(len(rows))
    expected = {"None": [r for r in records if r % 4 != 0], "30min": [r for r in records if r % 4 in (1, 2)],
                "3650D": [r for r in records if r % 4 != 0]}
    for horizon, applied in found["applied"].items():
        assert applied["spark"] == applied["local"] == expected[horizon], horizon
        assert applied["value"] == [quality_delta._text(model.contract.target.classes[1])]  # the correction's value
    assert found["newest"] == found["scored"]
    # audit 3 W1: a label repeated after the job's lookback still dates from when its outcome was first known
    assert found["read"] == 2 and found["first_known"] == {"7": "2026-01-01T00:00:00+00:00",
                                                           "8": "2026-03-01T00:00:00+00:00"}
    assert found["first_known_text"] == {"9": "2026-03-01T00:00:00",  # audit 5 C3: the malformed row fails nothing
                                         "11": "1970-01-01T00:00:00"}  # audit 8 C5: nor a 0001-01-01 placeholder


def test_a_run_after_missed_runs_reads_the_log_back_to_the_newest_prediction_held_for_eight_days_at_most():
    """Audit 3 W3: missed runs (a paused job, a failing cluster) are caught up, eight days back at most (audit 4 C1: the
    queries and the run's time stay bounded; audit 6 W5: a weekly schedule finds its last run's rows); the log is read
    an hour a query (F1)."""
    from monitoring import drift_sources

    now, week = pd.Timestamp("2026-12-08T07:00:00Z"), quality_delta.CATCH_UP_HOURS
    assert quality_delta.hours_to_read(now - pd.Timedelta(hours=24), now, 48, week) == 48  # on schedule
    assert quality_delta.hours_to_read(now - pd.Timedelta(days=5), now, 48, week) == 5 * 24 + 1
    assert quality_delta.hours_to_read(now - pd.Timedelta(days=7, minutes=5), now, 48, week) == pytest.approx(
        7 * 24 + 1 + 5 / 60)  # a weekly schedule: back to its last run's newest row, with an hour's margin
    assert quality_delta.hours_to_read(now - pd.Timedelta(days=7, hours=23, minutes=30), now, 48, week) == week
    assert quality_delta.hours_to_read(None, now, 48, week) == week  # none held in the week: the first run, or idle
    assert quality_delta.gap_note(None, now, week) is None  # the first run
    assert quality_delta.gap_note(now - pd.Timedelta(days=3), now, week) is None
    note = quality_delta.gap_note(now - pd.Timedelta(days=40), now, week)  # audit 5 M3: a longer gap is said
    assert note is not None and "960 h old" in note and "not an idle service" in note
    spans = drift_sources.time_slices(2.5, now.to_pydatetime())
    assert [(a.isoformat(), b.isoformat()) for a, b in spans] == [
        ("2026-12-08T04:30:00+00:00", "2026-12-08T05:30:00+00:00"), ("2026-12-08T05:30:00+00:00", "2026-12-08T06:30:00+00:00"),
        ("2026-12-08T06:30:00+00:00", "2026-12-08T07:00:00+00:00")]


def test_a_span_answered_in_part_is_asked_again_in_halves_in_order():
    """Audit 4 F1: Log Analytics answers a query only in part past its limits; the job asks again for each half."""
    from monitoring import drift_sources

    now = pd.Timestamp("2026-12-08T07:00:00Z").to_pydatetime()
    asked: list = []

    def query(span):  # at most 20 minutes per answer; a line a minute
        asked.append(span)
        minutes = int((span[1] - span[0]).total_seconds() // 60)
        return None if minutes > 20 else [f"{(span[0] + timedelta(minutes=m)):%H:%M}" for m in range(minutes)]

    lines = list(drift_sources.sliced(query, drift_sources.time_slices(2, now)))
    assert lines == [f"{(now - timedelta(minutes=120 - m)):%H:%M}" for m in range(120)]  # each minute once, in order
    assert max(b - a for a, b in asked) == timedelta(hours=1) and len(asked) == 2 + 2 * 2 + 2 * 4
    with pytest.raises(drift_sources.DriftInputError, match="only in part, even a minute at a time"):
        list(drift_sources.sliced(lambda span: None, drift_sources.time_slices(1, now)))


def test_the_gap_note_reaches_the_record(model, rows):
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    sent: list = []
    _, record = quality_delta.run(args(model), store, log_lines(model, rows, "req", scored_at=SCORED).splitlines(), None,
                                  sent.extend, lambda *_: None, ["the newest prediction held ... 960 h old"])
    assert record["reasons"][0] == "the newest prediction held ... 960 h old" and sent == [record]


def test_a_labels_table_that_cannot_be_read_is_said_and_the_predictions_still_go_in(model, rows):
    """Audit 7 W7: main() reads the labels before run(); a table dropped or its grant gone is a note (and exit 2 after
    the run), not a run that appends nothing."""
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    problem = "the labels table c.s.outcomes cannot be read: [TABLE_OR_VIEW_NOT_FOUND]"
    code, record = quality_delta.run(args(model, labels_table="c.s.outcomes"), store,
                                     log_lines(model, rows, "req", scored_at=SCORED).splitlines(), None, lambda _: None,
                                     lambda *_: None, [problem])
    assert record["added"] == len(rows) and record["reasons"] == [problem] and code == quality_delta.EXIT_OK


def test_the_record_stays_one_app_insights_message_and_keeps_the_rules_reasons():
    """App Insights cuts a message at 32 KiB, and a cut record is no JSON for the alert (audit 3 N1, 4 N6)."""
    notes = quality_delta.capped([f"version {v}: no drift baseline, " + "x" * 40_000 for v in range(30)],
                                 quality_delta.MAX_NOTES)
    reasons = quality_delta.capped([*notes, "version 3: roc_auc below the floor in 3 windows"], quality_delta.MAX_REASONS)
    assert len(json.dumps(reasons)) < 8_000 and reasons[-1] == "version 3: roc_auc below the floor in 3 windows"
    assert reasons[quality_delta.MAX_NOTES] == "... and 25 more" and reasons[0].endswith("...")


def test_a_long_log_is_appended_in_parts_each_once(model, rows, monkeypatch):
    monkeypatch.setattr(quality_delta, "APPEND_ROWS", 7)
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    _, record, _ = run(model, store, log_lines(model, rows, "req", scored_at=SCORED).splitlines(), None)
    assert record["added"] == len(rows) == len(store.frame.drop_duplicates(["request_id", "record"]))


def test_the_job_judges_a_bounded_sample_when_the_windows_hold_more_than_max_rows(model, rows):
    store = FrameStore(delta_table.columns(model.contract, "keep"))
    _, record, _ = run(model, store, log_lines(model, rows, "req", scored_at=SCORED).splitlines(), None, max_rows=50)
    assert record["added"] == len(rows) and record["predictions"] == 50
