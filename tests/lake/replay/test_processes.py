"""Replay in several processes: slices of raw_events cover it once, and events stay single.

Tables are read back with DuckDB (delta-kernel), not with the delta-rs code replay writes with.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from ciolake.lake.replay import reads as replay_reads
from ciolake.lake.replay.processes import (
    DELIVERIES_PER_PROCESS,
    ReplayProcessError,
    process_count,
    replay_in_processes,
)
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.settings import Settings
from tests.support import (
    NOW,
    channel_rows,
    make_settings,
    receive_at,
    received_and_compacted,
    sample_bodies,
)


def lose_every_channel_row(settings: Settings) -> None:
    for table in CHANNEL_TABLES:
        DeltaTable(str(settings.data_dir / "tables" / table)).delete()


def test_processes_replay_slices_and_keep_each_events_first_delivery(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(240, seed=41, timestamp=NOW)
    receive_at(settings, bodies, at=NOW + 5)
    # Retries, received later: in the second process's slice, their first delivery in the first.
    receive_at(settings, bodies[:60], at=NOW + 60)
    before = channel_rows(settings)
    lose_every_channel_row(settings)
    seen: list[int] = []

    result = replay_in_processes(
        settings,
        ReplayRange(),
        processes=2,
        include_quarantine=False,
        progress=seen.append,
        chunk_bytes=64 * 1024,
    )

    assert channel_rows(settings) == before
    assert result.deliveries == sum(seen) == 300
    assert sum(result.added.values()) - sum(result.rewritten.values()) <= 240
    again = replay_in_processes(settings, ReplayRange(), processes=2, include_quarantine=False)
    assert sum(again.added.values()) == sum(again.rewritten.values()) == 0
    assert channel_rows(settings) == before


def test_slices_cut_inside_a_compacted_file_cover_every_delivery_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, raw_file = received_and_compacted(tmp_path, monkeypatch, seed=42)
    assert pq.ParquetFile(raw_file).metadata.num_row_groups > 3
    monkeypatch.setattr(replay_reads, "RAW_BATCH_ROWS", 10)
    before = channel_rows(settings)
    lose_every_channel_row(settings)
    slices = Replayer(settings).split(ReplayRange(), 3)
    assert [(s.start, s.stop) for s in slices] == [(0, 100), (100, 200), (200, 300)]

    counts = [
        Replayer(settings).run(ReplayRange(), include_quarantine=False, part=s).deliveries
        for s in slices
    ]

    assert counts == [100, 100, 100]
    assert channel_rows(settings) == before


def test_a_failing_process_stops_the_replay_with_its_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    for start in range(0, 200, 100):  # two raw files, one per process
        receive_at(
            settings, sample_bodies(200, seed=43, timestamp=NOW)[start : start + 100], at=NOW
        )
    raw = DeltaTable(str(settings.data_dir / "tables" / "raw_events"))
    Path(sorted(raw.file_uris())[0]).write_bytes(b"not parquet")

    with pytest.raises(ReplayProcessError, match=r"(?s)replay process \d failed:.*Parquet"):
        replay_in_processes(settings, ReplayRange(), processes=2, include_quarantine=False)


def replay_command(settings: Settings, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ciolake", "replay", "--data-dir", str(settings.data_dir), *options],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_replay_command_runs_its_workers_and_says_what_they_did(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(120, seed=44, timestamp=NOW), at=NOW + 5)
    before = channel_rows(settings)
    DeltaTable(str(settings.data_dir / "tables" / "email_events")).delete()
    lost = len(before) - len(channel_rows(settings))

    done = replay_command(settings, "--workers", "2")

    assert done.returncode == 0, done.stderr
    assert "120 deliveries in" in done.stderr
    assert re.search(
        rf"email_events: replayed \(added, rewritten\) +│ +{lost} \({lost}, 0\)", done.stderr
    )
    assert channel_rows(settings) == before
    refused = replay_command(settings, "--workers", "0")
    assert refused.returncode == 2
    assert "--workers" in refused.stderr


def test_replay_in_processes_while_the_server_commits_stores_every_event_once(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(600, seed=45, timestamp=NOW)
    receive_at(settings, bodies[:300], at=NOW + 5)
    before = channel_rows(settings)
    DeltaTable(str(settings.data_dir / "tables" / "email_events")).delete()
    replayed = threading.Event()
    sent: list[bytes] = []

    def keep_receiving() -> None:
        # New events, and retries of the replayed ones, until replay is over.
        for start in range(300, 600, 20):
            fresh = bodies[start : start + 20]
            receive_at(settings, fresh + bodies[start - 300 : start - 280], at=NOW + 30)
            sent.extend(fresh)
            if replayed.is_set():
                return

    server = threading.Thread(target=keep_receiving)
    server.start()
    try:
        result = replay_in_processes(
            settings, ReplayRange(), processes=2, include_quarantine=False, chunk_bytes=32 * 1024
        )
    finally:
        replayed.set()
        server.join(timeout=120)
    assert sent
    assert result.deliveries >= 300

    after = channel_rows(settings)  # asserts no event is stored twice
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) == set(before) | {json.loads(b)["event_id"] for b in sent}


def test_a_replay_process_killed_stops_the_replay_and_a_new_one_completes(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(400, seed=46, timestamp=NOW)
    receive_at(settings, bodies, at=NOW + 5)
    before = channel_rows(settings)
    lose_every_channel_row(settings)
    killed: list[int] = []

    def kill_one_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [p for p in multiprocessing.active_children() if p.name.startswith("ciolake")]
            if len(running) == 2 and running[0].pid is not None:
                os.kill(running[0].pid, signal.SIGKILL)
                killed.append(running[0].pid)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_when_running)
    killer.start()
    with pytest.raises(ReplayProcessError, match=r"ended without a result \(exit code -9\)"):
        # Chunks of a few deliveries: the processes are still at work when one is killed.
        replay_in_processes(
            settings, ReplayRange(), processes=2, include_quarantine=False, chunk_bytes=4 * 1024
        )
    killer.join()
    assert killed

    replay_in_processes(settings, ReplayRange(), processes=2, include_quarantine=False)
    assert channel_rows(settings) == before


@pytest.mark.parametrize(
    ("requested", "deliveries", "cores", "expected"),
    [
        (None, 10 * DELIVERIES_PER_PROCESS, 4, 4),  # default: one per core
        (50, 619, 4, 1),  # a few hundred deliveries: one process, not 50
        (50, 10 * DELIVERIES_PER_PROCESS, 4, 4),  # never more than the cores
        (2, 10 * DELIVERIES_PER_PROCESS, 4, 2),  # fewer when asked
        (3, 2 * DELIVERIES_PER_PROCESS + 1, 8, 3),  # one per DELIVERIES_PER_PROCESS, rounded up
        (None, 0, 4, 1),
    ],
)
def test_processes_are_bounded_by_the_cores_and_the_work(
    requested: int | None, deliveries: int, cores: int, expected: int
) -> None:
    assert process_count(requested, deliveries, cores=cores) == expected


_REPLAY_IN_TWO = """
import sys
from pathlib import Path

from ciolake.lake.replay.replayer import ReplayRange
from ciolake.lake.replay.processes import replay_in_processes
from ciolake.settings import Settings

settings = Settings(data_dir=Path(sys.argv[1]))
if len(sys.argv) > 2:
    # Ctrl-C (to the whole process group, as a terminal sends it) while the second replay
    # process starts: the first one is importing or at work.
    import os
    import signal
    from multiprocessing.context import SpawnProcess

    starts = []
    real_start = SpawnProcess.start

    def start(self):
        starts.append(self)
        if len(starts) == 2:
            os.killpg(0, signal.SIGINT)
        real_start(self)

    SpawnProcess.start = start
try:
    replay_in_processes(
        settings, ReplayRange(), processes=2, include_quarantine=False, chunk_bytes=4 * 1024
    )
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _holds_open(pid: int, name: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name):
                return True
        except OSError:
            continue
    return False


def test_ctrl_c_stops_every_replay_process_quietly_and_a_new_replay_completes(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(400, seed=47, timestamp=NOW), at=NOW + 5)
    before = channel_rows(settings)
    lose_every_channel_row(settings)
    parent = subprocess.Popen(
        [sys.executable, "-c", _REPLAY_IN_TWO, str(settings.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    # Ctrl-C once a replay process is at work (it holds the commit lock file while it runs).
    while not any(_holds_open(child, "commit.lock") for child in _children(parent.pid)):
        assert parent.poll() is None, parent.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(parent.pid, signal.SIGINT)
    _out, err = parent.communicate(timeout=60)

    assert parent.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()  # the replay processes ignore it; the parent stops them
    channel_rows(settings)  # every table reads, and no event is stored twice
    replay_in_processes(settings, ReplayRange(), processes=2, include_quarantine=False)
    assert channel_rows(settings) == before


def test_ctrl_c_while_replay_processes_start_is_not_lost(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(400, seed=48, timestamp=NOW), at=NOW + 5)
    before = channel_rows(settings)
    lose_every_channel_row(settings)
    interrupted = subprocess.run(
        [sys.executable, "-c", _REPLAY_IN_TWO, str(settings.data_dir), "ctrl-c-at-start"],
        capture_output=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )

    # Not replayed to the end (exit 0), as when the parent ignored Ctrl-C while starting.
    assert interrupted.returncode == 130, interrupted.stderr.decode()
    assert "Traceback" not in interrupted.stderr.decode()
    channel_rows(settings)
    replay_in_processes(settings, ReplayRange(), processes=2, include_quarantine=False)
    assert channel_rows(settings) == before
