"""Two receivers and a deriver against one server: ``python -m bench.receivers --seconds 30``.

Both topologies on this machine, in one run, the same number of worker processes in each:

1. baseline: one ``ciolake serve`` (role ``all``, two workers) at saturation for ``--seconds``,
   then until its backlog is committed;
2. two ``ciolake serve --role receiver`` (one worker each) sharing one tables directory, each
   driven at saturation by its own wrk for ``--seconds``, and one ``ciolake derive`` deriving
   the channel tables meanwhile; its lag (the age of the oldest delivery it has read and not
   committed, from its status log lines) is sampled throughout, then the seconds it takes to
   catch up once the load stops.

Printed as JSON (and kept in bench/results/receivers-<time>.json): events/s answered 200 by
each topology and their ratio, the deriver's lag (median, 95th percentile, maximum) and its
catch-up time, and the rows each topology's channel tables hold, which must agree with the
events answered.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import BENCH_KEY, new_pool
from bench.load import LoadResult, LoadSpec, run_wrk
from bench.measure import ciolake_tables, wait_for_drain
from bench.mix import EventSource
from bench.progress import say
from bench.reader import delta_reader, scan
from bench.reqfiles import RequestPool
from bench.servers import REPO_ROOT, ManagedServer, ciolake_server
from ciolake.lake.tables import CHANNEL_TABLES

DRAIN_TIMEOUT_S = 600.0
# Unique events per second of load and receiver, more than one receiver answers here.
POOL_PER_S = 6_000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ciolake-receivers-") as work:
        workdir = Path(work)
        single = bench_single(workdir / "single", args)
        several = bench_receivers(workdir / "receivers", args, single_rate=single["answered_per_s"])
    result = {
        "seconds": args.seconds,
        "single_server": single,
        "two_receivers_and_deriver": several,
        "saturation_ratio": round(
            several["saturation"]["answered_per_s"] / single["answered_per_s"], 3
        ),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"receivers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.receivers", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="load phase length")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections in all")
    parser.add_argument(
        "--rate-share",
        type=float,
        default=0.5,
        help="the fixed-rate phase's load, a share of the single server's saturation",
    )
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def bench_single(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = ciolake_server(workdir / "data", key=BENCH_KEY, workers=2)
    tables = str(workdir / "data" / "tables")
    pool = new_pool(EventSource(1), _pool_size(args, 2), workdir / "pool", threads=1)
    server.start()
    try:
        load = run_wrk(server.base_url, pool, _spec(args, args.connections), workdir / "wrk")
        drained = wait_for_drain(
            server.admin_url, tables, expected_raw_rows=0, timeout_s=DRAIN_TIMEOUT_S
        )
    finally:
        server.stop()
    totals = ciolake_tables(tables)
    say(f"single server: {load.answered_2xx / load.duration_s:,.0f}/s, drained in {drained:.1f} s")
    return {
        "answered": load.answered_2xx,
        "answered_per_s": round(load.answered_2xx / load.duration_s),
        "drain_s": round(drained, 2),
        "channel_and_quarantine_rows": totals.rows - totals.raw_rows,
    }


def bench_receivers(
    workdir: Path, args: argparse.Namespace, *, single_rate: float
) -> dict[str, Any]:
    """Saturation, then a fixed rate (``--rate-share`` of the single server's saturation),
    each followed by the deriver's catch-up."""
    tables = workdir / "tables"
    receivers = [_receiver(workdir, number, tables) for number in (1, 2)]
    rate = args.rate_share * single_rate
    phases = {"saturation": None, f"rate_{round(args.rate_share * 100)}": rate}
    pools = {name: [_new_pool(workdir / name, n, args, rate) for n in (1, 2)] for name in phases}
    for receiver in receivers:
        receiver.start()
    deriver = Deriver(workdir / "deriver", tables)
    results: dict[str, Any] = {}
    try:
        for name, phase_rate in phases.items():
            results[name] = _phase(
                receivers,
                deriver,
                pools[name],
                args=args,
                rate=phase_rate,
                tables=tables,
                workdir=workdir / name,
            )
    finally:
        deriver.stop()
        for receiver in receivers:
            receiver.stop()
    stored = check_exactly_once(tables)
    missing = stored["raw_events"] - stored["channel_rows"] - stored["quarantined"]
    if stored["stored_twice"] or missing > 0:
        raise RuntimeError(f"the derived tables are not exactly raw_events' events: {stored}")
    return {**results, "events": stored}


def _phase(
    receivers: list[ManagedServer],
    deriver: Deriver,
    pools: list[RequestPool],
    *,
    args: argparse.Namespace,
    rate: float | None,
    tables: Path,
    workdir: Path,
) -> dict[str, Any]:
    started = time.monotonic()
    loads = _load_both(receivers, pools, _spec(args, args.connections // 2, rate), workdir)
    load_ended = time.monotonic()
    for receiver in receivers:
        wait_for_drain(
            receiver.admin_url, str(tables), expected_raw_rows=0, timeout_s=DRAIN_TIMEOUT_S
        )
    caught_up = deriver.wait_caught_up(DRAIN_TIMEOUT_S) - load_ended
    answered = sum(load.answered_2xx for load in loads)
    seconds = max(load.duration_s for load in loads)
    lags = deriver.lags_between(started, load_ended)
    most = max(lags, default=0.0)
    say(
        f"two receivers: {answered / seconds:,.0f}/s; deriver lag at most {most:.1f} s,"
        f" caught up {caught_up:.1f} s after the load"
    )
    return {
        "answered": answered,
        "answered_per_s": round(answered / seconds),
        "deriver_lag_s": {
            "median": round(statistics.median(lags), 2) if lags else None,
            "p95": round(_percentile(lags, 0.95), 2) if lags else None,
            "max": round(max(lags), 2) if lags else None,
            "samples": len(lags),
        },
        "deriver_caught_up_after_load_s": round(caught_up, 2),
        "derived_per_s": round(answered / (seconds + max(caught_up, 0.0))),
    }


def _new_pool(directory: Path, number: int, args: argparse.Namespace, rate: float) -> RequestPool:
    # Each phase and receiver its own events: a repeat would be a duplicate, stored once.
    seed = 10 * number + len(directory.name)
    return new_pool(EventSource(seed), _pool_size(args, 1), directory / f"pool-{number}", threads=1)


def check_exactly_once(tables: Path) -> dict[str, int]:
    """Events in raw_events, rows in the channel tables and the quarantine, and channel rows
    of an event stored twice (must be 0), read with DuckDB."""
    connection = delta_reader()
    channels = " UNION ALL ".join(
        f"SELECT event_id FROM {scan(str(tables / name))}" for name in CHANNEL_TABLES
    )
    (raw_events,) = connection.execute(
        f"SELECT count(DISTINCT event_id) FROM {scan(str(tables / 'raw_events'))}"
    ).fetchone() or (0,)
    (rows, events) = connection.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM ({channels})"
    ).fetchone() or (0, 0)
    quarantine = f"SELECT count(*) FROM {scan(str(tables / 'quarantine'))}"
    (quarantined,) = connection.execute(quarantine).fetchone() or (0,)
    return {
        "raw_events": int(raw_events),
        "channel_rows": int(rows),
        "quarantined": int(quarantined),
        "stored_twice": int(rows) - int(events),
    }


def _receiver(workdir: Path, number: int, tables: Path) -> ManagedServer:
    env = {
        "CIOLAKE_ROLE": "receiver",
        "CIOLAKE_RECEIVER_ID": str(number),
        "CIOLAKE_TABLES_URI": str(tables),
    }
    return ciolake_server(workdir / f"receiver-{number}", key=BENCH_KEY, workers=1, env=env)


def _load_both(
    receivers: list[ManagedServer], pools: list[RequestPool], spec: LoadSpec, workdir: Path
) -> list[LoadResult]:
    results: list[LoadResult | None] = [None, None]
    errors: list[BaseException] = []

    def drive(index: int) -> None:
        try:
            results[index] = run_wrk(
                receivers[index].base_url, pools[index], spec, workdir / f"wrk-{index}"
            )
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [result for result in results if result is not None]


class Deriver:
    """A ``ciolake derive`` process whose status lines (debug logs) are read as they come."""

    def __init__(self, data_dir: Path, tables: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        # The receivers create raw_events; the deriver refuses to start without it.
        command = [sys.executable, "-m", "ciolake", "derive", "--data-dir", str(data_dir)]
        command += ["--tables-uri", str(tables)]
        env = {**os.environ, "CIOLAKE_LOG_LEVEL": "DEBUG"}
        self._process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.statuses: list[tuple[float, dict[str, Any]]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            if '"derive status"' in line:
                self.statuses.append((time.monotonic(), json.loads(line)))

    def wait_caught_up(self, timeout_s: float) -> float:
        """Wait until everything in raw_events is derived; return when (monotonic)."""
        deadline = time.monotonic() + timeout_s
        seen = len(self.statuses)
        while time.monotonic() < deadline:
            fresh = self.statuses[seen:]
            if any(_caught_up(status) for _at, status in fresh):
                return next(at for at, status in fresh if _caught_up(status))
            time.sleep(0.2)
        raise TimeoutError(f"the deriver did not catch up within {timeout_s:.0f} s")

    def lags_between(self, since: float, until: float) -> list[float]:
        return [float(status["lag_s"]) for at, status in self.statuses if since <= at <= until]

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=120)


def _caught_up(status: dict[str, Any]) -> bool:
    return bool(
        status["latest_version"] >= 0
        and status["derived_version"] == status["latest_version"]
        and status["backlog"] == 0
    )


def _spec(args: argparse.Namespace, connections: int, rate: float | None = None) -> LoadSpec:
    # A fixed rate is shared by the two receivers' wrk.
    share = None if rate is None else rate / 2
    return LoadSpec(connections=connections, threads=1, duration_s=args.seconds, rate=share)


def _pool_size(args: argparse.Namespace, receivers: int) -> int:
    return int(POOL_PER_S * receivers * args.seconds)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


if __name__ == "__main__":
    sys.exit(main())
