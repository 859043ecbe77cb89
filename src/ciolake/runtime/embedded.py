"""The embedded mode: the whole receiver in this one process (tests, ``simulate``, embedding).

The same parts as ``ciolake serve``: a ``JournalIntake`` journals stream 0 and a ``Runtime``
tails it and commits, exactly as a worker and the supervisor do, only without the processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from ciolake.commit.committer import Committer
from ciolake.metrics import Metrics
from ciolake.receive.intake import JournalIntake
from ciolake.receive.verify import Verdict
from ciolake.runtime.core import Runtime
from ciolake.runtime.launch import stream_directory
from ciolake.runtime.locks import lock_data_dir, lock_stream
from ciolake.settings import Settings

logger = logging.getLogger(__name__)

_STREAM = 0


class Receiver:
    """Journal and committer in this one process: the embedded intake."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._clock = clock
        self._runtime = Runtime(settings, workers=1, clock=clock, metrics=self.metrics)
        self._intake: JournalIntake | None = None
        self._locks: list[int] = []

    @property
    def committer(self) -> Committer:
        """The committer, once ``open`` has run."""
        return self._runtime.committer

    def open(self) -> None:
        """Create the tables, recover the journal and start committing.

        Raises:
            DataDirBusyError: a ``ciolake serve`` (or another receiver) owns the data directory.
        """
        self._locks.append(lock_data_dir(self.settings.data_dir))
        self._runtime.open()
        self._locks.append(lock_stream(stream_directory(self.settings, _STREAM)))
        self._intake = JournalIntake(
            self.settings,
            clock=self._clock,
            stream=_STREAM,
            next_lsn=self._runtime.next_lsn(_STREAM),
            shared=self._runtime.shared,
            committer_gone=self._committer_gone,
            metrics=self.metrics,
        )
        self._intake.open()

    def _committer_gone(self) -> str | None:
        return None if self._runtime.committer.alive else "committer stopped"

    @property
    def _open_intake(self) -> JournalIntake:
        if self._intake is None:
            raise RuntimeError("Receiver.open() has not run")
        return self._intake

    async def accept(self, body: bytes, verdict: Verdict) -> None:
        """Journal one authentic delivery; return once it is durable.

        Raises:
            BacklogFullError: too much is waiting to be committed.
            JournalUnavailableError: the journal cannot be written right now.
        """
        await self._open_intake.accept(body, verdict)

    def backlog(self) -> tuple[int, int]:
        """Deliveries journaled but not yet committed: (count, body bytes)."""
        return self._open_intake.backlog()

    def oldest_pending_us(self) -> int | None:
        """Receipt time of the oldest delivery journaled and not yet committed, if any."""
        return self._open_intake.oldest_unapplied_us()

    def overloaded(self) -> bool:
        """True while the uncommitted backlog is over either bound."""
        return self._open_intake.overloaded()

    def readiness(self) -> tuple[bool, str]:
        """Whether deliveries can be accepted now, and why not."""
        return self._open_intake.readiness()

    def abandon(self) -> None:
        """Let go of the data directory without committing or closing anything, as a process
        that crashed would: the journal keeps what was not committed, for the next ``open``.
        (The tables' writer and the tail thread are left as they are; a crash leaves them.)"""
        for fd in reversed(self._locks):
            os.close(fd)
        self._locks.clear()

    async def close(self) -> None:
        """Stop taking deliveries and commit everything journaled, within the drain time."""
        started = time.monotonic()
        await self._open_intake.close()
        deadline = started + self.settings.shutdown_drain_s
        drained = await asyncio.to_thread(self._runtime.close, deadline=deadline)
        logger.info(
            "committer stopped",
            extra={"drained": drained, "seconds": round(time.monotonic() - started, 3)},
        )
        self.abandon()
