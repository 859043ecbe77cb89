"""The committer merges the small files it committed, so a table's file count stays bounded
through a long day, without a row lost, doubled or marked as changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from ciolake.lake import maintenance, small_files
from ciolake.lake.small_files import (
    CROWDED,
    FAN_IN,
    SMALLEST_TIER_BYTES,
    merged_stats,
    tier_of,
)
from ciolake.lake.tables import RAW_EVENTS
from ciolake.lake.writer import DeltaWriter
from tests.support import (
    NOW,
    S3Server,
    email_batch,
    make_settings,
    receive,
    s3_table_rows,
    sample_bodies,
    table_rows,
)

EMAIL = "email_events"


def batches(count: int) -> Iterator[pa.Table]:
    """``count`` batches of distinct email events."""
    for seed in range(count):
        batch = email_batch(60, seed=seed)
        ids = pc.binary_join_element_wise(batch.column("event_id"), f"-{seed}", "")
        yield batch.set_column(batch.schema.get_field_index("event_id"), "event_id", ids)


def append(
    writer: DeltaWriter, tables: list[pa.Table], *, first_version: int = 1, busy: bool = False
) -> None:
    """Append each of ``tables`` in a batch of its own (``busy``: as a committer with no time
    to spare)."""
    for offset, rows in enumerate(tables):
        writer.append_all(
            {EMAIL: rows},
            versions={0: first_version + offset},
            small_files="defer" if busy else "merge",
        )


def opened_writer(uri: str) -> DeltaWriter:
    writer = DeltaWriter(uri)
    writer.ensure_tables()
    writer.committed_versions([0])
    return writer


def commits(table: Path) -> list[list[dict[str, Any]]]:
    return [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted((table / "_delta_log").glob("*.json"))
    ]


def expected_ids(tables: list[pa.Table]) -> list[str]:
    return sorted(i for t in tables for i in t.column("event_id").to_pylist())


def stored_ids(tables_dir: Path) -> list[str]:
    return sorted(r["event_id"] for r in table_rows(tables_dir.parent, EMAIL, "event_id"))


def test_file_sizes_fall_into_tiers_of_fan_in_times_the_last() -> None:
    assert tier_of(0) == tier_of(SMALLEST_TIER_BYTES - 1) == 0
    assert tier_of(SMALLEST_TIER_BYTES) == 1
    assert tier_of(SMALLEST_TIER_BYTES * FAN_IN - 1) == 1
    assert tier_of(SMALLEST_TIER_BYTES * FAN_IN) == 2


def test_merged_statistics_add_counts_widen_bounds_and_drop_what_one_file_lacks() -> None:
    first = {
        "numRecords": 3,
        "minValues": {"a": 1, "b": "k", "t": "2026-12-06T10:00:00.000Z"},
        "maxValues": {"a": 5, "b": "m", "t": "2026-12-06T11:00:00.000Z"},
        "nullCount": {"a": 0, "b": 0, "c": 3, "t": 0, "d": 0},
    }
    second = {
        "numRecords": 2,
        # b holds long text here (no bounds); c and d are null throughout.
        "minValues": {"a": -2, "t": "2026-12-06T09:30:00.000Z"},
        "maxValues": {"a": 4, "t": "2026-12-06T10:30:00.000Z"},
        "nullCount": {"a": 1, "b": 0, "c": 2, "t": 0},
    }

    merged = merged_stats([first, second])

    assert merged["numRecords"] == 5
    assert merged["nullCount"] == {"a": 1, "b": 0, "c": 5, "t": 0}, "d: not counted in both"
    assert merged["minValues"] == {"a": -2, "t": "2026-12-06T09:30:00.000Z"}
    assert merged["maxValues"] == {"a": 5, "t": "2026-12-06T11:00:00.000Z"}


def test_many_small_appends_leave_few_files_every_row_once_and_no_data_change(
    tmp_path: Path,
) -> None:
    tables_dir = tmp_path / "tables"
    writer = opened_writer(str(tables_dir))
    sent = list(batches(3 * FAN_IN + 3))

    append(writer, sent)
    writer.close()

    files = DeltaTable(str(tables_dir / EMAIL)).file_uris()
    assert len(files) < FAN_IN, f"{len(sent)} appends left {len(files)} files"
    assert stored_ids(tables_dir) == expected_ids(sent), "every row once, read by DuckDB"
    merges = [c for c in commits(tables_dir / EMAIL) if any("remove" in a for a in c)]
    assert len(merges) >= 3
    for commit in merges:
        moved = [
            a["add"] if "add" in a else a["remove"] for a in commit if {"add", "remove"} & set(a)
        ]
        assert moved
        assert all(action["dataChange"] is False for action in moved)


def test_a_busy_committer_defers_merges_until_a_tier_crowds_its_partition(
    tmp_path: Path,
) -> None:
    tables_dir = tmp_path / "tables"
    writer = opened_writer(str(tables_dir))
    sent = list(batches(CROWDED + 1))

    append(writer, sent[: FAN_IN + 1], busy=True)
    deferred = len(DeltaTable(str(tables_dir / EMAIL)).file_uris())
    append(writer, sent[FAN_IN + 1 : CROWDED], first_version=FAN_IN + 2, busy=True)
    crowded = len(DeltaTable(str(tables_dir / EMAIL)).file_uris())
    append(writer, sent[CROWDED:], first_version=CROWDED + 1)
    writer.close()

    assert deferred == FAN_IN + 1, "nothing merged while busy"
    assert crowded < FAN_IN, "a crowded tier merged even while busy"
    assert stored_ids(tables_dir) == expected_ids(sent)


def test_a_merged_file_s_statistics_bound_its_rows(tmp_path: Path) -> None:
    tables_dir = tmp_path / "tables"
    writer = opened_writer(str(tables_dir))
    append(writer, list(batches(FAN_IN)))
    writer.close()

    (live,) = DeltaTable(str(tables_dir / EMAIL)).file_uris()
    (merge,) = [c for c in commits(tables_dir / EMAIL) if any("remove" in a for a in c)]
    (merged,) = [a["add"] for a in merge if "add" in a]
    assert live.endswith(merged["path"])
    stats = json.loads(merged["stats"])
    data = pq.read_table(tables_dir / EMAIL / merged["path"])
    assert stats["numRecords"] == data.num_rows == FAN_IN * email_batch(60, seed=0).num_rows
    bounded = 0
    for column, low in stats["minValues"].items():
        if low is None or column not in data.column_names:
            continue
        values = data.column(column)
        if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
            continue  # kept in Delta's text form; the text columns below cover the logic
        assert low <= pc.min(values).as_py()
        assert stats["maxValues"][column] >= pc.max(values).as_py()
        bounded += 1
    assert bounded >= 3
    for column, nulls in stats["nullCount"].items():
        if column in data.column_names and nulls is not None:
            assert nulls == data.column(column).null_count


def test_files_another_writer_may_have_removed_are_never_merged_again(tmp_path: Path) -> None:
    tables_dir = tmp_path / "tables"
    writer = opened_writer(str(tables_dir))
    sent = list(batches(2 * FAN_IN))
    append(writer, sent[: FAN_IN - 3])
    # Another writer rewrites the files the committer tracks (the compaction, here).
    maintenance.compact_table(str(tables_dir), EMAIL, before=None, retention_hours=168)

    append(writer, sent[FAN_IN - 3 :], first_version=FAN_IN - 2)
    writer.close()

    assert stored_ids(tables_dir) == expected_ids(sent), "no row doubled by a second merge"


def test_a_failed_merge_leaves_the_batch_committed_and_its_files_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(small_files, "merge_files", refuse)
    monkeypatch.setattr("ciolake.lake.writer.merge_files", refuse)
    tables_dir = tmp_path / "tables"
    writer = opened_writer(str(tables_dir))
    sent = list(batches(FAN_IN + 1))

    append(writer, sent)
    writer.close()

    assert stored_ids(tables_dir) == expected_ids(sent)
    assert len(DeltaTable(str(tables_dir / EMAIL)).file_uris()) == len(sent)


def test_small_files_on_an_object_store_are_merged_the_same_way(s3: S3Server) -> None:
    uri = f"s3://{s3.bucket}/tables"
    writer = opened_writer(uri)
    sent = list(batches(FAN_IN + 1))

    append(writer, sent)
    writer.close()

    assert len(DeltaTable(f"{uri}/{EMAIL}").file_uris()) == 2
    stored = sorted(r["event_id"] for r in s3_table_rows(s3, f"{uri}/{EMAIL}", "event_id"))
    assert stored == expected_ids(sent)


def test_the_committer_merges_as_it_commits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, flush_interval_s=0.01, batch_max_events=10)
    bodies = sample_bodies(600, seed=31, timestamp=NOW)

    receive(settings, [(body, False) for body in bodies])

    raw = settings.data_dir / "tables" / RAW_EVENTS
    log = commits(raw)
    merges = [c for c in log if any("remove" in a for a in c)]
    appends = len(log) - len(merges) - 1  # the first version creates the table
    assert appends >= CROWDED, "enough batches to crowd a tier"
    assert merges, "the committer merged raw_events' small files"
    assert len(DeltaTable(str(raw)).file_uris()) < CROWDED
    stored = [r["event_id"] for r in table_rows(settings.data_dir, RAW_EVENTS, "event_id")]
    assert sorted(stored) == sorted(json.loads(b)["event_id"] for b in bodies)
