"""Several receivers, one lake, on an S3 server started for the test (moto, on loopback).

Two `ciolake serve --role receiver` processes land raw_events only; one `ciolake derive`
derives the channel tables. Clients spread their load over both receivers; receiver 1 is killed
with SIGKILL mid-stream and restarted; then every event is posted again to receiver 2, as
Customer.io retries, and the deriver is killed with SIGKILL once it has committed, and
restarted. Every event answered 200 is in its channel table exactly
once, read by DuckDB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ciolake.lake.tables import CHANNEL_TABLES
from tests.e2e.clients import (
    LOCAL,
    Lake,
    Tally,
    Target,
    check_tables,
    make_samples,
    run_clients,
    wait_for_acks,
)
from tests.support import (
    S3Server,
    ServerProcess,
    s3_env,
    s3_keys,
    s3_server,
    s3_table_rows,
    start_server,
    wait_for,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@dataclass
class DeriverProcess:
    """A `ciolake derive` subprocess."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process a test starts; those still running at its end (a failed test) are killed."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            # A server's workers die with their supervisor.
            process.kill()
            process.wait(timeout=30)


def derive_command(data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ciolake", "derive", "--data-dir", str(data_dir), *extra]


def start_deriver(
    data_dir: Path, env: Mapping[str, str], started: list[subprocess.Popen[bytes]]
) -> DeriverProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"derive-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            derive_command(data_dir),
            env={**os.environ, **env, "CIOLAKE_FLUSH_INTERVAL_S": "0.2"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started.append(process)
    return DeriverProcess(process, log_path)


def start_receiver(
    directory: Path,
    number: int,
    env: Mapping[str, str],
    started: list[subprocess.Popen[bytes]],
    data_dir: Path | None = None,
) -> ServerProcess:
    """A receiver numbered ``number``, in ``directory / receiver-<number>`` or ``data_dir``."""
    args = ("--role", "receiver", "--receiver-id", str(number))
    server = start_server(data_dir or directory / f"receiver-{number}", env=env, args=args)
    started.append(server.process)
    return server


def derived_commits(s3: S3Server) -> int:
    """Commits of the deriver to the channel tables (each table's version 0 creates it)."""
    keys = [k for table in CHANNEL_TABLES for k in s3_keys(s3, f"tables/{table}/_delta_log/")]
    return sum(1 for key in keys if key.endswith(".json") and not key.endswith("0" * 20 + ".json"))


def test_two_receivers_and_a_deriver_on_s3_store_each_answered_event_once(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    samples = make_samples(1200, seed=303)
    deadline = time.monotonic() + 90
    with s3_server() as s3:
        uri = f"s3://{s3.bucket}/tables"
        env = {**s3_env(s3.endpoint), "CIOLAKE_TABLES_URI": uri}

        def rows(_data_dir: Path, table: str, columns: str) -> list[dict[str, Any]]:
            return s3_table_rows(s3, f"{uri}/{table}", columns)

        lake = Lake(env, rows)
        first = Target(start_receiver(tmp_path, 1, env, started))
        second = Target(start_receiver(tmp_path, 2, env, started))
        deriver = start_deriver(tmp_path / "deriver", env, started)
        tally_first, tally_second = Tally(), Tally()
        threads = run_clients(first, samples[0::2], tally_first)
        threads += run_clients(second, samples[1::2], tally_second)
        try:
            wait_for_acks(tally_first, len(samples) // 5, deadline)
        finally:
            first.server.kill()
        for thread in threads:
            thread.join(timeout=60)
        acknowledged = len(tally_first.ok)
        assert len(samples) // 5 <= acknowledged < len(samples) // 2, "not killed mid-stream"
        assert set(tally_first.statuses) <= {200, None}, tally_first.statuses

        first.server = start_receiver(tmp_path, 1, env, started)
        # Customer.io retries every request that was not answered 200; here every one of
        # them, at the other receiver. Meanwhile the deriver is killed once it has committed.
        retries = Tally()
        threads = run_clients(second, samples, retries)
        wait_for(lambda: derived_commits(s3) > 0, 60, "the deriver's first commit")
        deriver.kill()
        killed_at = derived_commits(s3)
        deriver = start_deriver(tmp_path / "deriver", env, started)
        for thread in threads:
            thread.join(timeout=60)
        assert retries.statuses == Counter({200: len(samples)})
        wait_for(lambda: derived_commits(s3) > killed_at, 60, "a commit of the new deriver")
        for target in (first, second):
            wait_until_committed(target.server, timeout=60)
            assert target.server.stop(timeout=60) == 0
        assert deriver.stop() == 0, deriver.log()
        derived = int(deriver.log().split("raw_events version ")[-1].split()[0])
        assert derived > 0, deriver.log()
        # Whatever the stopped deriver had not read yet.
        finished = subprocess.run(
            derive_command(tmp_path / "deriver", "--once"),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr

        everything = tally_first.merged(tally_second).merged(retries)
        stored = check_tables(tmp_path, samples, everything, lake)
        assert stored == {s.event_id for s in samples}
        streams = {row["journal_stream"] for row in rows(tmp_path, "raw_events", "journal_stream")}
        # Each receiver's journal streams are its own (receiver id x 1000 + worker). Which of a
        # receiver's two workers took a connection is the kernel's hash (SO_REUSEPORT), so
        # receiver 1's eight connections before the kill may all have gone to one of them.
        assert streams <= {1000, 1001, 2000, 2001}, streams
        assert {stream // 1000 for stream in streams} == {1, 2}, streams


def test_two_servers_with_one_receiver_id_stop_one_and_lose_nothing(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """A copy-pasted configuration: two receivers with the same id on one lake. One stops
    (exit 1, one log line naming the mistake) before either takes the other's deliveries for
    its own; started again with an id of its own, it lands what it answered."""
    env = {"CIOLAKE_TABLES_URI": str(tmp_path / "tables")}
    samples = make_samples(900, seed=404)
    servers = [start_receiver(tmp_path / name, 1, env, started) for name in ("a", "b")]
    targets = [Target(server) for server in servers]
    tally = Tally()
    deadline = time.monotonic() + 60
    sent = 0
    while all(s.process.poll() is None for s in servers):
        assert time.monotonic() < deadline, "neither server noticed the other"
        chunk = samples[sent : sent + 100]
        if not chunk:
            break
        for thread in run_clients(targets[sent // 100 % 2], chunk, tally):
            thread.join(timeout=60)
        sent += len(chunk)
    wait_for(lambda: any(s.process.poll() is not None for s in servers), 60, "one to stop")
    stopped = next(s for s in servers if s.process.poll() is not None)
    going = next(s for s in servers if s is not stopped)
    assert stopped.process.wait() == 1, stopped.log()
    errors = [line for line in stopped.log_lines() if line.get("level") == "error"]
    assert any("give each server sharing tables its own --receiver-id" in e["msg"] for e in errors)

    # Everything answered is still in the stopped one's journal: with an id of its own it
    # lands it; the other never stopped.
    restarted = start_receiver(tmp_path, 2, env, started, data_dir=stopped.data_dir)
    for server in (restarted, going):
        wait_until_committed(server, timeout=60)
        assert server.stop(timeout=60) == 0
    finished = subprocess.run(
        derive_command(tmp_path / "deriver", "--once", "--tables-uri", env["CIOLAKE_TABLES_URI"]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    stored = check_tables(tmp_path, samples, tally, LOCAL)
    assert stored >= set(tally.ok)
