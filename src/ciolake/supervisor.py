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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import msgspec

from ciolake.committer import Committer, CommitterConfig
from ciolake.dedup import DedupIndex
from ciolake.errors import CiolakeError, ConfigurationError
from ciolake.journal_records import highest_lsn
from ciolake.journal_tail import JournalTail
from ciolake.lake.maintenance import compact_closed_days
from ciolake.lake.writer import DeltaWriter
from ciolake.launch import WorkerLaunch, launch_input, stream_directory, worker_command
from ciolake.locks import FileLock, acquire_lock, commit_lock_path, lock_data_dir
from ciolake.logs import configure_logging
from ciolake.memory import keep_large_blocks_apart
from ciolake.metrics import Metrics, enable_multiprocess_metrics, mark_process_dead
from ciolake.priority import lower_this_thread
from ciolake.settings import Settings, decode_settings, encode_settings
from ciolake.shared import SharedState

logger = logging.getLogger(__name__)

_TAIL_INTERVAL_S = 0.02
# The journal is read ahead into the committer's queue by up to two batches' worth of bodies
# (the batch being written, and the next); the rest of a backlog waits on disk.
_READ_AHEAD_BATCHES = 2
_WORKER_STOP_S = 5.0
# Not ``-m ciolake.supervisor``: run as __main__, the module would log as "__main__".
_SUPERVISOR_MAIN = "import sys; from ciolake.supervisor import main; sys.exit(main(sys.argv))"


class Supervisor:
    """Owns the socket, the journals' readers, the committer and the worker processes."""

    def __init__(self, settings: Settings, *, workers: int, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.workers = workers
        self._clock = clock
        self._stop = threading.Event()
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._next_lsn: dict[int, int] = {}
        self._tails: dict[int, JournalTail] = {}

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return the exit code."""
        # A file-size limit must surface as a write error (503), not kill the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        lock = lock_data_dir(self.settings.data_dir)
        try:
            self._open()
            self._spawn_all()
            self._watch()
            return self._shutdown()
        finally:
            os.close(lock)

    def _open(self) -> None:
        settings = self.settings
        enable_multiprocess_metrics(settings.data_dir / "run" / "metrics")
        self.metrics = Metrics()
        # The gauge is the lowest over processes; only workers write journals.
        self.metrics.journal_healthy.set(1)
        self._writer = DeltaWriter(settings.tables_location)
        self._writer.ensure_tables()
        self._dedup = DedupIndex(
            settings.state_dir / "dedup.sqlite3",
            window_days=settings.dedup_window_days,
            cache_mib=settings.dedup_cache_mib,
        )
        streams = self._known_streams()
        versions = self._writer.committed_versions(streams)
        self.shared = SharedState.create(settings.data_dir / "run" / "shared", max(streams) + 1)
        # Unapplied deliveries stay in the journal; the tail hands them to the committer
        # first, a bounded chunk at a time, as it does any backlog.
        unapplied = sum(self._recover_stream(stream, versions) for stream in streams)
        if unapplied:
            logger.info("journal recovered", extra={"deliveries": unapplied})
        self.committer = Committer(
            CommitterConfig.from_settings(settings),
            writer=self._writer,
            dedup=self._dedup,
            retire=lambda stream, lsn: self._tails[stream].retire(lsn),
            metrics=self.metrics,
            clock=self._clock,
            on_applied=self._note_applied,
            lock=FileLock(commit_lock_path(settings.state_dir)),
        )
        self.committer.start([], versions)
        self._sockets = _bind_all(settings.host, settings.port, count=self.workers)
        self._admin_socket = _listening_socket(
            settings.admin_host, settings.admin_port, reuse_port=False, what="the admin listener"
        )
        # Port 0 means "any": workers must know the ports they got, to tell the listeners apart.
        self.settings = settings = msgspec.structs.replace(
            settings,
            port=self._sockets[0].getsockname()[1],
            admin_port=self._admin_socket.getsockname()[1],
        )
        logger.info(
            "listening",
            extra={
                "webhook": f"http://{_url_host(settings.host)}:{settings.port}/webhooks/customerio",
                "admin": f"http://{_url_host(settings.admin_host)}:{settings.admin_port}",
                "admin_token": settings.admin_token is not None,
                "workers": self.workers,
            },
        )
        self._tailer = threading.Thread(target=self._tail_loop, name="ciolake-tail", daemon=True)
        self._tailer.start()
        if settings.compact_interval_s > 0:
            threading.Thread(
                target=self._maintenance_loop, name="ciolake-maintenance", daemon=True
            ).start()

    def _known_streams(self) -> list[int]:
        on_disk = {
            int(p.name.removeprefix("stream-"))
            for p in self.settings.journal_dir.glob("stream-*")
            if p.name.removeprefix("stream-").isdigit()
        }
        return sorted(on_disk | set(self._dedup.streams()) | set(range(self.workers)))

    def _recover_stream(self, stream: int, versions: Mapping[str, Mapping[int, int]]) -> int:
        directory = stream_directory(self.settings, stream)
        lock = _lock_stream(directory)
        try:
            applied = self._dedup.applied_lsn(stream)
            tail = JournalTail(directory, stream=stream)
            unapplied = tail.recover(applied_lsn=applied)
            self._tails[stream] = tail
            committed = max(v.get(stream, 0) for v in versions.values())
            last = max(applied, committed, highest_lsn(directory))
            self._next_lsn[stream] = last + 1
            self.shared.applied[stream] = applied
            self.shared.durable[stream] = max(applied, highest_lsn(directory))
            return unapplied
        finally:
            os.close(lock)

    def _note_applied(self, last_lsns: Mapping[int, int]) -> None:
        for stream, lsn in last_lsns.items():
            self.shared.applied[stream] = lsn

    def _spawn_all(self) -> None:
        for stream in range(self.workers):
            self._spawn(stream)

    def _spawn(self, stream: int) -> None:
        durable = self.shared.durable[stream]
        next_lsn = max(self._next_lsn.get(stream, 1), durable + 1)
        sock = self._sockets[stream]
        admin_fd = self._admin_socket.fileno()
        launch = WorkerLaunch(
            stream=stream,
            next_lsn=next_lsn,
            socket_fd=sock.fileno(),
            admin_socket_fd=admin_fd,
            shared_path=str(self.shared.path),
            streams=self.shared.streams,
            supervisor_pid=os.getpid(),
        )
        process = subprocess.Popen(
            worker_command(), stdin=subprocess.PIPE, pass_fds=[sock.fileno(), admin_fd]
        )
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(launch_input(self.settings, launch))
        self._processes[stream] = process

    def _tail_loop(self) -> None:
        lower_this_thread(self.settings.background_nice)
        while not self._stop.is_set():
            self._tail_once()
            self._stop.wait(_TAIL_INTERVAL_S)

    def _tail_once(self) -> None:
        tails = list(self._tails.values())
        # Deliveries wait on disk, not in memory, while the committer has enough queued.
        room = _READ_AHEAD_BATCHES * self.settings.batch_max_bytes - self.committer.backlog()[1]
        if room > 0:
            for tail in tails:
                records = tail.read_new(max_bytes=max(1, room // len(tails)))
                if records:
                    self.committer.submit(records)
        self._publish_gauges()

    def _feed_committer_until(self, deadline: float) -> None:
        """Hand the committer every journaled delivery, a bounded chunk at a time."""
        self.committer.drain()
        while time.monotonic() < deadline:
            self._tail_once()
            if self.shared.backlog()[0] == 0 or not self.committer.alive:
                return
            time.sleep(_TAIL_INTERVAL_S)

    def _publish_gauges(self) -> None:
        count, _size = self.shared.backlog()
        self.metrics.backlog_events.set(count)
        oldest = self.committer.oldest_pending_us()
        age = 0.0 if oldest is None else max(0.0, self._clock() - oldest / 1_000_000)
        self.metrics.freshness_seconds.set(age)
        self.shared.commit_failures[0] = self.committer.consecutive_failures

    def _maintenance_loop(self) -> None:
        lower_this_thread(self.settings.background_nice)
        while not self._stop.wait(self.settings.compact_interval_s):
            try:
                compact_closed_days(
                    self.settings.tables_location,
                    now=self._clock(),
                    retention_hours=self.settings.vacuum_retention_hours,
                )
            except Exception as exc:  # maintenance must never take the server down
                logger.error("compaction failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _watch(self) -> None:
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        for number in stop_signals:
            signal.signal(number, lambda _n, _f: self._stop.set())
        while not self._stop.wait(0.2):
            for stream, process in list(self._processes.items()):
                if process.poll() is not None:
                    self._restart(stream, process)

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
        self._tailer.join()
        deadline = started + max(1.0, self.settings.shutdown_drain_s)
        self._feed_committer_until(deadline)
        drained = self.committer.stop(deadline_s=max(0.1, deadline - time.monotonic()))
        logger.info(
            "committer stopped",
            extra={"drained": drained, "seconds": round(time.monotonic() - started, 3)},
        )
        if not self.committer.alive:
            self._dedup.close()
            self._writer.close()
        return 0


def exec_supervisor(settings: Settings) -> NoReturn:
    """Replace this process with a supervisor serving ``settings`` (it keeps the pid).

    The command line has imported every command's modules (HTTP client, analytics, ...); a
    fresh interpreter loads only what serving needs, about 15 MiB less for the lifetime of
    the server. The settings travel through a pipe: they hold the signing keys, which must not
    show in the process list or the environment.
    """
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(encode_settings(settings))  # far below a pipe's buffer, so no reader needed
    os.set_inheritable(read_end, True)
    command = [sys.executable, "-c", _SUPERVISOR_MAIN, "--settings-fd", str(read_end)]
    os.execv(sys.executable, command)


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
    except KeyboardInterrupt:
        return _fail(130, "interrupted while starting; the journal keeps what was received")
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
    probe = _listening_socket(host, port, reuse_port=False)
    port = probe.getsockname()[1]
    probe.close()
    return [_listening_socket(host, port, reuse_port=True) for _ in range(count)]


def _listening_socket(
    host: str, port: int, *, reuse_port: bool, what: str = "the webhook listener"
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} for {what}: {exc.strerror}"
            " (is another server using the port? choose another with"
            f" {'--admin-port' if 'admin' in what else '--port'})"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _lock_stream(directory: Path) -> int:
    # A worker of a crashed server may take a moment to die (PR_SET_PDEATHSIG).
    fd = acquire_lock(directory / ".lock", wait_s=10.0)
    if fd is None:
        raise ConfigurationError(f"a process still writes the journal in {directory}")
    return fd
