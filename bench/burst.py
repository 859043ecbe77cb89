"""A burst of small signed requests: ciolake and the ceiling at saturation with the smallest
events of the mix (``--burst``, on by default in full mode).

The realistic mix averages 3.5 KB a body, so its saturation weighs the committer as much as the
request path. Small bodies (events without message content: opens, clicks, deliveries, about
400 bytes) put the weight on what every request costs: the HTTP stack, verification, the
journal's group commit. Each system gets a fresh server with the default worker count, fed
the same pool; the ratio of ciolake's events/s to the ceiling's is #17's burst figure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.mix import WEIGHTS, body_of
from bench.progress import say
from bench.reqfiles import RequestPool, write_pool
from bench.scaling import saturate
from bench.servers import ciolake_server, default_worker_count, uvicorn_server
from ciolake.events.samples import sample_event, schema_by_name

# Requests per second of phase per CPU, enough that the pool never runs out at saturation.
POOL_PER_CPU_S = 8_000


def small_bodies(count: int, timestamp: int, *, seed: int = 2) -> Iterator[bytes]:
    """``count`` unique bodies of the mix's schemas that carry no message content."""
    rng = random.Random(seed)
    schemas = [schema_by_name(name) for name in WEIGHTS if not name.endswith("_sent")]
    for _ in range(count):
        yield body_of(sample_event(rng.choice(schemas), rng=rng, timestamp=timestamp))


def measure_burst(config: Any, workdir: Path, *, key: str, cpus: int) -> dict[str, Any]:
    """Saturation of ciolake and of the ceiling with small signed requests, and their ratio.

    Args:
        config: the run's ``BenchConfig`` (its load spec, phase length and worker count).
        workdir: where the pool, each server's data and logs go.
        key: the signing key.
        cpus: the machine's CPUs (the pool's size scales with them).
    """
    base = workdir / "burst"
    count = int(POOL_PER_CPU_S * cpus * config.phase_s)
    now = int(time.time())
    pool: RequestPool = write_pool(
        small_bodies(count, now), base / "pool", config.threads, key=key, timestamp=now
    )
    say(f"[burst] {pool.count:,} small events, {pool.body_bytes / pool.count:,.0f} bytes each")
    workers = default_worker_count(config.workers)
    data_dir = base / "ciolake" / "data"
    ciolake = ciolake_server(data_dir, key=key, workers=config.workers)
    ceiling = uvicorn_server(
        "ceiling", "bench.baselines.ceiling:app", workers=workers, log_dir=base / "ceiling"
    )
    figures: dict[str, Any] = {
        "ciolake": saturate(ciolake, config, pool, workdir, tables_uri=str(data_dir / "tables")),
        "ceiling": saturate(ceiling, config, pool, workdir, tables_uri=None),
        "mean_body_bytes": round(pool.body_bytes / pool.count),
    }
    ours, bare = figures["ciolake"]["events_per_s"], figures["ceiling"]["events_per_s"]
    figures["ratio"] = round(ours / bare, 3) if bare else None
    return figures


def markdown(figures: dict[str, Any]) -> list[str]:
    """The burst figures as one line (empty when the run had none)."""
    if not figures:
        return []
    ours, bare = figures["ciolake"], figures["ceiling"]
    return [
        f"Burst of small signed requests (`bench/burst.py`, {figures['mean_body_bytes']} bytes a "
        f"body): ciolake {ours['events_per_s']:,.0f} events/s, ceiling "
        f"{bare['events_per_s']:,.0f}, ratio {figures['ratio']}; CPU s per 1,000 events "
        f"{ours['cpu_s_per_1000_events']} (workers {ours.get('workers_cpu_s_per_1000_events')}) "
        f"against {bare['cpu_s_per_1000_events']}."
    ]
