"""Replay throughput: ``ciolake replay`` re-deriving the channel tables from ``raw_events``.

Run after the benchmark's ciolake server has stopped, over its data directory, whose channel
tables already hold every event: this is the re-run-after-a-decoder-fix case, where replay
decodes every delivery again and merges it by ``event_id`` (adding nothing). Throughput is
deliveries in ``raw_events`` divided by the wall time of the whole command, process start
included. When ``ciolake --help`` does not list ``replay``, a "skipped" record is returned.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import ciolake_tables
from bench.progress import say
from bench.servers import ciolake_has_command

REPLAY_TIMEOUT_S = 3600


def replay_available() -> bool:
    """Whether this checkout's ``ciolake`` has a ``replay`` command."""
    return ciolake_has_command("replay")


def replay_command(data_dir: Path) -> list[str]:
    """Replay every received date of ``data_dir``'s tables."""
    return [sys.executable, "-m", "ciolake", "replay", "--data-dir", str(data_dir)]


def measure_replay(data_dir: Path, workdir: Path) -> dict[str, Any]:
    """Time ``ciolake replay`` over ``data_dir`` (no server may be running on it)."""
    if not replay_available():
        return {"status": "skipped", "reason": "`ciolake replay` does not exist yet"}
    deliveries = ciolake_tables(str(data_dir / "tables")).raw_rows
    log = workdir / "replay.log"
    say(f"[replay] ciolake replay over {deliveries:,} deliveries")
    started = time.monotonic()
    with log.open("wb") as output:
        result = subprocess.run(
            replay_command(data_dir),
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=REPLAY_TIMEOUT_S,
            env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
            check=False,
        )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        return {"status": "failed", "exit_code": result.returncode, "log_tail": tail}
    return {
        "status": "ok",
        "deliveries": deliveries,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(deliveries / elapsed, 1),
        "summary": _summary_line(log),
    }


def _summary_line(log: Path) -> str:
    lines = [
        line for line in log.read_text(errors="replace").splitlines() if "deliveries in" in line
    ]
    return lines[-1].strip() if lines else ""
