"""Crash tests: `kill -9` a real `ciolake serve` while clients post, restart, and check the tables
(on a local disk, and on an S3 server started for the test).

What a 200 promises is checked from the outside: every delivery answered 200 is in its channel
table exactly once after the restart, no event is in any channel table twice, and `raw_events`
holds one row per journaled delivery (never fewer than the 200s, never more than the attempts).
The tables are read by DuckDB's delta extension, not by the writer's own library.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciolake.lake.tables import CHANNEL_TABLES
from tests.e2e.clients import (
    LOCAL,
    Lake,
    Sample,
    Tally,
    Target,
    check_tables,
    make_samples,
    run_clients,
    wait_for_acks,
)
from tests.support import (
    ServerProcess,
    metric_value,
    s3_env,
    s3_server,
    s3_table_rows,
    start_server,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest) -> Iterator[Lake]:
    """The tables on the local disk, or on an S3 server (moto) started for the test."""
    if request.param == "local":
        yield LOCAL
        return
    with s3_server() as s3:
        uri = f"s3://{s3.bucket}/tables"

        def rows(_data_dir: Path, table: str, columns: str) -> list[dict[str, Any]]:
            return s3_table_rows(s3, f"{uri}/{table}", columns)

        yield Lake({**s3_env(s3.endpoint), "CIOLAKE_TABLES_URI": uri}, rows)


def stop_gracefully(server: ServerProcess) -> int:
    """SIGTERM; check that the committer drained; return the exit code."""
    code = server.stop()
    stopped = [line for line in server.log_lines() if line.get("msg") == "committer stopped"]
    assert stopped, f"no 'committer stopped' line in the log:\n{server.log()}"
    assert stopped[-1]["drained"] is True, stopped[-1]
    return code


def repost_everything(
    data_dir: Path, samples: Sequence[Sample], stored: set[str], lake: Lake = LOCAL
) -> Tally:
    """Post every sample again to a fresh process (Customer.io's retries); check its metrics."""
    tally = Tally()
    server = start_server(data_dir, env=lake.env)
    try:
        threads = run_clients(Target(server), samples, tally)
        for thread in threads:
            thread.join(timeout=60)
        assert tally.statuses == Counter({200: len(samples)})
        wait_until_committed(server)
        metrics = httpx.get(f"{server.admin_base}/metrics", timeout=5).text
    finally:
        code = stop_gracefully(server)
    assert metric_value(metrics, "ciolake_events_duplicate_total") == len(stored)
    accepted = sum(
        metric_value(metrics, "ciolake_events_accepted_total", f'table="{table}"')
        for table in CHANNEL_TABLES
    )
    assert accepted == len(samples) - len(stored)
    assert code == 0, f"serve exited with {code} after SIGTERM (expected 0)"
    return tally


@pytest.mark.timeout(120)
def test_kill_9_mid_stream_loses_no_acknowledged_event(tmp_path: Path, lake: Lake) -> None:
    data_dir = tmp_path / "data"
    samples = make_samples(2000, seed=101)
    deadline = time.monotonic() + 40
    exit_codes: list[int] = []

    target = Target(start_server(data_dir, env=lake.env))
    tally = Tally()
    threads = run_clients(target, samples, tally)
    try:
        wait_for_acks(tally, len(samples) * 4 // 10, deadline)
    finally:
        target.server.kill()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    acknowledged = len(tally.ok)
    assert len(samples) * 4 // 10 <= acknowledged < len(samples), "the kill was not mid-stream"
    assert set(tally.statuses) <= {200, None}, tally.statuses

    server = start_server(data_dir, env=lake.env)
    try:
        wait_until_committed(server)
        assert httpx.get(f"{server.admin_base}/ready", timeout=5).status_code == 200
    finally:
        exit_codes.append(stop_gracefully(server))
    stored = check_tables(data_dir, samples, tally, lake)
    assert len(stored) >= acknowledged

    second = repost_everything(data_dir, samples, stored, lake)
    everything = tally.merged(second)
    assert check_tables(data_dir, samples, everything, lake) == {s.event_id for s in samples}
    assert exit_codes == [0], f"serve exited with {exit_codes} after SIGTERM (expected 0)"


def test_repeated_kill_9_while_posting(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    samples = make_samples(1800, seed=202)
    deadline = time.monotonic() + 45
    exit_codes: list[int] = []

    target = Target(start_server(data_dir))
    tally = Tally()
    threads = run_clients(target, samples, tally, retry_until=deadline)
    kills = 0
    try:
        for cycle in range(1, 4):
            wait_for_acks(tally, len(samples) * cycle // 5, deadline)
            target.up.clear()
            target.server.kill()
            kills += 1
            target.server = start_server(data_dir)
            target.up.set()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        wait_until_committed(target.server)
    finally:
        target.up.set()
        if target.server.process.poll() is None:
            try:
                exit_codes.append(stop_gracefully(target.server))
            except subprocess.TimeoutExpired:
                target.server.kill()
    assert kills == 3
    assert not any(thread.is_alive() for thread in threads)
    assert set(tally.ok) == {s.event_id for s in samples}, "clients gave up before all were 200"
    assert tally.statuses[None] > 0, "no request was cut off by a kill"
    assert set(tally.statuses) <= {200, None}, tally.statuses

    stored = check_tables(data_dir, samples, tally)
    assert stored == {s.event_id for s in samples}

    second = repost_everything(data_dir, samples, stored)
    everything = tally.merged(second)
    assert check_tables(data_dir, samples, everything) == stored
    assert exit_codes == [0], f"serve exited with {exit_codes} after SIGTERM (expected 0)"
