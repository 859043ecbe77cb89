"""The benchmark: ciolake against a ceiling and a floor, on the same stack and worker count.

Order of a run (all request bodies are generated and signed before each phase's clock starts):

1. ciolake: saturation, then fixed rates at 50 % and 90 % of the saturation it reached, with
   freshness markers during the fixed-rate phases;
2. the ceiling (bare Starlette endpoint) and the floor (Flask + one ``write_deltalake`` per
   event) at saturation, and in full mode at 50 % and 90 % of their own saturation;
3. with ``--scaling`` (full mode's default): ciolake and the ceiling at saturation with 1 and 2
   workers (``bench/scaling.py``); with ``--burst`` (full mode's default), both at saturation
   with small signed requests (``bench/burst.py``);
4. full mode: 1,000,000 events into a fresh ciolake, for its peak RSS;
5. ``ciolake replay`` over the data of step 1, for replay throughput (if the command exists).

See bench/README.md for how each figure is measured.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.baselines import floor
from bench.burst import measure_burst
from bench.load import LoadSpec, require_wrk, run_wrk
from bench.measure import (
    ProcessTreeMeter,
    ciolake_tables,
    metric_value,
    single_table,
    wait_for_drain,
)
from bench.mix import EventSource
from bench.phases import Probe, Target, measure_idle_cpu, run_phase
from bench.progress import say
from bench.replay import measure_replay
from bench.reqfiles import RequestPool, write_pool
from bench.scaling import measure_scaling
from bench.servers import ManagedServer, ciolake_server, default_worker_count, uvicorn_server

BENCH_KEY = "bench-signing-key-0123456789abcdef"
DRAIN_TIMEOUT_S = 300.0
# The 1,000,000 events of the RSS check go at this share of the saturation rate: at saturation
# the answers outrun the committer, the backlog bound answers 503, and those events never land.
RSS_CHECK_LOAD = 0.6


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything a run is parameterised by (see ``bench/__main__.py`` for the flags)."""

    quick: bool
    workers: int | None
    connections: int
    rate_connections: int
    threads: int
    phase_s: float
    saturation_pool: int
    baseline_rates: bool
    rss_events: int
    replay: bool
    marker_rate: float
    results_dir: Path
    keep_workdir: bool
    seed: int = 1
    fractions: tuple[float, ...] = (0.5, 0.9)
    # The events/s that ciolake's fixed-rate phases and RSS check take their fractions of;
    # None: this run's saturation. Two revisions compare at the same offered load only if
    # they share it.
    rate_basis: float | None = None
    # Saturation with 1 and 2 workers for ciolake and the ceiling (``bench/scaling.py``).
    scaling: bool = False
    # Saturation with small signed requests for ciolake and the ceiling (``bench/burst.py``).
    burst: bool = False

    def ciolake_basis(self, saturation: float) -> float:
        """What ciolake's 50 % and 90 % loads are fractions of."""
        return self.rate_basis if self.rate_basis is not None else saturation

    def spec(self, rate: float | None = None) -> LoadSpec:
        """Saturation (no rate) with ``connections``, else the rate with ``rate_connections``."""
        connections = self.connections if rate is None else self.rate_connections
        return LoadSpec(connections, self.threads, self.phase_s, rate)


def run(config: BenchConfig) -> dict[str, Any]:
    """Run the whole benchmark, write the results, and return them."""
    require_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="ciolake-bench-"))
    say(f"working directory: {workdir}")
    results: dict[str, Any] = {"run": report.run_info(config, workdir)}
    source = EventSource(config.seed)
    started = time.monotonic()
    try:
        ciolake, saturation_pool = bench_ciolake(config, source, workdir)
        results["ciolake"] = ciolake
        for name in ("ceiling", "floor"):
            results[name] = bench_baseline(name, config, saturation_pool, workdir)
        if config.scaling:
            results["scaling"] = measure_scaling(config, saturation_pool, workdir, key=BENCH_KEY)
        if config.burst:
            cpus = os.cpu_count() or 1
            results["burst"] = measure_burst(config, workdir, key=BENCH_KEY, cpus=cpus)
        if config.rss_events:
            basis = config.ciolake_basis(ciolake["phases"]["saturation"]["events_per_s"])
            rate = RSS_CHECK_LOAD * basis
            results["rss_check"] = rss_check(config, source, workdir, rate=rate)
        if config.replay:
            results["replay"] = measure_replay(workdir / "ciolake" / "data", workdir)
    finally:
        if not config.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["run"].update(report.run_end_info(time.monotonic() - started))
    results["ratios"] = report.ratios(results)
    paths = report.write(results, config.results_dir)
    print(report.markdown(results))
    print("\n".join(f"wrote {path}" for path in paths))
    return results


def bench_ciolake(
    config: BenchConfig, source: EventSource, workdir: Path
) -> tuple[dict[str, Any], RequestPool]:
    """Saturation and fixed-rate phases against ``ciolake serve``."""
    data_dir = workdir / "ciolake" / "data"
    server = ciolake_server(data_dir, key=BENCH_KEY, workers=config.workers)
    tables_uri = str(data_dir / "tables")
    server.start()
    try:
        with ProcessTreeMeter(server.pid) as meter:
            target = Target(
                "ciolake",
                server,
                meter,
                tables=partial(ciolake_tables, tables_uri),
                drain=partial(_drain, server.admin_url, tables_uri),
                tables_uri=tables_uri,
            )
            idle = measure_idle_cpu(meter, 1.0 if config.quick else 3.0)
            pool_dir = workdir / "pools" / "saturation"
            pool = new_pool(source, config.saturation_pool, pool_dir, threads=config.threads)
            saturation = run_phase(target, "saturation", pool, config.spec(), workdir)
            basis = config.ciolake_basis(saturation["events_per_s"])
            _fixed_rate_phases(target, config, basis, workdir, source)
            exit_code = server.stop()
        return _system_record(target, meter, idle, exit_code), pool
    finally:
        server.stop()


def _fixed_rate_phases(
    target: Target, config: BenchConfig, saturation: float, workdir: Path, source: EventSource
) -> None:
    # Latency and freshness are measured in separate phases at the same rate: the freshness
    # markers and the DuckDB queries that look for them share the machine with the server,
    # and measured together p99 at half load read 101 ms instead of 29 (same server, same rate).
    for fraction in config.fractions:
        rate = fraction * saturation
        count = int(rate * config.phase_s * 1.05) + 2 * config.rate_connections
        label = _rate_label(fraction)
        pool = new_pool(source, count, workdir / "pools" / label, threads=config.threads)
        latency = run_phase(target, label, pool, config.spec(rate), workdir)
        label = f"{label}_freshness"
        pool = new_pool(source, count, workdir / "pools" / label, threads=config.threads)
        probe = Probe(BENCH_KEY, config.marker_rate)
        fresh = run_phase(target, label, pool, config.spec(rate), workdir, probe=probe)
        latency["freshness"] = fresh["freshness"]


def bench_baseline(
    name: str, config: BenchConfig, pool: RequestPool, workdir: Path
) -> dict[str, Any]:
    """Saturation (and in full mode fixed-rate) phases against one baseline.

    The baselines replay the ciolake saturation pool, starting over when it runs out: neither
    deduplicates, so repeats cost them the same as new events.
    """
    server, tables_uri = _baseline_server(name, config, workdir)
    server.start()
    try:
        with ProcessTreeMeter(server.pid) as meter:
            tables = partial(single_table, tables_uri) if tables_uri else None
            target = Target(name, server, meter, tables=tables)
            idle = measure_idle_cpu(meter, 1.0)
            saturation = run_phase(target, "saturation", pool, config.spec(), workdir)
            if config.baseline_rates:
                for fraction in config.fractions:
                    rate = fraction * saturation["events_per_s"]
                    run_phase(target, _rate_label(fraction), pool, config.spec(rate), workdir)
            exit_code = server.stop()
        return _system_record(target, meter, idle, exit_code)
    finally:
        server.stop()


def _baseline_server(
    name: str, config: BenchConfig, workdir: Path
) -> tuple[ManagedServer, str | None]:
    workers = default_worker_count(config.workers)
    log_dir = workdir / name
    if name == "ceiling":
        return uvicorn_server(
            name, "bench.baselines.ceiling:app", workers=workers, log_dir=log_dir
        ), None
    table_uri = str(workdir / name / "events")
    floor.create_table(table_uri)
    env = {"BENCH_FLOOR_TABLE_URI": table_uri, "BENCH_SIGNING_KEY": BENCH_KEY}
    server = uvicorn_server(
        name,
        "bench.baselines.floor:app",
        workers=workers,
        log_dir=log_dir,
        interface="wsgi",
        env=env,
    )
    return server, table_uri


def rss_check(
    config: BenchConfig,
    source: EventSource,
    workdir: Path,
    *,
    rate: float,
    server_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send ``config.rss_events`` unique events at ``rate``/s to a fresh ciolake; report its
    peak RSS.

    The run is longer than the 300 s timestamp tolerance, so this server gets
    ``CIOLAKE_TIMESTAMP_TOLERANCE_S=86400`` (nothing goes to quarantine as stale).
    """
    events = config.rss_events
    say(f"[rss] generating and signing {events:,} events")
    pool = new_pool(source, events, workdir / "pools" / "rss", threads=config.threads)
    data_dir = workdir / "rss" / "data"
    tables_uri = str(data_dir / "tables")
    env = {"CIOLAKE_TIMESTAMP_TOLERANCE_S": "86400", **(server_env or {})}
    server = ciolake_server(data_dir, key=BENCH_KEY, workers=config.workers, env=env)
    server.start()
    try:
        with ProcessTreeMeter(server.pid) as meter:
            record = _rss_run(
                config, server, pool, tables_uri, meter=meter, workdir=workdir, rate=rate
            )
            server.stop()
        record["peak_rss_mib"] = meter.peak_rss_mib
        record["peak_pss_mib"] = meter.peak_pss_mib
        record["peak_anon_mib"] = meter.peak_anon_mib
        record["vm_hwm_mib_by_pid"] = meter.hwm_mib
        record["processes"] = meter.max_processes
        say(f"[rss] peak RSS {meter.peak_rss_mib} MiB after {events:,} events")
        return record
    finally:
        server.stop()
        shutil.rmtree(pool.paths[0].parent, ignore_errors=True)


def _rss_run(
    config: BenchConfig,
    server: ManagedServer,
    pool: RequestPool,
    tables_uri: str,
    *,
    meter: ProcessTreeMeter,
    workdir: Path,
    rate: float,
) -> dict[str, Any]:
    spec = LoadSpec(
        config.rate_connections, config.threads, 3600, rate=rate, stop_when_exhausted=True
    )
    watcher = JournaledWatcher(server.admin_url, tables_uri, pool.count)
    started = time.monotonic()
    load = run_wrk(server.base_url, pool, spec, workdir / "rss-wrk", stop_early=watcher)
    journaled = watcher.journaled()
    # Up to the last progress seen, so that a stalled tail does not count as load time.
    load_s = watcher.last_change - started
    drain_s = wait_for_drain(
        server.admin_url, tables_uri, expected_raw_rows=journaled, timeout_s=DRAIN_TIMEOUT_S
    )
    tables = ciolake_tables(tables_uri)
    per_100k = 100_000 / max(1, tables.raw_rows)
    return {
        "events": pool.count,
        "target_rate": round(rate, 1),
        "journaled": journaled,
        "load_s": round(load_s, 1),
        "events_per_s": round(journaled / load_s, 1),
        "non_2xx": load.non_2xx,
        "drain_s": round(drain_s, 1),
        "rss_after_drain_mib": round(meter.sample() / 2**20, 1),
        "raw_rows": tables.raw_rows,
        "quarantined": tables.quarantined,
        "commits_per_100k_events": round(tables.commits * per_100k, 1),
        "files_per_100k_events": round(tables.files * per_100k, 1),
    }


class JournaledWatcher:
    """Tells wrk to stop once the server journaled every event (or made no progress for 10 s)."""

    def __init__(self, base_url: str, tables_uri: str, target: int) -> None:
        self._base_url = base_url
        self._tables_uri = tables_uri
        self._target = target
        self._last = -1
        self.last_change = time.monotonic()

    def journaled(self) -> int:
        """Deliveries journaled so far (from /metrics, else the rows in raw_events)."""
        try:
            text = httpx.get(f"{self._base_url}/metrics", timeout=5).text
        except httpx.HTTPError:
            text = ""
        value = metric_value(text, "ciolake_deliveries_journaled_total")
        return int(value) if value is not None else ciolake_tables(self._tables_uri).raw_rows

    def __call__(self) -> bool:
        count = self.journaled()
        now = time.monotonic()
        if count != self._last:
            self._last, self.last_change = count, now
        return count >= self._target or now - self.last_change > 10


def new_pool(source: EventSource, count: int, directory: Path, *, threads: int) -> RequestPool:
    """``count`` new unique events, signed now, one request file per wrk thread."""
    started = time.monotonic()
    pool = write_pool(
        source.bodies(count, int(time.time())),
        directory,
        threads,
        key=BENCH_KEY,
        timestamp=int(time.time()),
    )
    say(f"generated and signed {count:,} events in {time.monotonic() - started:.1f} s")
    return pool


def _drain(base_url: str, tables_uri: str, expected_raw_rows: int) -> float:
    return wait_for_drain(
        base_url, tables_uri, expected_raw_rows=expected_raw_rows, timeout_s=DRAIN_TIMEOUT_S
    )


def _rate_label(fraction: float) -> str:
    return f"rate_{round(fraction * 100)}"


def _system_record(
    target: Target, meter: ProcessTreeMeter, idle_cpu: float, exit_code: int | None
) -> dict[str, Any]:
    return {
        "processes": meter.max_processes,
        "idle_cpu_s_per_s": idle_cpu,
        "peak_rss_mib": meter.peak_rss_mib,
        "peak_pss_mib": meter.peak_pss_mib,
        "peak_anon_mib": meter.peak_anon_mib,
        "vm_hwm_mib_by_pid": meter.hwm_mib,
        "answered": target.answered,
        "exit_code": exit_code,
        "phases": target.phases,
    }
