"""One load phase against one server: drive it, let it settle, and record every figure."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.freshness import FreshnessProbe
from bench.load import LoadResult, LoadSpec, run_wrk
from bench.measure import ProcessTreeMeter, TableTotals
from bench.progress import say
from bench.reqfiles import RequestPool
from bench.servers import ManagedServer

CPUS = os.cpu_count() or 1


@dataclass
class Target:
    """A running server under test and how to observe it.

    ``tables`` reads its Delta tables' totals (None: it has none); ``drain`` waits until
    everything answered so far is committed (None: it answers only after writing, or writes
    nothing). ``answered`` counts every 2xx the server gave, across phases.
    """

    name: str
    server: ManagedServer
    meter: ProcessTreeMeter
    tables: Callable[[], TableTotals] | None = None
    drain: Callable[[int], float] | None = None
    tables_uri: str | None = None
    answered: int = 0
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Probe:
    """Freshness markers for a phase: the signing key and marker rate."""

    key: str
    rate_per_s: float
    timeout_s: float = 60.0


def run_phase(
    target: Target,
    name: str,
    pool: RequestPool,
    spec: LoadSpec,
    workdir: Path,
    *,
    probe: Probe | None = None,
) -> dict[str, Any]:
    """Run one phase and store its record in ``target.phases[name]``."""
    say(f"[{target.name}] {name}: {_describe(spec)}")
    markers = _make_probe(target, probe)
    tables_before = target.tables() if target.tables else None
    cpu_before, harness_before = target.meter.cpu_seconds(), time.process_time()
    if markers is not None:
        markers.start()
    load = run_wrk(target.server.base_url, pool, spec, workdir / f"{target.name}-{name}")
    harness_cpu_s = time.process_time() - harness_before
    if markers is not None:
        markers.stop_posting()
    answered = load.answered_2xx + (markers.answered if markers else 0)
    target.answered += answered
    drain_s = target.drain(target.answered) if target.drain else 0.0
    cpu_s = target.meter.cpu_seconds() - cpu_before
    tables = target.tables().minus(tables_before) if target.tables and tables_before else None
    freshness = markers.finish(probe.timeout_s) if markers and probe else None
    record = _record(
        load, answered, cpu_s=cpu_s, drain_s=drain_s, tables=tables, freshness=freshness
    )
    record["harness_cpu_s"] = round(harness_cpu_s, 2)
    target.phases[name] = record
    say(f"[{target.name}] {name}: {_headline(record)}")
    return record


def measure_idle_cpu(meter: ProcessTreeMeter, seconds: float) -> float:
    """CPU seconds per second the server burns with no load."""
    before = meter.cpu_seconds()
    time.sleep(seconds)
    return round((meter.cpu_seconds() - before) / seconds, 4)


def _make_probe(target: Target, probe: Probe | None) -> FreshnessProbe | None:
    if probe is None or target.tables_uri is None:
        return None
    return FreshnessProbe(
        target.server.base_url, target.tables_uri, probe.key, rate_per_s=probe.rate_per_s
    )


def _record(
    load: LoadResult,
    answered: int,
    *,
    cpu_s: float,
    drain_s: float,
    tables: TableTotals | None,
    freshness: dict[str, Any] | None,
) -> dict[str, Any]:
    spec, duration = load.spec, load.duration_s
    events_sent = max(1, load.events_sent)
    return {
        "target_rate": spec.rate,
        "connections": spec.connections,
        "wrk_threads": spec.threads,
        "duration_s": round(duration, 3),
        "pool_events": load.pool.count,
        "mean_body_bytes": round(load.pool.mean_body_bytes),
        "requests_completed": int(load.summary["requests"]),
        "answered_2xx": load.answered_2xx,
        "answered_including_markers": answered,
        "non_2xx": load.non_2xx,
        "socket_errors": load.summary["errors"],
        "repeated_events": load.repeats,
        "events_per_s": round(load.answered_2xx / duration, 1),
        "latency_ms": load.latency_ms() if load.summary["requests"] else None,
        "events_sent": load.events_sent,
        "scheduled": load.scheduled,
        "late_sends": load.late,
        "late_fraction": round(load.late / events_sent, 5),
        "max_lag_ms": round(load.max_lag_ms, 1),
        "server_cpu_s": round(cpu_s, 2),
        "cpu_s_per_1000_events": round(cpu_s / answered * 1000, 4) if answered else None,
        "wrk_cpu_s": round(load.wrk_cpu_s, 2),
        "wrk_share_of_machine": round(load.wrk_cpu_s / (load.wall_s * CPUS), 4),
        "drain_s": round(drain_s, 2),
        "tables": _tables_record(tables, answered),
        "freshness": freshness,
    }


def _tables_record(tables: TableTotals | None, answered: int) -> dict[str, Any] | None:
    if tables is None:
        return None
    per_100k = 100_000 / answered if answered else None
    return {
        "commits": tables.commits,
        "files": tables.files,
        "raw_rows": tables.raw_rows,
        "quarantined": tables.quarantined,
        "commits_per_100k_events": round(tables.commits * per_100k, 1) if per_100k else None,
        "files_per_100k_events": round(tables.files * per_100k, 1) if per_100k else None,
    }


def _describe(spec: LoadSpec) -> str:
    rate = "saturation" if spec.rate is None else f"{spec.rate:,.0f} requests/s"
    return f"{rate}, {spec.connections} connections, {spec.duration_s:.0f}s"


def _headline(record: dict[str, Any]) -> str:
    latency = record["latency_ms"] or {"p50": None, "p99": None}
    text = (
        f"{record['events_per_s']:,.0f} events/s, p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms, non-2xx {record['non_2xx']}, "
        f"CPU {record['cpu_s_per_1000_events']} s/1000, drained in {record['drain_s']} s"
    )
    if record["freshness"]:
        fresh = record["freshness"]
        text += f", freshness p50 {fresh['p50_s']} s p99 {fresh['p99_s']} s"
    return text
