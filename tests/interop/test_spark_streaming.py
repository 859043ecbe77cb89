"""A Spark Structured Streaming reader of a channel table across ciolake's merges, compaction
and replay.

Merges and compaction only move rows (``dataChange`` false), which a streaming source skips. A
replay that rewrites rows commits changes; a streaming source stops there with
``DELTA_SOURCE_TABLE_IGNORE_CHANGES`` unless it reads with ``skipChangeCommits``, the option the
docs tell streaming readers to use. With it, every appended row reaches the sink once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable

from ciolake.lake.maintenance import compact_table
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from tests.support import NOW, make_settings, receive_at, sample_bodies

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark


def stream_once(spark: SparkSession, table: Path, work: Path, **options: str) -> None:
    """Run the streaming query once over what the table holds now (``availableNow``)."""
    reader = spark.readStream.format("delta")
    for key, value in options.items():
        reader = reader.option(key, value)
    query = (
        reader.load(str(table))
        .select("event_id")
        .writeStream.format("delta")
        .option("checkpointLocation", str(work / "checkpoint"))
        .trigger(availableNow=True)
        .start(str(work / "sink"))
    )
    query.awaitTermination(120)


def sink_ids(spark: SparkSession, work: Path) -> list[str]:
    frame = spark.read.format("delta").load(str(work / "sink"))
    return sorted(row["event_id"] for row in frame.collect())


def table_ids(table: Path) -> list[str]:
    return sorted(
        DeltaTable(str(table)).to_pyarrow_table(columns=["event_id"]).column(0).to_pylist()
    )


def test_a_streaming_reader_skips_merges_and_compaction_and_needs_skip_change_commits_for_replay(
    tmp_path: Path, spark: SparkSession
) -> None:
    settings = make_settings(tmp_path)
    email = settings.data_dir / "tables" / "email_events"
    work = tmp_path / "stream"
    for seed in range(3):  # several batches: the committer merges small files
        receive_at(settings, sample_bodies(120, seed=50 + seed, timestamp=NOW), at=NOW + 5)
    stream_once(spark, email, work)
    assert sink_ids(spark, work) == table_ids(email)

    receive_at(settings, sample_bodies(120, seed=60, timestamp=NOW), at=NOW + 6)
    compact_table(settings.tables_location, "email_events", before=None, retention_hours=168)
    stream_once(spark, email, work)
    assert sink_ids(spark, work) == table_ids(email), "compacted rows were not streamed again"

    # Rows changed behind ciolake's back, which replay re-derives: two change commits.
    DeltaTable(str(email)).update(updates={"subject": "'changed'"}, predicate="metric = 'clicked'")
    assert Replayer(settings).run(ReplayRange(), include_quarantine=False).rewritten["email_events"]
    with pytest.raises(Exception, match="DELTA_SOURCE_TABLE_IGNORE_CHANGES"):
        stream_once(spark, email, work)

    later = sample_bodies(120, seed=70, timestamp=NOW)
    receive_at(settings, later, at=NOW + 7)
    stream_once(spark, email, work, skipChangeCommits="true")
    streamed = sink_ids(spark, work)
    assert streamed == table_ids(email), "every row once, the later ones included"
    assert {json.loads(b)["event_id"] for b in later} & set(streamed)
