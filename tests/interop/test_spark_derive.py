"""Spark runs ciolake's derivation: the same rows as the committer's Python, column for column.

The corpus (tests/quirks.py) holds every spec schema and every quirk the decoder tests know;
the DuckDB run of it is in tests/derive/test_engines.py.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ciolake.derive import python
from ciolake.derive.spark import derive_frames
from ciolake.derive.spark_job import ensure_targets, main, run_derive
from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES, QUARANTINE, RAW_SPEC
from ciolake.lake.writer import DeltaWriter
from tests.quirks import (
    BAD_BODIES,
    TOLERANCE_S,
    Rows,
    corpus_and_differences,
    differences,
    keyed,
)
from tests.support import make_bodies, make_settings, receive, table_rows

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark


def spark_derive(spark: SparkSession, raw: pa.Table) -> dict[str, pa.Table]:
    frame = spark.createDataFrame(raw.cast(RAW_SPEC.schema))
    frames = derive_frames(spark, frame, tolerance_s=TOLERANCE_S)
    return {name: f.toArrow().cast(ALL_SPECS[name].schema) for name, f in frames.items()}


def test_spark_derives_the_corpus_as_python_does_but_where_its_parser_differs(
    spark: SparkSession,
) -> None:
    raw, known = corpus_and_differences()
    expected = python.derive_rows(raw, tolerance_s=TOLERANCE_S)
    found = differences(expected, spark_derive(spark, raw), engine="spark")
    # Pinned so that a change in either parser is noticed (docs/reference.md lists them).
    differing = {known[int(re.search(r"\(\d+, (\d+)\)", f)[1])] for f in found}  # type: ignore[index]
    assert differing == {"content after the value", "number beyond a double"}, found


def landed_rows(root: Path) -> dict[str, Rows]:
    """Every channel table and the quarantine under ``root / "tables"``, read by DuckDB."""
    return {
        name: keyed(pa.Table.from_pylist(table_rows(root, name)))
        for name in (*CHANNEL_TABLES, QUARANTINE)
    }


def versions(root: Path) -> dict[str, int]:
    return {
        name: len(list((root / "tables" / name / "_delta_log").glob("*.json")))
        for name in (*CHANNEL_TABLES, QUARANTINE)
    }


def test_the_spark_job_derives_what_the_committer_landed_exactly_once(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "ciolake")
    first = make_bodies(240, seed=5)
    odd = [json.dumps({**json.loads(first[0]), "event_id": "odd", "timestamp": "x"}).encode()]
    receive(
        settings,
        [(b, False) for b in [*first, *first[:30], *BAD_BODIES, *odd]]
        + [(b, True) for b in make_bodies(12, seed=6)],
    )
    derived = tmp_path / "spark"
    raw_events = settings.data_dir / "tables" / "raw_events"
    derive = functools.partial(
        run_derive,
        spark,
        tables_uri=str(derived / "tables"),
        raw_events=str(raw_events),
        checkpoint=str(tmp_path / "checkpoint"),
        tolerance_s=settings.timestamp_tolerance_s,
    )
    result = derive()
    assert result.deliveries == 240 + 30 + len(BAD_BODIES) + 1 + 12
    landed = landed_rows(settings.data_dir)
    # One of the bad bodies is a valid event in whitespace; the odd one is quarantined.
    assert sum(len(landed[name]) for name in CHANNEL_TABLES) == 240 + 1
    assert len(landed[QUARANTINE]) == len(BAD_BODIES) - 1 + 1 + 12
    assert landed_rows(derived) == landed

    # More deliveries, some of them events derived already: each event still once.
    receive(settings, [(b, False) for b in [*make_bodies(60, seed=7), *first[100:140]]])
    assert derive().deliveries == 100
    assert landed_rows(derived) == landed_rows(settings.data_dir)

    # Nothing new, through the command line (the test's session is the active one): no
    # micro-batch, no commit.
    before = versions(derived)
    args = ["derive", "--tables-uri", str(derived / "tables"), "--checkpoint"]
    args += [str(tmp_path / "checkpoint"), "--raw-events", str(raw_events)]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "derived 0 deliveries in 0 micro-batches"
    assert versions(derived) == before

    # The tables Spark created stay writable by ciolake (delta-rs refuses what it cannot honour).
    writer = DeltaWriter(str(derived / "tables"))
    try:
        writer.ensure_tables()
    finally:
        writer.close()


def test_a_missing_raw_events_is_one_line_and_exit_1(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "raw_events"
    args = ["derive", "--tables-uri", str(tmp_path / "tables"), "--raw-events", str(missing)]
    assert main(args) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot derive from ")
    assert "\n" not in error
    assert str(missing) in error
    assert not (tmp_path / "tables").exists()


def test_the_job_adds_the_columns_a_table_from_an_older_ciolake_lacks(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    receive(settings, [(body, False) for body in make_bodies(40, seed=5)])
    tables = settings.data_dir / "tables"
    email = str(tables / "email_events")
    rows = DeltaTable(email).to_pyarrow_table().drop_columns(["source"])
    write_deltalake(
        email, rows, mode="overwrite", schema_mode="overwrite", partition_by=["event_date"]
    )
    ensure_targets(spark, str(tables))
    assert DeltaTable(email).schema().to_arrow().names[-1] == "source"
    read = spark.read.format("delta").load(email).select("event_id", "source").collect()
    assert len(read) == rows.num_rows
    assert {row["source"] for row in read} == {None}
