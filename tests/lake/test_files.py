"""Parquet files written by pyarrow and committed to Delta: layout, statistics, and readback.

Readback goes through DuckDB's delta extension (delta-kernel), an independent reader, so these
tests check what a Delta reader sees rather than what our writer believes it wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.transaction import AddAction

from ciolake.lake.files import DataFile, file_stats, write_files
from ciolake.lake.storage import LocalStorage
from ciolake.lake.tables import RAW_EVENTS, RAW_SPEC
from ciolake.lake.writer import app_id
from tests.lake.conftest import WriterFactory, raw_event_row
from tests.support import delta_reader, table_rows

UTC = dt.UTC
DAY_ONE = dt.date(2024, 5, 1)
DAY_TWO = dt.date(2024, 5, 2)

RowsFactory = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def make_raw_rows() -> RowsFactory:
    """``raw_events`` rows built by hand, one per ``(received_at, received_date)`` given."""

    def make(
        moments: list[tuple[dt.datetime, dt.date | None]], *, first_lsn: int = 1
    ) -> list[dict[str, Any]]:
        rows = []
        for offset, (received_at, received_date) in enumerate(moments):
            lsn = first_lsn + offset
            metric = "delivered" if lsn % 2 else "opened"
            rows.append(raw_event_row(lsn, received_at, received_date, metric=metric))
        return rows

    return make


def as_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_SPEC.schema)


def read_raw(data_dir: Path, where: str = "") -> list[dict[str, Any]]:
    """``raw_events`` as DuckDB reads it, ordered by journal position."""
    return sorted(
        table_rows(data_dir, RAW_EVENTS, where=where),
        key=lambda row: (row["journal_stream"], row["journal_lsn"]),
    )


def two_days(count: int) -> list[tuple[dt.datetime, dt.date | None]]:
    """``count`` arrival moments alternating between two dates, with microsecond parts."""
    moments: list[tuple[dt.datetime, dt.date | None]] = []
    for i in range(count):
        day = DAY_ONE if i % 2 == 0 else DAY_TWO
        at = dt.datetime(day.year, day.month, day.day, 10, i, 0, 123_457 + i, tzinfo=UTC)
        moments.append((at, day))
    return moments


def adds(files: list[DataFile]) -> list[AddAction]:
    return [data_file.add_action() for data_file in files]


# --- Through DeltaWriter, read back by DuckDB ----------------------------------------------


def test_append_reads_back_exactly_the_rows_with_their_partition_values(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    rows = make_raw_rows(two_days(6))
    writer = make_writer()

    writer.append_all({RAW_EVENTS: as_table(rows)}, versions={0: 7})

    assert read_raw(data_dir) == rows
    by_date: dict[dt.date, list[int]] = {}
    for row in read_raw(data_dir):
        by_date.setdefault(row["received_date"], []).append(row["journal_lsn"])
    assert by_date == {DAY_ONE: [1, 3, 5], DAY_TWO: [2, 4, 6]}
    assert DeltaTable(writer.table_uri(RAW_EVENTS)).transaction_version(app_id(0)) == 7


def test_append_writes_one_hive_directory_per_date_without_the_partition_column(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    make_writer().append_all({RAW_EVENTS: as_table(make_raw_rows(two_days(4)))}, versions={0: 4})

    table_root = data_dir / "tables" / RAW_EVENTS
    data_files = sorted(table_root.rglob("*.parquet"))
    assert sorted(path.parent.name for path in data_files) == [
        "received_date=2024-05-01",
        "received_date=2024-05-02",
    ]
    expected = [name for name in RAW_SPEC.schema.names if name != "received_date"]
    for path in data_files:
        schema = pq.read_schema(path)
        assert "received_date" not in schema.names
        assert schema.names == expected
        assert schema.field("received_at").type == pa.timestamp("us", tz="UTC")


def test_two_appends_make_two_versions_holding_the_union_of_rows(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    first = make_raw_rows(two_days(3), first_lsn=1)
    second = make_raw_rows(two_days(4), first_lsn=4)
    writer = make_writer()
    uri = writer.table_uri(RAW_EVENTS)
    created = DeltaTable(uri).version()

    writer.append_all({RAW_EVENTS: as_table(first)}, versions={0: 3})
    writer.append_all({RAW_EVENTS: as_table(second)}, versions={0: 7})

    table = DeltaTable(uri)
    assert table.version() == created + 2
    assert [entry["operation"] for entry in table.history(2)] == ["WRITE", "WRITE"]
    assert len(DeltaTable(uri, version=created + 1).file_uris()) == 2
    assert read_raw(data_dir) == first + second
    assert table.transaction_version(app_id(0)) == 7
    # Each append wrote one file per date: two appends, two dates, four files.
    assert len(table.file_uris()) == 4


def test_rows_with_a_null_partition_value_read_back_as_null(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    at = dt.datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    rows = make_raw_rows([(at, DAY_ONE), (at, None), (at, None)])

    make_writer().append_all({RAW_EVENTS: as_table(rows)}, versions={0: 3})

    assert read_raw(data_dir) == rows
    assert (data_dir / "tables" / RAW_EVENTS / "received_date=__HIVE_DEFAULT_PARTITION__").is_dir()


# --- Data skipping on the statistics ------------------------------------------------------


def skipping_rows(make_raw_rows: RowsFactory) -> list[dict[str, Any]]:
    """One file whose timestamps have sub-millisecond parts at both ends."""
    low = dt.datetime(2024, 5, 1, 12, 0, 0, 200, tzinfo=UTC)
    high = dt.datetime(2024, 5, 1, 12, 0, 0, 700, tzinfo=UTC)
    return make_raw_rows([(low, DAY_ONE), (high, DAY_ONE)])


def scanned_files(data_dir: Path, where: str) -> tuple[int, int]:
    """DuckDB's (files scanned, files in the table) for a filtered scan of ``raw_events``."""
    path = data_dir / "tables" / RAW_EVENTS
    query = f"EXPLAIN ANALYZE SELECT count(*) FROM delta_scan('{path}') {where}"
    plan = delta_reader().execute(query).fetchall()[0][1]
    found = re.search(r"Scanning Files: (\d+)/(\d+)", plan)
    assert found is not None, plan
    return int(found[1]), int(found[2])


def test_filters_at_the_sub_millisecond_bounds_still_find_the_rows(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    rows = skipping_rows(make_raw_rows)
    # Too long for bounds: the file has a null count for it but no min or max.
    long_body = '{"payload": "' + "z" * 60 + '"}'
    rows[1]["body"] = long_body
    make_writer().append_all({RAW_EVENTS: as_table(rows)}, versions={0: 2})

    at_max = read_raw(data_dir, "WHERE received_at >= TIMESTAMPTZ '2024-05-01 12:00:00.0007+00'")
    at_min = read_raw(data_dir, "WHERE received_at <= TIMESTAMPTZ '2024-05-01 12:00:00.0002+00'")
    lsn_max = read_raw(data_dir, "WHERE journal_lsn >= 2")
    id_max = read_raw(data_dir, f"WHERE event_id >= '{rows[1]['event_id']}'")
    body_max = read_raw(data_dir, f"WHERE body >= '{long_body}'")

    assert at_max == [rows[1]]
    assert at_min == [rows[0]]
    assert lsn_max == [rows[1]]
    assert id_max == [rows[1]]
    assert body_max == [rows[1]]


def test_the_logged_timestamp_bounds_enclose_the_sub_millisecond_values(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    """Read from the log's JSON, not from delta-rs.

    DuckDB 1.4.4's delta_scan does not prune files on timestamp statistics (it scans the file
    even for a filter past the bounds), so the readback above cannot see a bad bound; this does.
    """
    rows = skipping_rows(make_raw_rows)
    make_writer().append_all({RAW_EVENTS: as_table(rows)}, versions={0: 2})

    log = data_dir / "tables" / RAW_EVENTS / "_delta_log" / f"{1:020d}.json"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    (stats,) = [json.loads(entry["add"]["stats"]) for entry in entries if "add" in entry]
    low, high = stats["minValues"]["received_at"], stats["maxValues"]["received_at"]

    assert (low, high) == ("2024-05-01T12:00:00.000Z", "2024-05-01T12:00:00.001Z")
    assert dt.datetime.fromisoformat(low) <= rows[0]["received_at"]
    assert dt.datetime.fromisoformat(high) >= rows[1]["received_at"]
    assert stats["numRecords"] == 2
    assert "received_date" not in stats["nullCount"]


def test_duckdb_skips_files_using_the_written_statistics(
    data_dir: Path, make_writer: WriterFactory, make_raw_rows: RowsFactory
) -> None:
    """The statistics are well-formed enough for a Delta reader to prune on them."""
    make_writer().append_all({RAW_EVENTS: as_table(skipping_rows(make_raw_rows))}, versions={0: 2})

    assert scanned_files(data_dir, "WHERE journal_lsn >= 2") == (1, 1)
    assert scanned_files(data_dir, "WHERE journal_lsn > 2") == (0, 1)
    assert scanned_files(data_dir, "WHERE event_id > '01HZEVENT9'") == (0, 1)
    assert scanned_files(data_dir, "WHERE body_base64 = 'x'") == (0, 1)


# --- write_files directly -------------------------------------------------------------------


def test_null_partition_values_go_to_the_hive_default_directory(tmp_path: Path) -> None:
    rows = pa.table(
        {
            "bucket": pa.array([dt.date(2024, 1, 2), None, dt.date(2024, 1, 2), None], pa.date32()),
            "n": pa.array([1, 2, 3, 4], pa.int64()),
        }
    )

    actions = adds(
        write_files(LocalStorage(tmp_path), rows, partition_by="bucket", now=1_700_000_000.25)
    )

    by_value = {action.partition_values["bucket"]: action for action in actions}
    assert set(by_value) == {"2024-01-02", None}
    null_add = by_value[None]
    assert null_add.path.startswith("bucket=__HIVE_DEFAULT_PARTITION__/")
    assert by_value["2024-01-02"].path.startswith("bucket=2024-01-02/")
    written = pq.read_table(tmp_path / null_add.path)
    assert written.column_names == ["n"]
    assert written.column("n").to_pylist() == [2, 4]
    assert json.loads(null_add.stats)["numRecords"] == 2
    for action in actions:
        assert action.size == (tmp_path / action.path).stat().st_size
        assert action.modification_time == 1_700_000_000_250
        assert action.data_change is True


def test_a_partition_column_that_is_all_null_gets_one_default_file(tmp_path: Path) -> None:
    rows = pa.table(
        {"bucket": pa.array([None, None], pa.date32()), "n": pa.array([1, 2], pa.int64())}
    )

    (action,) = adds(write_files(LocalStorage(tmp_path), rows, partition_by="bucket"))

    assert action.partition_values == {"bucket": None}
    assert action.path.startswith("bucket=__HIVE_DEFAULT_PARTITION__/")
    assert pq.read_table(tmp_path / action.path).to_pylist() == [{"n": 1}, {"n": 2}]


# --- file_stats -----------------------------------------------------------------------------


@pytest.fixture
def make_stats_table() -> Callable[[], pa.Table]:
    """A small table with one column of each kind the statistics treat differently."""

    def make() -> pa.Table:
        return pa.table(
            {
                "count": pa.array([5, None, -3, 12], pa.int64()),
                "day": pa.array(
                    [dt.date(2024, 3, 9), dt.date(2023, 12, 31), None, dt.date(2024, 1, 1)],
                    pa.date32(),
                ),
                "at": pa.array([1_500, 2_500, None, 2_000], pa.timestamp("us", tz="UTC")),
                "short": pa.array(["pear", "apple", "zucchini", None], pa.string()),
                "long": pa.array(["a", "b" * 40, None, "a"], pa.string()),
                "flag": pa.array([True, False, None, True], pa.bool_()),
                "empty": pa.array([None, None, None, None], pa.string()),
                "tags": pa.array([["x"], None, [], ["y", "z"]], pa.list_(pa.string())),
            }
        )

    return make


def test_file_stats_counts_rows_and_nulls(make_stats_table: Callable[[], pa.Table]) -> None:
    stats = file_stats(make_stats_table())

    assert stats["numRecords"] == 4
    assert stats["nullCount"] == {
        "count": 1,
        "day": 1,
        "at": 1,
        "short": 1,
        "long": 1,
        "flag": 1,
        "empty": 4,
    }


def test_file_stats_bounds(make_stats_table: Callable[[], pa.Table]) -> None:
    stats = file_stats(make_stats_table())

    assert stats["minValues"] == {
        "count": -3,
        "day": "2023-12-31",
        "at": "1970-01-01T00:00:00.001Z",
        "short": "apple",
    }
    assert stats["maxValues"] == {
        "count": 12,
        "day": "2024-03-09",
        "at": "1970-01-01T00:00:00.003Z",
        "short": "zucchini",
    }
    # The stats are what goes into the log as JSON.
    assert json.loads(json.dumps(stats)) == stats


@pytest.mark.parametrize(
    ("unit", "values", "low", "high"),
    [
        ("s", [3, 61], "1970-01-01T00:00:03.000Z", "1970-01-01T00:01:01.000Z"),
        ("ms", [1_001, 1_999], "1970-01-01T00:00:01.001Z", "1970-01-01T00:00:01.999Z"),
        ("us", [1_000, 3_000], "1970-01-01T00:00:00.001Z", "1970-01-01T00:00:00.003Z"),
        ("us", [-2_500, -1_500], "1969-12-31T23:59:59.997Z", "1969-12-31T23:59:59.999Z"),
        ("ns", [1_000_001, 2_999_999], "1970-01-01T00:00:00.001Z", "1970-01-01T00:00:00.003Z"),
    ],
)
def test_timestamp_bounds_round_outward_to_milliseconds(
    unit: str, values: list[int], low: str, high: str
) -> None:
    data = pa.table({"at": pa.array(values, pa.timestamp(unit, tz="UTC"))})

    stats = file_stats(data)

    assert (stats["minValues"]["at"], stats["maxValues"]["at"]) == (low, high)


def test_string_bounds_up_to_32_characters_are_kept() -> None:
    data = pa.table({"s": pa.array(["m" * 32, "a"], pa.string())})

    stats = file_stats(data)

    assert (stats["minValues"]["s"], stats["maxValues"]["s"]) == ("a", "m" * 32)


def test_a_long_minimum_string_also_drops_the_bounds() -> None:
    data = pa.table({"s": pa.array(["a" * 33, "b"], pa.large_string())})

    stats = file_stats(data)

    assert "s" not in stats["minValues"]
    assert "s" not in stats["maxValues"]
    assert stats["nullCount"] == {"s": 0}


def test_only_the_first_32_columns_get_statistics() -> None:
    data = pa.table({f"c{i:02d}": pa.array([i, i + 1], pa.int64()) for i in range(40)})

    stats = file_stats(data)

    first = [f"c{i:02d}" for i in range(32)]
    assert list(stats["nullCount"]) == first
    assert list(stats["minValues"]) == first
    assert list(stats["maxValues"]) == first
    assert stats["minValues"]["c31"] == 31
    assert stats["maxValues"]["c31"] == 32


def test_nested_columns_count_towards_the_32_but_get_no_statistics() -> None:
    columns: dict[str, pa.Array] = {"tags": pa.array([["a"], None], pa.list_(pa.string()))}
    columns |= {f"c{i:02d}": pa.array([i, None], pa.int64()) for i in range(1, 40)}
    data = pa.table(columns)

    stats = file_stats(data)

    assert list(stats["nullCount"]) == [f"c{i:02d}" for i in range(1, 32)]
    assert "c32" not in stats["maxValues"]
