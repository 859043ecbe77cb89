"""What the request path hands authentic deliveries to: the ``Intake`` protocol.

Kept apart from its implementations so that a worker process, which only journals, never
imports the committer's stack (pyarrow, deltalake): that saves each worker about 50 MiB.
"""

from __future__ import annotations

from typing import Protocol

from ciolake.metrics import Metrics
from ciolake.settings import Settings
from ciolake.verify import Verdict


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
