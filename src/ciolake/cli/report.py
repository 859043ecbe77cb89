"""``ciolake report``: cohort rates, failure reasons and pipeline health in the terminal."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ciolake.analytics import report as headline
from ciolake.analytics.duck import open_lake
from ciolake.analytics.funnels import CHANNELS
from ciolake.cli.options import DataDirOption, TablesUriOption, check_date_range
from ciolake.errors import ConfigurationError
from ciolake.settings import load_settings


class Format(enum.StrEnum):
    """Output formats."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


class Part(enum.StrEnum):
    """Report sections."""

    ALL = "all"
    COHORT = "cohort"
    FAILURES = "failures"
    HEALTH = "health"


def report(
    since: Annotated[
        str | None, typer.Option(help="First send/event date, YYYY-MM-DD (inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last send/event date, YYYY-MM-DD (inclusive).")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="Only this channel: " + ", ".join(c.name for c in CHANNELS))
    ] = None,
    campaign: Annotated[
        int | None, typer.Option(help="Only messages of this campaign_id (cohort rates).")
    ] = None,
    output: Annotated[
        Format, typer.Option("--format", case_sensitive=False, help="Output format.")
    ] = Format.TABLE,
    section: Annotated[
        Part, typer.Option(case_sensitive=False, help="Which section to show.")
    ] = Part.ALL,
    by_day: Annotated[bool, typer.Option("--by-day", help="Cohort rates per send date.")] = False,
    top: Annotated[int, typer.Option(min=1, help="Failure messages per channel.")] = 5,
    hours: Annotated[int, typer.Option(min=1, help="Hours of pipeline health.")] = 24,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Show cohort-correct rates per channel, top failure reasons and pipeline health."""
    first, last = check_date_range(_day(since, "--since"), _day(until, "--until"))
    filters = headline.Filters(
        since=first, until=last, channel=_channel(channel), campaign=campaign
    )
    chosen = headline.SECTIONS if section is Part.ALL else (section.value,)
    try:
        settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
        with open_lake(settings.tables_location) as lake:
            sections = headline.build(
                lake, filters, sections=chosen, by_day=by_day, top=top, hours=hours
            )
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    if output is Format.JSON:
        typer.echo(headline.to_json(sections, filters))
    elif output is Format.CSV:
        typer.echo(headline.to_csv(sections), nl=False)
    else:
        _print_tables(sections)


def _day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{flag} must be YYYY-MM-DD, got {value!r}") from exc


def _channel(value: str | None) -> str | None:
    names = [c.name for c in CHANNELS]
    if value is not None and value not in names:
        raise typer.BadParameter(f"unknown channel {value!r}; one of {', '.join(names)}")
    return value


def _print_tables(sections: list[headline.Section]) -> None:
    console = Console()
    for section in sections:
        table = Table(title=section.title)
        for column in section.columns:
            table.add_column(column, justify="right" if _numeric(section, column) else "left")
        for row in section.rows:
            table.add_row(*(_cell(c, v) for c, v in zip(section.columns, row, strict=True)))
        if not section.rows:
            console.print(f"{section.title}: no rows")
            continue
        console.print(table)


def _numeric(section: headline.Section, column: str) -> bool:
    index = section.columns.index(column)
    return any(isinstance(row[index], int | float) for row in section.rows)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "value":
        return f"{value:.2%}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:00")
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
