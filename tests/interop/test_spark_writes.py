"""Spark and ciolake take turns on one table: Spark appends, merges, optimizes and vacuums;
ciolake then commits (merging its small files), compacts and replays. DuckDB, Spark and delta-rs
then read the same rows, and every event ciolake received is there exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable

from ciolake.lake.maintenance import compact_table
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from tests.spark_session import table_ref
from tests.support import NOW, delta_reader, make_settings, receive_at, sample_bodies

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark

SPARK_ROW = "appended-by-spark"


def rows_by_reader(spark: SparkSession, table: Path) -> dict[str, list[tuple[str, str | None]]]:
    """(event_id, subject) of every row, as each of the three readers reads them."""
    duck = delta_reader().execute(f"SELECT event_id, subject FROM delta_scan('{table}')")
    frame = spark.read.format("delta").load(str(table)).select("event_id", "subject")
    arrow = DeltaTable(str(table)).to_pyarrow_table(columns=["event_id", "subject"])
    pairs = zip(
        arrow.column("event_id").to_pylist(), arrow.column("subject").to_pylist(), strict=True
    )
    return {
        "duckdb": sorted(duck.fetchall()),
        "spark": sorted((r["event_id"], r["subject"]) for r in frame.collect()),
        "delta-rs": sorted(pairs),
    }


def email_ids(bodies: list[bytes], stored: set[str]) -> set[str]:
    return {json.loads(b)["event_id"] for b in bodies} & stored


def test_spark_and_ciolake_take_turns_on_one_table_and_every_reader_agrees(
    tmp_path: Path, spark: SparkSession
) -> None:
    settings = make_settings(tmp_path)
    first = sample_bodies(300, seed=41, timestamp=NOW)
    receive_at(settings, first, at=NOW + 5)
    email = settings.data_dir / "tables" / "email_events"
    received = {r[0] for r in rows_by_reader(spark, email)["duckdb"]}

    # Spark's turn: a row of its own, an update through MERGE, OPTIMIZE, VACUUM.
    one = spark.read.format("delta").load(str(email)).limit(1)
    one.selectExpr(
        *(f"'{SPARK_ROW}' AS event_id" if c == "event_id" else c for c in one.columns)
    ).write.format("delta").mode("append").save(str(email))
    spark.sql(
        f"MERGE INTO {table_ref(email)} t USING (SELECT event_id FROM {table_ref(email)}"
        " WHERE metric = 'clicked' LIMIT 3) s ON t.event_id = s.event_id"
        " WHEN MATCHED THEN UPDATE SET t.subject = 'merged by spark'"
    )
    spark.sql(f"OPTIMIZE {table_ref(email)}")
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    spark.sql(f"VACUUM {table_ref(email)} RETAIN 0 HOURS")

    # ciolake's turn: commits in several batches, a compaction, a replay.
    second = sample_bodies(300, seed=42, timestamp=NOW)
    for start in range(0, 300, 30):
        receive_at(settings, second[start : start + 30], at=NOW + 6)
    compact_table(settings.tables_location, "email_events", before=None, retention_hours=0)
    result = Replayer(settings).run(ReplayRange(), include_quarantine=False)

    readers = rows_by_reader(spark, email)
    assert readers["spark"] == readers["duckdb"] == readers["delta-rs"]
    ids = Counter(event_id for event_id, _ in readers["duckdb"])
    assert max(ids.values()) == 1, "a row is stored twice"
    assert received <= set(ids)
    stored_second = email_ids(second, set(ids))
    assert stored_second, "ciolake committed after Spark's turn"
    assert SPARK_ROW in ids, "Spark's own row is kept"
    subjects = {subject for _, subject in readers["duckdb"]}
    assert "merged by spark" not in subjects, "replay re-derived the rows Spark changed"
    assert result.rewritten["email_events"] == 3
