"""The soak test: steady load at 50 % of saturation, with ``kill -9`` and a restart every 2 min.

1. Unless ``--rate`` is given, measure ciolake's saturation with wrk on a scratch server
   (10 s), and take half of it.
2. Start ciolake, run the retrying client (``bench/soakclient.py``) for ``--minutes``; every
   ``--kill-every`` seconds SIGKILL the server's whole process group and start it again on the
   same port and data directory.
3. Stop producing, let the client finish delivering what is queued, stop the server
   gracefully, and read the tables offline with DuckDB's delta extension.

Checks (all must hold, else exit status 1):

- every event answered 200 is in the channel tables exactly once, and nothing else is there;
- ``raw_events`` holds exactly the answered events' ids, and between (deliveries answered 200)
  and (deliveries answered 200 + attempts whose answer was lost) rows;
- ``quarantine`` is empty and no event got a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import BENCH_KEY, new_pool
from bench.load import LoadSpec, require_wrk, run_wrk
from bench.mix import EventSource
from bench.progress import say
from bench.reader import delta_reader, scan
from bench.servers import ManagedServer, ciolake_server, free_port
from bench.soakclient import Ledger, SoakClient, TemplateBodies
from ciolake.lake.tables import CHANNEL_SPECS, QUARANTINE, RAW_EVENTS

SATURATION_PROBE_S = 10.0
CLIENT_CONNECTIONS = 64
TEMPLATES = 2_000
FINISH_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """How long, how hard, how often to crash."""

    duration_s: float
    kill_every_s: float
    rate: float | None
    workers: int | None

    @classmethod
    def from_minutes(
        cls, minutes: float, *, kill_every_s: float | None, rate: float | None, workers: int | None
    ) -> SoakConfig:
        """Default kill interval: 2 minutes, or a quarter of a shorter run."""
        duration = minutes * 60
        kill_every = kill_every_s if kill_every_s else min(120.0, duration / 4)
        return cls(duration, kill_every, rate, workers)


def run_soak(config: SoakConfig, *, results_dir: Path, keep_workdir: bool) -> int:
    """Run the soak test; write and print its results; 0 when every check passed."""
    workdir = Path(tempfile.mkdtemp(prefix="ciolake-soak-"))
    say(f"working directory: {workdir}")
    try:
        rate, saturation = _soak_rate(config, workdir)
        result = _soak(config, rate, workdir)
        result.update({"saturation_events_per_s": saturation, "rate": rate})
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    _write(result, results_dir)
    print(_summary(result))
    return 0 if result["passed"] else 1


def _soak_rate(config: SoakConfig, workdir: Path) -> tuple[float, float | None]:
    if config.rate:
        return config.rate, None
    require_wrk()
    saturation = measure_saturation(workdir / "saturation", config.workers)
    say(f"[soak] saturation {saturation:,.0f} events/s; soaking at half")
    return saturation / 2, saturation


def measure_saturation(workdir: Path, workers: int | None) -> float:
    """ciolake's events/s at saturation, from a short wrk run on a scratch server."""
    cpus = os.cpu_count() or 1
    source = EventSource(seed=99)
    spec = LoadSpec(connections=64, threads=1, duration_s=SATURATION_PROBE_S)
    pool = new_pool(source, int(3_000 * cpus * SATURATION_PROBE_S), workdir / "pool", threads=1)
    server = ciolake_server(workdir / "data", key=BENCH_KEY, workers=workers)
    server.start()
    try:
        load = run_wrk(server.base_url, pool, spec, workdir)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return load.answered_2xx / load.duration_s


def _soak(config: SoakConfig, rate: float, workdir: Path) -> dict[str, Any]:
    data_dir = workdir / "data"
    server = ciolake_server(data_dir, key=BENCH_KEY, workers=config.workers, port=free_port())
    server.start()
    ledger = Ledger()
    bodies = TemplateBodies(EventSource(seed=5), TEMPLATES, int(time.time()))
    client = SoakClient(
        server.port,
        BENCH_KEY,
        rate=rate,
        connections=CLIENT_CONNECTIONS,
        bodies=bodies,
        ledger=ledger,
    )
    thread = threading.Thread(target=asyncio.run, args=(client.run(FINISH_TIMEOUT_S),))
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        thread.start()
        crashes = _crash_loop(server, config, started, ledger)
        client.stop_producing.set()
        produced_s = time.monotonic() - started
        say(f"[soak] load stopped after {produced_s:.0f} s; delivering the queue")
        thread.join(FINISH_TIMEOUT_S + 30)
        client_hung = thread.is_alive()
        exit_code = server.stop()
    finally:
        client.stop_producing.set()
        server.stop()
    result = _verify(data_dir / "tables", ledger)
    result.update(
        {
            "duration_s": round(produced_s, 1),
            "kill_every_s": config.kill_every_s,
            "crashes": crashes,
            "achieved_rate": round(ledger.generated / produced_s, 1),
            "unfinished_events": client.unfinished,
            "client_hung": client_hung,
            "client_cpu_s": round(time.process_time() - cpu_started, 1),
            "final_exit_code": exit_code,
            "workers_flag": config.workers,
        }
    )
    result["passed"] = result["passed"] and client.unfinished == 0 and not client_hung
    return result


def _crash_loop(
    server: ManagedServer, config: SoakConfig, started: float, ledger: Ledger
) -> list[dict[str, Any]]:
    """Every ``kill_every_s`` (but not at the very end) SIGKILL the server and restart it."""
    crashes = []
    next_kill = started + config.kill_every_s
    end = started + config.duration_s
    while next_kill < end - 1:
        time.sleep(max(0.0, next_kill - time.monotonic()))
        answered = len(ledger.answered)
        killed_at = time.monotonic()
        server.crash()
        server.start()
        restart_s = time.monotonic() - killed_at
        crashes.append(
            {
                "at_s": round(killed_at - started, 1),
                "answered_before": answered,
                "restart_s": round(restart_s, 2),
            }
        )
        say(
            f"[soak] kill -9 at {killed_at - started:.0f} s ({answered:,} answered so far); "
            f"healthy again after {restart_s:.1f} s"
        )
        next_kill += config.kill_every_s
    time.sleep(max(0.0, end - time.monotonic()))
    return crashes


def _verify(tables: Path, ledger: Ledger) -> dict[str, Any]:
    """Compare what the client was answered with what the tables hold (read by DuckDB)."""
    connection = delta_reader()
    channel_ids = Counter(_ids(connection, [str(tables / name) for name in CHANNEL_SPECS]))
    raw_ids = Counter(_ids(connection, [str(tables / RAW_EVENTS)]))
    quarantined = len(_ids(connection, [str(tables / QUARANTINE)]))
    answered = set(ledger.answered)
    channel, raw = set(channel_ids), set(raw_ids)
    raw_rows = sum(raw_ids.values())
    checks = {
        "answered_missing_from_channel_tables": len(answered - channel),
        "channel_rows_not_answered": len(channel - answered),
        "channel_duplicate_rows": sum(count - 1 for count in channel_ids.values()),
        "raw_ids_not_answered": len(raw - answered),
        "answered_missing_from_raw_events": len(answered - raw),
        "raw_rows_below_deliveries_answered": max(0, ledger.deliveries_200 - raw_rows),
        "raw_rows_above_answered_plus_lost": max(
            0, raw_rows - ledger.deliveries_200 - ledger.ambiguous
        ),
        "quarantined": quarantined,
        "rejected_4xx": len(ledger.rejected),
    }
    return {
        "events_generated": ledger.generated,
        "events_answered": len(answered),
        "channel_rows": sum(channel_ids.values()),
        "raw_events_rows": raw_rows,
        "raw_events_distinct_ids": len(raw),
        "deliveries_answered_200": ledger.deliveries_200,
        "attempts": ledger.attempts,
        "attempts_answer_lost": ledger.ambiguous,
        "connections_refused": ledger.refused,
        "statuses": {str(status): count for status, count in sorted(ledger.statuses.items())},
        "checks": checks,
        "passed": not any(checks.values()),
    }


def _ids(connection: Any, uris: list[str]) -> list[str]:
    present = [uri for uri in uris if Path(uri, "_delta_log").is_dir()]
    if not present:
        return []
    query = " UNION ALL ".join(f"SELECT event_id FROM {scan(uri)}" for uri in present)
    return [row[0] for row in connection.execute(query).fetchall()]


def _write(result: dict[str, Any], results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2) + "\n"
    for name in (f"soak-{stamp}.json", "soak-latest.json"):
        (results_dir / name).write_text(text)


def _summary(result: dict[str, Any]) -> str:
    lines = [
        f"### Soak: {result['duration_s']:.0f} s at {result['rate']:,.0f} events/s "
        f"(achieved {result['achieved_rate']:,.0f}/s), kill -9 every "
        f"{result['kill_every_s']:.0f} s ({len(result['crashes'])} crashes)",
        "",
        "| count | value |",
        "|---|---:|",
    ]
    for name in (
        "events_generated",
        "events_answered",
        "channel_rows",
        "raw_events_distinct_ids",
        "deliveries_answered_200",
        "raw_events_rows",
        "attempts_answer_lost",
        "unfinished_events",
        "client_cpu_s",
    ):
        lines.append(f"| {name} | {result[name]:,} |")
    failed = {name: value for name, value in result["checks"].items() if value}
    verdict = (
        "PASSED: every answered event is stored exactly once"
        if result["passed"]
        else (f"FAILED: {failed or 'events left undelivered'}")
    )
    return "\n".join([*lines, "", verdict])
