"""``ciolake derive``: the channel tables and the quarantine, from the receivers' ``raw_events``."""

from __future__ import annotations

import os
import signal
import time
from typing import Annotated

import typer
from rich.console import Console

from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.errors import InputError
from ciolake.lake.changes import TableChanges
from ciolake.lake.location import parse_location
from ciolake.lake.tables import RAW_EVENTS
from ciolake.logs import configure_logging
from ciolake.metrics import Metrics
from ciolake.runtime.deriver import Deriver, DeriverStatus
from ciolake.runtime.locks import lock_data_dir
from ciolake.runtime.memory import use_system_allocator
from ciolake.runtime.signals import call_on_signals
from ciolake.settings import Settings, load_settings

# A progress line at most this often while deriving.
PROGRESS_EVERY_S = 10.0


def derive(
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Derive what raw_events holds now, then exit (else run until stopped)."
        ),
    ] = False,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
    log_level: Annotated[
        str | None, typer.Option(help="Log level [env CIOLAKE_LOG_LEVEL].")
    ] = None,
) -> None:
    """Derive the channel tables and the quarantine from raw_events, exactly once.

    For receivers that share a lake (serve --role receiver): run one deriver per lake, with a
    data directory of its own (its exactly-once index and position). Stop it with Ctrl-C or
    SIGTERM; it commits what it has read first.
    """
    settings = load_settings(data_dir=data_dir, tables_uri=tables_uri, log_level=log_level)
    configure_logging(settings.log_level)
    location = parse_location(settings.tables_location)
    if TableChanges(location, RAW_EVENTS).latest_version() < 0:
        raise InputError(
            f"no raw_events table under {location.uri} yet: start the receivers first"
            " (ciolake serve --role receiver), or check --tables-uri"
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(settings.data_dir)
    try:
        _run(settings, once=once)
    finally:
        os.close(lock)


def _run(settings: Settings, *, once: bool) -> None:
    use_system_allocator()
    console = Console(stderr=True)
    deriver = Deriver(settings, clock=time.time, metrics=Metrics())
    # Before opening: a stop asked for meanwhile ends the run before its first read.
    call_on_signals(deriver.stop, (signal.SIGTERM, signal.SIGINT))
    deriver.open()
    shown = [float("-inf")]

    def progress(status: DeriverStatus) -> None:
        if time.monotonic() - shown[0] >= PROGRESS_EVERY_S:
            shown[0] = time.monotonic()
            console.print(_line(status))

    try:
        deriver.run(until_caught_up=once, on_progress=progress)
    finally:
        drained = deriver.close(deadline=time.monotonic() + max(settings.shutdown_drain_s, 60))
    status = deriver.status()
    console.print(_line(status))
    if not drained:
        console.print("the rest is read again from raw_events at the next start")


def _line(status: DeriverStatus) -> str:
    return (
        f"raw_events version {status.derived_version} derived (latest"
        f" {status.latest_version}); {status.backlog:,} deliveries in hand, oldest"
        f" {status.lag_s:.1f}s"
    )
