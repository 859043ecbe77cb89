"""Blind appends written straight into a local Delta log, next to other writers going through
delta-rs.

Readback goes through DuckDB's delta extension (delta-kernel), an independent reader; the log
itself is checked with delta-rs and by reading its JSON files.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.schema import Field, PrimitiveType

import ciolake.lake.log
from ciolake.lake.files import DataFile, write_files
from ciolake.lake.log import (
    CHECKPOINT_INTERVAL,
    LocalDeltaLog,
    MetadataChangedError,
    checkpoint_due,
)
from ciolake.lake.tables import ALL_SPECS, RAW_EVENTS, RAW_SPEC
from ciolake.lake.writer import app_id
from tests.lake.conftest import WriterFactory, raw_event_row
from tests.support import table_rows

TABLE = "events"
PARTITION = "day"
JOURNAL = "ciolake-journal-0"
DAY_ONE = dt.date(2024, 5, 1)
DAY_TWO = dt.date(2024, 5, 2)
NOW_MS = 1_714_550_400_000
SCHEMA = pa.schema([("n", pa.int64()), ("name", pa.string()), (PARTITION, pa.date32())])

TableFactory = Callable[[], Path]
RowsFactory = Callable[..., list[dict[str, Any]]]
FilesFactory = Callable[[Path, list[dict[str, Any]]], list[DataFile]]
OtherWriter = Callable[[Path, RowsFactory], list[dict[str, Any]]]


@pytest.fixture
def make_table(data_dir: Path) -> TableFactory:
    """The ``events`` table under ``data_dir/tables``, created empty by delta-rs (version 0)."""

    def make() -> Path:
        root = data_dir / "tables" / TABLE
        root.parent.mkdir(parents=True, exist_ok=True)
        DeltaTable.create(str(root), SCHEMA, partition_by=[PARTITION])
        return root

    return make


@pytest.fixture
def make_rows() -> RowsFactory:
    """``count`` rows numbered from ``first``, alternating between two dates."""

    def make(
        first: int, count: int, *, days: tuple[dt.date, ...] = (DAY_ONE, DAY_TWO)
    ) -> list[dict[str, Any]]:
        return [
            {"n": n, "name": f"row-{n}", PARTITION: days[n % len(days)]}
            for n in range(first, first + count)
        ]

    return make


@pytest.fixture
def make_files() -> FilesFactory:
    """Parquet files for ``rows`` written into the table's directory, not yet committed."""

    def make(root: Path, rows: list[dict[str, Any]]) -> list[DataFile]:
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        return write_files(root, table, partition_by=PARTITION, now=NOW_MS / 1000)

    return make


def read_rows(data_dir: Path) -> list[dict[str, Any]]:
    """The table as DuckDB reads it, ordered by ``n``."""
    return sorted(table_rows(data_dir, TABLE), key=lambda row: row["n"])


def commit_lines(root: Path, version: int) -> list[dict[str, Any]]:
    text = (root / "_delta_log" / f"{version:020d}.json").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def staged_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "_delta_log").iterdir() if p.name.endswith(".tmp"))


def append(
    log: LocalDeltaLog, files: list[DataFile], *, journal_version: int, now_ms: int = NOW_MS
) -> int:
    return log.append(
        files,
        transactions=[(JOURNAL, journal_version)],
        partition_by=PARTITION,
        now_ms=now_ms,
    )


# --- Appends alone -------------------------------------------------------------------------


def test_appends_make_consecutive_write_versions_read_back_by_duckdb(
    data_dir: Path, make_table: TableFactory, make_rows: RowsFactory, make_files: FilesFactory
) -> None:
    root = make_table()
    log = LocalDeltaLog(root, version=0)
    batches = [make_rows(1, 3), make_rows(4, 4), make_rows(8, 1)]
    journal_versions = [5, 9, 14]
    stamps = [NOW_MS, NOW_MS + 1_000, NOW_MS + 2_000]

    versions = [
        append(log, make_files(root, rows), journal_version=journal, now_ms=stamp)
        for rows, journal, stamp in zip(batches, journal_versions, stamps, strict=True)
    ]

    assert versions == [1, 2, 3]
    assert log.version == 3
    assert read_rows(data_dir) == [row for rows in batches for row in rows]
    table = DeltaTable(str(root))
    assert table.version() == 3
    assert table.transaction_version(JOURNAL) == 14
    history = table.history(3)
    assert [entry["operation"] for entry in history] == ["WRITE", "WRITE", "WRITE"]
    assert sorted(entry["timestamp"] for entry in history) == stamps
    # One file per date in the first two batches, one in the last.
    assert len(table.file_uris()) == 5
    assert staged_files(root) == []


def test_a_commit_records_every_journal_and_only_adds(
    make_table: TableFactory, make_rows: RowsFactory, make_files: FilesFactory
) -> None:
    root = make_table()
    files = make_files(root, make_rows(1, 4))

    version = LocalDeltaLog(root, version=0).append(
        files,
        transactions=[(JOURNAL, 4), ("ciolake-journal-1", 2)],
        partition_by=PARTITION,
        now_ms=NOW_MS,
    )

    table = DeltaTable(str(root))
    assert table.transaction_version(JOURNAL) == 4
    assert table.transaction_version("ciolake-journal-1") == 2
    kinds = sorted(next(iter(line)) for line in commit_lines(root, version))
    assert kinds == ["add", "add", "commitInfo", "txn", "txn"]


# --- Another writer committed first ----------------------------------------------------------


def other_appends(root: Path, make_rows: RowsFactory) -> list[dict[str, Any]]:
    rows = make_rows(100, 3)
    write_deltalake(str(root), pa.Table.from_pylist(rows, schema=SCHEMA), mode="append")
    return rows


def other_compacts(root: Path, make_rows: RowsFactory) -> list[dict[str, Any]]:
    metrics = DeltaTable(str(root)).optimize.compact()
    assert metrics["numFilesRemoved"] > 0
    return []


@pytest.mark.parametrize(
    "case",
    [(other_appends, "WRITE"), (other_compacts, "OPTIMIZE")],
    ids=["append", "compact"],
)
def test_a_data_only_commit_in_between_moves_the_append_to_the_next_version(
    case: tuple[OtherWriter, str],
    data_dir: Path,
    make_table: TableFactory,
    make_rows: RowsFactory,
    make_files: FilesFactory,
) -> None:
    other, operation = case
    root = make_table()
    log = LocalDeltaLog(root, version=0)
    before = make_rows(1, 4) + make_rows(5, 4)
    append(log, make_files(root, before[:4]), journal_version=4)
    append(log, make_files(root, before[4:]), journal_version=8)
    others = other(root, make_rows)
    assert DeltaTable(str(root)).version() == 3
    after = make_rows(9, 4)

    version = append(log, make_files(root, after), journal_version=12)

    assert version == 4
    assert log.version == 4
    table = DeltaTable(str(root))
    assert table.version() == 4
    assert table.transaction_version(JOURNAL) == 12
    assert read_rows(data_dir) == sorted(before + others + after, key=lambda row: row["n"])
    # The other writer's commit is still the one at version 3.
    assert [entry["operation"] for entry in table.history(2)] == ["WRITE", operation]
    assert staged_files(root) == []


def test_several_commits_in_between_are_all_skipped(
    data_dir: Path, make_table: TableFactory, make_rows: RowsFactory, make_files: FilesFactory
) -> None:
    root = make_table()
    stale = LocalDeltaLog(root, version=0)
    fresh = LocalDeltaLog(root, version=0)
    first = make_rows(1, 2)
    second = make_rows(3, 2)
    append(fresh, make_files(root, first), journal_version=2)
    append(fresh, make_files(root, second), journal_version=4)
    others = other_appends(root, make_rows)
    mine = make_rows(10, 3)

    version = append(stale, make_files(root, mine), journal_version=13)

    assert version == 4
    assert DeltaTable(str(root)).version() == 4
    assert read_rows(data_dir) == sorted(first + second + others + mine, key=lambda r: r["n"])


# --- A metadata change in between -------------------------------------------------------------


def set_property(root: Path) -> None:
    DeltaTable(str(root)).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 60 days"}
    )


def add_column(root: Path) -> None:
    DeltaTable(str(root)).alter.add_columns(Field("extra", PrimitiveType("string")))


def append_then_set_property(root: Path) -> None:
    rows = [{"n": 500, "name": "other", PARTITION: DAY_ONE}]
    write_deltalake(str(root), pa.Table.from_pylist(rows, schema=SCHEMA), mode="append")
    set_property(root)


@pytest.mark.parametrize(
    "change",
    [set_property, add_column, append_then_set_property],
    ids=["property", "column", "append-then-property"],
)
def test_a_metadata_change_in_between_raises_and_commits_nothing(
    change: Callable[[Path], None],
    data_dir: Path,
    make_table: TableFactory,
    make_rows: RowsFactory,
    make_files: FilesFactory,
) -> None:
    root = make_table()
    log = LocalDeltaLog(root, version=0)
    first = make_rows(1, 3)
    append(log, make_files(root, first), journal_version=3)
    change(root)
    latest = DeltaTable(str(root)).version()
    logged = sorted(p.name for p in (root / "_delta_log").iterdir())
    rows_before = read_rows(data_dir)

    with pytest.raises(MetadataChangedError):
        append(log, make_files(root, make_rows(10, 3)), journal_version=6)

    table = DeltaTable(str(root))
    assert table.version() == latest
    assert table.transaction_version(JOURNAL) == 3
    assert sorted(p.name for p in (root / "_delta_log").iterdir()) == logged
    assert staged_files(root) == []
    assert read_rows(data_dir) == rows_before
    assert [row["n"] for row in rows_before if row["n"] < 10] == [1, 2, 3]


def test_the_error_repeats_until_the_log_is_reread(
    make_table: TableFactory, make_rows: RowsFactory, make_files: FilesFactory
) -> None:
    root = make_table()
    log = LocalDeltaLog(root, version=0)
    set_property(root)
    files = make_files(root, make_rows(1, 2))

    for _ in range(2):
        with pytest.raises(MetadataChangedError):
            append(log, files, journal_version=2)

    reread = LocalDeltaLog(root, version=DeltaTable(str(root)).version())
    assert append(reread, files, journal_version=2) == 2
    assert DeltaTable(str(root)).transaction_version(JOURNAL) == 2


# --- Through DeltaWriter -----------------------------------------------------------------------


def raw_rows(first: int, count: int) -> list[dict[str, Any]]:
    rows = []
    for lsn in range(first, first + count):
        day = DAY_ONE if lsn % 2 else DAY_TWO
        received_at = dt.datetime(day.year, day.month, day.day, 9, 0, lsn % 60, tzinfo=dt.UTC)
        rows.append(raw_event_row(lsn, received_at, day, metric="delivered"))
    return rows


def read_raw(data_dir: Path) -> list[dict[str, Any]]:
    return sorted(table_rows(data_dir, RAW_EVENTS), key=lambda row: row["journal_lsn"])


def test_the_writer_falls_back_to_delta_rs_after_a_metadata_change_and_then_resumes(
    data_dir: Path, make_writer: WriterFactory
) -> None:
    writer = make_writer()
    uri = writer.table_uri(RAW_EVENTS)
    first, second, third = raw_rows(1, 3), raw_rows(4, 3), raw_rows(7, 2)
    writer.append_all(
        {RAW_EVENTS: pa.Table.from_pylist(first, schema=RAW_SPEC.schema)}, versions={0: 3}
    )
    DeltaTable(uri).alter.set_table_properties({"delta.logRetentionDuration": "interval 60 days"})
    changed = DeltaTable(uri).version()

    writer.append_all(
        {RAW_EVENTS: pa.Table.from_pylist(second, schema=RAW_SPEC.schema)}, versions={0: 6}
    )

    table = DeltaTable(uri)
    assert table.version() == changed + 1
    root = data_dir / "tables" / RAW_EVENTS
    fallback = commit_lines(root, changed + 1)
    assert fallback[0]["commitInfo"]["engineInfo"].startswith("delta-rs")
    # An append: the metadata the other writer set is not rewritten.
    assert not [line for line in fallback if "metaData" in line or "protocol" in line]
    assert table.transaction_version(app_id(0)) == 6
    assert table.metadata().configuration.get("delta.logRetentionDuration") == "interval 60 days"
    assert read_raw(data_dir) == first + second

    writer.append_all(
        {RAW_EVENTS: pa.Table.from_pylist(third, schema=RAW_SPEC.schema)}, versions={0: 8}
    )

    table = DeltaTable(uri)
    assert table.version() == changed + 2
    assert table.transaction_version(app_id(0)) == 8
    assert read_raw(data_dir) == first + second + third
    # Back on the direct path: the last commit was written by ciolake, not delta-rs.
    info = commit_lines(root, changed + 2)[0]["commitInfo"]
    assert info["engineInfo"].startswith("ciolake/")
    assert staged_files(root) == []


# --- Checkpoints ---------------------------------------------------------------------------------


def test_a_checkpoint_is_written_every_interval_and_readers_use_it(
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    make_table: TableFactory,
    make_rows: RowsFactory,
    make_files: FilesFactory,
) -> None:
    monkeypatch.setattr(ciolake.lake.log, "CHECKPOINT_INTERVAL", 3)
    root = make_table()
    log = LocalDeltaLog(root, version=0)
    batches = [make_rows(1 + 3 * i, 3) for i in range(6)]

    versions = [
        append(log, make_files(root, rows), journal_version=3 * (i + 1))
        for i, rows in enumerate(batches)
    ]

    assert versions == [1, 2, 3, 4, 5, 6]
    log_dir = root / "_delta_log"
    offset = zlib.crc32(root.name.encode()) % 3
    expected = [v for v in versions if v % 3 == offset]
    assert len(expected) == 2
    assert sorted(p.name for p in log_dir.glob("*.checkpoint.parquet")) == [
        f"{v:020d}.checkpoint.parquet" for v in expected
    ]
    last = expected[-1]
    assert json.loads((log_dir / "_last_checkpoint").read_text())["version"] == last
    everything = [row for rows in batches for row in rows]
    assert read_rows(data_dir) == everything

    # The checkpoint alone holds the table up to its version: drop the JSON up to it.
    copy_dir = data_dir.parent / "copy"
    shutil.copytree(data_dir, copy_dir)
    for version in range(last + 1):
        (copy_dir / "tables" / TABLE / "_delta_log" / f"{version:020d}.json").unlink()
    assert read_rows(copy_dir) == everything
    copy = DeltaTable(str(copy_dir / "tables" / TABLE))
    assert copy.version() == 6
    assert copy.transaction_version(JOURNAL) == 18


def test_tables_checkpoint_at_different_versions(tmp_path: Path) -> None:
    # The server commits to every table in each batch: a shared offset would make them all
    # load their state and checkpoint in the same batch.
    due = {
        name: [v for v in range(1, 1 + CHECKPOINT_INTERVAL) if checkpoint_due(tmp_path / name, v)]
        for name in ALL_SPECS
    }
    assert all(len(versions) == 1 for versions in due.values())
    offsets = Counter(versions[0] for versions in due.values())
    assert max(offsets.values()) <= 2
