"""Mistakes with `ciolake simulate`, each answered in one line (issue #19).

A busy data directory, one that cannot be written, sizes beyond the bounds, a second run into
the same directory, and Ctrl-C: one ``error:`` line (or an honest summary), never a traceback.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.simulate.simulator import SimulationConfig, build_history
from tests.mistakes.conftest import EXIT_USAGE, RunCiolake, assert_one_line_error
from tests.support import (
    post_all,
    running_server,
    sample_bodies,
    table_rows,
    tmpfs,
    wait_until_committed,
)

# Longer than any refusal below should take, far shorter than a hang.
BOUND_S = 30.0
SMALL = ("--days", "1", "--deliveries", "5")

pytestmark = pytest.mark.timeout(180)


def test_refused_while_serve_uses_the_directory(tmp_path: Path, run_ciolake: RunCiolake) -> None:
    data_dir = tmp_path / "data"
    bodies = sample_bodies(20, seed=3, timestamp=int(time.time()))
    with running_server(data_dir) as server:
        post_all(server.url, bodies[:10])
        result = run_ciolake("simulate", *SMALL, "--data-dir", data_dir, timeout=BOUND_S)
        post_all(server.url, bodies[10:])
        wait_until_committed(server)
    assert_one_line_error(result, EXIT_USAGE, "another ciolake serve is using", str(data_dir))
    # Refused before any work: no progress bar, no summary.
    assert "landing deliveries" not in result.stderr
    assert "simulate:" not in result.stderr
    stored = [r["event_id"] for r in table_rows(data_dir, "raw_events", "event_id")]
    assert {json.loads(b)["event_id"] for b in bodies} <= set(stored)
    assert not [i for i in stored if str(i).startswith("sim-")]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only tmpfs (root ignores permission bits, not a read-only mount)."""
    with tmpfs(tmp_path / "read-only", read_only=True) as mount_point:
        yield mount_point


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        pytest.param("a-file", "not a directory", id="a file"),
        pytest.param("a-file/data", "not a directory", id="under a file"),
        pytest.param("/proc/ciolake-simulate", "no such file", id="under /proc"),
        pytest.param("/sys/ciolake-simulate", "not permitted", id="under /sys"),
        pytest.param("/sys", "permission denied", id="/sys itself"),
    ],
)
def test_unwritable_data_dir(
    tmp_path: Path, run_ciolake: RunCiolake, where: str, reason: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    result = run_ciolake("simulate", *SMALL, "--data-dir", where, timeout=BOUND_S)
    assert_one_line_error(result, EXIT_USAGE, f"cannot write to {where}", reason, "--data-dir")


@pytest.mark.parametrize("below", ["", "data"])
def test_read_only_data_dir(read_only_dir: Path, run_ciolake: RunCiolake, below: str) -> None:
    where = read_only_dir / below if below else read_only_dir
    result = run_ciolake("simulate", *SMALL, "--data-dir", where, timeout=BOUND_S)
    assert_one_line_error(result, EXIT_USAGE, f"cannot write to {where}", "read-only")
    # Errno 30 (EROFS), said in words rather than as "[Errno 30]".
    assert "Errno" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(("--days", "100000000"), ("--days", "366"), id="days"),
        pytest.param(("--deliveries", "1000000000000"), ("--deliveries", "10000"), id="deliveries"),
        pytest.param(
            ("--days", "366", "--deliveries", "10000"), ("--days", "20,000"), id="days x deliveries"
        ),
        pytest.param(("--start", "1969-12-31"), ("--start", "2000-01-01"), id="start before 2000"),
        pytest.param(("--start", "2999-01-01"), ("--start", "future"), id="start in the future"),
        pytest.param(("--start", "yesterday"), ("--start", "YYYY-MM-DD"), id="start not a date"),
        pytest.param(
            ("--quarantined-per-day", "1000000000"), ("--quarantined-per-day", "1000"), id="junk"
        ),
    ],
)
def test_out_of_bounds_is_refused_at_once(
    tmp_path: Path, run_ciolake: RunCiolake, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    result = run_ciolake("simulate", *args, timeout=BOUND_S)
    assert_one_line_error(result, EXIT_USAGE, *fragments)
    assert not (tmp_path / "demo").exists()


def test_help_states_the_bounds(run_ciolake: RunCiolake) -> None:
    result = run_ciolake("simulate", "--help", timeout=BOUND_S)
    assert result.code == 0, result.stderr
    text = " ".join(result.stdout.split())
    for bound in ("1<=x<=366", "1<=x<=10000", "20,000", "2000-01-01", "0<=x<=1000", "./demo"):
        assert bound in text, bound


def summary(stderr: str) -> tuple[int, int]:
    """(events landed, events already there) from the summary line."""
    found = re.search(r"([\d,]+) events landed, ([\d,]+) were already there", stderr)
    assert found is not None, stderr
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def test_second_run_counts_what_was_already_there(tmp_path: Path, run_ciolake: RunCiolake) -> None:
    first = run_ciolake("simulate", *SMALL, "--data-dir", "my demo")
    assert first.code == 0, first.stderr
    landed, already = summary(first.stderr)
    assert landed > 0
    assert already == 0
    raw = table_rows(tmp_path / "my demo", "raw_events", "count(*) AS n")[0]["n"]
    second = run_ciolake("simulate", *SMALL, "--data-dir", "my demo")
    assert second.code == 0, second.stderr
    assert summary(second.stderr) == (0, landed)
    assert table_rows(tmp_path / "my demo", "raw_events", "count(*) AS n")[0]["n"] == raw
    # The closing hint is a command a shell runs as it reads.
    hint = next(line for line in second.stderr.splitlines() if line.startswith("See them with:"))
    assert "--data-dir 'my demo'" in hint
    command = shlex.split(hint.removeprefix("See them with:").split("  (or ")[0])
    assert command == ["ciolake", "report", "--data-dir", "my demo"]


def channel_event_ids(data_dir: Path) -> list[str]:
    return [r["event_id"] for t in CHANNEL_TABLES for r in table_rows(data_dir, t, "event_id")]


def test_ctrl_c_stops_in_one_line_and_leaves_consistent_tables(tmp_path: Path) -> None:
    start = (datetime.now(UTC).date() - timedelta(days=40)).isoformat()
    args = ["--days", "5", "--deliveries", "300", "--start", start, "--data-dir", "data"]
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "ciolake", "simulate", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    log = data_dir / "tables" / "raw_events" / "_delta_log"
    deadline = time.monotonic() + 90
    # Mid-run: after the first deliveries were committed (version 1 of raw_events).
    while not (log / f"{1:020d}.json").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "simulate committed nothing"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    stderr = err.decode(errors="replace")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error: ")] == [
        "error: interrupted"
    ]
    assert "simulate:" not in stderr
    partial = channel_event_ids(data_dir)
    assert 0 < len(partial) == len(set(partial))
    # The receiver let go of the directory, and a second run completes the history exactly once.
    again = subprocess.run(
        [sys.executable, "-m", "ciolake", "simulate", *args],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr.decode(errors="replace")[-2000:]
    config = SimulationConfig(start=date.fromisoformat(start), days=5, deliveries=300)
    history = build_history(config)
    landed, already = summary(again.stderr.decode())
    assert landed + already == len(history.events())
    assert already >= len(set(partial))
    complete = channel_event_ids(data_dir)
    assert sorted(complete) == sorted(e.event_id for e in history.events())
