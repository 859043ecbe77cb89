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
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ciolake.errors import ConfigurationError
from ciolake.logs import configure_logging
from ciolake.receive.intake import JournalIntake
from ciolake.runtime.launch import read_launch_input, stream_directory
from ciolake.runtime.locks import lock_stream
from ciolake.runtime.shared import SharedState
from ciolake.settings import Settings
from ciolake.web import create_app
from ciolake.web.protocol import guarded_protocol

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


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
    try:
        lock = lock_stream(stream_directory(settings, stream))
    except ConfigurationError as exc:
        raise SystemExit(str(exc)) from exc

    def supervisor_gone() -> str | None:
        return "supervisor gone" if os.getppid() != supervisor_pid else None

    def intake(s: Settings, clock: Callable[[], float]) -> JournalIntake:
        return JournalIntake(
            s,
            clock=clock,
            stream=stream,
            next_lsn=next_lsn,
            shared=shared,
            committer_gone=supervisor_gone,
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


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _die_with_parent(supervisor_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The supervisor may have died before prctl took effect.
    if os.getppid() != supervisor_pid:
        os._exit(1)
