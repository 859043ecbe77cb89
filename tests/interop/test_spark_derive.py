"""Spark runs ciolake's derivation: the same rows as the committer's Python, column for column.

The corpus (tests/quirks.py) holds every spec schema and every quirk the decoder tests know;
the DuckDB run of it is in tests/derive/test_engines.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from ciolake.derive import python
from ciolake.derive.spark import derive_frames
from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES, QUARANTINE, RAW_SPEC
from tests.quirks import KNOWN_DIFFERENCES, TOLERANCE_S, corpus, known_difference

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark

Rows = dict[tuple[int, int], dict[str, Any]]


def plain(value: Any) -> Any:
    """A cell comparable across engines: maps as dicts (their order is no part of a map)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return dict(value)
    return value


def keyed(table: pa.Table) -> Rows:
    found: Rows = {}
    for row in table.to_pylist():
        key = (row["journal_stream"], row["journal_lsn"])
        assert key not in found, f"delivery {key} derived twice"
        found[key] = {name: plain(value) for name, value in row.items()}
    return found


def spark_derive(spark: SparkSession, raw: pa.Table) -> dict[str, pa.Table]:
    frame = spark.createDataFrame(raw.cast(RAW_SPEC.schema))
    frames = derive_frames(spark, frame, tolerance_s=TOLERANCE_S)
    return {name: f.toArrow().cast(ALL_SPECS[name].schema) for name, f in frames.items()}


def differences(expected: dict[str, pa.Table], actual: dict[str, pa.Table]) -> list[str]:
    found = []
    for name in (*CHANNEL_TABLES, QUARANTINE):
        want, got = keyed(expected[name]), keyed(actual[name])
        for key in want.keys() ^ got.keys():
            found.append(f"{name} {key}: only in {'python' if key in want else 'spark'}")
        for key in want.keys() & got.keys():
            for column, value in want[key].items():
                if got[key][column] != value:
                    found.append(f"{name} {key} {column}: {value!r} != {got[key][column]!r}")
    return found


def test_spark_derives_the_corpus_as_python_does(spark: SparkSession) -> None:
    raw = corpus()
    expected = python.derive_rows(raw, tolerance_s=TOLERANCE_S)
    assert differences(expected, spark_derive(spark, raw)) == []


def test_the_known_differences_are_only_where_sparks_parser_differs(spark: SparkSession) -> None:
    # Pinned so that a change in either parser is noticed (docs/reference.md lists them).
    for name in KNOWN_DIFFERENCES:
        raw = known_difference(name)
        expected = python.derive_rows(raw, tolerance_s=TOLERANCE_S)
        found = differences(expected, spark_derive(spark, raw))
        differs = name in ("content after the value", "number beyond a double")
        assert bool(found) == differs, (name, found)
