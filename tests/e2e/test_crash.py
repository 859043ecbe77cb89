"""Crash tests: `kill -9` a real `ciolake serve` while clients post, restart, and check the tables
(on a local disk, and on an S3 server started for the test).

What a 200 promises is checked from the outside: every delivery answered 200 is in its channel
table exactly once after the restart, no event is in any channel table twice, and `raw_events`
holds one row per journaled delivery (never fewer than the 200s, never more than the attempts).
The tables are read by DuckDB's delta extension, not by the writer's own library.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciolake.events import target_table
from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import (
    ServerProcess,
    body_of,
    metric_value,
    s3_env,
    s3_server,
    s3_table_rows,
    signed_headers,
    start_server,
    table_rows,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

CLIENTS = 8


@dataclass(frozen=True)
class Sample:
    """One generated event: its id, the exact bytes posted, and where it must land."""

    event_id: str
    body: bytes
    table: str
    object_type: str
    metric: str


@dataclass
class Tally:
    """What the clients saw, per event id: attempts and 200 answers (thread-safe)."""

    ok: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int | None] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, event_id: str) -> None:
        with self.lock:
            self.attempts[event_id] += 1

    def answer(self, event_id: str, status: int | None) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status == 200:
                self.ok[event_id] += 1

    def acknowledged(self) -> int:
        with self.lock:
            return sum(self.ok.values())

    def merged(self, other: Tally) -> Tally:
        total = Tally()
        total.ok = self.ok + other.ok
        total.attempts = self.attempts + other.attempts
        total.statuses = self.statuses + other.statuses
        return total


@dataclass(frozen=True)
class Lake:
    """Where the server's tables live: what its environment says, and an independent reader
    (DuckDB) of a table's rows."""

    env: dict[str, str]
    rows: Callable[[Path, str, str], list[dict[str, Any]]]


LOCAL = Lake({}, table_rows)


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


class Target:
    """The server the clients post to; replaced on every restart."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.up = threading.Event()
        self.up.set()


def make_samples(count: int, seed: int) -> list[Sample]:
    """``count`` unique events cycling through every schema, customer ones on any object type."""
    rng = random.Random(seed)
    keys = schema_keys()
    now = int(time.time())
    samples = []
    for index in range(count):
        schema = schema_by_name(keys[index % len(keys)][0])
        object_type = rng.choice(sorted(schema.object_types))
        event = sample_event(
            schema, rng=rng, timestamp=now - rng.randrange(3600), object_type=object_type
        )
        table = target_table(
            object_type, schema.metric, has_delivery_id="delivery_id" in event["data"]
        )
        samples.append(Sample(event["event_id"], body_of(event), table, object_type, schema.metric))
    assert len({s.event_id for s in samples}) == count
    assert {s.table for s in samples} == set(CHANNEL_TABLES)
    return samples


def post(client: httpx.Client, url: str, body: bytes) -> int | None:
    """The status of one signed post; None when no answer came (not acknowledged)."""
    try:
        return client.post(url, content=body, headers=signed_headers(body)).status_code
    except httpx.HTTPError:
        return None


def post_once(target: Target, samples: Sequence[Sample], tally: Tally) -> None:
    """One client posting each of its samples once, whatever the answer."""
    with httpx.Client(timeout=10) as client:
        for sample in samples:
            tally.attempt(sample.event_id)
            tally.answer(sample.event_id, post(client, target.server.url, sample.body))


def post_until_acknowledged(
    target: Target, samples: Sequence[Sample], tally: Tally, deadline: float
) -> None:
    """One client retrying each sample (later, like Customer.io) until it is answered 200."""
    pending = deque(samples)
    with httpx.Client(timeout=10) as client:
        while pending and time.monotonic() < deadline:
            sample = pending.popleft()
            if not target.up.wait(timeout=max(0.0, deadline - time.monotonic())):
                return
            tally.attempt(sample.event_id)
            status = post(client, target.server.url, sample.body)
            tally.answer(sample.event_id, status)
            if status != 200:
                pending.append(sample)


def run_clients(
    target: Target, samples: Sequence[Sample], tally: Tally, *, retry_until: float | None = None
) -> list[threading.Thread]:
    threads = []
    for index in range(CLIENTS):
        part = samples[index::CLIENTS]
        thread = (
            threading.Thread(target=post_once, args=(target, part, tally))
            if retry_until is None
            else threading.Thread(
                target=post_until_acknowledged, args=(target, part, tally, retry_until)
            )
        )
        thread.start()
        threads.append(thread)
    return threads


def wait_for_acks(tally: Tally, count: int, deadline: float) -> None:
    while tally.acknowledged() < count:
        assert time.monotonic() < deadline, f"only {tally.acknowledged()} of {count} answered"
        time.sleep(0.002)


def stop_gracefully(server: ServerProcess) -> int:
    """SIGTERM; check that the committer drained; return the exit code."""
    code = server.stop()
    stopped = [line for line in server.log_lines() if line.get("msg") == "committer stopped"]
    assert stopped, f"no 'committer stopped' line in the log:\n{server.log()}"
    assert stopped[-1]["drained"] is True, stopped[-1]
    return code


def check_tables(
    data_dir: Path, samples: Sequence[Sample], tally: Tally, lake: Lake = LOCAL
) -> set[str]:
    """Check the exactly-once promises against what the clients saw; return the stored ids."""
    by_id = {s.event_id: s for s in samples}
    found: dict[str, list[str]] = defaultdict(list)
    for table in CHANNEL_TABLES:
        rows = lake.rows(
            data_dir, table, "event_id, object_type, metric, journal_stream, journal_lsn"
        )
        # A journal record is (stream, lsn): each worker process has its own journal.
        lsns = [(row["journal_stream"], row["journal_lsn"]) for row in rows]
        assert len(lsns) == len(set(lsns)), f"{table}: a journal record was applied twice"
        for row in rows:
            found[row["event_id"]].append(table)
            sample = by_id.get(row["event_id"])
            assert sample is not None, f"{table}: unknown event {row['event_id']}"
            assert (row["object_type"], row["metric"]) == (sample.object_type, sample.metric)
    twice = {event_id: tables for event_id, tables in found.items() if len(tables) > 1}
    assert not twice, f"{len(twice)} events stored more than once, e.g. {next(iter(twice.items()))}"
    misplaced = {e: t for e, t in found.items() if t != [by_id[e].table]}
    assert not misplaced, f"events in the wrong table: {list(misplaced.items())[:3]}"
    lost = sorted(event_id for event_id in tally.ok if event_id not in found)
    assert not lost, f"{len(lost)} events answered 200 are missing, e.g. {lost[:3]}"

    raw = lake.rows(data_dir, "raw_events", "event_id, journal_stream, journal_lsn")
    raw_lsns = [(row["journal_stream"], row["journal_lsn"]) for row in raw]
    assert len(raw_lsns) == len(set(raw_lsns)), "raw_events: a journal record was applied twice"
    raw_count = Counter(row["event_id"] for row in raw)
    assert set(raw_count) <= set(by_id)
    short = {e: (raw_count[e], n) for e, n in tally.ok.items() if raw_count[e] < n}
    assert not short, f"raw_events lacks deliveries answered 200: {list(short.items())[:3]}"
    excess = {e: (n, tally.attempts[e]) for e, n in raw_count.items() if n > tally.attempts[e]}
    assert not excess, f"raw_events has more rows than deliveries: {list(excess.items())[:3]}"
    assert set(found) <= set(raw_count), "an event is in a channel table but not in raw_events"
    assert lake.rows(data_dir, "quarantine", "reason, event_id") == []
    return set(found)


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
    samples = make_samples(3000, seed=101)
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
    samples = make_samples(2500, seed=202)
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
