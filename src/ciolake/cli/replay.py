"""``ciolake replay``: re-derive the channel tables from ``raw_events``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ciolake.cli.options import DataDirOption, TablesUriOption, check_date_range
from ciolake.lake.location import parse_location, require_location
from ciolake.lake.replay.processes import MAX_PROCESSES, process_count, replay_in_processes
from ciolake.lake.replay.replayer import Replayer, ReplayRange, ReplayResult
from ciolake.runtime.memory import use_system_allocator
from ciolake.settings import load_settings


def replay(
    since: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="First received date to replay (UTC)."),
    ] = None,
    until: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last received date to replay (UTC)."),
    ] = None,
    include_quarantine: Annotated[
        bool,
        typer.Option(
            "--include-quarantine",
            help="Also move quarantined deliveries that now decode into their channel tables.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_PROCESSES,
            help="Processes replaying slices of the range at once [default: cores]; never more"
            " than the cores, nor than one per 20,000 deliveries. Each holds its own chunk and"
            " key cache (a few hundred MiB).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Re-derive channel tables from raw_events, idempotently, while the server runs.

    A channel table that was lost (moved away) is created again and rebuilt.
    """
    first, last = check_date_range(since, until)
    settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
    require_location(parse_location(settings.tables_location))
    # Arrow's own pool keeps what each chunk freed; malloc gives it back (see memory.py).
    use_system_allocator()
    selection = ReplayRange(since=first, until=last)
    total = Replayer(settings).count(selection)
    processes = process_count(workers, total)
    console = Console(stderr=True)
    with Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("replay", total=total)
        result = replay_in_processes(
            settings,
            selection,
            processes=processes,
            include_quarantine=include_quarantine,
            progress=lambda rows: bar.advance(task, rows),
        )
    console.print(_summary(result, processes))


def _summary(result: ReplayResult, processes: int) -> Table:
    table = Table(
        title=f"{result.deliveries:,} deliveries in {result.seconds:.1f}s "
        f"({result.events_per_second:,.0f}/s, {processes} process{'es' if processes > 1 else ''})"
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, count in sorted(result.upserted.items()):
        added, rewritten = result.added.get(name, 0), result.rewritten.get(name, 0)
        table.add_row(
            f"{name}: replayed (added, rewritten)", f"{count:,} ({added:,}, {rewritten:,})"
        )
    table.add_row("moved out of quarantine", f"{result.moved_from_quarantine:,}")
    table.add_row("left in quarantine", f"{result.left_in_quarantine:,}")
    table.add_row("not typed now (kept aside)", f"{result.not_typed:,}")
    return table
