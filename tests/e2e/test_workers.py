"""Several worker processes: a dead worker is replaced, workers die with the supervisor, and
one data directory has one server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import (
    body_of,
    running_server,
    signed_headers,
    start_server,
    table_rows,
    wait_until_committed,
)

pytestmark = pytest.mark.e2e


def bodies(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    keys = schema_keys()
    now = int(time.time())
    return [
        body_of(sample_event(schema_by_name(keys[i % len(keys)][0]), rng=rng, timestamp=now))
        for i in range(count)
    ]


def stored_ids(data_dir: Path) -> list[str]:
    return [r["event_id"] for t in CHANNEL_TABLES for r in table_rows(data_dir, t, "event_id")]


def workers_of(pid: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        workers = [c for c in children if "ciolake.runtime.worker" in " ".join(c.cmdline())]
        if len(workers) >= 2:
            return workers
        time.sleep(0.05)
    raise AssertionError("workers did not start")


def post_all(url: str, payloads: list[bytes]) -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [
            client.post(url, content=b, headers=signed_headers(b)).status_code for b in payloads
        ]


def test_events_spread_over_workers_land_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    payloads = bodies(400, seed=1)
    with running_server(data_dir, env={"CIOLAKE_WORKERS": "3"}) as server:
        assert len(workers_of(server.process.pid)) == 3
        with httpx.Client(timeout=10) as client:
            # Fresh connections spread requests over the workers sharing the socket.
            statuses = [
                httpx.post(server.url, content=b, headers=signed_headers(b)).status_code
                for b in payloads[:200]
            ] + [
                client.post(server.url, content=b, headers=signed_headers(b)).status_code
                for b in payloads[200:]
            ]
        assert statuses == [200] * 400
        wait_until_committed(server)
        assert server.stop() == 0
    streams = {r["journal_stream"] for r in table_rows(data_dir, "raw_events", "journal_stream")}
    assert len(streams) >= 2
    ids = stored_ids(data_dir)
    assert sorted(ids) == sorted(json.loads(b)["event_id"] for b in payloads)


def test_a_killed_worker_is_replaced_and_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    payloads = bodies(300, seed=2)
    with running_server(data_dir) as server:
        first = post_all(server.url, payloads[:150])
        victim = workers_of(server.process.pid)[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = [w for w in workers_of(server.process.pid) if w.pid != victim.pid]
            if len(alive) >= 2:
                break
            time.sleep(0.1)
        assert len(alive) >= 2
        second = post_all(server.url, payloads[150:])
        wait_until_committed(server)
        assert server.stop() == 0
    assert first + second == [200] * 300
    assert "worker died; restarting it" in server.log()
    assert sorted(stored_ids(data_dir)) == sorted(json.loads(b)["event_id"] for b in payloads)


def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    workers = workers_of(server.process.pid)
    assert post_all(server.url, bodies(20, seed=3)) == [200] * 20
    server.kill()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert len(gone) == 2
    # A new server on the same directory starts at once and finds everything answered.
    with running_server(data_dir) as again:
        wait_until_committed(again)
        assert again.stop() == 0
    assert len(stored_ids(data_dir)) == 20


def test_one_server_per_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir):
        result = subprocess.run(
            [sys.executable, "-m", "ciolake", "serve", "--data-dir", str(data_dir), "--port", "0"],
            env={**os.environ, "CIOLAKE_SIGNING_KEYS": "k"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert "another ciolake serve is using" in result.stderr
