"""``ciolake derive``: the channel tables and the quarantine, derived from ``raw_events``.

With several receivers sharing a lake (``serve --role receiver``), each lands only
``raw_events``; one deriver reads the versions they add (``lake/changes.py``) and hands their
deliveries to the committer, which writes only the derived tables. Everything else is the
committer's, as in ``serve``: the typing, the exactly-once index, one app transaction per
journal stream in every commit, retries. Receivers number their streams apart
(``Settings.stream_base``), so a stream's deliveries reach the deriver in journal order, and a
table's app transaction for a stream says which of them it holds.

The deriver's position is the last ``raw_events`` version every derived table holds; it is
saved in the dedup index's database once the committer reports the versions' deliveries
applied. After a crash, the versions after it are read again, and whatever a table holds
already is skipped, as after a crash of ``serve``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from ciolake.commit.committer import Committer, CommitterConfig
from ciolake.commit.dedup import DedupIndex
from ciolake.derive.python import is_stale, raw_records
from ciolake.errors import AnotherWriterError, TransientError
from ciolake.journal.records import FLAG_STALE, JournalRecord
from ciolake.lake.changes import VERSION_COLUMN, TableChanges
from ciolake.lake.location import parse_location
from ciolake.lake.tables import ALL_SPECS, RAW_EVENTS
from ciolake.lake.writer import DeltaWriter
from ciolake.metrics import Metrics
from ciolake.runtime.core import compact_until_stopped
from ciolake.runtime.locks import FileLock, commit_lock_path
from ciolake.settings import Settings

logger = logging.getLogger(__name__)

# One deriver per lake: of two, one stops (``DeltaWriter``'s owner).
DERIVER_OWNER = "ciolake-deriver"
DERIVED_TABLES = tuple(name for name in ALL_SPECS if name != RAW_EVENTS)
# Versions read at a time: a receiver's version holds at most a grown batch's bodies.
VERSIONS_PER_READ = 8
# Deliveries are read ahead into the committer by up to this many batches' worth of bodies.
_READ_AHEAD_BATCHES = 2


@dataclass(frozen=True, slots=True)
class _Version:
    """A ``raw_events`` version read: per journal stream, the last sequence number it holds."""

    version: int
    last_lsns: dict[int, int]


@dataclass(frozen=True, slots=True)
class DeriverStatus:
    """Where the deriver stands.

    Attributes:
        derived_version: the last ``raw_events`` version every derived table holds.
        read_version: the last version read and handed to the committer.
        latest_version: ``raw_events``'s latest version when last looked at.
        backlog: deliveries read but not yet committed to every table.
        lag_s: age of the oldest delivery read but not yet committed (0 when none).
    """

    derived_version: int
    read_version: int
    latest_version: int
    backlog: int
    lag_s: float


class Deriver:
    """Reads ``raw_events``'s new versions into a committer of the derived tables."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float], metrics: Metrics) -> None:
        self.settings = settings
        self._clock = clock
        self._metrics = metrics
        self._raw_events = TableChanges(parse_location(settings.tables_location), RAW_EVENTS)
        self._pending: deque[_Version] = deque()
        self._applied: dict[int, int] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._latest = -1

    def open(self) -> None:
        """Create the derived tables where missing, read what they hold, start committing.

        Raises:
            TableUnreadableError: a table's log is missing or damaged.
            StoreUnavailableError: the tables are out of reach.
        """
        settings = self.settings
        self._writer = DeltaWriter(
            settings.tables_location, names=DERIVED_TABLES, owner=DERIVER_OWNER
        )
        self._dedup = DedupIndex(
            settings.dedup_path,
            window_days=settings.dedup_window_days,
            cache_mib=settings.dedup_cache_mib,
        )
        self._writer.ensure_tables()
        streams = self._dedup.streams()
        self._applied = {k: self._dedup.applied_lsn(k) for k in streams}
        self._saved_version = self._dedup.derived_version()
        self.derived_version = self.read_version = self._saved_version
        self.committer = Committer(
            CommitterConfig.from_settings(settings),
            writer=self._writer,
            dedup=self._dedup,
            retire=self._note_applied,
            metrics=self._metrics,
            clock=self._clock,
            lock=FileLock(commit_lock_path(settings.state_dir)),
            writes="derived",
        )
        self.committer.start([], self._writer.committed_versions(streams), streams=streams)
        logger.info(
            "deriver started",
            extra={"derived_version": self.derived_version, "streams": len(streams)},
        )
        if settings.compact_interval_s > 0:
            thread = threading.Thread(
                target=compact_until_stopped,
                args=(settings, self._clock, self._stop),
                name="ciolake-maintenance",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def step(self) -> int:
        """Hand the committer the next versions of ``raw_events``, if it has room for them.

        Returns:
            How many versions were read (0: none new, or the committer is full).

        Raises:
            ChangesGoneError: versions not derived yet were vacuumed.
            TableUnreadableError, StoreUnavailableError: ``raw_events`` cannot be read.
        """
        ahead = _READ_AHEAD_BATCHES * self.committer.batch_max_bytes()
        room = ahead - self.committer.unpooled_bytes()
        if room <= 0:
            return 0
        self._latest = self._raw_events.latest_version()
        first = self.read_version + 1
        last = min(self._latest, self.read_version + VERSIONS_PER_READ)
        if first > last:
            return 0
        rows = self._raw_events.added_rows(first=first, last=last)
        records = deliveries(rows, tolerance_s=self.settings.timestamp_tolerance_s)
        with self._guard:
            self._pending.extend(_versions_read(rows, first, last))
        self.read_version = last
        self.committer.submit(records)
        self._advance()
        return last - first + 1

    def run(self, *, until_caught_up: bool, on_progress: Callable[[DeriverStatus], None]) -> None:
        """Derive until ``stop`` is called, or (``until_caught_up``) until every delivery of
        the versions there were at the last look has been committed.

        Raises:
            ChangesGoneError, TableUnreadableError: as ``step``.
            AnotherWriterError: a second deriver commits to the same tables.
        """
        while not self._stop.is_set():
            if self.committer.fatal is not None:
                raise AnotherWriterError(
                    f"{self.committer.fatal}: run one ciolake derive per lake"
                ) from self.committer.fatal
            read = self._step_or_wait()
            status = self.status()
            on_progress(status)
            logger.debug("derive status", extra=dataclasses.asdict(status))
            if until_caught_up and not read and _caught_up(status):
                return
            if not read:
                self._stop.wait(self.settings.flush_interval_s)

    def _step_or_wait(self) -> int:
        try:
            return self.step()
        except Exception as exc:
            if not isinstance(exc, TransientError):
                raise
            # The store's outages pass; the committer's own retries cover its side.
            logger.warning("raw_events out of reach", extra={"error": str(exc)})
            return 0

    def stop(self) -> None:
        """Make ``run`` return (from a signal handler or another thread)."""
        self._stop.set()

    def status(self) -> DeriverStatus:
        """Where the deriver stands now."""
        backlog, _size = self.committer.backlog()
        oldest = self.committer.oldest_pending_us()
        lag = 0.0 if oldest is None else max(0.0, self._clock() - oldest / 1_000_000)
        return DeriverStatus(
            self.derived_version, self.read_version, self._latest, backlog, round(lag, 3)
        )

    def close(self, *, deadline: float) -> bool:
        """Commit everything read, then stop.

        Args:
            deadline: ``time.monotonic()`` by which to give up; what is left is read again
                from ``raw_events`` at the next start.

        Returns:
            True if everything read was committed.
        """
        self._stop.set()
        self.committer.drain()
        drained = self.committer.stop(deadline_s=max(0.1, deadline - time.monotonic()))
        if not self.committer.alive:
            self._dedup.close()
            self._writer.close()
        return drained

    def _note_applied(self, stream: int, lsn: int) -> None:
        """The committer's report, on its thread (the one that uses the dedup index): every
        table holds ``stream`` up to ``lsn``."""
        with self._guard:
            self._applied[stream] = lsn
        self._advance()
        if self.derived_version > self._saved_version:
            self._dedup.save_derived_version(self.derived_version)
            self._saved_version = self.derived_version

    def _advance(self) -> None:
        """Move the position past every version whose deliveries all tables hold."""
        with self._guard:
            while self._pending and self._covered(self._pending[0]):
                self.derived_version = self._pending.popleft().version

    def _covered(self, version: _Version) -> bool:
        return all(self._applied.get(k, 0) >= lsn for k, lsn in version.last_lsns.items())


def _caught_up(status: DeriverStatus) -> bool:
    return status.read_version >= status.latest_version and status.backlog == 0


def deliveries(rows: pa.Table, *, tolerance_s: int) -> list[JournalRecord]:
    """``raw_events`` rows as journal records in the order the committer takes them: by
    version, then journal stream and sequence number; stale ones flagged as the receiver did."""
    keys = (VERSION_COLUMN, "journal_stream", "journal_lsn")
    ordered = rows.sort_by([(key, "ascending") for key in keys])
    records = raw_records(ordered)
    return [
        JournalRecord(r.lsn, r.received_at_us, r.x_cio_timestamp, FLAG_STALE, r.body, r.stream)
        if is_stale(r, tolerance_s)
        else r
        for r in records
    ]


def _versions_read(rows: pa.Table, first: int, last: int) -> list[_Version]:
    """Each version from ``first`` to ``last``, with the last sequence number per stream it
    holds (none for a version that added no rows)."""
    grouped = rows.group_by([VERSION_COLUMN, "journal_stream"]).aggregate([("journal_lsn", "max")])
    last_lsns: dict[int, dict[int, int]] = {v: {} for v in range(first, last + 1)}
    for version, stream, lsn in zip(
        grouped.column(VERSION_COLUMN).to_pylist(),
        grouped.column("journal_stream").to_pylist(),
        grouped.column("journal_lsn_max").to_pylist(),
        strict=True,
    ):
        last_lsns[version][stream] = lsn
    return [_Version(v, lsns) for v, lsns in last_lsns.items()]
