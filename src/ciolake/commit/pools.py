"""Rows waiting for their table's commit, and how far the journal is applied.

Each batch's rows join their table's pool, and a table is committed when its pool is due. A
Delta commit through delta-rs costs about as much for ten rows as for a thousand, so while
commits are costly (the committer is busy), a table that gets few rows waits for more, up to a
time limit, instead of taking a commit in every batch; the tables that get most rows are not
held back. When commits are cheap every pool is due after a batch taken at its flush interval;
after a batch taken full, before its interval (under load: a batch then fills several times a
second), a table is committed at most once per flush interval, or as soon as its pool holds a
batch's bound of events or bodies: committing every table with every full batch (the busiest
ones fill a pool each time; the others are the many small commits) cost the committer 1.8
times the CPU per event (``docs/performance.md``).

A delivery is applied once every table it goes to holds it. The journal is retired, and the
dedup index's watermark moved, only up to the first delivery a pool still holds, so a crash
loses nothing that waits here: recovery reads it from the journal again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import QUARANTINE, RAW_EVENTS

# (journal record, decoded event): ``rows.RawItem``, ``TypedItem`` or ``QuarantineItem``.
Item = tuple[JournalRecord, Any]
# (event id, first day the dedup index keeps it), as ``DedupIndex.record`` takes them.
SeenEntry = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DueRule:
    """When a pool is due: any one of these (``all_due``: every pool now)."""

    min_rows: float
    max_bytes: float
    max_wait_s: float
    # Since the table's last commit (a table never committed: at once); None: no such rule.
    spacing_s: float | None
    all_due: bool = False


@dataclass(slots=True)
class Pool:
    """One table's rows that wait for its commit."""

    items: list[Item] = field(default_factory=list)
    seen: list[SeenEntry] = field(default_factory=list)
    since: float = 0.0
    body_bytes: int = 0

    def arrow(self, table: str) -> pa.Table:
        """The pool's rows as the table's Arrow rows."""
        if table == RAW_EVENTS:
            return rows.raw_table(self.items)
        if table == QUARANTINE:
            return rows.quarantine_table(self.items)
        return rows.channel_table(table, self.items)


class TablePools:
    """Every table's pool, and the event ids pooled but not yet recorded as seen."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        # When each table's pool was last taken to be committed (monotonic seconds).
        self._taken_at: dict[str, float] = {}
        self._ids: set[str] = set()
        # The pooled rows' bodies (each table's rows hold their delivery's body).
        self.body_bytes = 0

    def add(self, table: str, items: Sequence[Item], seen: Sequence[SeenEntry], now: float) -> None:
        """Pool ``items`` for ``table``; ``seen`` are their event ids, recorded when it commits."""
        if not items and not seen:
            return
        pool = self._pools.get(table)
        if pool is None:
            pool = self._pools[table] = Pool(since=now)
        pool.items.extend(items)
        pool.seen.extend(seen)
        size = sum(len(record.body) for record, _decoded in items)
        pool.body_bytes += size
        self.body_bytes += size
        self._ids.update(event_id for event_id, _day in seen)

    def pooled(self, event_id: str) -> bool:
        """True if a pool holds an event with this id (a later copy is a duplicate)."""
        return event_id in self._ids

    def due(self, now: float, rule: DueRule) -> list[str]:
        """The tables whose pools are to be committed now."""
        pools = self._pools.items()
        return [table for table, pool in pools if self._is_due(table, pool, now, rule)]

    def _is_due(self, table: str, pool: Pool, now: float, rule: DueRule) -> bool:
        return (
            rule.all_due
            or len(pool.items) >= rule.min_rows
            or pool.body_bytes >= rule.max_bytes
            or now - pool.since >= rule.max_wait_s
            or now >= self._spaced_until(table, rule)
        )

    def _spaced_until(self, table: str, rule: DueRule) -> float:
        if rule.spacing_s is None:
            return math.inf
        taken = self._taken_at.get(table)
        return -math.inf if taken is None else taken + rule.spacing_s

    def take(self, table: str, now: float) -> Pool:
        """Remove ``table``'s pool and return it (to be committed ``now``)."""
        pool = self._pools.pop(table)
        self._taken_at[table] = now
        self._ids.difference_update(event_id for event_id, _day in pool.seen)
        self.body_bytes -= sum(len(record.body) for record, _decoded in pool.items)
        return pool

    def drop_held(self, holds: Callable[[str, JournalRecord], bool]) -> None:
        """Drop the rows a table turned out to hold already (after a failed commit had landed)."""
        for table, pool in self._pools.items():
            kept = []
            for item in pool.items:
                if holds(table, item[0]):
                    self.body_bytes -= len(item[0].body)
                    pool.body_bytes -= len(item[0].body)
                else:
                    kept.append(item)
            pool.items = kept

    def next_deadline(self, rule: DueRule) -> float | None:
        """When the first pool falls due by time (None when nothing waits)."""
        return min(
            (
                min(p.since + rule.max_wait_s, self._spaced_until(t, rule))
                for t, p in self._pools.items()
            ),
            default=None,
        )

    def oldest_received_us(self) -> int | None:
        """Receipt time of the oldest pooled delivery (None when nothing waits)."""
        return min(
            (record.received_at_us for p in self._pools.values() for record, _d in p.items),
            default=None,
        )

    def first_lsns(self) -> dict[int, int]:
        """Per journal stream, the lowest sequence number some pool still holds."""
        first: dict[int, int] = {}
        for pool in self._pools.values():
            for record, _decoded in pool.items:
                if record.lsn < first.get(record.stream, record.lsn + 1):
                    first[record.stream] = record.lsn
        return first

    def __bool__(self) -> bool:
        return bool(self._pools)


def applied_watermarks(processed: dict[int, int], first_pooled: dict[int, int]) -> dict[int, int]:
    """Per stream, the last sequence number every table holds: everything taken from the
    journal, up to the first delivery still pooled."""
    return {
        stream: min(lsn, first_pooled.get(stream, lsn + 1) - 1) for stream, lsn in processed.items()
    }


def tables_of(pools: Iterable[tuple[str, Pool]]) -> dict[str, pa.Table]:
    """Each non-empty pool's Arrow rows, by table."""
    return {table: pool.arrow(table) for table, pool in pools if pool.items}
