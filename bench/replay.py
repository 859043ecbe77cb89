"""Replay throughput: ``ciolake replay`` re-deriving the channel tables from ``raw_events``.

Run after the benchmark's ciolake server has stopped, over its data directory, whose channel
tables already hold every event: this is the re-run-after-a-decoder-fix case, where replay
decodes every delivery again and compares it with the stored row (adding nothing). Throughput
is deliveries in ``raw_events`` divided by the wall time of the whole command, process start
included; the replay process's peak RSS comes from ``wait4``. When ``ciolake --help`` does not
list ``replay``, a "skipped" record is returned.

Standalone (``python -m bench.replay --events 300000``) it builds a data directory of N
deliveries of the benchmark's traffic mix through the in-process receiver and committer, then
measures replay over the intact tables, and again after deleting rows from ``email_events``
(replay must add each back once), and checks the result with DuckDB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import ProcessTreeMeter, ciolake_tables
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
        process = subprocess.Popen(
            replay_command(data_dir),
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
        )
        # Replay runs a process per core: their memory is summed, sampled as they run.
        with ProcessTreeMeter(process.pid, interval_s=0.2) as meter:
            exit_code, peak_kib = _wait_with_peak(process, timeout_s=REPLAY_TIMEOUT_S)
    elapsed = time.monotonic() - started
    if exit_code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        return {"status": "failed", "exit_code": exit_code, "log_tail": tail}
    return {
        "status": "ok",
        "deliveries": deliveries,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(deliveries / elapsed, 1),
        "peak_rss_mib": max(meter.peak_rss_mib, round(peak_kib / 1024, 1)),
        "peak_pss_mib": meter.peak_pss_mib,
        "processes": meter.max_processes,
        "summary": _summary_line(log),
    }


def _wait_with_peak(process: subprocess.Popen[bytes], *, timeout_s: float) -> tuple[int, int]:
    """Wait for ``process``; return its exit code and its own peak RSS in KiB.

    ``wait4`` reports the rusage of that one child, unlike ``RUSAGE_CHILDREN``, which is the
    maximum over every child this process ever waited for (the benchmark's servers too).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, int(usage.ru_maxrss)
        if time.monotonic() > deadline:
            process.kill()
            _pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            return -9, int(usage.ru_maxrss)
        time.sleep(0.05)


def _summary_line(log: Path) -> str:
    lines = [
        line for line in log.read_text(errors="replace").splitlines() if "deliveries in" in line
    ]
    return lines[-1].strip() if lines else ""


# --- standalone: build a data directory, then measure ---------------------------------------

# Share of deliveries that repeat an earlier event (Customer.io retries), and that are stale.
_REPEAT_EVERY = 50
_STALE_EVERY = 1000
_ACCEPT_GROUP = 2_000


def build_data_dir(data_dir: Path, events: int, *, batch_events: int, seed: int = 1) -> int:
    """Receive ``events`` deliveries of the benchmark's mix into ``data_dir``; return the count.

    The deliveries go through the in-process receiver (journal, committer, dedup index), so the
    tables have the layout a running server gives them: one small file per table per batch.
    About 2 % repeat an earlier event and 0.1 % are stale (quarantined).
    """
    from bench.mix import EventSource
    from ciolake.receive.verify import Verdict
    from ciolake.runtime.embedded import Receiver
    from ciolake.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        signing_keys=("bench",),
        flush_interval_s=0.05,
        batch_max_events=batch_events,
    )
    source = EventSource(seed=seed)
    now = int(time.time())
    receiver = Receiver(settings, clock=time.time)
    receiver.open()
    sent = 0

    async def go() -> None:
        nonlocal sent
        recent: list[bytes] = []
        while sent < events:
            group = []
            for body in source.bodies(min(_ACCEPT_GROUP, events - sent), now):
                sent += 1
                # Signed when received, as Customer.io does; a stale one an hour earlier.
                signed = int(time.time())
                stale = sent % _STALE_EVERY == 0
                verdict = Verdict(timestamp=signed - 3600 if stale else signed, stale=stale)
                group.append(receiver.accept(body, verdict))
                if sent % _REPEAT_EVERY == 0 and recent:
                    fresh = Verdict(timestamp=signed, stale=False)
                    group.append(receiver.accept(recent[-1], fresh))
                    sent += 1
                recent = [body]
            while receiver.overloaded():
                await asyncio.sleep(0.05)
            await asyncio.gather(*group)
            say(f"[build] {sent:,} deliveries journaled, backlog {receiver.backlog()[0]:,}")
        while receiver.backlog()[0]:
            await asyncio.sleep(0.1)
        await receiver.close()

    asyncio.run(go())
    return sent


def check_tables(data_dir: Path) -> dict[str, int]:
    """Channel rows, distinct event ids among them, and events in ``raw_events`` (DuckDB)."""
    from ciolake.analytics.duck import delta_connection
    from ciolake.lake.tables import CHANNEL_TABLES

    connection = delta_connection()
    tables = data_dir / "tables"
    union = " UNION ALL ".join(
        f"SELECT event_id FROM delta_scan('{tables / name}')" for name in CHANNEL_TABLES
    )
    rows, distinct = connection.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM ({union})"
    ).fetchone() or (0, 0)
    (raw_ids,) = connection.execute(
        f"SELECT count(DISTINCT event_id) FROM delta_scan('{tables / 'raw_events'}')"
    ).fetchone() or (0,)
    return {"channel_rows": rows, "distinct_ids": distinct, "raw_distinct_ids": raw_ids}


def delete_rows(data_dir: Path, predicate: str) -> None:
    """Delete rows of ``email_events`` (the lost-rows case)."""
    from deltalake import DeltaTable

    DeltaTable(str(data_dir / "tables" / "email_events")).delete(predicate)


def main(argv: list[str] | None = None) -> None:
    """Build (or reuse) a data directory, then measure replay over intact and damaged tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="deliveries to receive")
    parser.add_argument("--data-dir", type=Path, help="reuse (or build into) this directory")
    parser.add_argument("--batch-events", type=int, default=500, help="committer batch size")
    parser.add_argument(
        "--cases", default="intact,deleted", help="comma-separated: intact, deleted"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ciolake-replay-bench-"))
    data_dir = args.data_dir or workdir / "data"
    try:
        if not (data_dir / "tables" / "raw_events").exists():
            started = time.monotonic()
            sent = build_data_dir(data_dir, args.events, batch_events=args.batch_events)
            say(f"[build] {sent:,} deliveries in {time.monotonic() - started:.0f}s")
        expected = check_tables(data_dir)
        say(f"[check] before: {expected}")
        results: dict[str, Any] = {}
        for case in filter(None, args.cases.split(",")):
            if case == "deleted":
                delete_rows(data_dir, "metric = 'opened' OR metric = 'clicked'")
                say(f"[check] after deleting: {check_tables(data_dir)}")
            results[case] = measure_replay(data_dir, workdir)
            after = check_tables(data_dir)
            results[case]["tables_after"] = after
            results[case]["tables_intact"] = after == expected
            say(f"[replay:{case}] {json.dumps(results[case])}")
        print(json.dumps(results, indent=2))
    finally:
        # The replay log's directory; a --data-dir given is elsewhere and stays.
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
