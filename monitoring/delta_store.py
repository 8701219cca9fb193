"""The inference table and the labels table as the quality job reaches them: Spark SQL on the cluster (a Delta table
the stack declares, monitoring/delta_table.py; the labels table the stack names). Spark is the cluster's: this module
is imported by the job only, and its calls run for real on local Spark in tests/monitoring/test_quality_delta.py
(but the labels' MERGE and the retention's DELETE, which need Delta Lake)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from monitoring import delta_table, inference
from training.contract import Contract

NEW_ROWS, LATEST_LABELS = "quality_new_predictions", "quality_latest_labels"
SAMPLE_SEED = 7  # the same rows on a re-run of the same day
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Store:
    """The inference table behind the calls the job makes (a Delta table through Spark SQL on Databricks)."""

    def __init__(self, spark: Any, table: str, columns: list[delta_table.Column]) -> None:
        self.spark, self.table, self.columns = spark, table, columns

    def _view(self, frame: pd.DataFrame, name: str, columns: list[delta_table.Column]) -> None:
        schema = ", ".join(f"{delta_table.quote(c.name)} {c.type}" for c in columns)
        self.spark.createDataFrame(frame[[c.name for c in columns]], schema=schema).createOrReplaceTempView(name)

    def append(self, rows: pd.DataFrame) -> int:
        """Append the rows the table lacks, and count them: both read only the predictions scored since the oldest
        new one, less delta_table.RETRY_SPAN (Delta skips the files before it by their statistics), not the whole
        table."""
        if rows.empty:
            return 0
        self._view(rows.drop_duplicates(list(inference.KEY)), NEW_ROWS, self.columns)
        since = pd.Timestamp(rows[delta_table.TIMESTAMP].min()) - delta_table.RETRY_SPAN
        before = self._count_since(since)
        self.spark.sql(delta_table.append_predictions(self.table, NEW_ROWS, self.columns, since))
        return self._count_since(since) - before

    def _count_since(self, since: pd.Timestamp) -> int:
        return int(self._scored_since(since).count())

    def _scored_since(self, since: pd.Timestamp) -> Any:
        """The predictions scored since `since`: a literal bound, so Delta skips the files before it."""
        return self.spark.table(self.table).where(f"{delta_table.TIMESTAMP} >= '{since.isoformat()}'")

    def label(self, labels: pd.DataFrame, ids: list[str], target: str, horizon: pd.Timedelta | None) -> None:
        if labels.empty:
            return
        wanted = [c for c in self.columns if c.name in (*ids, target, inference.KNOWN_AT)]
        first = delta_table.Column(inference.FIRST_KNOWN_AT, "TIMESTAMP", inference.FIRST_KNOWN_AT)
        self._view(labels, LATEST_LABELS, [*wanted, first])
        self.spark.sql(delta_table.merge_labels(self.table, LATEST_LABELS, ids, target, horizon))

    def read(self, since: pd.Timestamp, max_rows: int) -> pd.DataFrame:
        """The predictions scored since `since`, at most about `max_rows` of them (a uniform sample, drawn in Spark):
        the driver holds what it judges, and a nightly batch of the whole portfolio would not fit it whole."""
        rows = self._scored_since(since)
        count = rows.count()
        if count > max_rows:
            rows = rows.sample(fraction=max_rows / count, seed=SAMPLE_SEED)
        return rows.toPandas()

    def newest_online(self, since: pd.Timestamp | None) -> pd.Timestamp | None:
        """When the newest prediction appended from the request log since `since` (or ever) was scored; None if none
        was. Bounded, Delta skips the files before `since`."""
        rows = self._scored_since(since) if since is not None else self.spark.table(self.table)
        newest = rows.where(f"{delta_table.quote('source')} <> 'batch'").agg({delta_table.TIMESTAMP: "max"}).collect()[0][0]
        return None if newest is None else inference.utc(newest)

    def forget(self, before: pd.Timestamp) -> int:
        """Delete the predictions scored before `before` (quality.retentionDays); Delta's file retention then removes
        the files that held them."""
        older = f"{delta_table.TIMESTAMP} < '{before.isoformat()}'"
        count = self.spark.table(self.table).where(older).count()
        if count:
            self.spark.sql(f"DELETE FROM {self.table} WHERE {older}")
        return int(count)


def read_labels(spark: Any, table: str, contract: Contract, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The labels known from `since` to `until` (older ones were merged by earlier runs; later ones are not known yet,
    and a placeholder such as 9999-12-31 is beyond what the driver's pandas holds; filtered in Spark, not on the
    driver: a labels table grows without end), each with `first_known_at`, when its ids' outcome was first known over the
    whole table: a label repeated or corrected after the lookback still applies only to the predictions before the
    first (an aggregate on the ids and known_at columns)."""
    from pyspark.sql import functions

    ids, known = list(contract.ids), inference.KNOWN_AT
    labels = spark.table(table)
    # known_at as a timestamp, whatever the column's type: a text column would compare and sort as text; try_cast: a
    # value that is no time is left out (null), not a run that fails every day (an ANSI cast raises)
    when = functions.expr(f"try_cast({delta_table.quote(known)} AS TIMESTAMP)")
    # at 1970 at the earliest: a 0001-01-01 placeholder is beyond what the driver's pandas holds, and a label first known
    # before any prediction applies to none either way (greatest skips nulls: an id whose every known_at is no time gets
    # 1970, and no row of it is recent, so it never reaches the join)
    first = labels.groupBy(*ids).agg(functions.greatest(functions.min(when), functions.lit(EPOCH)).alias(
        inference.FIRST_KNOWN_AT))
    recent = (labels.select(*ids, contract.target.name, when.alias(known))
              .where(functions.col(known).between(functions.lit(since.to_pydatetime()),
                                                  functions.lit(until.to_pydatetime()))))
    return recent.join(first, on=ids, how="left").toPandas()
