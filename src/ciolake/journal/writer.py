"""The append-only journal: a delivery is answered 200 only once it is on disk here.

Records are appended to numbered segment files and made durable with ``fdatasync``. Appends that
arrive while a flush is in progress wait for the next one, so one disk flush covers every
request that queued up meanwhile (group commit). At start-up every segment is scanned; a record
cut short by a crash (bad length or checksum) ends its segment and is truncated away, keeping
all records before it. Segments are deleted once everything in them is committed to the tables.

The record format and segment reading are in ``ciolake.journal.records``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ciolake.errors import JournalUnavailableError
from ciolake.journal.fsync import fsync_directory
from ciolake.journal.records import (
    SEGMENT_SUFFIX,
    JournalRecord,
    record_head,
)

logger = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
# The first probe waits this long after a failure, so the failure is seen (in /ready and the
# metrics) before a probe may clear it.
PROBE_FIRST_AFTER_S = 2.0
# A page: small enough to pass on an almost full disk only when the disk takes writes again.
_PROBE_BYTES = b"\0" * 4096
_PROBE_NAME = ".write-probe"
# At most this many buffers per writev (POSIX's IOV_MAX is at least 1,024 on Linux and macOS).
_IOV_MAX = 1024


@dataclass(slots=True)
class _Segment:
    path: Path
    last_lsn: int | None


class Journal:
    """Durable, group-committed append log of deliveries.

    Appends come from the event loop; disk writes run on one dedicated thread; ``retire`` may be
    called from the committer thread.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_bytes: int,
        on_durable: Callable[[list[JournalRecord]], None],
        observe_fsync: Callable[[float], None] = lambda _seconds: None,
        on_healed: Callable[[], None] = lambda: None,
        stream: int = 0,
    ) -> None:
        self._directory = directory
        self._stream = stream
        self._segment_max_bytes = segment_max_bytes
        self._on_durable = on_durable
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ciolake-journal")
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._size = 0
        self._next_lsn = 1
        self._pending: list[JournalRecord] = []
        # Each pending record's head and body, in order, as writev takes them.
        self._pending_parts: list[bytes] = []
        # One future per pending append: a client that disconnects cancels only its own.
        self._waiters: list[asyncio.Future[None]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False
        self._observe_fsync = observe_fsync
        self._on_healed = on_healed
        self._stop_probe = threading.Event()
        self.last_error: str | None = None
        self.last_errno = 0
        self._failed_at = 0.0

    @property
    def healthy(self) -> bool:
        """False after a failed write, until a later write succeeds."""
        return self.last_error is None

    def open_for_append(self, *, next_lsn: int) -> None:
        """Start appending at ``next_lsn`` without reading or changing existing segments.

        The supervisor recovers and retires this journal's segments (``journal/tail.py``).
        """
        self._directory.mkdir(parents=True, exist_ok=True)
        self._next_lsn = next_lsn
        self._start_probe()

    def _start_probe(self) -> None:
        # Readiness must heal with no traffic: behind a load balancer that sends requests only
        # to ready instances, no append would ever come to clear a failed write.
        threading.Thread(target=self._probe_loop, name="ciolake-journal-probe", daemon=True).start()

    def _probe_loop(self) -> None:
        while not self._stop_probe.wait(PROBE_INTERVAL_S):
            if not self.healthy and time.monotonic() - self._failed_at >= PROBE_FIRST_AFTER_S:
                self.probe()

    def probe(self) -> bool:
        """After a failed write: try a small durable write beside the segments.

        On the journal's own I/O thread, so it is ordered with the appends' writes. Success
        clears the failure (``healthy`` turns True) and calls ``on_healed``.

        Returns:
            Whether the journal is healthy now.
        """
        try:
            self._io.submit(self._write_probe).result()
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            self.last_errno = exc.errno or -1
            return False
        except RuntimeError:  # the executor is shut down: the journal is closed
            return self.healthy
        self.last_error, self.last_errno = None, 0
        logger.info("journal writable again")
        self._on_healed()
        return True

    def _write_probe(self) -> None:
        path = self._directory / _PROBE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _PROBE_BYTES)
            os.fdatasync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    async def append(
        self, *, received_at_us: int, x_cio_timestamp: int, flags: int, body: bytes
    ) -> JournalRecord:
        """Append one delivery and return once it is on disk.

        Raises:
            JournalUnavailableError: the write or the flush failed; the delivery is not stored.
        """
        if self._closed:
            raise JournalUnavailableError("journal is closed")
        record = JournalRecord(
            self._next_lsn, received_at_us, x_cio_timestamp, flags, body, self._stream
        )
        self._next_lsn += 1
        self._pending.append(record)
        self._pending_parts += (record_head(record), body)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_pending())
            self._flush_task.add_done_callback(_collect_outcome)
        await waiter
        return record

    async def _flush_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                records, parts, waiters = self._pending, self._pending_parts, self._waiters
                self._pending, self._pending_parts, self._waiters = [], [], []
                try:
                    await loop.run_in_executor(
                        self._io, self._write, parts, records[0].lsn, records[-1].lsn
                    )
                except OSError as exc:
                    self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
                    self.last_errno = exc.errno or -1
                    self._failed_at = time.monotonic()
                    _settle(waiters, JournalUnavailableError(self.last_error))
                    continue
                self.last_error, self.last_errno = None, 0
                self._on_durable(records)
                _settle(waiters, None)
        finally:
            self._flush_task = None

    def _write(self, parts: list[bytes], first_lsn: int, last_lsn: int) -> None:
        if self._fd is None or self._size >= self._segment_max_bytes:
            self._start_segment(first_lsn)
        assert self._fd is not None
        assert self._active is not None
        offset = self._size
        try:
            size = write_all(self._fd, parts)
            started = time.monotonic()
            os.fdatasync(self._fd)
            self._observe_fsync(time.monotonic() - started)
        except OSError:
            self._abandon_segment(offset)
            raise
        self._size += size
        self._active.last_lsn = last_lsn

    def _start_segment(self, first_lsn: int) -> None:
        self._close_active()
        path = self._directory / f"{first_lsn:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        # The new name must be durable too, or a crash could lose the whole file.
        fsync_directory(self._directory)
        self._fd, self._size = fd, 0
        self._active = _Segment(path, None)

    def _abandon_segment(self, offset: int) -> None:
        """After a failed write: cut the partial record off and start afresh next time."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, offset)
        except OSError:
            logger.warning("journal truncate after failed write failed; recovery will drop it")
        self._close_active()

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._active = None

    async def close(self) -> None:
        """Stop taking appends, wait for the flush under way, and close the files."""
        self._closed = True
        self._stop_probe.set()
        while self._flush_task is not None:
            await asyncio.sleep(0.005)
        await asyncio.get_running_loop().run_in_executor(self._io, self._close_active)
        self._io.shutdown(wait=True)


def _collect_outcome(flush: asyncio.Task[None]) -> None:
    # A Ctrl-C that lands while the flush runs stops the program through the task it hit;
    # the flush task's copy of it would only be reported again at exit, as an error.
    if flush.cancelled():
        return
    error = flush.exception()
    if isinstance(error, Exception):
        logger.error("journal flush failed", exc_info=error)


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue  # its request was cancelled (the client went away)
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def write_all(fd: int, parts: list[bytes]) -> int:
    """Write ``parts`` in order with as few ``writev`` calls as the system allows; return
    how many bytes that was."""
    total = 0
    for start in range(0, len(parts), _IOV_MAX):
        chunk = parts[start : start + _IOV_MAX]
        expected = sum(map(len, chunk))
        written = os.writev(fd, chunk)
        if written < expected:
            # A short write (rare on a regular file): the rest, byte by byte as os.write takes it.
            view = memoryview(b"".join(chunk))[written:]
            while view:
                view = view[os.write(fd, view) :]
        total += expected
    return total
