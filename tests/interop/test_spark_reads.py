"""Spark (delta-spark, the reference Delta implementation) reads every ciolake table as DuckDB's
delta extension does: the same rows, and TIMESTAMP and DATE where the tables say so.

The data is real: a simulated two-day history (every channel, duplicates, late and quarantined
deliveries) landed through the embedded receiver; those days compacted into files of 16-row
row groups, checkpointed and vacuumed; then one body of each of the 69 schemas landed later,
uncompacted. So Spark replays a checkpoint and the commits after it, with adds and removes.
The same history lands on the S3 test server too, where Spark reads through its s3a
filesystem and DuckDB through httpfs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from ciolake.lake import maintenance
from ciolake.lake.tables import ALL_SPECS
from ciolake.settings import Settings
from ciolake.simulate import simulator as simulate
from tests.spark_session import s3a_uri, spark_rows
from tests.support import (
    NOW,
    S3Server,
    delta_reader,
    make_settings,
    receive_at,
    s3_env,
    s3_reader,
    s3_server,
    sample_bodies,
    table_rows,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark

TABLES = list(ALL_SPECS)
ORDER = ("journal_stream", "journal_lsn")
"""Unique in every table: one order for both readers."""
SIMULATED = simulate.SimulationConfig(start=date(2026, 9, 1), days=2, deliveries=10, seed=7)
COMPACT_BEFORE = date(2026, 9, 10)
"""After the simulated days (receipts up to two days late), before ``NOW``'s day."""

_DUCK_SCALARS = {
    "VARCHAR": "string",
    "BIGINT": "bigint",
    "INTEGER": "int",
    "BOOLEAN": "boolean",
    "DOUBLE": "double",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP": "timestamp_ntz",
}


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A data directory with every table holding rows, landed by ciolake's own code."""
    settings = make_settings(tmp_path_factory.mktemp("interop"))
    land_history(settings)
    return settings


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Server, Settings]]:
    """The same history, its tables on the S3 test server."""
    with s3_server(bucket="spark-reads") as server, pytest.MonkeyPatch.context() as patch:
        for name, value in s3_env(server.endpoint).items():
            patch.setenv(name, value)
        settings = make_settings(
            tmp_path_factory.mktemp("interop-s3"), tables_uri=f"s3://{server.bucket}/tables"
        )
        land_history(settings)
        yield server, settings


def land_history(settings: Settings) -> None:
    """Simulated days, compacted into 16-row row groups, then one body of every schema."""
    simulate.run(SIMULATED, settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(maintenance, "ROW_GROUP_ROWS", 16)
        maintenance.compact_all(
            settings.tables_location, tables=None, before=COMPACT_BEFORE, retention_hours=0
        )
    receive_at(settings, sample_bodies(69, seed=11, timestamp=NOW), at=NOW + 5)


def table_path(settings: Settings, table: str) -> Path:
    return settings.data_dir / "tables" / table


@pytest.mark.parametrize("table", TABLES)
def test_spark_reads_the_rows_duckdb_reads(
    spark: SparkSession, landed: Settings, table: str
) -> None:
    where = f"ORDER BY {', '.join(ORDER)}"
    duck = table_rows(landed.data_dir, table, where=where)
    assert duck, f"{table} is empty: the test would compare nothing"
    rows = spark_rows(spark, table_path(landed, table), order_by=ORDER)

    assert len(rows) == len(duck)
    assert Counter(r["event_id"] for r in rows) == Counter(r["event_id"] for r in duck)
    assert list(rows[0]) == list(duck[0]), "the columns, in the same order"
    for spark_row, duck_row in zip(rows, duck, strict=True):
        assert spark_row == duck_row


@pytest.mark.parametrize("table", TABLES)
def test_spark_types_match_duckdb_and_the_spec(
    spark: SparkSession, landed: Settings, table: str
) -> None:
    path = table_path(landed, table)
    described = delta_reader().execute(f"DESCRIBE SELECT * FROM delta_scan('{path}')")
    duck_types = {name: spark_type(kind) for name, kind, *_ in described.fetchall()}
    spark_types = {
        field.name: field.dataType.simpleString()
        for field in spark.read.format("delta").load(str(path)).schema.fields
    }
    assert spark_types == duck_types

    spec = ALL_SPECS[table].schema
    timestamps = [f.name for f in spec if pa.types.is_timestamp(f.type)]
    dates = [f.name for f in spec if pa.types.is_date(f.type)]
    assert timestamps, f"{table} has no timestamp column"
    assert dates, f"{table} has no date column"
    assert {n: spark_types[n] for n in timestamps} == dict.fromkeys(timestamps, "timestamp")
    assert {n: spark_types[n] for n in dates} == dict.fromkeys(dates, "date")


@pytest.mark.parametrize("table", TABLES)
def test_spark_reads_the_rows_duckdb_reads_on_s3(
    spark: SparkSession, on_s3: tuple[S3Server, Settings], table: str
) -> None:
    server, settings = on_s3
    duck_reader = s3_reader(server)
    order = f"ORDER BY {', '.join(ORDER)}"
    cursor = duck_reader.execute(
        f"SELECT * FROM delta_scan('{settings.tables_location}/{table}') {order}"
    )
    names = [d[0] for d in cursor.description]
    duck = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    assert duck, f"{table} is empty on S3: the test would compare nothing"
    uri = s3a_uri(spark, server.endpoint, server.bucket, f"tables/{table}")

    rows = spark_rows(spark, uri, order_by=ORDER)

    assert list(rows[0]) == list(duck[0]), "the columns, in the same order"
    assert rows == duck
    described = duck_reader.execute(
        f"DESCRIBE SELECT * FROM delta_scan('{settings.tables_location}/{table}')"
    )
    duck_types = {name: spark_type(kind) for name, kind, *_ in described.fetchall()}
    schema = spark.read.format("delta").load(uri).schema
    assert {f.name: f.dataType.simpleString() for f in schema.fields} == duck_types


def spark_type(duck: str) -> str:
    """A DuckDB type as Spark's ``simpleString`` names it (the types ciolake writes)."""
    duck = duck.strip()
    if duck.endswith("[]"):
        return f"array<{spark_type(duck[:-2])}>"
    if duck.startswith("MAP(") and duck.endswith(")"):
        key, value = _top_level(duck[len("MAP(") : -1])
        return f"map<{spark_type(key)},{spark_type(value)}>"
    if duck.startswith("STRUCT(") and duck.endswith(")"):
        fields = []
        for item in _top_level(duck[len("STRUCT(") : -1]):
            name, kind = item.strip().split(" ", 1)
            fields.append(f"{name.strip(chr(34))}:{spark_type(kind)}")
        return f"struct<{','.join(fields)}>"
    return _DUCK_SCALARS[duck]


def _top_level(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def test_spark_type_names() -> None:
    """The translation the type test relies on."""
    cases: dict[str, Any] = {
        "TIMESTAMP WITH TIME ZONE": "timestamp",
        "VARCHAR[]": "array<string>",
        "MAP(VARCHAR, VARCHAR[])": "map<string,array<string>>",
        'STRUCT(device_id VARCHAR, "to" BIGINT)[]': "array<struct<device_id:string,to:bigint>>",
    }
    assert {duck: spark_type(duck) for duck in cases} == cases
