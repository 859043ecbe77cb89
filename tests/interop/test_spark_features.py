"""Tables another engine changed: Spark's deletion vectors and writer features.

Spark (delta-spark) deletes rows with deletion vectors and upgrades tables with writer features
delta-rs cannot honour. ciolake's row counts leave deleted rows out as Spark and DuckDB do,
replay refuses a table with deleted rows until they are purged, and the committer refuses an
upgraded table by name, then commits to it once the feature is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ciolake.errors import TableUnreadableError, TableWriteError
from ciolake.lake.inventory import summarize
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.lake.writer import DeltaWriter
from tests.spark_session import delete_with_deletion_vectors, enable_feature, table_ref
from tests.support import (
    NOW,
    channel_rows,
    delta_reader,
    email_batch,
    make_settings,
    receive_at,
    sample_bodies,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark


def duckdb_count(table: Path) -> int:
    found = delta_reader().execute(f"SELECT count(*) FROM delta_scan('{table}')").fetchone()
    assert found is not None
    return int(found[0])


def test_counts_leave_out_rows_deleted_by_deletion_vectors_and_replay_waits_for_a_purge(
    tmp_path: Path, spark: SparkSession
) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(400, seed=31, timestamp=NOW), at=NOW + 5)
    before = channel_rows(settings)
    email = settings.data_dir / "tables" / "email_events"
    stored = duckdb_count(email)
    deleted = delete_with_deletion_vectors(spark, email, "metric = 'opened'")
    assert 0 < deleted < stored

    spark_count = spark.read.format("delta").load(str(email)).count()
    counted = {s.name: s.rows for s in summarize(settings.tables_location)}
    assert counted["email_events"] == spark_count == duckdb_count(email) == stored - deleted

    with pytest.raises(TableUnreadableError) as refused:
        Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert f"{deleted:,} row(s) deleted by deletion vectors" in str(refused.value)
    assert "APPLY (PURGE)" in str(refused.value)

    spark.sql(f"REORG TABLE {table_ref(email)} APPLY (PURGE)")
    Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert channel_rows(settings) == before, "replay restored the deleted rows, once each"
    assert spark.read.format("delta").load(str(email)).count() == stored


def test_a_table_spark_gave_in_commit_timestamps_is_refused_until_the_feature_is_dropped(
    tmp_path: Path, spark: SparkSession
) -> None:
    tables = tmp_path / "tables"
    writer = DeltaWriter(str(tables))
    try:
        writer.ensure_tables()
        email = tables / "email_events"
        enable_feature(spark, email, "delta.enableInCommitTimestamps")
        writer.ensure_tables()  # what the committer does after a failure: read the tables again
        with pytest.raises(TableWriteError) as refused:
            writer.append_all({"email_events": email_batch(60, seed=5)}, versions={0: 1})
        assert "turn off delta.enableInCommitTimestamps" in str(refused.value)
        assert spark.read.format("delta").load(str(email)).count() == 0

        spark.sql(
            f"ALTER TABLE {table_ref(email)} SET TBLPROPERTIES"
            " ('delta.enableInCommitTimestamps' = false)"
        )
        spark.sql(f"ALTER TABLE {table_ref(email)} DROP FEATURE inCommitTimestamp")
        writer.ensure_tables()
        batch = email_batch(60, seed=5)
        writer.append_all({"email_events": batch}, versions={0: 1})
    finally:
        writer.close()
    assert spark.read.format("delta").load(str(email)).count() == batch.num_rows
    history = spark.sql(f"DESCRIBE HISTORY {table_ref(email)}").collect()
    assert history[0]["operation"] == "WRITE", "Spark reads the history past ciolake's commit"
