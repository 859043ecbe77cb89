"""The committer's byte bound on batches, ``drain()``, and the setting behind the bound.

A real `Committer` over a real `DeltaWriter`, `DedupIndex` and `Metrics`; records are handed
over with ``submit`` as the journal would. Tables are read back with DuckDB's delta extension,
independent of our writer. The flush interval is long in every test, so any commit seen within
the test's deadline was triggered by a batch bound or by ``drain()``, never by the timer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ciolake.commit.committer import Committer, CommitterConfig
from ciolake.commit.dedup import DedupIndex
from ciolake.errors import ConfigurationError
from ciolake.journal.records import JournalRecord
from ciolake.lake.tables import RAW_EVENTS
from ciolake.lake.writer import DeltaWriter
from ciolake.metrics import Metrics
from ciolake.settings import load_settings
from tests.support import sample_bodies, table_rows

NOW = 1_790_000_000
# Far longer than any wait below: a commit seen in time was not the flush timer's doing.
LONG_FLUSH_S = 60.0
PROMPT_S = 20.0


class RecordingWriter(DeltaWriter):
    """A real writer that also notes, per ``append_all`` call that commits ``raw_events``, the
    journal LSNs of the rows it commits there."""

    def __init__(self, tables_uri: str) -> None:
        super().__init__(tables_uri)
        self.batches: list[list[int]] = []
        self._noted = threading.Lock()

    def append_all(
        self,
        batches: Mapping[str, pa.Table],
        *,
        versions: Mapping[int, int],
        small_files: Literal["merge", "defer"] = "merge",
    ) -> dict[str, float]:
        seconds = super().append_all(batches, versions=versions, small_files=small_files)
        if RAW_EVENTS in batches:
            lsns: list[int] = batches[RAW_EVENTS].column("journal_lsn").to_pylist()
            with self._noted:
                self.batches.append(lsns)
        return seconds

    def noted(self) -> list[list[int]]:
        with self._noted:
            return [list(batch) for batch in self.batches]


@dataclass
class Harness:
    """A started committer and what it was built from."""

    committer: Committer
    writer: RecordingWriter
    data_dir: Path
    retired: list[tuple[int, int]] = field(default_factory=list)

    @property
    def raw_uri(self) -> str:
        return self.writer.table_uri(RAW_EVENTS)


CommitterFactory = Callable[..., Harness]


@pytest.fixture
def make_committer(tmp_path: Path) -> Iterator[CommitterFactory]:
    """Started committers over ``tmp_path/data``; stopped and closed at teardown.

    `Committer.start` switches Arrow's process-wide memory pool; the previous pool is restored.
    """
    previous_pool = pa.default_memory_pool()
    made: list[tuple[Committer, DeltaWriter, DedupIndex]] = []

    def make(
        *,
        batch_max_bytes: int,
        batch_max_events: int = 5_000,
        flush_interval_s: float = LONG_FLUSH_S,
    ) -> Harness:
        data_dir = tmp_path / "data"
        writer = RecordingWriter(str(data_dir / "tables"))
        writer.ensure_tables()
        dedup = DedupIndex(data_dir / "state" / "dedup.sqlite3", window_days=8, cache_mib=4)
        config = CommitterConfig(
            flush_interval_s=flush_interval_s,
            batch_max_events=batch_max_events,
            batch_max_bytes=batch_max_bytes,
            timestamp_tolerance_s=300,
        )
        retired: list[tuple[int, int]] = []
        committer = Committer(
            config,
            writer=writer,
            dedup=dedup,
            retire=lambda stream, lsn: retired.append((stream, lsn)),
            metrics=Metrics(),
            clock=lambda: NOW + 1.0,
        )
        committer.start([], writer.committed_versions([0]))
        made.append((committer, writer, dedup))
        return Harness(committer, writer, data_dir, retired)

    yield make
    for committer, writer, dedup in made:
        committer.stop(deadline_s=30)
        dedup.close()
        writer.close()
    pa.set_memory_pool(previous_pool)


def make_records(bodies: list[bytes], *, first_lsn: int = 1) -> list[JournalRecord]:
    return [
        JournalRecord(
            lsn=first_lsn + i,
            received_at_us=NOW * 1_000_000,
            x_cio_timestamp=NOW,
            flags=0,
            body=body,
        )
        for i, body in enumerate(bodies)
    ]


def greedy_batches(records: list[JournalRecord], max_bytes: int) -> list[list[int]]:
    """The LSNs of each batch when batches are cut by body bytes alone, oldest first."""
    batches: list[list[int]] = []
    size = 0
    for record in records:
        if batches and size + len(record.body) <= max_bytes:
            batches[-1].append(record.lsn)
            size += len(record.body)
        else:
            batches.append([record.lsn])
            size = len(record.body)
    return batches


def wait_for(condition: Callable[[], bool], timeout: float = PROMPT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def raw_lsns(data_dir: Path) -> list[int]:
    rows = table_rows(data_dir, RAW_EVENTS, "journal_lsn", "ORDER BY journal_lsn")
    return [row["journal_lsn"] for row in rows]


def pooled_commits(
    batches: list[list[int]], sizes: dict[int, int], max_pool_bytes: int
) -> tuple[list[list[int]], list[int]]:
    """The ``raw_events`` commits that need no flush timer, and the LSNs left waiting: the first
    batch at once (the table was never committed), then each run of batches whose bodies reach
    ``max_pool_bytes``."""
    commits = [batches[0]]
    pool: list[int] = []
    for batch in batches[1:]:
        pool += batch
        if sum(sizes[lsn] for lsn in pool) >= max_pool_bytes:
            commits.append(pool)
            pool = []
    return commits, pool


def test_full_batches_are_taken_at_once_and_full_pools_committed_at_once(
    make_committer: CommitterFactory,
) -> None:
    max_bytes = 4_000
    harness = make_committer(batch_max_bytes=max_bytes)
    bodies = sample_bodies(120, seed=7, timestamp=NOW)
    records = make_records(bodies)
    sizes = {r.lsn: len(r.body) for r in records}
    batches = greedy_batches(records, max_bytes)
    for batch in batches:
        assert len(batch) == 1 or sum(sizes[lsn] for lsn in batch) <= max_bytes, batch
    prompt, waiting = pooled_commits(batches[:-1], sizes, max_bytes)
    assert len(prompt) >= 3, "the sample bodies should fill several pools"
    # The last batch, under the byte bound, waits for the flush interval, and so do the rows
    # pooled after the last full pool.
    waiting += batches[-1]

    started = time.monotonic()
    harness.committer.submit(records)
    assert wait_for(lambda: harness.writer.noted() == prompt), harness.writer.noted()
    assert time.monotonic() - started < LONG_FLUSH_S
    time.sleep(0.3)
    assert harness.writer.noted() == prompt
    # The backlog counts from the first delivery some table does not hold yet: the waiting
    # raw_events rows, and any earlier ones a channel table's pool still holds.
    assert harness.committer.backlog()[0] >= len(waiting)
    # What the journal's read-ahead counts: the last batch, still queued; not the pooled rows,
    # or a full pool would stop the journal being read until its table's next commit.
    assert harness.committer.unpooled_bytes() == sum(sizes[lsn] for lsn in batches[-1])
    assert raw_lsns(harness.data_dir) == [lsn for commit in prompt for lsn in commit]
    assert DeltaTable(harness.raw_uri).version() == len(prompt)

    assert harness.committer.stop(deadline_s=30) is True
    assert harness.writer.noted() == [*prompt, waiting]
    # One raw_events commit per pool (version 0 created the table).
    assert DeltaTable(harness.raw_uri).version() == len(prompt) + 1
    retired = [lsn for _stream, lsn in harness.retired]
    assert retired == sorted(retired)
    assert retired[-1] == records[-1].lsn
    rows = table_rows(harness.data_dir, RAW_EVENTS, "journal_lsn, body", "ORDER BY journal_lsn")
    assert [row["journal_lsn"] for row in rows] == [r.lsn for r in records]
    assert [row["body"].encode() for row in rows] == bodies
    assert harness.committer.backlog() == (0, 0)


@pytest.mark.parametrize("count", [1, 3])
def test_a_record_over_the_byte_bound_is_a_batch_alone(
    make_committer: CommitterFactory, count: int
) -> None:
    bodies = sample_bodies(count, seed=11, timestamp=NOW)
    max_bytes = 100
    assert all(len(body) > max_bytes for body in bodies)
    # No flush interval: every batch's rows are committed at once, so commits show batches.
    harness = make_committer(batch_max_bytes=max_bytes, flush_interval_s=0.0)
    records = make_records(bodies)

    harness.committer.submit(records)
    assert wait_for(lambda: harness.committer.backlog()[0] == 0), harness.committer.backlog()
    assert harness.writer.noted() == [[r.lsn] for r in records]
    assert raw_lsns(harness.data_dir) == [r.lsn for r in records]
    assert DeltaTable(harness.raw_uri).version() == count


def test_drain_commits_a_partial_batch_at_once(make_committer: CommitterFactory) -> None:
    harness = make_committer(batch_max_bytes=8 * 1024 * 1024)
    bodies = sample_bodies(8, seed=13, timestamp=NOW)
    first = make_records(bodies[:5])
    later = make_records(bodies[5:], first_lsn=6)

    harness.committer.submit(first)
    time.sleep(0.5)
    # Under both bounds and inside the flush interval: nothing is committed yet.
    assert harness.committer.backlog() == (5, sum(len(b) for b in bodies[:5]))
    assert harness.writer.noted() == []

    started = time.monotonic()
    harness.committer.drain()
    assert wait_for(lambda: harness.committer.backlog()[0] == 0), harness.committer.backlog()
    assert time.monotonic() - started < LONG_FLUSH_S
    assert harness.writer.noted() == [[1, 2, 3, 4, 5]]
    assert raw_lsns(harness.data_dir) == [1, 2, 3, 4, 5]

    # Draining lasts: what is handed over afterwards is committed at once too.
    harness.committer.submit(later)
    assert wait_for(lambda: harness.committer.backlog()[0] == 0), harness.committer.backlog()
    assert harness.writer.noted() == [[1, 2, 3, 4, 5], [6, 7, 8]]
    assert raw_lsns(harness.data_dir) == list(range(1, 9))
    assert DeltaTable(harness.raw_uri).version() == 2


@pytest.mark.parametrize("raw", ["0", "-1", "-4096"])
def test_a_batch_byte_bound_below_one_is_rejected(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="batch_max_bytes must be positive"):
        load_settings({"CIOLAKE_BATCH_MAX_BYTES": raw})


def test_a_batch_byte_bound_of_zero_from_a_flag_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="batch_max_bytes must be positive"):
        load_settings({}, batch_max_bytes=0)


def test_a_non_numeric_batch_byte_bound_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="batch_max_bytes"):
        load_settings({"CIOLAKE_BATCH_MAX_BYTES": "lots"})


def test_the_batch_byte_bound_is_read_from_the_environment() -> None:
    settings = load_settings({"CIOLAKE_BATCH_MAX_BYTES": " 65536 "})
    assert settings.batch_max_bytes == 65_536
    assert CommitterConfig.from_settings(settings).batch_max_bytes == 65_536
    assert load_settings({}).batch_max_bytes == 4 * 1024 * 1024
