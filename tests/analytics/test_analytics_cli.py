"""``ciolake simulate``, ``views`` and ``report`` through the command line (typer's runner).

The expected numbers come from the simulator's truth for the same options, built here
independently of the command, so a flag that is not passed through shows up as a difference.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from typer.testing import CliRunner, Result

from ciolake.analytics.duck import connect
from ciolake.analytics.views import view_names
from ciolake.cli.app import app
from ciolake.simulate.simulator import Arrivals, History, Rates, SimulationConfig, build_history
from tests.analytics.truth import expected_rates

START = date(2026, 3, 2)
OPTIONS = {
    "--open-rate": 0.6,
    "--click-rate": 0.25,
    "--bounce-rate": 0.04,
    "--reply-rate": 0.2,
    "--machine-open-share": 0.5,
    "--failure-rate": 0.05,
    "--duplicate-rate": 0.2,
}
CONFIG = SimulationConfig(
    start=START,
    days=2,
    deliveries=40,
    seed=3,
    rates=Rates(open=0.6, click=0.25, bounce=0.04, reply=0.2, machine_open_share=0.5, failure=0.05),
    arrivals=Arrivals(duplicate=0.2),
)
runner = CliRunner()


@dataclass
class Simulated:
    data_dir: Path
    history: History
    result: Result


def invoke(*args: str | float | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    flags = [str(part) for option, value in OPTIONS.items() for part in (option, value)]
    result = invoke(
        "simulate",
        "--days", CONFIG.days,
        "--deliveries", CONFIG.deliveries,
        "--seed", CONFIG.seed,
        "--start", START.isoformat(),
        "--data-dir", data_dir,
        *flags,
    )  # fmt: skip
    return Simulated(data_dir, build_history(CONFIG), result)


def truth_totals(
    history: History,
    *,
    channel: str | None = None,
    day: date | None = None,
    campaign: int | None = None,
) -> dict[tuple[str, str], tuple[int, int]]:
    """(channel, rate) -> summed (numerator, denominator) of the matching cohorts."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for key, (numerator, denominator) in expected_rates(history.deliveries).items():
        key_channel, key_day, _origin, campaign_id, *_rest, rate = key
        if channel not in (None, key_channel) or day not in (None, key_day):
            continue
        if campaign is not None and campaign_id != campaign:
            continue
        totals[(key_channel, rate)][0] += numerator
        totals[(key_channel, rate)][1] += denominator
    return {k: (n, d) for k, (n, d) in totals.items()}


def report_json(simulated: Simulated, *args: str) -> dict[str, Any]:
    result = invoke("report", "--data-dir", simulated.data_dir, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def cohort_pairs(document: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (r["channel"], r["rate"]): (r["numerator"], r["denominator"])
        for r in document["sections"]["cohort"]
    }


def test_simulate_lands_every_delivery_and_summarizes(simulated: Simulated) -> None:
    assert simulated.result.exit_code == 0, simulated.result.output
    history = simulated.history
    assert f"{len(history.deliveries):,} messages" in simulated.result.stderr
    lake = connect()
    raw = simulated.data_dir / "tables" / "raw_events"
    count = lake.query(f"SELECT count(*) FROM delta_scan('{raw}')").rows[0][0]
    lake.close()
    assert count == len(history.arrivals)


def test_simulate_refuses_contradicting_rates(tmp_path: Path) -> None:
    result = invoke(
        "simulate", "--data-dir", tmp_path, "--delivery-rate", 0.9, "--bounce-rate", 0.2
    )
    assert result.exit_code == 2
    assert "must not exceed 1" in result.output
    assert not (tmp_path / "tables").exists()


def test_report_json_gives_the_true_cohort_rates(simulated: Simulated) -> None:
    document = report_json(simulated)
    assert cohort_pairs(document) == truth_totals(simulated.history)
    for row in document["sections"]["cohort"]:
        assert row["value"] == pytest.approx(row["numerator"] / row["denominator"])
    assert {"cohort", "failures", "health"} == set(document["sections"])
    received = sum(r["deliveries_received"] for r in document["sections"]["health"])
    assert 0 < received <= len(simulated.history.arrivals)


def test_report_filters_by_channel_day_and_campaign(simulated: Simulated) -> None:
    day = START.isoformat()
    document = report_json(simulated, "--channel", "sms", "--since", day, "--until", day)
    assert cohort_pairs(document) == truth_totals(simulated.history, channel="sms", day=START)
    assert {r["channel"] for r in document["sections"]["failures"]} == {"sms"}
    assert {r["hour"][:10] for r in document["sections"]["health"]} == {day}

    by_campaign = report_json(simulated, "--campaign", "1", "--section", "cohort")
    assert set(by_campaign["sections"]) == {"cohort"}
    assert cohort_pairs(by_campaign) == truth_totals(simulated.history, campaign=1)


def test_report_by_day_splits_the_cohorts(simulated: Simulated) -> None:
    document = report_json(simulated, "--by-day", "--channel", "email", "--section", "cohort")
    rows = document["sections"]["cohort"]
    assert {r["cohort_date"] for r in rows} == {"2026-03-02", "2026-03-03"}
    for day in (date(2026, 3, 2), date(2026, 3, 3)):
        found = {
            ("email", r["rate"]): (r["numerator"], r["denominator"])
            for r in rows
            if r["cohort_date"] == day.isoformat()
        }
        assert found == truth_totals(simulated.history, channel="email", day=day)


def test_report_csv_has_a_block_per_section(simulated: Simulated) -> None:
    result = invoke("report", "--data-dir", simulated.data_dir, "--format", "csv")
    assert result.exit_code == 0, result.output
    blocks = result.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["# cohort", "# failures", "# health"]
    cohort = list(csv.DictReader(io.StringIO(blocks[0].split("\n", 1)[1])))
    pairs = {
        (r["channel"], r["rate"]): (int(r["numerator"]), int(r["denominator"])) for r in cohort
    }
    assert pairs == truth_totals(simulated.history)

    single = invoke(
        "report", "--data-dir", simulated.data_dir, "--format", "csv", "--section", "failures"
    )
    header = next(csv.reader(io.StringIO(single.stdout)))
    assert header == ["channel", "metric", "failure_message", "failures", "days"]


def test_report_table_shows_the_rates_as_percentages(simulated: Simulated) -> None:
    result = invoke("report", "--data-dir", simulated.data_dir, "--channel", "email", "--top", 2)
    assert result.exit_code == 0, result.output
    numerator, denominator = truth_totals(simulated.history)[("email", "open_rate")]
    assert f"{numerator / denominator:.2%}" in result.stdout
    for title in ("Cohort rates", "Top 2 failure messages", "Pipeline health"):
        assert title in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--channel", "fax"), "unknown channel"),
        (("--since", "yesterday"), "YYYY-MM-DD"),
    ],
)
def test_report_refuses_bad_filters(
    simulated: Simulated, args: tuple[str, ...], message: str
) -> None:
    result = invoke("report", "--data-dir", simulated.data_dir, *args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("command", ["report", "views --apply"])
def test_commands_explain_missing_tables(tmp_path: Path, command: str) -> None:
    result = invoke(*command.split(), "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert "no ciolake tables" in result.output


def test_views_prints_duckdb_sql_over_the_delta_tables(simulated: Simulated) -> None:
    result = invoke("views", "--data-dir", simulated.data_dir)
    assert result.exit_code == 0, result.output
    tables = (simulated.data_dir / "tables").resolve()
    assert f"delta_scan('{tables}/email_events')" in result.stdout
    for name in view_names():
        assert f"CREATE OR REPLACE VIEW {name} AS" in result.stdout


def test_views_prints_qualified_spark_sql(simulated: Simulated) -> None:
    result = invoke(
        "views", "--dialect", "spark", "--catalog", "main", "--schema", "cio",
        "--tables-uri", "s3://bucket/tables",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    statements = [s for s in result.stdout.split(";\n") if s.strip()]
    assert len(statements) == len(view_names()) + 10
    for statement in statements:
        sqlglot.parse_one(statement, read="spark")
    assert "CREATE OR REPLACE VIEW main.cio.email_cohort_metrics AS" in result.stdout
    assert "FROM main.cio.email_delivery_funnel" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dialect", "spark", "--apply"), "--apply creates DuckDB views"),
        (("--dialect", "spark", "--catalog", "main"), "needs a schema"),
    ],
)
def test_views_refuses_contradicting_options(args: tuple[str, ...], message: str) -> None:
    result = invoke("views", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_views_apply_creates_a_duckdb_database(simulated: Simulated) -> None:
    result = invoke("views", "--apply", "--data-dir", simulated.data_dir)
    assert result.exit_code == 0, result.output
    database = simulated.data_dir / "analytics.duckdb"
    assert str(database) in result.stderr
    lake = connect(database)
    try:
        funnel = lake.query("SELECT count(*) FROM email_delivery_funnel").rows[0][0]
        names = {r[0] for r in lake.query("SELECT view_name FROM duckdb_views()").rows}
    finally:
        lake.close()
    emails = sum(1 for d in simulated.history.deliveries if d.channel == "email")
    assert funnel == emails
    assert set(view_names()) <= names
