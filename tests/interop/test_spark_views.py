"""Every analytics view in Spark SQL (what ``ciolake views --dialect spark`` prints, transpiled
from DuckDB's dialect by sqlglot) returns the rows DuckDB's form returns, on a simulated history
with every channel, duplicates, late and quarantined deliveries."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from ciolake.analytics.views import duckdb_statements, spark_statements, view_names
from ciolake.settings import Settings
from ciolake.simulate import simulator as simulate
from tests.support import delta_reader, make_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark

SIMULATED = simulate.SimulationConfig(start=date(2026, 9, 1), days=3, deliveries=40, seed=17)
SCHEMA = "ciolake_views"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = make_settings(tmp_path_factory.mktemp("views"))
    simulate.run(SIMULATED, settings)
    return settings


@pytest.fixture(scope="module")
def spark_views(spark: SparkSession, history: Settings) -> SparkSession:
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {SCHEMA}")
    tables = str(history.data_dir / "tables")
    for statement in spark_statements(schema=SCHEMA, tables_uri=tables):
        spark.sql(statement)
    return spark


@pytest.fixture(scope="module")
def duck_views(history: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = delta_reader()
    for statement in duckdb_statements(history.tables_location):
        connection.execute(statement)
    yield connection
    connection.close()


def normal(value: Any) -> Any:
    """One form for a value whichever engine gave it: floats to 9 significant digits,
    timestamps in UTC, nested values as tuples."""
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, dt.datetime):
        # pyspark gives a naive datetime in the process's local time, DuckDB an aware one.
        return value.astimezone(dt.UTC)
    if isinstance(value, dict):
        return tuple(sorted((key, normal(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(normal(item) for item in value)
    return value


def duck_rows(connection: duckdb.DuckDBPyConnection, view: str) -> tuple[list[str], list[Any]]:
    cursor = connection.execute(f"SELECT * FROM {view}")
    names = [d[0] for d in cursor.description]
    return names, sorted((tuple(normal(v) for v in row) for row in cursor.fetchall()), key=repr)


def spark_view_rows(spark: SparkSession, view: str) -> tuple[list[str], list[Any]]:
    frame = spark.sql(f"SELECT * FROM {SCHEMA}.{view}")
    rows = [tuple(normal(v) for v in row) for row in frame.collect()]
    return frame.columns, sorted(rows, key=repr)


@pytest.mark.parametrize("view", view_names())
def test_the_spark_form_of_each_view_returns_duckdb_s_rows(
    view: str, spark_views: SparkSession, duck_views: duckdb.DuckDBPyConnection
) -> None:
    duck_names, expected = duck_rows(duck_views, view)
    spark_names, found = spark_view_rows(spark_views, view)

    assert spark_names == duck_names
    assert expected, f"{view} is empty on the simulated history: the test would prove nothing"
    assert found == expected
