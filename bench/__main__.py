"""``python -m bench``: the benchmark (``make bench``) or, with ``--soak``, the soak test.

Run from the repository root (``make bench`` does). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from bench.harness import BenchConfig, run
from bench.load import LoadError
from bench.servers import REPO_ROOT, ServerError

QUICK_PHASE_S = 8.0
FULL_PHASE_S = 30.0
# Unique events per CPU and per second of saturation phase; the pool starts over past it.
SATURATION_POOL_PER_CPU_S = 5_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases, under 2 minutes")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pass --workers N to ciolake serve, and use N uvicorn workers for the baselines "
        "(default: ciolake's own default, one per core, and as many for the baselines)",
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections at saturation")
    parser.add_argument(
        "--rate-connections",
        type=int,
        default=256,
        help="wrk connections in fixed-rate phases (more connections, less coordinated omission)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--phase-seconds", type=float, default=None, help="length of a phase")
    parser.add_argument(
        "--saturation-pool", type=int, default=None, help="unique events for ciolake saturation"
    )
    parser.add_argument(
        "--rss-events",
        type=int,
        default=None,
        help="events for the RSS check (default: 1,000,000 in full mode, 0 = skip in quick)",
    )
    parser.add_argument("--marker-rate", type=float, default=4.0, help="freshness markers/s")
    parser.add_argument(
        "--rate-basis",
        type=float,
        default=None,
        help="events/s that ciolake's 50 %% and 90 %% loads and RSS check are fractions of "
        "(default: this run's saturation); give two revisions the same to compare them at "
        "the same offered load",
    )
    parser.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also saturate ciolake and the ceiling with 1 and 2 workers, for the cost per "
        "worker (default: in full mode only)",
    )
    parser.add_argument(
        "--burst",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also saturate ciolake and the ceiling with small signed requests (default: in "
        "full mode only)",
    )
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--replay",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time `ciolake replay` over the run's data (default: in full mode only)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep data and logs")
    parser.add_argument("--soak", action="store_true", help="run the soak test instead")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak: duration")
    parser.add_argument(
        "--kill-every", type=float, default=None, help="soak: seconds between kill -9 (120)"
    )
    parser.add_argument("--rate", type=float, default=None, help="soak: events/s")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    phase_s = args.phase_seconds or (QUICK_PHASE_S if args.quick else FULL_PHASE_S)
    cpus = os.cpu_count() or 1
    pool = args.saturation_pool or int(SATURATION_POOL_PER_CPU_S * cpus * phase_s)
    rss_events = args.rss_events if args.rss_events is not None else (0 if args.quick else 10**6)
    return BenchConfig(
        quick=args.quick,
        workers=args.workers,
        connections=args.connections,
        rate_connections=args.rate_connections,
        threads=args.threads,
        phase_s=phase_s,
        saturation_pool=pool,
        baseline_rates=not args.quick,
        rss_events=rss_events,
        replay=args.replay if args.replay is not None else not args.quick,
        marker_rate=args.marker_rate,
        results_dir=args.results_dir,
        keep_workdir=args.keep_workdir,
        rate_basis=args.rate_basis,
        scaling=args.scaling if args.scaling is not None else not args.quick,
        burst=args.burst if args.burst is not None else not args.quick,
    )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Raising lets every ``finally`` stop the servers it started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.threads < 1 or min(args.connections, args.rate_connections) < args.threads:
        print("error: need --threads >= 1 and at least one connection per thread", file=sys.stderr)
        return 2
    try:
        if args.soak:
            from bench.soak import SoakConfig, run_soak

            soak = SoakConfig.from_minutes(
                args.minutes, kill_every_s=args.kill_every, rate=args.rate, workers=args.workers
            )
            return run_soak(soak, results_dir=args.results_dir, keep_workdir=args.keep_workdir)
        run(config_from(args))
    except (LoadError, ServerError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
