"""Clients of the end-to-end tests: generated events, posted by threads as Customer.io would,
what they were answered, and the exactly-once checks of the tables against it."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ciolake.events import target_table
from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import ServerProcess, body_of, signed_headers, table_rows

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
