"""Simulated history never mixes with real events (issue #20).

1. ``simulate`` writes to ``./demo`` by default, whatever ``CIOLAKE_DATA_DIR`` says, and
   ``make demo`` shows the dashboard over it.
2. It refuses a directory holding deliveries it did not simulate unless ``--into-existing``,
   and its rows carry a marker (``event_id`` starting ``sim-``), so a mistake can be undone.
3. No receipt time it writes lies after the wall clock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.settings import Settings
from ciolake.simulate import simulator as simulate
from tests import support
from tests.support import sample_bodies, table_rows

REPO = Path(__file__).resolve().parents[2]
SMALL = ("--days", "1", "--deliveries", "5")
RECEIPT_TABLES = ("raw_events", "quarantine", *CHANNEL_TABLES)

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Run:
    code: int
    stderr: str
    started: float
    ended: float


def ciolake(cwd: Path, *args: str | Path, env: Mapping[str, str] | None = None) -> Run:
    """``ciolake`` in a subprocess, without the caller's CIOLAKE_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "ciolake", *map(str, args)],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stderr.decode(errors="replace"), started, time.time())


def error_lines(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("error: ")]


def event_ids(data_dir: Path, table: str = "raw_events") -> list[str | None]:
    return [r["event_id"] for r in table_rows(data_dir, table, "event_id")]


def land_real(data_dir: Path, bodies: list[bytes]) -> None:
    """Deliveries as a real receiver would land them: no simulated marker."""
    now = time.time() - 60
    arrivals = [
        simulate.Arrival(now + i, body, int(now + i), None, "landed")
        for i, body in enumerate(bodies)
    ]
    settings = support.make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(), flush_interval_s=0.05
    )
    simulate.feed(settings, arrivals)


def simulated(row: Mapping[str, Any]) -> bool:
    """The documented marker: the event id, or for invalid JSON the id its body names."""
    if row["event_id"] is not None:
        return bool(row["event_id"].startswith("sim-"))
    return bool(row["body"].startswith('{"event_id":"sim-'))


def real_bodies() -> list[bytes]:
    return sample_bodies(3, seed=7, timestamp=int(time.time()) - 3600)


# 1. a directory of its own ------------------------------------------------------------------


def test_default_directory_is_demo_whatever_the_environment_says(tmp_path: Path) -> None:
    real_tables = tmp_path / "real-tables"
    env = {"CIOLAKE_DATA_DIR": str(tmp_path / "data"), "CIOLAKE_TABLES_URI": str(real_tables)}
    run = ciolake(tmp_path, "simulate", *SMALL, env=env)
    assert run.code == 0, run.stderr
    assert (tmp_path / "demo" / "tables" / "raw_events" / "_delta_log").is_dir()
    assert not (tmp_path / "data").exists()
    assert not real_tables.exists()
    assert "See them with: ciolake report --data-dir demo" in run.stderr
    assert "ciolake dashboard --data-dir demo" in run.stderr


def test_make_demo_simulates_into_demo_and_serves_its_dashboard() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make")
    plan = subprocess.run(
        ["make", "-n", "-o", "install", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    simulate_line = next(line for line in plan.splitlines() if " simulate " in line)
    assert "--data-dir demo" in simulate_line
    assert "dashboard --data-dir demo" in plan


# 2. refused next to real deliveries, recognisable rows ----------------------------------------


@pytest.mark.parametrize(
    "bodies",
    [
        pytest.param(real_bodies(), id="typed events"),
        pytest.param([b'{"event_id":"01JREAL","object_type":'], id="invalid JSON"),
    ],
)
def test_refuses_a_directory_with_deliveries_it_did_not_simulate(
    tmp_path: Path, bodies: list[bytes]
) -> None:
    data_dir = tmp_path / "data"
    land_real(data_dir, bodies)
    before = event_ids(data_dir)
    run = ciolake(tmp_path, "simulate", *SMALL, "--data-dir", data_dir)
    assert run.code == 2, run.stderr
    assert "Traceback" not in run.stderr
    [line] = error_lines(run)
    assert str(data_dir) in line
    assert f"{len(bodies)} deliveries that ciolake simulate did not write" in line
    assert "--into-existing" in line
    assert "landing deliveries" not in run.stderr
    assert event_ids(data_dir) == before


def test_into_existing_mixes_recognisably_and_can_be_undone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bodies = real_bodies()
    land_real(data_dir, bodies)
    real = set(event_ids(data_dir))
    run = ciolake(tmp_path, "simulate", *SMALL, "--data-dir", data_dir, "--into-existing")
    assert run.code == 0, run.stderr
    raw = table_rows(data_dir, "raw_events", "event_id, body")
    assert len(raw) > len(bodies)
    # Found: the real rows are exactly those without the marker, in raw_events...
    assert {r["event_id"] for r in raw if not simulated(r)} == real
    assert simulate.foreign_deliveries(str(data_dir / "tables")) == len(bodies)
    # ...and in the channel tables, so `WHERE event_id NOT LIKE 'sim-%'` undoes the mistake.
    channel = [i for table in CHANNEL_TABLES for i in event_ids(data_dir, table)]
    assert {i for i in channel if not str(i).startswith("sim-")} == real
    assert any(str(i).startswith("sim-") for i in channel)


def test_every_simulated_delivery_carries_the_marker(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    config = simulate.SimulationConfig(start=date(2026, 3, 2), days=2, deliveries=10, seed=4)
    history = simulate.build_history(config)
    assert {a.kind for a in history.arrivals} == {"landed", "duplicate", "quarantine"}
    assert all(str(a.event_id).startswith("sim-") for a in history.arrivals)
    settings = make_settings(data_dir=tmp_path, signing_keys=(), flush_interval_s=0.05)
    simulate.feed(settings, history.arrivals)
    # Quarantined ones too, invalid JSON included: a simulated directory holds nothing foreign.
    assert simulate.foreign_deliveries(str(tmp_path / "tables")) == 0
    stored = simulate.stored_event_ids(str(tmp_path / "tables"))
    assert stored == {a.event_id for a in history.arrivals}
    quarantined = table_rows(tmp_path, "quarantine", "reason, body")
    assert {r["reason"] for r in quarantined} >= {"invalid_json", "invalid_envelope"}
    assert all('"event_id":"sim-' in r["body"] for r in quarantined)


def test_a_directory_of_simulated_rows_takes_another_run(tmp_path: Path) -> None:
    first = ciolake(tmp_path, "simulate", *SMALL)
    assert first.code == 0, first.stderr
    second = ciolake(tmp_path, "simulate", *SMALL, "--seed", "1")
    assert second.code == 0, second.stderr


# 3. no receipt in the future --------------------------------------------------------------------


def latest_receipts(data_dir: Path) -> dict[str, datetime]:
    found = {}
    for table in RECEIPT_TABLES:
        [row] = table_rows(data_dir, table, "max(received_at) AS latest")
        if row["latest"] is not None:
            found[table] = row["latest"]
    return found


def assert_received_by(data_dir: Path, moment: float) -> None:
    latest = latest_receipts(data_dir)
    assert {"raw_events", "quarantine", "email_events"} <= latest.keys()
    wall = datetime.fromtimestamp(moment, UTC)
    late = {table: when for table, when in latest.items() if when > wall}
    assert not late, f"received after the wall clock ({wall}): {late}"
    [row] = table_rows(data_dir, "raw_events", "max(x_cio_timestamp) AS signed")
    assert row["signed"] <= moment


def test_default_history_is_received_before_now(tmp_path: Path) -> None:
    run = ciolake(tmp_path, "simulate", "--days", "3", "--deliveries", "30")
    assert run.code == 0, run.stderr
    assert_received_by(tmp_path / "demo", run.ended)
    # As recent as that allows: the last receipts come within days of the run.
    latest = max(latest_receipts(tmp_path / "demo").values())
    assert datetime.fromtimestamp(run.started, UTC) - latest < timedelta(days=3)


def test_a_start_too_recent_is_refused_with_the_latest_that_fits(tmp_path: Path) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    # Every event 1 to 48 hours late: yesterday's last ones are received tomorrow.
    args = ("--days", "1", "--deliveries", "20", "--late-rate", "1")
    refused = ciolake(tmp_path, "simulate", *args, "--start", yesterday)
    assert refused.code == 2, refused.stderr
    [line] = error_lines(refused)
    assert "after now" in line
    assert not (tmp_path / "demo" / "tables").exists()
    latest = re.search(r"choose --start (\d{4}-\d{2}-\d{2}) or earlier", line)
    assert latest is not None, line
    run = ciolake(tmp_path, "simulate", *args, "--start", latest.group(1))
    assert run.code == 0, run.stderr
    assert_received_by(tmp_path / "demo", run.ended)


def test_feed_refuses_a_receipt_in_the_future(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    body = real_bodies()[0]
    future = time.time() + 3600
    arrival = simulate.Arrival(future, body, int(future), None, "landed")
    with pytest.raises(ValueError, match="after now"):
        simulate.feed(
            make_settings(data_dir=tmp_path, signing_keys=(), flush_interval_s=1.0), [arrival]
        )
    assert not (tmp_path / "tables").exists()


def test_history_moves_back_by_whole_days_and_stays_the_same_world() -> None:
    config = simulate.SimulationConfig(start=date(2026, 3, 2), days=2, deliveries=10, seed=2)
    history = simulate.build_history(config)
    now = simulate.last_receipt(history) - 1
    assert simulate.days_late(history, now) == 1
    moved = simulate.build_history_before(config, now)
    assert moved.config.start == config.start - timedelta(days=1)
    assert simulate.last_receipt(moved) <= now
    day = 86_400
    assert [e.timestamp for e in moved.events()] == [e.timestamp - day for e in history.events()]
    assert [a.receive_time for a in moved.arrivals] == pytest.approx(
        [a.receive_time - day for a in history.arrivals]
    )


def test_the_clock_never_runs_past_the_dedup_window(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """The committer prunes its dedup index by the simulated clock: were it days ahead of what
    is committed, a retry would find its first delivery forgotten and land a second time."""
    config = simulate.SimulationConfig(
        start=date(2026, 3, 2),
        days=4,
        deliveries=20,
        seed=1,
        arrivals=simulate.Arrivals(duplicate=0.5),
    )
    history = simulate.build_history(config)
    settings = make_settings(
        data_dir=tmp_path, signing_keys=(), dedup_window_days=1, flush_interval_s=0.05
    )
    landed = simulate.feed(settings, history.arrivals)
    assert landed.events == len(history.events())
    for table in CHANNEL_TABLES:
        ids = event_ids(tmp_path, table)
        assert len(ids) == len(set(ids)), table
