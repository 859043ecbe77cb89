"""The committing side of a running ciolake, the same in ``serve`` and in embedded mode.

It recovers every journal stream, owns the dedup index, the tables' writer and the committer,
tails the streams into the committer, publishes the shared state that every intake's readiness
reads, and compacts closed days in the background. ``ciolake serve`` runs it in its supervisor
process beside N worker processes; the embedded mode (tests, ``simulate``, embedding) runs it in
the one process beside one in-process intake. Either way, deliveries reach the committer the
same way: written to a journal stream, then tailed from it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from ciolake.commit.committer import Committer, CommitterConfig
from ciolake.commit.dedup import DedupIndex
from ciolake.databricks.zerobus import ZerobusSink, target_of
from ciolake.errors import StoreUnavailableError
from ciolake.journal.records import highest_lsn
from ciolake.journal.tail import JournalTail
from ciolake.lake.maintenance import compact_closed_days
from ciolake.lake.tables import ALL_SPECS, RAW_EVENTS
from ciolake.lake.writer import DeltaWriter
from ciolake.metrics import Metrics
from ciolake.runtime.launch import stream_directory
from ciolake.runtime.locks import FileLock, commit_lock_path, lock_stream
from ciolake.runtime.priority import lower_this_thread
from ciolake.runtime.shared import SharedState
from ciolake.settings import Settings

logger = logging.getLogger(__name__)

TAIL_INTERVAL_S = 0.02
# The journal is read ahead into the committer's queue by up to two batches' worth of bodies
# (the batch being written, and the next); the rest of a backlog waits on disk.
_READ_AHEAD_BATCHES = 2


class Runtime:
    """Journals' readers, dedup index, writer and committer of one data directory."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.metrics = metrics
        self._clock = clock
        self._stop = threading.Event()
        self._next_lsn: dict[int, int] = {}
        self._tails: dict[int, JournalTail] = {}
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        """Recover the journals, start the committer and the background threads.

        Raises:
            TableUnreadableError: a table's log is missing or damaged.
            StoreUnavailableError: the tables are out of reach and there is no state yet.
        """
        settings = self.settings
        # Through Zerobus, only raw events are landed: the Spark job derives the rest.
        receiver = settings.role == "receiver" or settings.sink == "zerobus"
        self._writer = _writer(settings, receiver=receiver)
        self._dedup = DedupIndex(
            settings.dedup_path,
            window_days=settings.dedup_window_days,
            cache_mib=settings.dedup_cache_mib,
        )
        streams = self._known_streams()
        versions = self._read_tables(streams)
        self.shared = SharedState.create(settings.shared_path, max(streams) + 1)
        # Unapplied deliveries stay in the journal; the tail hands them to the committer
        # first, a bounded chunk at a time, as it does any backlog.
        unapplied = sum(self._recover_stream(stream, versions) for stream in streams)
        if unapplied:
            logger.info("journal recovered", extra={"deliveries": unapplied})
        self.committer = Committer(
            CommitterConfig.from_settings(settings),
            writer=self._writer,
            dedup=self._dedup,
            retire=lambda stream, lsn: self._tails[stream].retire(lsn),
            metrics=self.metrics,
            clock=self._clock,
            on_applied=self._note_applied,
            lock=FileLock(commit_lock_path(settings.state_dir)),
            writes="raw" if receiver else "all",
        )
        self.committer.start([], versions, streams=streams)
        self._start_thread(self._tail_loop, "ciolake-tail")
        # Receivers sharing a lake leave compaction to the deriver: two compacting one table
        # would only make each other's commits fail.
        if settings.compact_interval_s > 0 and not receiver:
            self._start_thread(self._maintenance_loop, "ciolake-maintenance")

    def next_lsn(self, stream: int) -> int:
        """The first sequence number new appends to ``stream`` may take."""
        return max(self._next_lsn.get(stream, 1), self.shared.durable[stream] + 1)

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_tables(self, streams: list[int]) -> dict[str, dict[int, int]] | None:
        """Create the tables if needed and read what each holds; None if out of reach.

        A server with state (its dedup index knows every stream's applied sequence number,
        and the journal keeps whatever lies above it) starts without its tables and serves
        from the journal; the committer reaches them later. A data directory without state
        must read the tables first: they may hold sequence numbers that new deliveries
        would otherwise reuse, and those would be skipped as already written.
        """
        try:
            self._writer.ensure_tables()
            return self._writer.committed_versions(streams)
        except StoreUnavailableError as exc:
            if not self._dedup.streams():
                raise StoreUnavailableError(
                    f"{exc}; a data directory without state needs its tables once to start"
                    " (check the tables URI, the endpoint and the credentials)"
                ) from exc
            logger.warning(
                "tables out of reach at start; serving from the journal",
                extra={"error": str(exc)},
            )
            return None

    def _known_streams(self) -> list[int]:
        on_disk = self.settings.journal_streams()
        return sorted(on_disk | set(self._dedup.streams()) | set(range(self.workers)))

    def _recover_stream(self, stream: int, versions: Mapping[str, Mapping[int, int]] | None) -> int:
        directory = stream_directory(self.settings, stream)
        lock = lock_stream(directory)
        try:
            applied = self._dedup.applied_lsn(stream)
            tail = JournalTail(directory, stream=stream)
            unapplied = tail.recover(applied_lsn=applied)
            self._tails[stream] = tail
            # Unknown versions are covered: what the tables hold above ``applied`` is still
            # in the journal (segments are retired only once applied).
            committed = max((v.get(stream, 0) for v in (versions or {}).values()), default=0)
            last = max(applied, committed, highest_lsn(directory))
            self._next_lsn[stream] = last + 1
            self.shared.applied[stream] = applied
            self.shared.durable[stream] = max(applied, highest_lsn(directory))
            return unapplied
        finally:
            os.close(lock)

    def _note_applied(self, last_lsns: Mapping[int, int]) -> None:
        for stream, lsn in last_lsns.items():
            self.shared.applied[stream] = lsn

    def _tail_loop(self) -> None:
        lower_this_thread(self.settings.background_nice)
        while not self._stop.is_set():
            self._tail_once()
            self._stop.wait(TAIL_INTERVAL_S)

    def _tail_once(self) -> None:
        tails = list(self._tails.values())
        # Deliveries wait on disk, not in memory, while the committer has enough queued.
        ahead = _READ_AHEAD_BATCHES * self.committer.batch_max_bytes()
        room = ahead - self.committer.unpooled_bytes()
        if room > 0:
            for tail in tails:
                records = tail.read_new(max_bytes=max(1, room // len(tails)))
                if records:
                    self.committer.submit(records)
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        count, _size = self.shared.backlog()
        self.metrics.backlog_events.set(count)
        oldest = self.committer.oldest_pending_us()
        age = 0.0 if oldest is None else max(0.0, self._clock() - oldest / 1_000_000)
        self.metrics.freshness_seconds.set(age)
        failures = self.committer.consecutive_failures
        if failures != self.shared.commit_failures[0]:
            note_commit_failure(self.settings, self.committer.last_failure)
        self.shared.commit_failures[0] = failures

    def _maintenance_loop(self) -> None:
        compact_until_stopped(self.settings, self._clock, self._stop)

    def close(self, *, deadline: float) -> bool:
        """Commit every journaled delivery (no intake writes any more), then stop.

        Args:
            deadline: ``time.monotonic()`` by which to give up; what is left stays in the
                journal for the next start.

        Returns:
            True if everything journaled was committed.
        """
        self._stop.set()
        for thread in self._threads:
            if thread.name == "ciolake-tail":
                thread.join()
        self._feed_committer_until(deadline)
        drained = self.committer.stop(deadline_s=max(0.1, deadline - time.monotonic()))
        if not self.committer.alive:
            self._dedup.close()
            self._writer.close()
        else:
            # Still inside a commit: leave its files open; the journal has everything.
            logger.warning("committer still busy at exit; the journal keeps the rest")
        return drained

    def _feed_committer_until(self, deadline: float) -> None:
        """Hand the committer every journaled delivery, a bounded chunk at a time."""
        self.committer.drain()
        while time.monotonic() < deadline:
            self._tail_once()
            if self.shared.backlog()[0] == 0 or not self.committer.alive:
                return
            time.sleep(TAIL_INTERVAL_S)


def _writer(settings: Settings, *, receiver: bool) -> DeltaWriter | ZerobusSink:
    if settings.sink == "zerobus":
        return ZerobusSink(target_of(settings))
    return DeltaWriter(
        settings.tables_location,
        names=(RAW_EVENTS,) if receiver else ALL_SPECS,
        stream_base=settings.stream_base,
        owner=f"ciolake-receiver-{settings.receiver_id}",
    )


def compact_until_stopped(
    settings: Settings, clock: Callable[[], float], stop: threading.Event
) -> None:
    """Compact the closed days of every table once per ``compact_interval_s`` until ``stop``."""
    lower_this_thread(settings.background_nice)
    while not stop.wait(settings.compact_interval_s):
        try:
            compact_closed_days(
                settings.tables_location,
                now=clock(),
                retention_hours=settings.vacuum_retention_hours,
            )
        except Exception as exc:  # maintenance must never take the process down
            logger.error("compaction failed", extra={"error": f"{type(exc).__name__}: {exc}"})


def note_commit_failure(settings: Settings, failure: str | None) -> None:
    """Leave the last commit failure's text where every intake's admin ``/ready`` reads it."""
    path = settings.commit_failure_path
    if failure is None:
        path.unlink(missing_ok=True)
        return
    partial = path.with_suffix(".partial")
    partial.write_text(failure[:2000])
    partial.replace(path)
