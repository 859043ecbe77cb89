"""A worker process of ``ciolake serve``: answers webhooks, journals them, commits nothing.

Each worker owns one journal stream (``<data-dir>/journal/stream-<k>``), with its own group
commit, so workers never contend for a file. The supervisor tails every stream and is the
only committer. A worker dies with its supervisor (PR_SET_PDEATHSIG), so a ``kill -9`` of the
server leaves no worker writing behind a new one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ciolake.errors import BacklogFullError
from ciolake.journal import Journal
from ciolake.journal_records import FLAG_STALE, JournalRecord, highest_lsn
from ciolake.launch import read_launch_input, stream_directory
from ciolake.locks import acquire_lock
from ciolake.logs import configure_logging
from ciolake.metrics import Metrics
from ciolake.settings import Settings
from ciolake.shared import SharedState
from ciolake.verify import Verdict
from ciolake.web import create_app
from ciolake.web.protocol import guarded_protocol

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_FAILURES_BEFORE_UNREADY = 3


class WorkerIntake:
    """The intake of a worker process: journal only; the supervisor commits."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        stream: int,
        next_lsn: int,
        shared: SharedState,
        supervisor_pid: int,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._clock = clock
        self._stream = stream
        self._next_lsn = next_lsn
        self._shared = shared
        self._supervisor_pid = supervisor_pid
        self._unapplied: deque[tuple[int, int]] = deque()
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
            self._unapplied.append((record.lsn, len(record.body)))
            self._unapplied_bytes += len(record.body)
        self._shared.durable[self._stream] = records[-1].lsn
        self._over_bound = self.overloaded()

    def _refresh_pending_bytes(self) -> None:
        # A running total: this runs at every group commit, so it must not walk the backlog.
        applied = self._shared.applied[self._stream]
        while self._unapplied and self._unapplied[0][0] <= applied:
            self._unapplied_bytes -= self._unapplied.popleft()[1]
        self._shared.pending_bytes[self._stream] = self._unapplied_bytes

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
        if os.getppid() != self._supervisor_pid:
            return False, "supervisor gone"
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
            return False, "commits failing (see the server log)"
        return True, "ready"

    async def close(self) -> None:
        """Finish the flush under way and close the journal."""
        await self.journal.close()


def main() -> None:
    """Entry point of a worker process (started by the supervisor)."""
    launch, settings = read_launch_input(sys.stdin.buffer.read())
    run_worker(
        settings=settings,
        stream=launch.stream,
        next_lsn=launch.next_lsn,
        sock=socket.socket(fileno=launch.socket_fd),
        admin_sock=socket.socket(fileno=launch.admin_socket_fd),
        shared=SharedState.attach(Path(launch.shared_path), launch.streams),
        supervisor_pid=launch.supervisor_pid,
    )


def run_worker(
    *,
    settings: Settings,
    stream: int,
    next_lsn: int,
    sock: socket.socket,
    admin_sock: socket.socket,
    shared: SharedState,
    supervisor_pid: int,
) -> None:
    """Serve one journal stream's share of the connections until SIGTERM.

    ``sock`` is this worker's public socket; ``admin_sock``, the admin listener, is shared by
    every worker (its traffic is light, so one accept queue serves).
    """
    _die_with_parent(supervisor_pid)
    configure_logging(settings.log_level)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    lock = _lock_stream(stream_directory(settings, stream))

    def intake(s: Settings, clock: Callable[[], float]) -> WorkerIntake:
        return WorkerIntake(
            s,
            clock=clock,
            stream=stream,
            next_lsn=next_lsn,
            shared=shared,
            supervisor_pid=supervisor_pid,
        )

    server = uvicorn.Server(uvicorn_config(settings, create_app(settings, intake=intake)))
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run(sockets=[sock, admin_sock])
    finally:
        os.close(lock)


def uvicorn_config(settings: Settings, app: object) -> uvicorn.Config:
    """The server limits every ciolake process uses."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=guarded_protocol(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_header_bytes=settings.max_header_bytes,
        ),
        log_config=None,
        access_log=False,
        # Past this many connections and requests a worker answers 503 at once.
        limit_concurrency=settings.max_connections,
        backlog=2048,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=5,
        server_header=False,
    )


def _strerror(errno: int) -> str:
    return os.strerror(errno) if errno > 0 else "I/O error"


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _die_with_parent(supervisor_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The supervisor may have died before prctl took effect.
    if os.getppid() != supervisor_pid:
        os._exit(1)


def _lock_stream(directory: Path) -> int:
    # The supervisor released it just before spawning; a worker being replaced may linger.
    fd = acquire_lock(directory / ".lock", wait_s=10.0)
    if fd is None:
        raise SystemExit(f"another process writes the journal in {directory}")
    return fd
