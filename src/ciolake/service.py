"""The receiving service's resources, opened and closed together: journal, dedup, tables."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from ciolake.committer import Committer, CommitterConfig
from ciolake.dedup import DedupIndex
from ciolake.errors import BacklogFullError, JournalUnavailableError
from ciolake.journal import Journal
from ciolake.journal_records import FLAG_STALE, JournalRecord
from ciolake.lake.writer import DeltaWriter
from ciolake.locks import FileLock, commit_lock_path, lock_data_dir
from ciolake.metrics import Metrics
from ciolake.settings import Settings
from ciolake.verify import Verdict

logger = logging.getLogger(__name__)

# One failed commit can be a blip; three in a row (about 3.5 s of retries) is an outage.
_FAILURES_BEFORE_UNREADY = 3


class Receiver:
    """Journal and committer in this one process: the embedded, single-process intake."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._clock = clock
        self._writer = DeltaWriter(settings.tables_location)
        self._dedup = DedupIndex(
            settings.state_dir / "dedup.sqlite3",
            window_days=settings.dedup_window_days,
            cache_mib=settings.dedup_cache_mib,
        )
        self.journal = Journal(
            settings.journal_dir / "stream-0",
            segment_max_bytes=settings.segment_max_bytes,
            on_durable=self._on_durable,
            observe_fsync=self.metrics.fsync_seconds.observe,
        )
        self.committer = Committer(
            CommitterConfig.from_settings(settings),
            writer=self._writer,
            dedup=self._dedup,
            retire=lambda _stream, lsn: self.journal.retire(lsn),
            metrics=self.metrics,
            clock=clock,
            lock=FileLock(commit_lock_path(settings.state_dir)),
        )
        self.metrics.backlog_events.set_function(lambda: self.committer.backlog()[0])
        self.metrics.freshness_seconds.set_function(self._freshness)
        self.metrics.journal_healthy.set_function(lambda: float(self.journal.healthy))

    def open(self) -> None:
        """Create the tables, recover the journal and start committing.

        Raises:
            DataDirBusyError: a ``ciolake serve`` (or another receiver) owns the data directory.
        """
        self._data_dir_lock = lock_data_dir(self.settings.data_dir)
        self._writer.ensure_tables()
        versions = self._writer.committed_versions([0])
        applied = self._dedup.applied_lsn(0)
        seen = max(applied, *(streams[0] for streams in versions.values()))
        recovered = self.journal.open(applied_lsn=applied, min_next_lsn=seen + 1)
        if recovered:
            logger.info("journal recovered", extra={"deliveries": len(recovered)})
        self.committer.start(recovered, versions)

    async def accept(self, body: bytes, verdict: Verdict) -> None:
        """Journal one authentic delivery; return once it is durable.

        Raises:
            BacklogFullError: too much is waiting to be committed.
            JournalUnavailableError: the journal cannot be written right now.
        """
        if self.overloaded():
            raise BacklogFullError("uncommitted backlog is over its bound")
        await self.journal.append(
            received_at_us=int(self._clock() * 1_000_000),
            x_cio_timestamp=verdict.timestamp,
            flags=FLAG_STALE if verdict.stale else 0,
            body=body,
        )

    def backlog(self) -> tuple[int, int]:
        """Deliveries journaled but not yet committed: (count, body bytes)."""
        return self.committer.backlog()

    def overloaded(self) -> bool:
        """True while the uncommitted backlog is over either bound."""
        count, size = self.committer.backlog()
        return count >= self.settings.max_backlog_events or size >= self.settings.max_backlog_bytes

    def readiness(self) -> tuple[bool, str]:
        """Whether deliveries can be accepted now, and why not."""
        if not self.committer.alive:
            return False, "committer stopped"
        if not self.journal.healthy:
            return False, f"journal unavailable: {self.journal.last_error}"
        if self.overloaded():
            return False, "uncommitted backlog over its bound"
        if self.committer.consecutive_failures >= _FAILURES_BEFORE_UNREADY:
            return False, f"commits failing: {self.committer.last_failure}"
        return True, "ready"

    async def close(self) -> None:
        """Stop taking deliveries and commit everything journaled, within the drain time."""
        await self.journal.close()
        started = time.monotonic()
        drained = await asyncio.to_thread(
            self.committer.stop, deadline_s=self.settings.shutdown_drain_s
        )
        logger.info(
            "committer stopped",
            extra={"drained": drained, "seconds": round(time.monotonic() - started, 3)},
        )
        if self.committer.alive:
            # Still inside a commit: leave its files open; the journal has everything.
            logger.warning("committer still busy at exit; the journal keeps the rest")
            return
        self._dedup.close()
        self._writer.close()
        os.close(self._data_dir_lock)

    def _on_durable(self, records: list[JournalRecord]) -> None:
        self.metrics.count_journaled(len(records))
        self.committer.submit(records)

    def _freshness(self) -> float:
        oldest = self.committer.oldest_pending_us()
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest / 1_000_000)


__all__ = ["JournalUnavailableError", "Receiver"]
