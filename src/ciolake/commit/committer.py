"""The committer: moves journaled deliveries into the Delta tables, in batches, exactly once.

It runs on its own thread. A batch is taken at most once per flush interval (or as soon as
``batch_max_events`` deliveries or ``batch_max_bytes`` of bodies wait), decoded, deduplicated,
and its rows join their tables' pools (``commit/pools.py``); each due pool is written with one
commit per table. Then the dedup index records the committed rows' ids and the last sequence
number every table holds, and journal segments wholly below that number are deleted. A crash
anywhere in between is repaired at the next start: each table's app transaction says which
deliveries it holds already.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from ciolake.commit.dedup import DedupIndex, keep_from_day
from ciolake.commit.pools import (
    DueRule,
    Item,
    Pool,
    SeenEntry,
    TablePools,
    applied_watermarks,
    tables_of,
)
from ciolake.errors import AnotherWriterError
from ciolake.events.decode import Decoded, Quarantined, decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import QUARANTINE, RAW_EVENTS
from ciolake.metrics import Metrics
from ciolake.runtime.memory import return_free_memory, use_system_allocator
from ciolake.runtime.priority import lower_this_thread
from ciolake.settings import Settings
from ciolake.units import SECONDS_PER_DAY

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pyarrow as pa

logger = logging.getLogger(__name__)


class TableWriter(Protocol):
    """Where the committer's rows go: the Delta tables (``lake.writer.DeltaWriter``), or
    Zerobus for ``raw_events`` (``databricks.zerobus.ZerobusSink``)."""

    def ensure_tables(self) -> None:
        """Make the tables ready to take rows (created, or a stream opened)."""
        ...

    def committed_versions(self, streams: Iterable[int]) -> dict[str, dict[int, int]]:
        """Per table and journal stream, the last sequence number known to be held."""
        ...

    def append_all(
        self,
        batches: Mapping[str, pa.Table],
        *,
        versions: Mapping[int, int],
        small_files: Literal["merge", "defer"] = "merge",
    ) -> dict[str, float]:
        """Append each table's rows; return the seconds each took."""
        ...

    def close(self) -> None:
        """Release what the writer holds."""
        ...


_PRUNE_EVERY_S = 3600.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0

# Adaptive batching. delta-rs's commit costs more as a table gathers files (several times a
# new table's at a thousand files; docs/performance.md), so when a batch's commits take
# longer than ADAPT_ABOVE_S (smoothed over batches: SMOOTHING is the weight of the last),
# batches are spaced so that committing takes at most COMMIT_SHARE of the time, and grow (up
# to MAX_GROWTH times the configured bounds) to carry what arrives meanwhile: fewer, larger
# commits instead of falling behind. A larger growth bought little and held more memory.
COMMIT_SHARE = 0.1
ADAPT_ABOVE_S = 0.25
MAX_GROWTH = 2
SMOOTHING = 0.3
# Fewer tables per batch (``commit/pools.py``). The committer is busy while its commits take
# more than COMMIT_SHARE of a flush interval; then a table waits until it has 1/MIN_ROWS_SHARE
# of a batch's event bound in rows, or for MAX_WAIT_INTERVALS flush intervals.
MIN_ROWS_SHARE = 10
MAX_WAIT_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class CommitterConfig:
    """How the committer batches."""

    flush_interval_s: float
    batch_max_events: int
    batch_max_bytes: int
    timestamp_tolerance_s: int
    nice: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CommitterConfig:
        """The committer's part of the settings."""
        return cls(
            flush_interval_s=settings.flush_interval_s,
            batch_max_events=settings.batch_max_events,
            batch_max_bytes=settings.batch_max_bytes,
            timestamp_tolerance_s=settings.timestamp_tolerance_s,
            nice=settings.background_nice,
        )


@dataclass(slots=True)
class _Plan:
    """What one batch adds to each table's pool, and what the dedup index learns now."""

    items: dict[str, list[Item]]
    seen: dict[str, list[SeenEntry]]
    duplicates: int


class Committer:
    """Background thread from the journal to the tables."""

    def __init__(
        self,
        config: CommitterConfig,
        *,
        writer: TableWriter,
        dedup: DedupIndex,
        retire: Callable[[int, int], object],
        metrics: Metrics,
        clock: Callable[[], float],
        on_applied: Callable[[Mapping[int, int]], None] = lambda _lsns: None,
        lock: AbstractContextManager[object] | None = None,
        writes: Literal["all", "raw", "derived"] = "all",
    ) -> None:
        """Args:
        writes: which tables the committer fills: ``all``; only ``raw_events`` (a receiver
            of several sharing a lake); or only the derived ones, the channel tables and the
            quarantine (the deriver, whose deliveries come from ``raw_events``).
        """
        self._config = config
        self._writes_raw = writes != "derived"
        self._derives = writes != "raw"
        self._lock = lock or nullcontext()
        self._on_applied = on_applied
        self._writer = writer
        self._dedup = dedup
        self._retire = retire
        self._metrics = metrics
        self._clock = clock
        self._queue: deque[JournalRecord] = deque()
        self._in_flight: list[JournalRecord] = []
        self._pending_bytes = 0
        self._queued_bytes = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._draining = False
        self._thread: threading.Thread | None = None
        self._versions: dict[str, dict[int, int]] = {}
        self._versions_unknown = False
        self._known_streams: set[int] = set()
        self._applied: dict[int, int] = {}
        self._last_prune = float("-inf")
        # Seconds a batch's commits take, smoothed over batches (SMOOTHING).
        self._commit_seconds = 0.0
        # Whether the last batch was taken full, before its flush interval ran out (under load).
        self._batch_was_full = False
        self._pools = TablePools()
        # Per stream, the last sequence number taken into the pools.
        self._processed: dict[int, int] = {}
        self._pooled_count = 0
        self._pooled_bytes = 0
        self._pooled_oldest_us: int | None = None
        # Seen entries of committed rows that the dedup index has not recorded yet.
        self._unrecorded: list[SeenEntry] = []
        self.commits = 0
        # Set when the thread stopped on an error a retry cannot get past.
        self.fatal: Exception | None = None
        self.consecutive_failures = 0
        self.last_failure: str | None = None

    def start(
        self,
        recovered: Sequence[JournalRecord],
        versions: dict[str, dict[int, int]] | None,
        *,
        streams: Sequence[int] = (),
    ) -> None:
        """Start the thread, first applying deliveries recovered from the journal.

        Args:
            recovered: journaled deliveries not yet applied, in order per stream.
            versions: per table and journal stream, the last sequence number it holds; None
                when the tables could not be reached at start: the thread then creates and
                reads them before its first batch, retrying like any failed commit.
            streams: the journal streams whose versions to read when ``versions`` is None.
        """
        self._versions_unknown = versions is None
        self._known_streams = set(streams)
        self._versions = {table: dict(s) for table, s in (versions or {}).items()}
        use_system_allocator()
        self.submit(recovered)
        self._thread = threading.Thread(target=self._run, name="ciolake-committer", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[JournalRecord]) -> None:
        """Hand over durably journaled deliveries (called from the event loop)."""
        if not records:
            return
        with self._condition:
            was_empty = not self._queue
            self._queue.extend(records)
            size = sum(len(r.body) for r in records)
            self._pending_bytes += size
            self._queued_bytes += size
            if was_empty or self._batch_ready():
                self._condition.notify()

    def batch_interval(self) -> float:
        """Seconds between batches: the flush interval, or longer while commits are slow."""
        spacing = self._commit_seconds / COMMIT_SHARE if self._commit_seconds > ADAPT_ABOVE_S else 0
        return max(self._config.flush_interval_s, spacing)

    def _growth(self) -> int:
        """How many times the configured bounds a batch may hold now."""
        stretch = self.batch_interval() / max(self._config.flush_interval_s, 1.0)
        return max(1, min(MAX_GROWTH, math.ceil(stretch)))

    def batch_max_bytes(self) -> int:
        """The bound on a batch's bodies now (the configured one, grown while commits are
        slow)."""
        return self._bounds()[1]

    def _bounds(self) -> tuple[int, int]:
        growth = self._growth()
        return self._config.batch_max_events * growth, self._config.batch_max_bytes * growth

    def _batch_ready(self) -> bool:
        max_events, max_bytes = self._bounds()
        return len(self._queue) >= max_events or self._queued_bytes >= max_bytes

    def backlog(self) -> tuple[int, int]:
        """Deliveries journaled but not yet committed: (count, body bytes)."""
        with self._condition:
            count = len(self._queue) + len(self._in_flight) + self._pooled_count
            return count, self._pending_bytes + self._pooled_bytes

    def unpooled_bytes(self) -> int:
        """Bodies handed over and not yet in the pools (queued, or in the batch being applied):
        what the read-ahead counts. A table's pool is committed once it holds a batch's bound."""
        with self._condition:
            return self._pending_bytes

    def oldest_pending_us(self) -> int | None:
        """Receipt time of the oldest delivery not yet committed, if any."""
        with self._condition:
            heads = self._in_flight[:1] + list(itertools.islice(self._queue, 1))
            pooled = [] if self._pooled_oldest_us is None else [self._pooled_oldest_us]
            return min([r.received_at_us for r in heads] + pooled, default=None)

    def drain(self) -> None:
        """From now on, commit whatever is queued at once instead of waiting to fill batches
        (at shutdown, while the rest of the journal is handed over)."""
        with self._condition:
            self._draining = True
            self._condition.notify()

    def stop(self, *, deadline_s: float) -> bool:
        """Commit everything queued, then stop; give up after ``deadline_s``.

        Returns:
            True if everything was committed. Anything left stays in the journal and is
            committed at the next start.
        """
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join(timeout=deadline_s)
            if self._thread.is_alive():
                return False
        return self.backlog()[0] == 0

    def _run(self) -> None:
        lower_this_thread(self._config.nice)
        last_flush = time.monotonic()
        while True:
            batch = self._next_batch(last_flush)
            if batch is None:
                return
            if not self._apply_with_retries(batch):
                return
            if batch:
                last_flush = time.monotonic()

    def _max_wait_s(self) -> float:
        return MAX_WAIT_INTERVALS * self._config.flush_interval_s

    def _next_batch(self, last_flush: float) -> list[JournalRecord] | None:
        """The next batch to apply; empty when only pooled rows are due; None to stop."""
        with self._condition:
            while not self._queue and not self._stopping:
                pooled_until = self._pools.next_deadline(self._due_rule())
                if pooled_until is not None and self._draining:
                    return []
                if pooled_until is None:
                    self._condition.wait()
                elif (remaining := pooled_until - time.monotonic()) > 0:
                    self._condition.wait(remaining)
                else:
                    return []
            if self._stopping and not self._queue:
                return [] if self._pools else None
            deadline = last_flush + self.batch_interval()
            while (
                not self._batch_ready()
                and not (self._stopping or self._draining)
                and (remaining := deadline - time.monotonic()) > 0
            ):
                self._condition.wait(remaining)
            self._batch_was_full = self._batch_ready()
            self._in_flight = self._take_batch()
            return self._in_flight

    def _take_batch(self) -> list[JournalRecord]:
        """The oldest queued deliveries, up to either bound (always at least one)."""
        batch: list[JournalRecord] = []
        size = 0
        max_events, max_bytes = self._bounds()
        while self._queue and len(batch) < max_events:
            body_size = len(self._queue[0].body)
            if batch and size + body_size > max_bytes:
                break
            batch.append(self._queue.popleft())
            size += body_size
        self._queued_bytes -= size
        return batch

    def _apply_with_retries(self, batch: list[JournalRecord]) -> bool:
        """Apply a batch, retrying until it succeeds; False if stopping first.

        A failed batch is never skipped: later batches would move the applied watermark past
        it, and its deliveries would be lost at the next start. Before a retry the tables'
        versions are read again, since some commits of the failed attempt may have landed.
        """
        delay = _RETRY_FIRST_S
        retrying = self._versions_unknown
        pooled = False
        while True:
            try:
                with self._lock:
                    if retrying:
                        self._refresh_versions()
                        self._pools.drop_held(self._holds)
                    if not pooled:
                        self._pool(batch)
                        pooled = True
                    self._commit_due()
                break
            except Exception as exc:  # Delta, SQLite and OS errors alike are retried
                self._note_failure(exc)
                if isinstance(exc, AnotherWriterError):
                    # Retrying would race the other writer: the process stops (the
                    # deriver's run, the supervisor's watch); the journal keeps the rest.
                    self.fatal = exc
                    return False
                if self._stopping_now():
                    return False
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                retrying = True
        self.consecutive_failures = 0
        self.last_failure = None
        self._settle(batch)
        return True

    def _settle(self, batch: list[JournalRecord]) -> None:
        """Publish, for other threads, what the pools hold now that the batch is applied."""
        waiting = sum(lsn - self._applied.get(k, 0) for k, lsn in self._processed.items())
        oldest = self._pools.oldest_received_us()
        with self._condition:
            self._pending_bytes -= sum(len(r.body) for r in batch)
            self._in_flight = []
            # Deliveries taken that some table does not hold yet; the pooled rows' bodies.
            self._pooled_count = waiting
            self._pooled_bytes = self._pools.body_bytes
            self._pooled_oldest_us = oldest

    def _refresh_versions(self) -> None:
        if self._versions_unknown:
            # The server started while the tables were out of reach (see ``start``).
            self._writer.ensure_tables()
        self._versions = self._writer.committed_versions(self._streams())
        self._versions_unknown = False

    def _streams(self) -> set[int]:
        return self._known_streams | {k for streams in self._versions.values() for k in streams}

    def _learn_streams(self, batch: list[JournalRecord]) -> None:
        """Read what the tables hold of streams met for the first time.

        The deriver meets a receiver's stream only when ``raw_events`` first holds it, and a
        table may hold some of its deliveries already (committed before a crash).
        """
        new = {record.stream for record in batch} - self._streams()
        if not new:
            return
        for table, held in self._writer.committed_versions(new).items():
            self._versions.setdefault(table, {}).update(held)
        self._known_streams |= new

    def _holds(self, table: str, record: JournalRecord) -> bool:
        """True if ``table`` already holds whatever ``record`` puts in it."""
        return record.lsn <= self._versions[table].get(record.stream, 0)

    def _note_failure(self, exc: Exception) -> None:
        self.consecutive_failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"
        self._metrics.commit_failures.inc()
        logger.error(
            "commit failed; batch kept in the journal",
            extra={"error": self.last_failure, "attempt": self.consecutive_failures},
        )

    @property
    def alive(self) -> bool:
        """True while the committer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _stopping_now(self) -> bool:
        with self._condition:
            return self._stopping

    def _pool(self, batch: list[JournalRecord]) -> None:
        """Decode and deduplicate a batch, and add its rows to their tables' pools."""
        self._learn_streams(batch)
        for record in batch:
            self._processed[record.stream] = max(record.lsn, self._processed.get(record.stream, 0))
        plan = self._plan(batch)
        now = time.monotonic()
        for table in plan.items.keys() | plan.seen.keys():
            self._pools.add(table, plan.items.get(table, []), plan.seen.get(table, []), now)
        self._metrics.duplicates.inc(plan.duplicates)

    def _commit_due(self) -> None:
        """Commit every pool that is due, then record and retire what all tables hold."""
        started = time.monotonic()
        due = self._pools.due(started, self._due_rule())
        pools = [(table, self._pools.take(table, started)) for table in due]
        try:
            self._commit(pools, started)
        except BaseException:
            for table, pool in pools:
                self._pools.add(table, pool.items, pool.seen, pool.since)
            raise
        self._record()
        self._maybe_prune()
        return_free_memory()

    def _due_rule(self) -> DueRule:
        """While busy, a table with few rows waits (up to ``MAX_WAIT_INTERVALS``). Otherwise,
        after a batch taken at its flush interval every pool is due; after one taken full (under
        load), each table is committed once per flush interval, or at once when its pool holds
        a batch's bound of rows or bodies."""
        max_events, max_bytes = self._bounds()
        busy = self._busy()
        return DueRule(
            min_rows=(
                max(1, self._config.batch_max_events // MIN_ROWS_SHARE) if busy else max_events
            ),
            max_bytes=max_bytes,
            max_wait_s=self._max_wait_s(),
            spacing_s=None if busy else self._config.flush_interval_s,
            all_due=self._stopping or self._draining or not (busy or self._batch_was_full),
        )

    def _busy(self) -> bool:
        return self._commit_seconds > COMMIT_SHARE * self._config.flush_interval_s

    def _commit(self, pools: list[tuple[str, Pool]], started: float) -> None:
        tables = tables_of(pools)
        seconds: dict[str, float] = {}
        if tables:
            committing = time.monotonic()
            # A busy committer leaves merging small files until they crowd a partition.
            seconds = self._writer.append_all(
                tables,
                versions=self._processed,
                small_files="defer" if self._busy() else "merge",
            )
            took = time.monotonic() - committing
            self._commit_seconds += SMOOTHING * (took - self._commit_seconds)
        for name in tables:
            held = self._versions[name]
            # Never lower: a recovered batch can end below what a table already holds.
            held.update({k: max(lsn, held.get(k, 0)) for k, lsn in self._processed.items()})
        for _table, pool in pools:
            self._unrecorded.extend(pool.seen)
        self._count(pools, seconds, time.monotonic() - started)

    def _record(self) -> None:
        """Tell the dedup index, the runtime and the journal what every table holds now."""
        applied = applied_watermarks(self._processed, self._pools.first_lsns())
        self._dedup.record(self._unrecorded, applied=applied)
        self._unrecorded = []
        self._applied = applied
        self._on_applied(applied)
        for stream, lsn in applied.items():
            self._retire(stream, lsn)

    def _plan(self, batch: list[JournalRecord]) -> _Plan:
        decoded = [(record, decode_event(record.body)) for record in batch]
        plan = _Plan(defaultdict(list), defaultdict(list), 0)
        if self._writes_raw:
            plan.items[RAW_EVENTS] = [(r, d) for r, d in decoded if not self._holds(RAW_EVENTS, r)]
        if self._derives:
            self._plan_derived(decoded, plan)
        return plan

    def _plan_derived(self, decoded: list[tuple[JournalRecord, Decoded]], plan: _Plan) -> None:
        quarantine_items: list[rows.QuarantineItem] = []
        typed_items: list[rows.TypedItem] = []
        for record, result in decoded:
            if record.stale:
                quarantine_items.append(
                    (record, rows.stale_quarantine(result, self._config.timestamp_tolerance_s))
                )
            elif isinstance(result, Quarantined):
                quarantine_items.append((record, result))
            else:
                typed_items.append((record, result))
        plan.items[QUARANTINE] = [
            (r, q) for r, q in quarantine_items if not self._holds(QUARANTINE, r)
        ]
        self._deduplicate(typed_items, plan)

    def _deduplicate(self, items: list[rows.TypedItem], plan: _Plan) -> None:
        already = self._dedup.seen([t.event.event_id for _r, t in items])
        batch_seen: set[str] = set()
        for record, typed in items:
            event_id = typed.event.event_id
            fresh = not self._holds(typed.table, record)
            if event_id in already or event_id in batch_seen or self._pools.pooled(event_id):
                plan.duplicates += fresh
                continue
            batch_seen.add(event_id)
            plan.seen[typed.table].append(
                (event_id, keep_from_day(record.received_at_us, typed.event.timestamp))
            )
            if fresh:
                plan.items[typed.table].append((record, typed))

    def _maybe_prune(self) -> None:
        now = self._clock()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._last_prune = now
            removed = self._dedup.prune(today=int(now // SECONDS_PER_DAY))
            if removed:
                logger.info("dedup index pruned", extra={"removed": removed})

    def _count(
        self, pools: list[tuple[str, Pool]], seconds: dict[str, float], batch_seconds: float
    ) -> None:
        m = self._metrics
        for table, took in seconds.items():
            m.commits.labels(table=table).inc()
            m.commit_seconds.labels(table=table).observe(took)
        self.commits += len(seconds)
        for table, pool in pools:
            if table == QUARANTINE:
                for _record, quarantined in pool.items:
                    m.quarantined.labels(reason=quarantined.reason).inc()
            elif table != RAW_EVENTS and pool.items:
                m.accepted.labels(table=table).inc(len(pool.items))
                m.spec_violations.inc(sum(1 for _r, typed in pool.items if typed.spec_violations))
        m.batch_seconds.observe(batch_seconds)
