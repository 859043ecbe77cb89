"""`ciolake databricks setup` against a fake workspace (tests/fakes/databricks.py): OAuth for a
service principal and the SQL Statement Execution API over a real socket, the statements run
by a local Spark session standing in for the SQL warehouse (its catalog, ``spark_catalog``,
for Unity Catalog's)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from ciolake.analytics.views import view_names
from ciolake.databricks.zerobus import json_records
from ciolake.derive.spark import external_table_ddl
from ciolake.lake.tables import ALL_SPECS
from tests.fakes.databricks import FakeWorkspace, fake_workspace, spark_warehouse
from tests.support import make_bodies, make_settings, receive

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark

CATALOG = "spark_catalog"
SCHEMA = "ciolake_uc"


@pytest.fixture
def workspace(spark: SparkSession) -> Iterator[FakeWorkspace]:
    with fake_workspace(spark_warehouse(spark)) as fake:
        yield fake
    spark.sql(f"DROP SCHEMA IF EXISTS {CATALOG}.{SCHEMA} CASCADE")


def run_setup(
    workspace: FakeWorkspace, location: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ciolake", "databricks", "setup", "--catalog", CATALOG]
    command += ["--schema", SCHEMA, "--location", str(location), *args]
    environment = {
        **os.environ,
        "DATABRICKS_HOST": workspace.url,
        "DATABRICKS_CLIENT_ID": workspace.client_id,
        "DATABRICKS_CLIENT_SECRET": workspace.client_secret,
        "DATABRICKS_WAREHOUSE_ID": workspace.warehouse_id,
        **env,
    }
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def test_setup_creates_the_tables_and_views_once_and_ciolake_writes_them(
    spark: SparkSession, workspace: FakeWorkspace, tmp_path: Path
) -> None:
    location = tmp_path / "lake"
    first = run_setup(workspace, location, "--zerobus-table", "raw_events_zerobus")
    assert first.returncode == 0, first.stderr
    assert workspace.tokens_issued >= 1
    created = [
        s
        for s in workspace.statements
        if s.startswith("CREATE TABLE IF NOT EXISTS") and "raw_events_zerobus" not in s
    ]
    assert len(created) == len(ALL_SPECS)
    assert all("'delta.enableDeletionVectors' = 'false'" in s for s in created)
    for name in ALL_SPECS:
        assert f"{CATALOG}.{SCHEMA}.{name}" in first.stdout
        assert (location / name / "_delta_log").is_dir()
    assert first.stdout.count("created") == len(ALL_SPECS)
    assert first.stdout.count("replaced") == len(view_names())

    # ciolake's writer takes the tables Spark created as its own, and Spark reads its rows.
    settings = make_settings(tmp_path / "ciolake", tables_uri=str(location))
    receive(settings, [(body, False) for body in make_bodies(40, seed=8)])
    channel = sum(
        spark.sql(f"SELECT * FROM {CATALOG}.{SCHEMA}.{name}").count()
        for name in ALL_SPECS
        if name.endswith("_events") and name != "raw_events"
    )
    assert channel == 40
    views = spark.sql(f"SHOW VIEWS IN {CATALOG}.{SCHEMA}").collect()
    # SHOW VIEWS lists the session's temporary views too (other tests' in this process).
    assert {r["viewName"] for r in views if not r["isTemporary"]} == set(view_names())
    assert_zerobus_records_are_the_raw_events_rows(spark, "raw_events_zerobus")

    # Again: every table checked, none created, the views replaced.
    before = len(workspace.statements)
    again = run_setup(workspace, location)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("checked") == len(ALL_SPECS)
    assert not any(s.startswith("CREATE TABLE") for s in workspace.statements[before:])


def test_a_table_delta_rs_cannot_write_stops_the_setup_with_the_fix(
    spark: SparkSession, workspace: FakeWorkspace, tmp_path: Path
) -> None:
    location = tmp_path / "lake"
    # One table there already, as a setup (or a user) made it; then deletion vectors turned on.
    quarantine = f"{CATALOG}.{SCHEMA}.quarantine"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{SCHEMA}")
    spark.sql(
        external_table_ddl(
            ALL_SPECS["quarantine"], name=quarantine, location=str(location / "quarantine")
        )
    )
    spark.sql(
        f"ALTER TABLE {quarantine} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    refused = run_setup(workspace, location)
    assert refused.returncode == 1, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, refused.stderr
    assert f"{CATALOG}.{SCHEMA}.quarantine has features delta-rs cannot write" in errors[0]
    assert "SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'false')" in errors[0]
    assert "DROP FEATURE deletionVectors" in errors[0]

    elsewhere = run_setup(workspace, tmp_path / "other")
    assert elsewhere.returncode == 1
    assert "is at " in elsewhere.stderr
    assert "nothing was created" in elsewhere.stderr
    assert not (tmp_path / "other").exists()
    tables = spark.sql(f"SHOW TABLES IN {CATALOG}.{SCHEMA}").collect()
    made = [row["tableName"] for row in tables if not row["isTemporary"]]
    assert made == ["quarantine"], "the refused setups made nothing"


def test_wrong_credentials_and_missing_settings_are_one_line(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    wrong = run_setup(workspace, tmp_path / "lake", DATABRICKS_CLIENT_SECRET="not-the-secret")
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: cannot use the Databricks")
    assert "Traceback" not in wrong.stderr
    assert workspace.statements == []
    missing = run_setup(workspace, tmp_path / "lake", DATABRICKS_WAREHOUSE_ID="")
    assert missing.returncode == 2
    assert "needs --warehouse-id or DATABRICKS_WAREHOUSE_ID" in missing.stderr


def assert_zerobus_records_are_the_raw_events_rows(spark: SparkSession, table: str) -> None:
    """The managed table ``setup --zerobus-table`` made has raw_events' columns, and ciolake's
    records, as Zerobus maps them (microseconds to TIMESTAMP, days to DATE), land in it as
    the rows ciolake wrote to raw_events itself."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql import types as T  # noqa: N812

    managed = f"{CATALOG}.{SCHEMA}.{table}"
    raw = f"{CATALOG}.{SCHEMA}.raw_events"
    assert spark.table(managed).schema == spark.table(raw).schema
    assert spark.sql(f"DESCRIBE DETAIL {managed}").collect()[0]["partitionColumns"] == []
    written = pa.table(spark.table(raw).toArrow()).cast(ALL_SPECS["raw_events"].schema)
    records = spark.createDataFrame([(r,) for r in json_records(written)], "record string")
    as_sent = {"timestamp": T.LongType(), "date": T.IntegerType()}
    schema = T.StructType(
        [
            T.StructField(f.name, as_sent.get(f.dataType.typeName(), f.dataType))
            for f in spark.table(managed).schema
        ]
    )
    landed = records.select(F.from_json("record", schema).alias("r")).select("r.*")
    landed = landed.withColumn("received_at", F.timestamp_micros("received_at"))
    landed = landed.withColumn("received_date", F.date_from_unix_date("received_date"))
    landed.select(*spark.table(managed).columns).write.insertInto(managed)
    ordered = "ORDER BY journal_stream, journal_lsn"
    assert (
        spark.sql(f"SELECT * FROM {managed} {ordered}").collect()
        == spark.sql(f"SELECT * FROM {raw} {ordered}").collect()
    )
