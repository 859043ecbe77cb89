"""The derivation engines side by side: ``python -m bench.derive --events 200000``.

``raw_events`` rows of the benchmark's realistic mix (with a share of redeliveries) are built
in memory once; each engine then derives the channel rows and quarantine records from them, in
this process, ``--rounds`` times. Printed as JSON: deliveries per second of each engine (the
best round) and the CPU it spent per delivery (all its threads), and DuckDB's and Spark's
against Python's, the committer's own code, as the baseline of the same run. Spark
(``--spark``) runs on a local session of two cores, its jars from the tests' Ivy cache. Every
engine's row counts must agree, or the run fails. Also printed, as a floor for any compiled
reader of the bodies: Arrow's JSON reader parsing them, and nothing else.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from bench.mix import EventSource
from ciolake.derive import duck, python
from ciolake.derive.spark import derive_frames
from ciolake.events.decode import decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import ALL_SPECS, RAW_SPEC

NOW = 1_790_000_000
TOLERANCE_S = 300
REDELIVERED = 0.02
Engine = Callable[[pa.Table], dict[str, pa.Table]]


def raw_rows(events: int, *, seed: int) -> pa.Table:
    """``raw_events`` rows: ``events`` unique bodies of the mix, 2 % of them delivered twice."""
    rng = random.Random(seed)
    bodies = list(EventSource(seed).bodies(events, NOW))
    bodies += rng.sample(bodies, int(events * REDELIVERED))
    at = (NOW + 1) * 1_000_000
    items = [
        (JournalRecord(lsn, at + lsn, NOW, 0, body, 0), decode_event(body))
        for lsn, body in enumerate(bodies, start=1)
    ]
    return rows.raw_table(items)


@dataclass(frozen=True)
class Rate:
    """An engine's best round: deliveries per second, and CPU microseconds per delivery."""

    per_s: float
    cpu_us: float


def best_rate(engine: Engine, raw: pa.Table, rounds: int) -> tuple[Rate, dict[str, int]]:
    """The best round of ``rounds``, and the rows per table of the last."""
    best = Rate(0.0, 0.0)
    counts: dict[str, int] = {}
    for _ in range(rounds):
        started, cpu = time.perf_counter(), time.process_time()
        derived = engine(raw)
        rate = Rate(
            raw.num_rows / (time.perf_counter() - started),
            (time.process_time() - cpu) * 1e6 / raw.num_rows,
        )
        best = max(best, rate, key=lambda r: r.per_s)
        counts = {name: table.num_rows for name, table in derived.items()}
    return best, counts


def arrow_parser(raw: pa.Table) -> Engine:
    """Arrow's JSON reader over the bodies (schema inferred), typing nothing: no rows."""
    bodies = raw.column("body").to_pylist()
    lines = b"\n".join(body.encode() for body in bodies if body is not None)

    def parse(_raw: pa.Table) -> dict[str, pa.Table]:
        pa_json.read_json(io.BytesIO(lines), read_options=pa_json.ReadOptions(block_size=1 << 24))
        return {}

    return parse


def spark_engine(work_dir: Path) -> Engine:
    """Spark on a local session, started as the tests start theirs (their Ivy cache)."""
    from tests.spark_session import start_spark  # pytest's: a dev dependency, as bench is

    spark = start_spark(work_dir)

    def run(raw: pa.Table) -> dict[str, pa.Table]:
        frame = spark.createDataFrame(raw.cast(RAW_SPEC.schema))
        frames = derive_frames(spark, frame, tolerance_s=TOLERANCE_S)
        derived = {n: f.toArrow().cast(ALL_SPECS[n].schema) for n, f in frames.items()}
        spark.catalog.uncacheTable("derived")
        return derived

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.derive", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="unique events")
    parser.add_argument("--rounds", type=int, default=3, help="runs per engine (best kept)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spark", action="store_true", help="run Spark too (slow to start)")
    args = parser.parse_args(argv)
    raw = raw_rows(args.events, seed=args.seed)
    engines: dict[str, Engine] = {
        "python": lambda r: python.derive_rows(r, tolerance_s=TOLERANCE_S),
        "duckdb": lambda r: duck.derive_rows(r, tolerance_s=TOLERANCE_S),
    }
    if args.spark:
        engines["spark"] = spark_engine(Path(tempfile.mkdtemp(prefix="ciolake-bench-spark-")))
    report: dict[str, Any] = {"deliveries": raw.num_rows, "rounds": args.rounds}
    counts = {}
    for name, engine in engines.items():
        rate, counts[name] = best_rate(engine, raw, args.rounds)
        report[f"{name}_deliveries_per_s"] = round(rate.per_s)
        report[f"{name}_cpu_us_per_delivery"] = round(rate.cpu_us, 1)
    if len({json.dumps(c, sort_keys=True) for c in counts.values()}) != 1:
        raise SystemExit(f"the engines disagree on the rows per table: {counts}")
    for name in engines:
        if name != "python":
            ratio = report[f"{name}_deliveries_per_s"] / report["python_deliveries_per_s"]
            report[f"{name}_against_python"] = round(ratio, 2)
    parse, _rows = best_rate(arrow_parser(raw), raw, args.rounds)
    report["arrow_json_parse_only_per_s"] = round(parse.per_s)
    report["arrow_json_parse_only_cpu_us_per_delivery"] = round(parse.cpu_us, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
