"""Start, stop and crash the servers under test, always cleaning up after ourselves.

Every server runs in its own process group (``start_new_session``), so that the harness can
signal it together with its worker processes, by the group id it created, and never touch
anything else. Servers still running when the harness exits are killed (``atexit``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx

from bench.progress import say

REPO_ROOT = Path(__file__).resolve().parents[1]
_LIVE: dict[int, ManagedServer] = {}


class ServerError(RuntimeError):
    """A server did not start, or did not stop."""


@dataclass
class ManagedServer:
    """One server process group started by the harness."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    admin_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Where /metrics is: ciolake's admin listener; the baselines serve it on one port."""
        return f"http://127.0.0.1:{self.admin_port or self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} is not running")
        return self.process.pid

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start the process group and wait until ``GET /health`` answers 200."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        _LIVE[self.process.pid] = self
        started = time.monotonic()
        self._wait_healthy(ready_timeout_s)
        say(f"[{self.name}] healthy after {time.monotonic() - started:.1f} s")

    def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL to the group if it is still there."""
        if self.process is None:
            return None
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                print(f"warning: {self.name} ignored SIGTERM for {timeout_s:.0f}s; killing it")
        self._kill_group()
        say(f"[{self.name}] stopped (exit status {process.returncode})")
        return process.returncode

    def crash(self) -> None:
        """SIGKILL the whole group at once, as a power cut would."""
        self._kill_group()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _kill_group(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"{self.name} (pid {process.pid}) survived SIGKILL") from exc
        finally:
            _LIVE.pop(process.pid, None)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self._kill_group()
                raise ServerError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self._kill_group()
        raise ServerError(f"{self.name} not healthy after {timeout_s:.0f}s:\n{self.log_tail()}")


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ciolake_server(
    data_dir: Path,
    *,
    key: str,
    workers: int | None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> ManagedServer:
    """``ciolake serve`` on a loopback port; ``--workers`` only when given."""
    chosen = port or free_port()
    admin_port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ciolake", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(chosen), "--admin-port", str(admin_port)]
    command += ["--data-dir", str(data_dir)]
    if workers is not None:
        command += ["--workers", str(workers)]
    full_env = {**os.environ, "CIOLAKE_SIGNING_KEYS": key, **(env or {})}
    log_path = data_dir.parent / f"ciolake-{chosen}.log"
    return ManagedServer("ciolake", command, full_env, chosen, log_path, admin_port)


def uvicorn_server(
    name: str,
    app: str,
    *,
    workers: int,
    log_dir: Path,
    interface: str = "asgi3",
    env: Mapping[str, str] | None = None,
) -> ManagedServer:
    """A baseline app on uvicorn, configured as ``ciolake serve`` configures it."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--interface", interface, "--workers", str(workers), "--app-dir", str(REPO_ROOT)]
    command += ["--no-access-log", "--no-server-header", "--log-level", "warning"]
    command += ["--timeout-keep-alive", "5", "--timeout-graceful-shutdown", "3"]
    full_env = {**os.environ, **(env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    return ManagedServer(name, command, full_env, port, log_dir / f"{name}-{port}.log")


@cache
def serve_supports_workers() -> bool:
    """Whether this checkout's ``ciolake serve`` has a ``--workers`` option yet."""
    return "--workers" in _ciolake_help(("serve", "--help"))


@cache
def ciolake_has_command(name: str) -> bool:
    """Whether ``ciolake --help`` lists the command ``name``."""
    return any(line.split()[:1] == [name] for line in _help_lines(_ciolake_help(("--help",))))


def default_worker_count(workers: int | None) -> int:
    """The worker count ciolake runs with, so the baselines can use the same."""
    if workers is not None:
        return workers
    return (os.cpu_count() or 1) if serve_supports_workers() else 1


def _ciolake_help(args: Sequence[str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ciolake", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        check=False,
    )
    return result.stdout + result.stderr


def _help_lines(text: str) -> list[str]:
    return [line.strip(" │|") for line in text.splitlines()]


def _kill_leftovers() -> None:
    for server in list(_LIVE.values()):
        try:
            server.crash()
        except ServerError as exc:
            print(f"warning: {exc}", file=sys.stderr)


atexit.register(_kill_leftovers)
