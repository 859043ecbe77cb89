"""How throughput grows with worker processes: ciolake and the ceiling at saturation with 1
and 2 workers (``--scaling``, on by default in full mode).

Each count gets a fresh ciolake (its own data directory) and a fresh ceiling, fed the same
saturation pool; ciolake's CPU, counted until it has committed what it answered (the drain),
is split between its supervisor (journal tail, committer, Delta commits) and its workers (the
request path), so the request path's cost per event can be read against the ceiling's, and a
reader can extrapolate to more cores.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from bench.measure import ProcessTreeMeter, wait_for_drain
from bench.phases import Target, run_phase
from bench.progress import say
from bench.reqfiles import RequestPool
from bench.servers import ManagedServer, ciolake_server, uvicorn_server

WORKER_COUNTS = (1, 2)
DRAIN_TIMEOUT_S = 300.0


def measure_scaling(
    config: Any, pool: RequestPool, workdir: Path, *, key: str
) -> dict[str, dict[str, Any]]:
    """Per worker count: each system's events/s and CPU seconds per 1,000 events at
    saturation, and ciolake's CPU split by process kind.

    Args:
        config: the run's ``BenchConfig`` (its load spec and phase length).
        pool: the requests to send (the main saturation pool).
        workdir: where each server's data and logs go.
        key: the signing key the pool was signed with.
    """
    figures: dict[str, dict[str, Any]] = {}
    for workers in WORKER_COUNTS:
        say(f"[scaling] {workers} worker(s)")
        base = workdir / "scaling" / f"workers-{workers}"
        data_dir = base / "ciolake" / "data"
        tables_uri = str(data_dir / "tables")
        ciolake = ciolake_server(data_dir, key=key, workers=workers)
        ceiling = uvicorn_server(
            "ceiling", "bench.baselines.ceiling:app", workers=workers, log_dir=base / "ceiling"
        )
        figures[str(workers)] = {
            "ciolake": saturate(ciolake, config, pool, workdir, tables_uri=tables_uri),
            "ceiling": saturate(ceiling, config, pool, workdir, tables_uri=None),
        }
    return figures


def saturate(
    server: ManagedServer,
    config: Any,
    pool: RequestPool,
    workdir: Path,
    *,
    tables_uri: str | None,
) -> dict[str, Any]:
    """One saturation phase; for ciolake (``tables_uri``), its CPU until it has drained."""
    split = tables_uri is not None
    server.start()
    try:
        with ProcessTreeMeter(server.pid) as meter:
            target = Target(server.name, server, meter)
            if tables_uri is not None:
                target.drain = partial(_drain, server.admin_url, tables_uri)
            before = meter.cpu_seconds_by_kind()
            record = run_phase(target, "saturation", pool, config.spec(), workdir)
            after = meter.cpu_seconds_by_kind()
            server.stop()
    finally:
        server.stop()
    figures = {
        "events_per_s": record["events_per_s"],
        "cpu_s_per_1000_events": record["cpu_s_per_1000_events"],
    }
    answered = record["answered_2xx"]
    if split and answered:
        for kind in ("root", "children"):
            spent = after[kind] - before[kind]
            name = "supervisor" if kind == "root" else "workers"
            figures[f"{name}_cpu_s_per_1000_events"] = round(spent / answered * 1000, 4)
    return figures


def _drain(base_url: str, tables_uri: str, expected_raw_rows: int) -> float:
    return wait_for_drain(
        base_url, tables_uri, expected_raw_rows=expected_raw_rows, timeout_s=DRAIN_TIMEOUT_S
    )


def markdown(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The scaling figures as a table (empty when the run had none)."""
    if not figures:
        return []
    lines = [
        "| workers | ciolake events/s | ceiling events/s | ratio | ciolake CPU s/1000 "
        "(workers / supervisor) | ceiling CPU s/1000 | workers' CPU against the ceiling's |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, systems in figures.items():
        ours, bare = systems["ciolake"], systems["ceiling"]
        ratio = ours["events_per_s"] / bare["events_per_s"] if bare["events_per_s"] else None
        request_path = ours.get("workers_cpu_s_per_1000_events")
        bare_cpu = bare["cpu_s_per_1000_events"]
        against = request_path / bare_cpu if request_path and bare_cpu else None
        lines.append(
            f"| {workers} | {ours['events_per_s']:,.0f} | {bare['events_per_s']:,.0f} | "
            f"{_fixed(ratio, 2)} | {ours['cpu_s_per_1000_events']} "
            f"({ours.get('workers_cpu_s_per_1000_events')} / "
            f"{ours.get('supervisor_cpu_s_per_1000_events')}) | {bare_cpu} | "
            f"{_fixed(against, 1)}x |"
        )
    return lines


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
