"""What the request path hands authentic deliveries to: the ``Intake`` protocol, and the
one implementation, ``JournalIntake``.

Kept apart from the committing side so that a worker process, which only journals, never
imports the committer's stack (pyarrow, deltalake): that saves each worker about 50 MiB.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ciolake.errors import BacklogFullError
from ciolake.journal.records import FLAG_STALE, JournalRecord, highest_lsn
from ciolake.journal.writer import Journal
from ciolake.metrics import Metrics
from ciolake.receive.verify import Verdict
from ciolake.runtime.launch import stream_directory
from ciolake.runtime.shared import SharedState
from ciolake.settings import Settings

# One failed commit can be a blip; three in a row (about 3.5 s of retries) is an outage.
_FAILURES_BEFORE_UNREADY = 3


class Intake(Protocol):
    """What the request path talks to: accept a verified delivery, durably, or refuse it."""

    settings: Settings
    metrics: Metrics

    def open(self) -> None:
        """Get ready to accept deliveries (blocking; run in a thread)."""

    async def accept(self, body: bytes, verdict: Verdict) -> None:
        """Journal one delivery; raise BacklogFullError or JournalUnavailableError."""

    def readiness(self) -> tuple[bool, str]:
        """Whether deliveries can be accepted now, and why not."""

    def backlog(self) -> tuple[int, int]:
        """Deliveries journaled but not committed: (count, body bytes)."""

    async def close(self) -> None:
        """Stop accepting and release everything."""


class JournalIntake:
    """The intake of ``serve``'s workers and of the embedded mode: journal only.

    It journals one stream; a ``Runtime`` (in the supervisor, or in this same process) tails
    the stream and commits. Readiness and the backlog bound are read from the shared state
    that runtime publishes, so every intake answers alike.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        stream: int,
        next_lsn: int,
        shared: SharedState,
        committer_gone: Callable[[], str | None],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._stream = stream
        self._next_lsn = next_lsn
        self._shared = shared
        self._committer_gone = committer_gone
        # (lsn, body bytes, receipt time in us) of what this stream journaled, not yet applied.
        self._unapplied: deque[tuple[int, int, int]] = deque()
        self._unapplied_bytes = 0
        self._healthy: bool | None = None
        # Refreshed at each group commit; past the bound, refreshed at every request instead.
        self._over_bound = False
        self.journal = Journal(
            stream_directory(settings, stream),
            segment_max_bytes=settings.segment_max_bytes,
            on_durable=self._on_durable,
            observe_fsync=self.metrics.fsync_seconds.observe,
            on_healed=self._note_health,
            stream=stream,
        )

    def open(self) -> None:
        """Start appending after everything already in this stream's journal."""
        directory = stream_directory(self.settings, self._stream)
        next_lsn = max(self._next_lsn, highest_lsn(directory) + 1)
        self.journal.open_for_append(next_lsn=next_lsn)
        self._note_health()

    async def accept(self, body: bytes, verdict: Verdict) -> None:
        """Journal one delivery; return once it is durable."""
        if self._over_bound:
            self._over_bound = self.overloaded()
            if self._over_bound:
                raise BacklogFullError("uncommitted backlog is over its bound")
        try:
            await self.journal.append(
                received_at_us=int(self._clock() * 1_000_000),
                x_cio_timestamp=verdict.timestamp,
                flags=FLAG_STALE if verdict.stale else 0,
                body=body,
            )
        finally:
            self._note_health()

    def _note_health(self) -> None:
        healthy = self.journal.healthy
        if healthy is self._healthy:
            return  # unchanged: spare the per-request shared-memory and metric writes
        self._healthy = healthy
        self.metrics.journal_healthy.set(float(healthy))
        self._shared.journal_failing[self._stream] = 0 if healthy else self.journal.last_errno

    def _on_durable(self, records: list[JournalRecord]) -> None:
        self.metrics.count_journaled(len(records))
        for record in records:
            self._unapplied.append((record.lsn, len(record.body), record.received_at_us))
            self._unapplied_bytes += len(record.body)
        self._shared.durable[self._stream] = records[-1].lsn
        self._over_bound = self.overloaded()

    def _refresh_pending_bytes(self) -> None:
        # A running total: this runs at every group commit, so it must not walk the backlog.
        applied = self._shared.applied[self._stream]
        while self._unapplied and self._unapplied[0][0] <= applied:
            self._unapplied_bytes -= self._unapplied.popleft()[1]
        self._shared.pending_bytes[self._stream] = self._unapplied_bytes

    def oldest_unapplied_us(self) -> int | None:
        """Receipt time of the oldest delivery this stream journaled and is not applied."""
        self._refresh_pending_bytes()
        return self._unapplied[0][2] if self._unapplied else None

    def backlog(self) -> tuple[int, int]:
        """Deliveries journaled by any worker and not yet committed: (count, bytes)."""
        self._refresh_pending_bytes()
        return self._shared.backlog()

    def overloaded(self) -> bool:
        """True while the backlog over all workers is over either bound."""
        count, size = self.backlog()
        return count >= self.settings.max_backlog_events or size >= self.settings.max_backlog_bytes

    def readiness(self) -> tuple[bool, str]:
        """Whether deliveries can be accepted and stored now, and why not."""
        if (gone := self._committer_gone()) is not None:
            return False, gone
        if not self.journal.healthy:
            return False, f"journal unavailable: {self.journal.last_error}"
        failing = self._shared.failing_journals()
        if failing:
            # Disks fail for every worker alike: report it whichever worker is asked.
            causes = ", ".join(f"worker {k}: {_strerror(e)}" for k, e in sorted(failing.items()))
            return False, f"journal unavailable ({causes})"
        if self.overloaded():
            return False, "uncommitted backlog over its bound"
        if self._shared.commit_failures[0] >= _FAILURES_BEFORE_UNREADY:
            return False, f"commits failing: {self._last_commit_failure()}"
        return True, "ready"

    def _last_commit_failure(self) -> str:
        try:
            return self.settings.commit_failure_path.read_text()
        except OSError:
            return "see the server log"

    async def close(self) -> None:
        """Finish the flush under way and close the journal."""
        await self.journal.close()


def _strerror(errno: int) -> str:
    return os.strerror(errno) if errno > 0 else "I/O error"
