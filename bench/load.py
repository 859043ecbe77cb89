"""Drive a server with wrk and the Lua script ``wrk_load.lua``; parse what it measured.

wrk has no fixed-rate mode of its own; the Lua script paces requests open-loop per thread and
counts the requests that could not leave on time (see the script's header). wrk's own CPU time
is measured from the kernel's accounting of the finished child (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.reqfiles import WEBHOOK_PATH, RequestPool

LUA_SCRIPT = Path(__file__).with_name("wrk_load.lua")


class LoadError(RuntimeError):
    """wrk is missing, failed, or wrote no summary."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How to drive one phase."""

    connections: int
    threads: int
    duration_s: float
    rate: float | None = None  # total requests/s; None means saturation
    stop_when_exhausted: bool = False
    timeout_s: int = 10


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What wrk saw, plus wrk's own CPU time."""

    spec: LoadSpec
    pool: RequestPool
    summary: dict[str, Any]
    wrk_cpu_s: float
    wall_s: float

    @property
    def duration_s(self) -> float:
        return float(self.summary["duration_us"]) / 1e6

    @property
    def non_2xx(self) -> int:
        return int(self.summary["errors"]["status"])

    @property
    def socket_errors(self) -> int:
        errors = self.summary["errors"]
        return sum(int(errors[name]) for name in ("connect", "read", "write", "timeout"))

    @property
    def answered_2xx(self) -> int:
        return int(self.summary["requests"]) - self.non_2xx

    @property
    def events_sent(self) -> int:
        return sum(int(thread["sent"]) for thread in self.summary["threads"])

    @property
    def repeats(self) -> int:
        """Requests sent beyond the pool (the pool ran out and started over)."""
        return max(0, self.events_sent - self.pool.count)

    @property
    def scheduled(self) -> int | None:
        """Requests due by the schedule (None at saturation)."""
        if self.spec.rate is None:
            return None
        return sum(int(thread.get("scheduled", 0)) for thread in self.summary["threads"])

    @property
    def late(self) -> int:
        return sum(int(thread["late"]) for thread in self.summary["threads"])

    @property
    def max_lag_ms(self) -> float:
        return max((float(thread["max_lag_ms"]) for thread in self.summary["threads"]), default=0)

    def latency_ms(self) -> dict[str, float]:
        """min, mean, p50, p90, p95, p99, p99.9 and max in milliseconds."""
        latency = self.summary["latency_us"]
        names = ("min", "mean", "p50", "p90", "p95", "p99", "p999", "max")
        return {name: round(float(latency[name]) / 1000, 3) for name in names}


def require_wrk() -> str:
    """The wrk executable, or a clear error."""
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk is not installed: apt-get install -y wrk (make bench does this)")
    return path


def run_wrk(
    base_url: str,
    pool: RequestPool,
    spec: LoadSpec,
    workdir: Path,
    *,
    stop_early: Callable[[], bool] | None = None,
) -> LoadResult:
    """Run wrk for one phase and return its summary.

    Args:
        base_url: ``http://host:port`` of the server.
        pool: the request files, one per wrk thread.
        spec: connections, threads, duration and rate.
        workdir: where the generated script and the summary go.
        stop_early: polled every 0.5 s; when it returns True wrk is interrupted (on SIGINT
            wrk stops and still writes its summary).
    """
    if len(pool.paths) != spec.threads:
        raise LoadError(f"{len(pool.paths)} request files for {spec.threads} wrk threads")
    workdir.mkdir(parents=True, exist_ok=True)
    result_path = workdir / "wrk-summary.json"
    result_path.unlink(missing_ok=True)
    script = workdir / "wrk-run.lua"
    script.write_text(_script_header(pool, spec, result_path) + LUA_SCRIPT.read_text())
    command = [
        require_wrk(),
        f"-t{spec.threads}",
        f"-c{spec.connections}",
        f"-d{max(1, round(spec.duration_s))}s",
        f"--timeout={spec.timeout_s}s",
        "-s",
        str(script),
        base_url + WEBHOOK_PATH,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    output = _run(command, workdir / "wrk-output.txt", spec.duration_s, stop_early)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not result_path.exists():
        raise LoadError(f"wrk wrote no summary; its output:\n{output}")
    summary = json.loads(result_path.read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LoadResult(spec, pool, summary, wrk_cpu_s=cpu, wall_s=wall)


def _run(
    command: list[str], log: Path, duration_s: float, stop_early: Callable[[], bool] | None
) -> str:
    deadline = time.monotonic() + duration_s + 60
    with log.open("w+b") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            while not _exited(process, 0.5):
                if time.monotonic() > deadline:
                    raise LoadError(f"wrk did not finish within {duration_s + 60:.0f}s")
                if stop_early is not None and stop_early():
                    process.send_signal(signal.SIGINT)
                    process.wait(timeout=30)
                    break
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        output.seek(0)
        text = output.read().decode(errors="replace")
    if process.returncode not in (0, -signal.SIGINT):
        raise LoadError(f"wrk exited with {process.returncode}:\n{text}")
    return text


def _exited(process: subprocess.Popen[bytes], wait_s: float) -> bool:
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _script_header(pool: RequestPool, spec: LoadSpec, result_path: Path) -> str:
    rate_per_thread = (spec.rate or 0.0) / spec.threads
    files = ", ".join(json.dumps(str(path)) for path in pool.paths)
    return (
        f"REQUEST_FILES = {{{files}}}\n"
        f"RATE_PER_THREAD = {rate_per_thread!r}\n"
        f"STOP_WHEN_EXHAUSTED = {'true' if spec.stop_when_exhausted else 'false'}\n"
        f"RESULT_PATH = {json.dumps(str(result_path))}\n\n"
    )
