"""``ciolake compact``: compact small files, checkpoint and vacuum the Delta tables."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.errors import InputError
from ciolake.lake.location import parse_location, require_location
from ciolake.lake.maintenance import CompactionResult, compact_all
from ciolake.lake.tables import ALL_SPECS
from ciolake.settings import MAX_RETENTION_HOURS, load_settings


def compact(
    table: Annotated[
        list[str] | None, typer.Option(help="Table to compact (repeat for several; default all).")
    ] = None,
    before: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Only partitions dated before this day."),
    ] = None,
    retention_hours: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=MAX_RETENTION_HOURS,
            help="Vacuum files unreferenced for longer [env CIOLAKE_VACUUM_RETENTION_HOURS].",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Compact small files per date partition, write checkpoints, vacuum old files."""
    unknown = sorted(set(table or []) - set(ALL_SPECS))
    if unknown:
        raise typer.BadParameter(f"unknown table(s) {unknown}; one of {', '.join(ALL_SPECS)}")
    settings = load_settings(
        data_dir=data_dir, tables_uri=tables_uri, vacuum_retention_hours=retention_hours
    )
    location = parse_location(settings.tables_location)
    require_location(location)
    console = Console(stderr=True)
    with console.status("compacting"):
        results = compact_all(
            location.uri,
            tables=table or None,
            before=before.date() if before else None,
            retention_hours=settings.vacuum_retention_hours,
        )
    if not any(r.exists for r in results):
        which = f"{', '.join(table)} not created" if table else "no table created"
        raise InputError(
            f"nothing to compact: {which} under {location.uri} yet (check --data-dir;"
            " ciolake serve creates the tables on its first start)"
        )
    console.print(_summary(location.uri, results))


def _summary(where: str, results: list[CompactionResult]) -> Table:
    summary = Table(title=f"Delta tables under {where}")
    for column in ("table", "files before", "files after", "vacuumed"):
        summary.add_column(column, justify="left" if column == "table" else "right")
    for r in results:
        if r.exists:
            summary.add_row(r.table, f"{r.files_before:,}", f"{r.files_after:,}", f"{r.vacuumed:,}")
        else:
            summary.add_row(r.table, "not created yet", "-", "-")
    return summary
