"""State the supervisor and its worker processes share: plain int64 slots in shared memory.

Per journal stream: the last durable sequence number and the errno of the last journal write,
0 when it succeeded (written by its worker); the last applied sequence number (written by the
committer); the bytes not yet applied (written by the worker). Plus the committer's count of
consecutive failed commits. Each slot has one writer, and an aligned int64 store is atomic on
the platforms we run on, so no lock is needed.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from typing import Any


@dataclass(frozen=True)
class SharedState:
    """Counters shared across processes, indexed by journal stream."""

    durable: Any
    applied: Any
    pending_bytes: Any
    journal_failing: Any
    commit_failures: Any

    @classmethod
    def create(cls, streams: int, context: SpawnContext | None = None) -> SharedState:
        """Allocate zeroed slots for ``streams`` journals (before spawning workers)."""
        ctx = context or multiprocessing.get_context("spawn")
        return cls(
            durable=ctx.RawArray("q", streams),
            applied=ctx.RawArray("q", streams),
            pending_bytes=ctx.RawArray("q", streams),
            journal_failing=ctx.RawArray("q", streams),
            commit_failures=ctx.RawValue("q", 0),
        )

    def failing_journals(self) -> dict[int, int]:
        """Streams whose last journal write failed, with the errno it failed with."""
        return {k: errno for k, errno in enumerate(self.journal_failing) if errno}

    def backlog(self) -> tuple[int, int]:
        """Deliveries durable but not applied, over every stream: (count, bytes)."""
        count = sum(max(0, d - a) for d, a in zip(self.durable, self.applied, strict=True))
        return count, sum(self.pending_bytes)
