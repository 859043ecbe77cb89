"""The Databricks bundle's jobs and queries on a local Spark session, over tables ciolake
received: the views job creates every view, every dashboard dataset runs and gives its widgets
their columns, each alert computes what ``ciolake check`` finds on the same tables at the same
time, and the maintenance job compacts and vacuums while ciolake keeps writing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from deltalake import DeltaTable

from ciolake.analytics.views import spark_statements, view_names
from ciolake.checks.rules import (
    NO_EVENTS,
    QUARANTINE_SHARE,
    VOLUME_DROP,
    Finding,
    Status,
    Thresholds,
    table_findings,
)
from ciolake.dashboard.app import Filters
from ciolake.dashboard.queries import QUERIES, LakeReader
from ciolake.dashboard.warehouse import WarehouseReader
from ciolake.databricks.workspace import connect
from ciolake.derive import spark_job
from ciolake.lake.tables import ALL_SPECS
from ciolake.settings import Settings
from tests.deploy.bundle import load_bundle, query_text, substitute, widgets
from tests.fakes.databricks import fake_workspace, spark_warehouse
from tests.support import (
    NOW,
    delta_reader,
    free_port,
    make_settings,
    receive_at,
    sample_bodies,
    wait_for,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark

CATALOG = "spark_catalog"
SCHEMA = "ciolake_bundle"
DAY = 86_400
# Four rounds of the 69 schemas: over 20 events of each channel a day, so every channel's volume
# is judged; the last hour gets one round (a drop of about 75 %) and bodies that are not JSON.
PER_DAY = 69 * 4
LAST_HOUR = 69
NOT_JSON = 9
_FIELD = re.compile(r"`([^`]+)`")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Seven days of the same hour, then a quieter last hour ending 20 minutes before NOW."""
    settings = make_settings(tmp_path_factory.mktemp("bundle"))
    for day in range(7, 0, -1):
        at = NOW - day * DAY - 600
        receive_at(settings, sample_bodies(PER_DAY, seed=day, timestamp=at), at=at)
    last = NOW - 20 * 60
    bad = [b'{"event_id": "not json %d"' % i for i in range(NOT_JSON)]
    receive_at(settings, [*sample_bodies(LAST_HOUR, seed=99, timestamp=last), *bad], at=last)
    return settings


@pytest.fixture(scope="module")
def catalog(spark: SparkSession, history: Settings) -> Iterator[SparkSession]:
    """ciolake's tables registered in a schema (as `ciolake databricks setup` does), then the
    bundle's views job run there."""
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{SCHEMA}")
    tables = str(history.data_dir / "tables")
    for statement in spark_statements(catalog=CATALOG, schema=SCHEMA, tables_uri=tables):
        if statement.startswith("CREATE TABLE"):
            spark.sql(statement)
    assert spark_job.main(["views", "--catalog", CATALOG, "--schema", SCHEMA]) == 0
    yield spark
    spark.sql(f"DROP SCHEMA IF EXISTS {CATALOG}.{SCHEMA} CASCADE")


def test_the_views_job_creates_every_view(catalog: SparkSession) -> None:
    views = catalog.sql(f"SHOW VIEWS IN {CATALOG}.{SCHEMA}").collect()
    # SHOW VIEWS lists the session's temporary views too (other tests' in this process).
    assert {r["viewName"] for r in views if not r["isTemporary"]} == set(view_names())


def test_every_dashboard_dataset_runs_and_has_its_widgets_columns(catalog: SparkSession) -> None:
    dashboard = load_bundle().dashboard()
    catalog.sql(f"USE {CATALOG}.{SCHEMA}")
    try:
        columns = {}
        for dataset in dashboard["datasets"]:
            frame = catalog.sql(query_text(dataset))
            rows = frame.collect()
            assert rows, f"dataset {dataset['name']} is empty on a history with every schema"
            assert any(v is not None for v in rows[0]), dataset["name"]
            columns[dataset["name"]] = set(frame.columns)
    finally:
        catalog.sql("USE default")
    for widget in widgets(dashboard):
        (query,) = widget["queries"]
        available = columns[query["query"]["datasetName"]]
        for field in query["query"]["fields"]:
            assert set(_FIELD.findall(field["expression"])) <= available, (widget["name"], field)


def alert_values(spark: SparkSession, now: float) -> dict[str, dict[str, Any] | None]:
    """Each alert's first row, its queries run as the warehouse would at ``now``."""
    bundle = load_bundle()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    found = {}
    for alert in bundle.of_kind("alerts"):
        sql = substitute(alert.body["query_text"], {"catalog": CATALOG, "schema": SCHEMA})
        assert "current_timestamp()" in sql
        rows = spark.sql(sql.replace("current_timestamp()", f"TIMESTAMP '{stamp}'")).collect()
        found[alert.key] = rows[0].asDict() if rows else None
    return found


def fired(alert: dict[str, Any] | None, column: str, threshold: float) -> bool:
    return alert is not None and alert[column] > threshold


def by_check(findings: list[Finding]) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.check, []).append(finding)
    return grouped


@pytest.mark.parametrize(
    ("now", "expect_fired"), [(NOW, True), (NOW - DAY, False)], ids=["quiet-hour", "usual-hour"]
)
def test_each_alert_computes_what_ciolake_check_finds(
    catalog: SparkSession, history: Settings, now: float, expect_fired: bool
) -> None:
    thresholds = Thresholds()
    checks = by_check(table_findings(str(history.data_dir / "tables"), thresholds, now=now))
    alerts = alert_values(catalog, now)

    (no_events,) = checks[NO_EVENTS]
    minutes = alerts["ciolake_no_events"]
    assert minutes is not None
    assert round(minutes["minutes_since_last_delivery"], 2) == no_events.value
    assert fired(minutes, "minutes_since_last_delivery", thresholds.no_events_minutes) == (
        no_events.status is Status.FIRED
    )

    (share,) = checks[QUARANTINE_SHARE]
    quarantine = alerts["ciolake_quarantine_share"]
    assert quarantine is not None
    assert round(quarantine["quarantined_percent"], 2) == (share.value or 0.0)
    assert fired(quarantine, "quarantined_percent", thresholds.quarantine_percent) == (
        share.status is Status.FIRED
    )

    judged = [f for f in checks[VOLUME_DROP] if f.value is not None]
    assert len(judged) == 7, "every channel has a baseline over 20"
    worst = min(judged, key=lambda f: (-(f.value or 0.0), f.subject))
    volume = alerts["ciolake_volume_drop"]
    assert volume is not None
    assert (volume["channel"], round(volume["drop_percent"], 2)) == (worst.subject, worst.value)
    assert fired(volume, "drop_percent", thresholds.volume_drop_percent) == any(
        f.status is Status.FIRED for f in judged
    )

    statuses = {f.status for f in [no_events, share, *judged]}
    assert statuses == ({Status.FIRED} if expect_fired else {Status.OK})


def test_the_maintenance_job_compacts_vacuums_and_ciolake_keeps_writing(
    catalog: SparkSession, history: Settings, tmp_path: Path
) -> None:
    tables = history.data_dir / "tables"
    reader = delta_reader()

    def counts() -> dict[str, int]:
        scan = "SELECT count(*) FROM delta_scan('{}')"
        found = {}
        for name in ALL_SPECS:
            (count,) = reader.execute(scan.format(tables / name)).fetchall()[0]
            found[name] = int(count)
        return found

    for batch in range(3):  # small files in one partition of each table, for OPTIMIZE
        receive_at(history, sample_bodies(69, seed=200 + batch, timestamp=NOW), at=NOW)
    before = counts()

    def files() -> dict[str, int]:
        names = ("raw_events", "email_events", "push_events")
        return {name: len(DeltaTable(str(tables / name)).file_uris()) for name in names}

    files_before = files()
    args = ["maintain", "--catalog", CATALOG, "--schema", SCHEMA, "--retain-hours", "1"]
    args += ["--table", "raw_events", "--table", "email_events"]  # the bundle's job: all
    catalog.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    assert spark_job.main(args) == 0
    assert counts() == before
    files_after = files()
    assert files_after["raw_events"] < files_before["raw_events"], "OPTIMIZE rewrote nothing"
    assert files_after["email_events"] < files_before["email_events"]
    assert files_after["push_events"] == files_before["push_events"], "a table not asked for"

    more = sample_bodies(69, seed=123, timestamp=NOW)
    receive_at(history, more, at=NOW)
    after = counts()
    assert after["raw_events"] == before["raw_events"] + len(more)
    assert sum(after.values()) - sum(before.values()) == 2 * len(more)


def normal(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows in one order and form whichever engine gave them: floats to 9 significant digits."""

    def value(v: Any) -> Any:
        return float(f"{v:.9g}") if isinstance(v, float) else v

    return sorted((tuple((k, value(v)) for k, v in sorted(r.items())) for r in rows), key=repr)


# All channels over the whole history; one channel's own funnel view and rates, hourly over
# the history's last two days.
FILTERS = [
    Filters(date(2026, 9, 13), date(2026, 9, 21)),
    Filters(date(2026, 9, 20), date(2026, 9, 21), "email"),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: f"{f.channel or 'all'}-{f.since}")
def test_every_dashboard_panel_reads_the_same_rows_through_a_warehouse(
    catalog: SparkSession, history: Settings, filters: Filters
) -> None:
    duck = LakeReader(str(history.data_dir / "tables"))
    with fake_workspace(spark_warehouse(catalog)) as fake:
        warehouse = connect(
            host=fake.url,
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            warehouse_id=fake.warehouse_id,
        )
        through = WarehouseReader(warehouse, catalog=CATALOG, schema=SCHEMA)
        for panel, query in QUERIES.items():
            expected = query(duck, filters)
            assert normal(query(through, filters)) == normal(expected), panel
            assert expected, f"{panel} is empty: nothing compared"
    duck.close()


def test_the_app_command_serves_the_dashboard_through_the_warehouse(
    catalog: SparkSession, history: Settings, tmp_path: Path
) -> None:
    # As the bundle's app runs it: the App gives the port, the warehouse and the credentials.
    (app,) = load_bundle().of_kind("apps")
    command = substitute(app.body["config"]["command"], {"catalog": CATALOG, "schema": SCHEMA})
    port = free_port()
    with fake_workspace(spark_warehouse(catalog)) as fake:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")},
            "DATABRICKS_APP_PORT": str(port),
            "DATABRICKS_HOST": fake.url,
            "DATABRICKS_CLIENT_ID": fake.client_id,
            "DATABRICKS_CLIENT_SECRET": fake.client_secret,
            "DATABRICKS_WAREHOUSE_ID": fake.warehouse_id,
            "CIOLAKE_DATA_DIR": str(tmp_path / "app"),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "ciolake", *command[1:]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}/dashboard"
            wait_for(lambda: _answers(base), 30, "the app's dashboard")
            query = "since=2026-09-13&until=2026-09-21"
            answer = httpx.get(f"{base}/data/summary?{query}", timeout=60)
        finally:
            process.terminate()
            stderr = process.communicate(timeout=30)[1].decode()
    assert answer.status_code == 200, (answer.text, stderr)
    assert f"Dashboard of {CATALOG}.{SCHEMA} (through a SQL warehouse)" in stderr
    duck = LakeReader(str(history.data_dir / "tables"))
    try:
        filters = Filters(date(2026, 9, 13), date(2026, 9, 21))
        assert normal(answer.json()["rows"]) == normal(QUERIES["summary"](duck, filters))
    finally:
        duck.close()
    assert any(f"{CATALOG}.{SCHEMA}.pipeline_health" in s for s in fake.statements)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
