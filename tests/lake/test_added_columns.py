"""A table written before a column was added to ciolake's schema (``source`` of the channel
tables): migrated at the first open, its old files read as null in that column by the paths
that read files directly (replay, compaction), by DuckDB and by ciolake alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ciolake.lake import maintenance
from ciolake.lake.replay import reads as replay_reads
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.settings import Settings
from tests.support import NOW, channel_rows, receive_at, sample_bodies, table_rows


def drop_source(table: Path, *, tamper: bool = False) -> None:
    """Rewrite ``table`` as a ciolake before the column wrote it: same rows, no ``source``;
    with ``tamper``, one row's recipient changed, for replay to put right."""
    rows = DeltaTable(str(table)).to_pyarrow_table()
    old = rows.drop_columns(["source"])
    if tamper:
        recipients = old.column("recipient").to_pylist()
        recipients[0] = "tampered"
        old = old.set_column(
            old.schema.get_field_index("recipient"), "recipient", pa.array(recipients)
        )
    write_deltalake(
        str(table), old, mode="overwrite", schema_mode="overwrite", partition_by=["event_date"]
    )
    assert "source" not in DeltaTable(str(table)).schema().to_arrow().names


def schema_names(table: Path) -> list[str]:
    return DeltaTable(str(table)).schema().to_arrow().names


@pytest.fixture
def old_tables(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    bodies = sample_bodies(400, seed=11, timestamp=NOW)
    receive_at(settings, bodies[:200], at=NOW + 5)
    for name in CHANNEL_TABLES:
        drop_source(settings.data_dir / "tables" / name, tamper=name == "email_events")
    receive_at(settings, bodies[200:], at=NOW + 6)
    return settings


def test_the_column_is_added_at_the_first_open_and_old_rows_read_it_as_null(
    old_tables: Settings,
) -> None:
    email = old_tables.data_dir / "tables" / "email_events"
    assert schema_names(email)[-1] == "source"
    rows = table_rows(old_tables.data_dir, "email_events", "event_id, source")
    assert rows
    assert {row["source"] for row in rows} == {None}
    # Every delivery of both landings, before and after the column, once.
    assert len(channel_rows(old_tables, "event_id, source")) == 400


def test_replay_and_compaction_read_old_and_new_files_together(
    old_tables: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    columns = "event_id, received_at, payload, journal_lsn, source"
    before = channel_rows(old_tables, columns)
    assert [
        r for r in table_rows(old_tables.data_dir, "email_events") if r["recipient"] == "tampered"
    ]
    # Every stored file read on its own, row groups and all, as replay reads big files; the
    # tampered row's file is rewritten, the rest of its rows read from the old file.
    monkeypatch.setattr(replay_reads, "READ_GROUP_BYTES", 1)
    result = Replayer(old_tables).run(ReplayRange(), include_quarantine=False)
    assert result.deliveries == 400
    assert channel_rows(old_tables, columns) == before
    emails = table_rows(old_tables.data_dir, "email_events")
    assert not [r for r in emails if r["recipient"] == "tampered"]
    maintenance.compact_all(old_tables.tables_location, tables=None, before=None, retention_hours=0)
    assert channel_rows(old_tables, columns) == before
    merged = pa.concat_tables(
        DeltaTable(str(old_tables.data_dir / "tables" / name)).to_pyarrow_table(
            columns=["event_id", "source"]
        )
        for name in CHANNEL_TABLES
    )
    assert merged.num_rows == len(before)
