"""The committer: moves journaled deliveries into the Delta tables, in batches, exactly once.

It runs on its own thread. A batch is taken at most once per flush interval (or as soon as
``batch_max_events`` deliveries or ``batch_max_bytes`` of bodies wait), decoded, deduplicated,
and written with one commit per table. Then the dedup index records the batch's ids and its
last sequence number, and journal segments wholly below that number are deleted. A crash
anywhere in between is repaired at the next start: each table's app transaction says which
deliveries it holds already.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import pyarrow as pa

from ciolake.commit.dedup import DedupIndex, keep_from_day
from ciolake.events.decode import Quarantined, decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import QUARANTINE, RAW_EVENTS
from ciolake.lake.writer import DeltaWriter
from ciolake.metrics import Metrics
from ciolake.runtime.memory import return_free_memory, use_system_allocator
from ciolake.runtime.priority import lower_this_thread
from ciolake.settings import Settings
from ciolake.units import SECONDS_PER_DAY

logger = logging.getLogger(__name__)

_PRUNE_EVERY_S = 3600.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0

# Adaptive batching. delta-rs's commit costs more as a table gathers files (several times a
# new table's at a thousand files; docs/performance.md), so when a batch's commits take
# longer than ADAPT_ABOVE_S, batches are spaced so that committing takes at most
# COMMIT_SHARE of the time, and grow (up to MAX_GROWTH times the configured bounds) to carry
# what arrives meanwhile: fewer, larger commits instead of falling behind.
COMMIT_SHARE = 0.1
ADAPT_ABOVE_S = 0.25
MAX_GROWTH = 4


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
    """What one batch writes where, and what the dedup index learns from it."""

    tables: dict[str, pa.Table]
    seen: list[tuple[str, int]]
    duplicates: int
    accepted: dict[str, int]
    quarantined: dict[str, int]
    with_violations: int


class Committer:
    """Background thread from the journal to the tables."""

    def __init__(
        self,
        config: CommitterConfig,
        *,
        writer: DeltaWriter,
        dedup: DedupIndex,
        retire: Callable[[int, int], object],
        metrics: Metrics,
        clock: Callable[[], float],
        on_applied: Callable[[Mapping[int, int]], None] = lambda _lsns: None,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self._config = config
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
        self._last_prune = float("-inf")
        self._commit_seconds = 0.0
        self.commits = 0
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
            return len(self._queue) + len(self._in_flight), self._pending_bytes

    def oldest_pending_us(self) -> int | None:
        """Receipt time of the oldest delivery not yet committed, if any."""
        with self._condition:
            if self._in_flight:
                return self._in_flight[0].received_at_us
            return self._queue[0].received_at_us if self._queue else None

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
            last_flush = time.monotonic()

    def _next_batch(self, last_flush: float) -> list[JournalRecord] | None:
        with self._condition:
            while not self._queue and not self._stopping:
                self._condition.wait()
            deadline = last_flush + self.batch_interval()
            while (
                not self._batch_ready()
                and not (self._stopping or self._draining)
                and (remaining := deadline - time.monotonic()) > 0
            ):
                self._condition.wait(remaining)
            if not self._queue:
                return None
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
        while True:
            try:
                with self._lock:
                    if retrying:
                        self._refresh_versions()
                    self._apply(batch)
                break
            except Exception as exc:  # Delta, SQLite and OS errors alike are retried
                self._note_failure(exc)
                if self._stopping_now():
                    return False
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                retrying = True
        self.consecutive_failures = 0
        self.last_failure = None
        with self._condition:
            self._pending_bytes -= sum(len(r.body) for r in batch)
            self._in_flight = []
        return True

    def _refresh_versions(self) -> None:
        if self._versions_unknown:
            # The server started while the tables were out of reach (see ``start``).
            self._writer.ensure_tables()
        self._versions = self._writer.committed_versions(self._streams())
        self._versions_unknown = False

    def _streams(self) -> set[int]:
        return self._known_streams | {k for streams in self._versions.values() for k in streams}

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

    def _apply(self, batch: list[JournalRecord]) -> None:
        started = time.monotonic()
        last_lsns: dict[int, int] = {}
        for record in batch:
            last_lsns[record.stream] = max(record.lsn, last_lsns.get(record.stream, 0))
        plan = self._plan(batch)
        committing = time.monotonic()
        seconds = self._writer.append_all(plan.tables, versions=last_lsns)
        self._commit_seconds = time.monotonic() - committing
        for name in plan.tables:
            held = self._versions[name]
            # Never lower: a recovered batch can end below what a table already holds.
            held.update({k: max(lsn, held.get(k, 0)) for k, lsn in last_lsns.items()})
        self._dedup.record(plan.seen, applied=last_lsns)
        self._on_applied(last_lsns)
        for stream, lsn in last_lsns.items():
            self._retire(stream, lsn)
        self._maybe_prune()
        self._count(plan, seconds, time.monotonic() - started)
        del plan
        return_free_memory()

    def _plan(self, batch: list[JournalRecord]) -> _Plan:
        decoded = [(record, decode_event(record.body)) for record in batch]
        raw_items = [(r, d) for r, d in decoded if not self._holds(RAW_EVENTS, r)]
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
        quarantine_items = [(r, q) for r, q in quarantine_items if not self._holds(QUARANTINE, r)]
        plan = _Plan({}, [], 0, {}, {}, 0)
        by_table = self._deduplicate(typed_items, plan)
        if raw_items:
            plan.tables[RAW_EVENTS] = rows.raw_table(raw_items)
        if quarantine_items:
            plan.tables[QUARANTINE] = rows.quarantine_table(quarantine_items)
            for _r, q in quarantine_items:
                plan.quarantined[q.reason] = plan.quarantined.get(q.reason, 0) + 1
        for table, items in by_table.items():
            plan.tables[table] = rows.channel_table(table, items)
            plan.accepted[table] = len(items)
            plan.with_violations += sum(1 for _r, t in items if t.spec_violations)
        return plan

    def _deduplicate(
        self, items: list[rows.TypedItem], plan: _Plan
    ) -> dict[str, list[rows.TypedItem]]:
        already = self._dedup.seen([t.event.event_id for _r, t in items])
        batch_seen: set[str] = set()
        by_table: dict[str, list[rows.TypedItem]] = defaultdict(list)
        for record, typed in items:
            event_id = typed.event.event_id
            fresh = not self._holds(typed.table, record)
            if event_id in already or event_id in batch_seen:
                plan.duplicates += fresh
                continue
            batch_seen.add(event_id)
            plan.seen.append(
                (event_id, keep_from_day(record.received_at_us, typed.event.timestamp))
            )
            if fresh:
                by_table[typed.table].append((record, typed))
        return by_table

    def _maybe_prune(self) -> None:
        now = self._clock()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._last_prune = now
            removed = self._dedup.prune(today=int(now // SECONDS_PER_DAY))
            if removed:
                logger.info("dedup index pruned", extra={"removed": removed})

    def _count(self, plan: _Plan, seconds: dict[str, float], batch_seconds: float) -> None:
        m = self._metrics
        for table, took in seconds.items():
            m.commits.labels(table=table).inc()
            m.commit_seconds.labels(table=table).observe(took)
        self.commits += len(seconds)
        for table, count in plan.accepted.items():
            m.accepted.labels(table=table).inc(count)
        for reason, count in plan.quarantined.items():
            m.quarantined.labels(reason=reason).inc(count)
        m.duplicates.inc(plan.duplicates)
        m.spec_violations.inc(plan.with_violations)
        m.batch_seconds.observe(batch_seconds)
