"""``ciolake tables``: rows, commits and files of every table."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.lake.inventory import summarize
from ciolake.settings import load_settings


def tables(
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show how many rows, commits and data files each Delta table holds."""
    settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
    summaries = summarize(settings.tables_location)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(s) for s in summaries]))
        return
    table = Table(title=f"Delta tables under {settings.tables_location}")
    for column in ("table", "rows", "version", "data files"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for s in summaries:
        if s.exists:
            table.add_row(s.name, f"{s.rows:,}", str(s.version), f"{s.files:,}")
        else:
            table.add_row(s.name, "-", "not created yet", "-")
    Console().print(table)
