"""Fewer tables per batch: while commits are costly, a table that gets few rows waits.

A real `Committer` over a real `DeltaWriter` whose commits are made slow (so the committer is
busy), a real `DedupIndex`; tables read back with DuckDB's delta extension. What must hold:
the tables that get most rows are committed with every batch and the others less often; the
journal is never retired past a delivery some table still waits for; a crash while rows wait
loses nothing and doubles nothing; a stop commits everything.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest

from ciolake.commit import committer as committer_module
from ciolake.commit.committer import Committer, CommitterConfig
from ciolake.commit.dedup import DedupIndex
from ciolake.commit.pools import DueRule, TablePools, applied_watermarks
from ciolake.journal.records import JournalRecord
from ciolake.lake.tables import ALL_SPECS, RAW_EVENTS
from ciolake.lake.writer import DeltaWriter
from ciolake.metrics import Metrics
from tests.support import sample_bodies, table_rows, wait_for

NOW = 1_790_000_000
FLUSH_S = 0.1
# Longer than COMMIT_SHARE of the flush interval: every batch's commits make the committer busy.
SLOW_COMMIT_S = 0.05


class SlowWriter(DeltaWriter):
    """A real writer whose commits take at least SLOW_COMMIT_S, noting which tables each
    ``append_all`` committed and with which journal LSNs; ``hang()`` makes every later
    commit wait forever (a process that died mid-stream)."""

    def __init__(self, tables_uri: str) -> None:
        super().__init__(tables_uri)
        self.calls: list[dict[str, list[int]]] = []
        self._noted = threading.Lock()
        self._hung = threading.Event()
        self._never = threading.Event()
        self.blocked = threading.Event()

    def append_all(
        self,
        batches: Mapping[str, pa.Table],
        *,
        versions: Mapping[int, int],
        small_files: Literal["merge", "defer"] = "merge",
    ) -> dict[str, float]:
        if self._hung.is_set():
            self.blocked.set()
            self._never.wait()
        time.sleep(SLOW_COMMIT_S)
        seconds = super().append_all(batches, versions=versions, small_files=small_files)
        with self._noted:
            self.calls.append(
                {name: rows.column("journal_lsn").to_pylist() for name, rows in batches.items()}
            )
        return seconds

    def committed(self) -> dict[str, set[int]]:
        """Per table, the journal LSNs committed so far."""
        with self._noted:
            done: dict[str, set[int]] = {}
            for call in self.calls:
                for name, lsns in call.items():
                    done.setdefault(name, set()).update(lsns)
            return done

    def hang(self) -> None:
        self._hung.set()


@dataclass
class Life:
    """One life of the committer over a data directory."""

    committer: Committer
    writer: SlowWriter
    dedup: DedupIndex
    retired: list[tuple[int, dict[str, set[int]]]] = field(default_factory=list)


def start_life(data_dir: Path, recovered: list[JournalRecord]) -> Life:
    writer = SlowWriter(str(data_dir / "tables"))
    writer.ensure_tables()
    dedup = DedupIndex(data_dir / "state" / "dedup.sqlite3", window_days=8, cache_mib=4)
    config = CommitterConfig(
        flush_interval_s=FLUSH_S,
        # A table is due at 30 rows: raw_events (69 a batch) at every batch, the others not.
        batch_max_events=300,
        batch_max_bytes=10**9,
        timestamp_tolerance_s=300,
    )
    life = Life(None, writer, dedup)  # type: ignore[arg-type]
    life.committer = Committer(
        config,
        writer=writer,
        dedup=dedup,
        # What every table holds at the moment the journal is retired up to ``lsn``.
        retire=lambda _stream, lsn: life.retired.append((lsn, writer.committed())),
        metrics=Metrics(),
        clock=lambda: NOW + 1.0,
    )
    life.committer.start(recovered, writer.committed_versions([0]))
    return life


@pytest.fixture
def lives(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Life]]:
    # Slow commits also space batches out (adaptive batching); on a loaded machine that
    # left too few batches to compare. Here only the pools are under test.
    monkeypatch.setattr(committer_module, "ADAPT_ABOVE_S", float("inf"))
    made: list[Life] = []
    previous_pool = pa.default_memory_pool()
    yield made
    for life in made:
        life.committer.stop(deadline_s=1)
        life.writer.close()
    pa.set_memory_pool(previous_pool)


def make_records(count: int) -> list[JournalRecord]:
    bodies = sample_bodies(count, seed=23, timestamp=NOW)
    return [JournalRecord(i + 1, NOW * 1_000_000, NOW, 0, b, 0) for i, b in enumerate(bodies)]


def feed(committer: Committer, records: list[JournalRecord], *, per_batch: int) -> None:
    """Hand records over as a journal tail would, one flush interval's worth at a time."""
    for start in range(0, len(records), per_batch):
        committer.submit(records[start : start + per_batch])
        time.sleep(FLUSH_S)


def _within(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def lsns_by_table(data_dir: Path) -> dict[str, list[int]]:
    return {
        name: [r["journal_lsn"] for r in table_rows(data_dir, name, "journal_lsn")]
        for name in ALL_SPECS
    }


def destinations(data_dir: Path) -> dict[str, set[int]]:
    """Per table, the LSNs it holds once everything is committed (where each delivery goes)."""
    return {name: set(lsns) for name, lsns in lsns_by_table(data_dir).items()}


def test_small_tables_wait_while_commits_are_costly_and_nothing_is_retired_early(
    tmp_path: Path, lives: list[Life]
) -> None:
    data_dir = tmp_path / "data"
    life = start_life(data_dir, [])
    lives.append(life)
    records = make_records(1_380)  # 20 of each of the 69 schemas
    feed(life.committer, records, per_batch=69)
    assert life.committer.stop(deadline_s=30) is True

    held = lsns_by_table(data_dir)
    # Everything landed once.
    assert sorted(held[RAW_EVENTS]) == [r.lsn for r in records]
    for name, lsns in held.items():
        assert len(lsns) == len(set(lsns)), f"{name} holds a delivery twice"
    typed_or_quarantined = sum(len(lsns) for name, lsns in held.items() if name != RAW_EVENTS)
    assert typed_or_quarantined >= len(records) - 20, "some deliveries went nowhere"

    # raw_events gets every delivery: committed with every batch that had rows. A table with
    # a few rows per batch waited for others: it took fewer commits than raw_events.
    commits = Counter(name for call in life.writer.calls for name in call)
    smallest = min(
        (name for name in held if name != RAW_EVENTS and held[name]), key=lambda n: len(held[n])
    )
    assert commits[smallest] < commits[RAW_EVENTS], commits

    # At every retirement, every table held every delivery up to the retired LSN it gets.
    where = destinations(data_dir)
    assert life.retired, "the journal was never retired"
    for lsn, committed in life.retired:
        for name, goes in where.items():
            missing = {x for x in goes if x <= lsn} - committed.get(name, set())
            assert not missing, f"retired to {lsn} while {name} lacked {sorted(missing)[:5]}"
    assert life.retired[-1][0] == records[-1].lsn
    assert life.dedup.applied_lsn(0) == records[-1].lsn
    life.dedup.close()


def test_a_crash_while_rows_wait_loses_and_doubles_nothing(
    tmp_path: Path, lives: list[Life]
) -> None:
    data_dir = tmp_path / "data"
    records = make_records(690)
    first = start_life(data_dir, [])
    lives.append(first)

    # Crash at a moment some table's rows wait: raw_events holds more than the journal's
    # applied watermark says every table holds. Records are handed over until then, so that
    # a busy machine, where the committer may catch up with a whole feed, still meets one.
    def rows_wait() -> bool:
        raw = first.writer.committed().get(RAW_EVENTS, set())
        return max(raw, default=0) > first.dedup.applied_lsn(0)

    for start in range(0, len(records), 69):
        first.committer.submit(records[start : start + 69])
        if _within(rows_wait, FLUSH_S * 3):
            break
    else:
        wait_for(rows_wait, timeout=20, what="a table with rows waiting")
    first.writer.hang()
    # The dead process's committer must be parked in the hung writer before its dedup index
    # is closed: closing it under a commit still recording made SQLite crash the test process.
    # One more delivery (which the dead process never commits) makes sure a commit is tried.
    last = records[-1]
    first.committer.submit([JournalRecord(last.lsn + 1, last.received_at_us, NOW, 0, last.body, 0)])
    wait_for(first.writer.blocked.is_set, timeout=20, what="the committer stopped at a commit")
    applied = first.dedup.applied_lsn(0)
    assert applied < records[-1].lsn
    first.dedup.close()

    # The next life recovers what the journal kept: everything after the applied watermark.
    second = start_life(data_dir, [r for r in records if r.lsn > applied])
    lives.append(second)
    assert second.committer.stop(deadline_s=30) is True
    held = lsns_by_table(data_dir)
    assert sorted(held[RAW_EVENTS]) == [r.lsn for r in records]
    for name, lsns in held.items():
        assert len(lsns) == len(set(lsns)), f"{name} holds a delivery twice"
    assert sum(len(v) for n, v in held.items() if n != RAW_EVENTS) >= len(records) - 10
    second.dedup.close()


def test_watermark_stops_before_the_first_pooled_delivery() -> None:
    pools = TablePools()
    record = JournalRecord(7, NOW * 1_000_000, NOW, 0, b"{}", 0)
    later = JournalRecord(9, NOW * 1_000_000, NOW, 0, b"{}", 0)
    pools.add("sms_events", [(later, None), (record, None)], [("e7", 1)], now=0.0)
    assert pools.pooled("e7")
    assert applied_watermarks({0: 12, 1: 4}, pools.first_lsns()) == {0: 6, 1: 4}
    waiting = DueRule(min_rows=5, max_bytes=100, max_wait_s=3.0, spacing_s=None)
    assert pools.due(1.0, waiting) == []
    assert pools.due(3.0, waiting) == ["sms_events"]
    assert pools.due(1.0, replace(waiting, min_rows=2)) == ["sms_events"]
    assert pools.due(1.0, replace(waiting, max_bytes=4)) == ["sms_events"]  # two 2-byte bodies
    assert pools.due(1.0, replace(waiting, all_due=True)) == ["sms_events"]
    # Never committed: due at once under a spacing rule; then not until the spacing has passed.
    assert pools.due(1.0, replace(waiting, spacing_s=1.0)) == ["sms_events"]
    assert pools.next_deadline(waiting) == 3.0
    pools.take("sms_events", 1.0)
    assert not pools.pooled("e7")
    assert not pools
    pools.add("sms_events", [(later, None)], [("e9", 1)], now=1.2)
    spaced = replace(waiting, spacing_s=1.0)
    assert pools.due(1.5, spaced) == []
    assert pools.next_deadline(spaced) == 2.0
    assert pools.due(2.0, spaced) == ["sms_events"]
    pools.take("sms_events", 2.0)
    assert applied_watermarks({0: 12}, pools.first_lsns()) == {0: 12}
