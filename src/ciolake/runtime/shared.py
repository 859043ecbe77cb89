"""State the supervisor and its worker processes share: plain int64 slots in one mapped file.

Per journal stream: the last durable sequence number and the errno of the last journal write,
0 when it succeeded (written by its worker); the last applied sequence number (written by the
committer); the bytes not yet applied (written by the worker). Plus the committer's count of
consecutive failed commits. Each slot has one writer, and an aligned int64 store is atomic on
the platforms we run on, so no lock is needed.

The slots live in a file under ``<data-dir>/run`` mapped by every process, so a worker needs
only its path: no ``multiprocessing`` resource tracker process (12 MiB) is started for it.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

_SLOT_BYTES = 8
_ARRAYS = 4  # durable, applied, pending_bytes, journal_failing


@dataclass(frozen=True)
class SharedState:
    """Counters shared across processes, indexed by journal stream."""

    path: Path
    streams: int
    durable: memoryview
    applied: memoryview
    pending_bytes: memoryview
    journal_failing: memoryview
    commit_failures: memoryview

    @classmethod
    def create(cls, path: Path, streams: int) -> SharedState:
        """Zeroed slots for ``streams`` journals in a new file at ``path`` (before workers
        start)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new file, not the old one emptied: a worker of a crashed server that has not died
        # yet keeps writing to the old one, not into these slots.
        path.unlink(missing_ok=True)
        with path.open("xb") as file:
            file.truncate(_size(streams))
        return cls.attach(path, streams)

    @classmethod
    def attach(cls, path: Path, streams: int) -> SharedState:
        """The slots ``create`` made at ``path``, as another process sees them."""
        fd = os.open(path, os.O_RDWR)
        try:
            mapped = mmap.mmap(fd, _size(streams))
        finally:
            os.close(fd)
        slots = memoryview(mapped).cast("q")
        durable, applied, pending, failing = (
            slots[k * streams : (k + 1) * streams] for k in range(_ARRAYS)
        )
        return cls(path, streams, durable, applied, pending, failing, slots[_ARRAYS * streams :])

    def failing_journals(self) -> dict[int, int]:
        """Streams whose last journal write failed, with the errno it failed with."""
        return {k: errno for k, errno in enumerate(self.journal_failing) if errno}

    def backlog(self) -> tuple[int, int]:
        """Deliveries durable but not applied, over every stream: (count, bytes)."""
        count = sum(max(0, d - a) for d, a in zip(self.durable, self.applied, strict=True))
        return count, sum(self.pending_bytes)


def _size(streams: int) -> int:
    return (_ARRAYS * streams + 1) * _SLOT_BYTES
