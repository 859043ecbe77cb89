"""``ciolake backfill`` over the scenario's gaps: it adds exactly what the webhook lost, a second
run adds nothing, reconcile then finds nothing, and replay leaves the backfilled rows alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ciolake.analytics.duck import open_lake
from ciolake.dashboard.app import Filters
from ciolake.dashboard.queries import LakeReader, summary
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.runtime.locks import FileLock, commit_lock_path
from ciolake.settings import Settings
from tests.customerio.fake_app_api import FakeAppApi
from tests.reconcile import scenario
from tests.reconcile.conftest import API_ENV, Command
from tests.reconcile.scenario import land
from tests.support import channel_rows, receive, table_rows

COLUMNS = "event_id, delivery_id, metric, source, timestamp"


def backfilled(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        event_id: row
        for event_id, row in channel_rows(settings, COLUMNS).items()
        if row["source"] == "backfill"
    }


def land_late(settings: Settings, body: bytes) -> None:
    now = time.time()
    receive(settings, [(body, False)], at=now, signed_at=int(now))


def email_flags(settings: Settings) -> dict[str, dict[str, Any]]:
    columns = "event_id, proxied, machine"
    return {r["event_id"]: r for r in table_rows(settings.data_dir, "email_events", columns)}


def test_backfill_adds_exactly_the_lost_events_and_reconcile_then_finds_nothing(
    reconcile: Command,
    backfill: Command,
    history: scenario.History,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    land(settings, history)
    assert reconcile().code == 1
    result = backfill()
    assert result.code == 0, result.stderr
    rows = backfilled(settings)
    lost = {(e.delivery_id, e.metric): e.at for e in history.lost}
    assert {(r["delivery_id"], r["metric"]): r["timestamp"] for r in rows.values()} == lost
    assert f"{len(lost):,} rows added" in result.stdout
    # An open or a click is a person's or a machine's as Customer.io says.
    humans = {d["id"]: d["metrics"] for d in history.deliveries}
    flags = email_flags(settings)
    for event_id, row in rows.items():
        reached = humans[row["delivery_id"]]
        if row["metric"] == "opened":
            assert flags[event_id]["proxied"] is ("human_opened" not in reached)
        if row["metric"] == "clicked":
            assert flags[event_id]["machine"] is ("human_clicked" not in reached)
    after = reconcile("--format", "json")
    assert after.code == 0, after.stdout
    report = json.loads(after.stdout)
    assert [row for row in report["counts"] if row["difference"]] == []
    again = backfill()
    assert again.code == 0, again.stderr
    assert "0 rows added" in again.stdout
    assert backfilled(settings) == rows


def test_replay_keeps_backfilled_rows(
    backfill: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    land(settings, history)
    assert backfill().code == 0
    before = channel_rows(settings, COLUMNS)
    assert backfilled(settings)
    Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert channel_rows(settings, COLUMNS) == before


def test_an_interrupted_backfill_starts_again_at_the_first_day_not_done(
    backfill: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    land(settings, history)
    # As a run stopped after its second day leaves it.
    plan = f"{history.days[0]}..{history.days[-1]} {scenario.EASTERN.key} all"
    settings.backfill_checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    settings.backfill_checkpoint_path.write_text(
        json.dumps({"plan": plan, "done_through": str(history.days[1])})
    )
    result = backfill()
    assert result.code == 0, result.stderr
    assert "2 days done by the interrupted run skipped" in result.stdout
    paused = {
        (e.delivery_id, e.metric) for e in history.lost if e.delivery_id.startswith(("e1", "s1"))
    }
    added = {(r["delivery_id"], r["metric"]) for r in backfilled(settings).values()}
    assert added == {(e.delivery_id, e.metric) for e in history.lost} - paused
    assert not settings.backfill_checkpoint_path.exists()


def test_a_late_webhook_event_supersedes_its_backfilled_row(
    backfill: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    land(settings, history)
    assert backfill().code == 0
    late = next(e for e in history.lost if e.delivery_id.startswith("e") and e.metric == "sent")
    land_late(settings, late.body)
    pair = (late.delivery_id, late.metric)
    both = [
        r
        for r in channel_rows(settings, COLUMNS).values()
        if pair == (r["delivery_id"], r["metric"])
    ]
    assert sorted(str(r["source"]) for r in both) == ["None", "backfill"]
    result = backfill()
    assert result.code == 0, result.stderr
    assert "1 backfilled rows superseded" in result.stdout
    left = [
        r
        for r in channel_rows(settings, COLUMNS).values()
        if pair == (r["delivery_id"], r["metric"])
    ]
    assert [r["source"] for r in left] == [None]


def test_the_views_and_the_dashboard_count_backfilled_rows(
    backfill: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    land(settings, history)
    assert backfill().code == 0
    added = len(backfilled(settings))
    with open_lake(settings.tables_location) as lake:
        (row,) = lake.query(
            "SELECT sum(backfilled), sum(from_webhook), sum(events) FROM event_sources"
        ).rows
    assert row == (added, len(history.kept), added + len(history.kept))
    reader = LakeReader(settings.tables_location)
    try:
        filters = Filters(since=history.days[0], until=history.days[-1] + dt.timedelta(days=1))
        tiles = {tile["title"]: tile for tile in summary(reader, filters)}
    finally:
        reader.close()
    assert tiles["Events"]["value"] == added + len(history.kept)
    assert f"{added:,} backfilled" in tiles["Events"]["note"]


def test_rates_over_backfilled_and_webhook_rows_are_customerio_s(
    backfill: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    land(settings, history)
    assert backfill().code == 0
    emails = [d["metrics"] for d in history.deliveries if d.get("campaign_id")]

    def share(numerator: str, denominator: str) -> tuple[int, int]:
        among = [m for m in emails if denominator in m]
        return sum(numerator in m for m in among), len(among)

    sql = (
        "SELECT rate, sum(numerator), sum(denominator) FROM cohort_rates"
        " WHERE channel = 'email' GROUP BY rate"
    )
    with open_lake(settings.tables_location) as lake:
        rates = {rate: (n, d) for rate, n, d in lake.query(sql).rows}
    assert rates["open_rate"] == share("opened", "delivered")
    assert rates["human_open_rate"] == share("human_opened", "delivered")
    assert rates["human_click_rate"] == share("human_clicked", "delivered")
    assert rates["delivery_rate"] == share("delivered", "sent")


def test_backfill_commits_under_the_commit_lock_a_server_takes(
    fake: FakeAppApi, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    land(settings, history)
    window = ["--since", str(history.days[0]), "--until", str(history.days[-1])]
    api = ["--base-url", fake.base_url, "--allow-http"]
    command = [sys.executable, "-m", "ciolake", "backfill", *window, *api]
    env = {**os.environ, **API_ENV}
    with FileLock(commit_lock_path(settings.state_dir)) as held:
        process = subprocess.Popen(
            [*command, "--data-dir", str(settings.data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(5)
        waiting = process.poll() is None
        rows_meanwhile = len(backfilled(settings))
    held.close()
    _out, err = process.communicate(timeout=120)
    assert waiting, err
    assert rows_meanwhile == 0
    assert process.returncode == 0, err
    assert len(backfilled(settings)) == len(history.lost)


def test_no_tables_is_one_line_and_nothing_is_created(backfill: Command, tmp_path: Path) -> None:
    result = backfill()
    assert result.code == 2, result.stderr
    assert "no data directory" in result.stderr
    assert not (tmp_path / "data").exists()
