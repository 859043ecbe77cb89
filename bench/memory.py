"""The full bench's RSS check alone: ``python -m bench.memory --rate 3628``.

A fresh ``ciolake serve`` takes 1,000,000 unique signed events at a fixed rate; the peak RSS,
PSS and anonymous memory of its processes are printed as JSON. ``--server-src`` runs the
server from another checkout's ``src`` (a ``git worktree`` of an earlier revision), so two
revisions compare on one machine with one harness.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.__main__ import config_from, parse_args
from bench.harness import rss_check
from bench.load import require_wrk
from bench.mix import EventSource

_FIGURES = (
    "peak_rss_mib",
    "peak_pss_mib",
    "peak_anon_mib",
    "vm_hwm_mib_by_pid",
    "journaled",
    "events_per_s",
    "rss_after_drain_mib",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--rate", type=float, required=True, help="events/s offered")
    parser.add_argument("--events", type=int, default=10**6, help="unique events sent")
    parser.add_argument("--server-src", type=Path, default=None, help="the server's src/")
    args = parser.parse_args(argv)
    require_wrk()
    # The full bench's own defaults (connections, wrk threads, rates), with this many events.
    config = config_from(parse_args(["--rss-events", str(args.events)]))
    env = {"PYTHONPATH": str(args.server_src.resolve())} if args.server_src else None
    workdir = Path(tempfile.mkdtemp(prefix="ciolake-memory-"))
    try:
        record = rss_check(
            config, EventSource(config.seed), workdir, rate=args.rate, server_env=env
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({name: record.get(name) for name in _FIGURES}, indent=2))


if __name__ == "__main__":
    main()
