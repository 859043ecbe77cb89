"""``ciolake serve``: one supervisor process, N worker processes, one committer.

The supervisor binds one listening socket per worker on the port (SO_REUSEPORT), recovers every
journal stream, starts the committer, then spawns the workers. Workers verify, journal (each its
own stream) and answer; the supervisor tails the streams and commits. On SIGTERM it stops the
workers (they finish in-flight requests and flush), reads what they journaled last, commits it
all, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import msgspec

from ciolake.errors import CiolakeError, ConfigurationError
from ciolake.logs import configure_logging
from ciolake.metrics import Metrics, enable_multiprocess_metrics, mark_process_dead
from ciolake.runtime.core import Runtime
from ciolake.runtime.launch import WorkerLaunch, launch_input, worker_command
from ciolake.runtime.locks import lock_data_dir
from ciolake.runtime.memory import keep_large_blocks_apart
from ciolake.runtime.signals import call_on_signals
from ciolake.runtime.sockets import listening_socket
from ciolake.settings import Settings, decode_settings

logger = logging.getLogger(__name__)

_WORKER_STOP_S = 5.0


class Supervisor:
    """Owns the sockets and the worker processes; its ``Runtime`` commits for them all."""

    def __init__(self, settings: Settings, *, workers: int, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.workers = workers
        self._clock = clock
        self._stop = threading.Event()
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._exit_code = 0

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return the exit code."""
        # A file-size limit must surface as a write error (503), not kill the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        lock = lock_data_dir(self.settings.data_dir)
        try:
            # Before anything starts: from here a Ctrl-C is a stop like SIGTERM, never an
            # exception raised through threads and processes half started.
            call_on_signals(self._stop.set, (signal.SIGTERM, signal.SIGINT))
            self._open()
            if not self._stop.is_set():
                self._spawn_all()
                self._watch()
            return self._shutdown()
        finally:
            os.close(lock)

    def _open(self) -> None:
        settings = self.settings
        # Bound first: a port in use is answered before the journals are read, and with no
        # committer thread left running behind the error.
        self._sockets = _bind_all(settings.host, settings.port, count=self.workers)
        self._admin_socket = listening_socket(
            settings.admin_host, settings.admin_port, reuse_port=False, what="the admin listener"
        )
        # Port 0 means "any": workers must know the ports they got, to tell the listeners apart.
        self.settings = settings = msgspec.structs.replace(
            settings,
            port=self._sockets[0].getsockname()[1],
            admin_port=self._admin_socket.getsockname()[1],
        )
        enable_multiprocess_metrics(settings.metrics_dir)
        self.metrics = Metrics()
        # The gauge is the lowest over processes; only workers write journals.
        self.metrics.journal_healthy.set(1)
        self.runtime = Runtime(
            settings, workers=self.workers, clock=self._clock, metrics=self.metrics
        )
        self.runtime.open()
        logger.info(
            "listening",
            extra={
                "webhook": f"http://{_url_host(settings.host)}:{settings.port}/webhooks/customerio",
                "admin": f"http://{_url_host(settings.admin_host)}:{settings.admin_port}",
                "admin_token": settings.admin_token is not None,
                "workers": self.workers,
            },
        )

    def _spawn_all(self) -> None:
        for stream in range(self.workers):
            self._spawn(stream)

    def _spawn(self, stream: int) -> None:
        sock = self._sockets[stream]
        admin_fd = self._admin_socket.fileno()
        launch = WorkerLaunch(
            stream=stream,
            next_lsn=self.runtime.next_lsn(stream),
            socket_fd=sock.fileno(),
            admin_socket_fd=admin_fd,
            shared_path=str(self.runtime.shared.path),
            streams=self.runtime.shared.streams,
            supervisor_pid=os.getpid(),
        )
        # A process group of its own: a Ctrl-C at the terminal reaches the whole foreground
        # group, and one landing while a worker's interpreter starts (before it can ignore
        # SIGINT) printed a traceback. The supervisor stops its workers itself (SIGTERM), and
        # a worker dies with it.
        process = subprocess.Popen(
            worker_command(),
            stdin=subprocess.PIPE,
            pass_fds=[sock.fileno(), admin_fd],
            process_group=0,
        )
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(launch_input(self.settings, launch))
        self._processes[stream] = process

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for stream, process in list(self._processes.items()):
                if process.poll() is not None:
                    self._restart(stream, process)
            if (fatal := self.runtime.committer.fatal) is not None:
                self._stop_for(fatal)

    def _stop_for(self, fatal: Exception) -> None:
        """Stop serving: the committer cannot go on (its deliveries stay in the journal)."""
        logger.error(
            "stopping: another ciolake serve commits with this receiver id; give each"
            " server sharing tables its own --receiver-id (docs/scaling.md)",
            extra={"error": str(fatal), "receiver_id": self.settings.receiver_id},
        )
        self._exit_code = 1
        self._stop.set()

    def _restart(self, stream: int, process: subprocess.Popen[bytes]) -> None:
        logger.error(
            "worker died; restarting it", extra={"worker": stream, "exitcode": process.returncode}
        )
        mark_process_dead(process.pid)
        self._spawn(stream)

    def _shutdown(self) -> int:
        started = time.monotonic()
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=max(0.1, _WORKER_STOP_S - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for sock in [*self._sockets, self._admin_socket]:
            sock.close()
        deadline = started + max(1.0, self.settings.shutdown_drain_s)
        drained = self.runtime.close(deadline=deadline)
        logger.info(
            "committer stopped",
            extra={"drained": drained, "seconds": round(time.monotonic() - started, 3)},
        )
        return self._exit_code


def main(argv: Sequence[str]) -> int:
    """Entry point of the process ``exec_supervisor`` starts (``--settings-fd N``)."""
    with os.fdopen(int(argv[argv.index("--settings-fd") + 1]), "rb") as pipe:
        settings = decode_settings(pipe.read())
    configure_logging(settings.log_level)
    keep_large_blocks_apart()
    supervisor = Supervisor(
        settings, workers=settings.workers or os.cpu_count() or 1, clock=time.time
    )
    try:
        return supervisor.run()
    except ConfigurationError as exc:
        return _fail(2, str(exc))
    except CiolakeError as exc:
        return _fail(1, str(exc))
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(1, f"{exc.strerror or exc}{where} (check the data directory)")


def _fail(code: int, message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def _bind_all(host: str, port: int, *, count: int) -> list[socket.socket]:
    """One listening socket per worker, all on one port (SO_REUSEPORT).

    The kernel spreads new connections over the sockets evenly; with one shared socket, the
    worker that wakes first accepts a whole burst and the others idle. The supervisor keeps
    every socket, so a restarted worker takes over its predecessor's queue of connections.
    """
    # A plain bind first: it fails if anything listens on the port already, even another
    # ciolake, which SO_REUSEPORT alone would let join in silently.
    probe = listening_socket(host, port, reuse_port=False)
    port = probe.getsockname()[1]
    probe.close()
    return [listening_socket(host, port, reuse_port=True) for _ in range(count)]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
