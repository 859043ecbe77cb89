"""``ciolake reconcile``: Customer.io's own counts per message, metric and day beside the tables'.

Exit status: 0 every count within the tolerance, 1 a count over it (or the App API refused or
could not be reached), 2 bad input or settings. See docs/reconcile.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.progress import Progress as Bar
from rich.table import Table

from ciolake.analytics.duck import open_lake
from ciolake.cli.app_api import (
    DEFAULT_TIMEOUT_S,
    EXIT_API,
    AllowHttpOption,
    BaseUrlOption,
    Region,
    RegionOption,
    TimeoutOption,
    cli_errors,
    open_client,
)
from ciolake.cli.options import DataDirOption, TablesUriOption, check_date_range
from ciolake.customerio.reporting import EASTERN, MessageMetrics, MessageRef, Messages
from ciolake.reconcile.compare import DayCount, DeliveryGap, Tolerance
from ciolake.reconcile.run import Progress, Reconciliation, Sources, Window, discover
from ciolake.reconcile.run import reconcile as run_reconcile
from ciolake.reconcile.summary import write_summary
from ciolake.settings import load_settings

DEFAULT_DAYS = 7


class Format(StrEnum):
    """Output formats."""

    table = "table"
    csv = "csv"
    json = "json"


IdsOption = list[int] | None
SinceOption = Annotated[
    dt.datetime | None,
    typer.Option(
        formats=["%Y-%m-%d"],
        metavar="YYYY-MM-DD",
        help=f"First creation day, YYYY-MM-DD [default: {DEFAULT_DAYS} days before --until].",
    ),
]
UntilOption = Annotated[
    dt.datetime | None,
    typer.Option(
        formats=["%Y-%m-%d"],
        metavar="YYYY-MM-DD",
        help="Last creation day, YYYY-MM-DD [default: yesterday: today's counts still move].",
    ),
]
ActionOption = Annotated[
    int | None, typer.Option(metavar="ID", help="Only this action of the one --campaign.")
]
ZoneOption = Annotated[
    str,
    typer.Option(
        "--tz",
        metavar="ZONE",
        help="Time zone of campaigns' days (the others are counted in Eastern time).",
    ),
]


def reconcile(
    since: SinceOption = None,
    until: UntilOption = None,
    campaign: Annotated[
        IdsOption, typer.Option(metavar="ID", help="A campaign id (repeatable).")
    ] = None,
    action: ActionOption = None,
    broadcast: Annotated[
        IdsOption, typer.Option(metavar="ID", help="A broadcast id (repeatable).")
    ] = None,
    newsletter: Annotated[
        IdsOption, typer.Option(metavar="ID", help="A newsletter id (repeatable).")
    ] = None,
    transactional: Annotated[
        IdsOption, typer.Option(metavar="ID", help="A transactional message id (repeatable).")
    ] = None,
    tz: ZoneOption = EASTERN.key,
    tolerance: Annotated[
        int, typer.Option(min=0, metavar="N", help="Deliveries a count may differ by (absolute).")
    ] = 0,
    tolerance_pct: Annotated[
        float,
        typer.Option(
            min=0.0, metavar="PERCENT", help="Percent of Customer.io's count a count may differ by."
        ),
    ] = 0.0,
    deliveries: Annotated[
        bool,
        typer.Option(
            "--deliveries", help="For the days over the tolerance, list the deliveries that differ."
        ),
    ] = False,
    output: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Compare Customer.io's delivery counts per message, metric and day with the tables'."""
    scope = chosen_scope(tz, since, until, campaign, action, broadcast, newsletter, transactional)
    messages = scope.messages
    window = Window(scope.first, scope.last, scope.zone.key)
    limits = Tolerance(absolute=tolerance, percent=tolerance_pct)
    settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
    console = Console(stderr=True)
    with cli_errors(), open_client(region, base_url, allow_http, timeout) as api:
        with open_lake(settings.tables_location) as lake, _progress(console) as progress:
            today = dt.datetime.now(EASTERN).date()
            sources = Sources(lake, MessageMetrics(api, today_eastern=today), Messages(api))
            chosen = messages or discover(sources, window, progress)
            result = run_reconcile(
                sources,
                chosen,
                window,
                tolerance=limits,
                walk_deliveries=deliveries,
                progress=progress,
            )
        write_summary(settings.reconcile_summary_path, result, at=time.time())
    _print(result, output, console)
    if result.over_tolerance:
        raise typer.Exit(EXIT_API)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the options of ``reconcile`` and ``backfill`` choose: messages, days, zone."""

    messages: list[MessageRef]
    first: dt.date
    last: dt.date
    zone: ZoneInfo


def chosen_scope(
    tz: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    campaign: IdsOption,
    action: int | None,
    broadcast: IdsOption,
    newsletter: IdsOption,
    transactional: IdsOption,
) -> Scope:
    """The scope the options name.

    Raises:
        typer.BadParameter: an option is wrong (see the ``chosen_*`` functions).
    """
    zone = chosen_zone(tz)
    messages = chosen_messages(campaign, action, broadcast, newsletter, transactional)
    first, last = chosen_window(since, until, zone)
    return Scope(messages, first, last, zone)


def chosen_zone(name: str) -> ZoneInfo:
    """``--tz`` as a zone.

    Raises:
        typer.BadParameter: no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(
            f"{name!r} is not a time zone name (such as America/New_York or UTC)",
            param_hint="'--tz'",
        ) from None


def chosen_messages(
    campaign: IdsOption,
    action: int | None,
    broadcast: IdsOption,
    newsletter: IdsOption,
    transactional: IdsOption,
) -> list[MessageRef]:
    """The messages the options name.

    Raises:
        typer.BadParameter: an id is not positive, or --action is not with one --campaign.
    """
    campaigns = campaign or []
    if action is not None and len(campaigns) != 1:
        raise typer.BadParameter("--action needs exactly one --campaign", param_hint="'--action'")
    found = [MessageRef("campaign", id_, action) for id_ in campaigns]
    found += [MessageRef("broadcast", id_) for id_ in broadcast or []]
    found += [MessageRef("newsletter", id_) for id_ in newsletter or []]
    found += [MessageRef("transactional", id_) for id_ in transactional or []]
    for message in found:
        if message.id < 1:
            raise typer.BadParameter(f"{message}: an id is a positive integer")
    return found


def chosen_window(
    since: dt.datetime | None, until: dt.datetime | None, zone: ZoneInfo
) -> tuple[dt.date, dt.date]:
    """``--since`` and ``--until`` with their defaults.

    Raises:
        typer.BadParameter: --until before --since.
    """
    first, last = check_date_range(since, until)
    if last is None:
        last = dt.datetime.now(zone).date() - dt.timedelta(days=1)
    if first is None:
        first = last - dt.timedelta(days=DEFAULT_DAYS - 1)
    check_date_range(first, last)  # a --since after the default --until
    return first, last


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    with Bar(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("reconciling", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total or None)

        yield update


# Output ------------------------------------------------------------------------------------------


def _count_dict(row: DayCount) -> dict[str, Any]:
    return {
        "message_kind": row.message.kind,
        "message_id": row.message.id,
        "action_id": row.message.action_id,
        "metric": row.metric,
        "day": row.day.isoformat(),
        "time_zone": row.zone,
        "customerio": row.customerio,
        "ciolake": row.ciolake,
        "difference": row.difference,
        "over_tolerance": row.over_tolerance,
    }


def _gap_dict(gap: DeliveryGap) -> dict[str, Any]:
    return {
        "message_kind": gap.message.kind,
        "message_id": gap.message.id,
        "action_id": gap.message.action_id,
        "day": gap.day.isoformat(),
        "delivery_id": gap.delivery_id,
        "metric": gap.metric,
        "gap": gap.kind,
        "customerio_at": gap.at,
    }


def _print(result: Reconciliation, output: Format, console: Console) -> None:
    if output is Format.json:
        typer.echo(json.dumps(_json(result), indent=2))
    elif output is Format.csv:
        typer.echo(_csv([_count_dict(r) for r in result.counts]), nl=False)
        if result.gaps:
            typer.echo("")
            typer.echo(_csv([_gap_dict(g) for g in result.gaps]), nl=False)
    else:
        _print_tables(result, console)


def _json(result: Reconciliation) -> dict[str, Any]:
    return {
        "since": result.window.first.isoformat(),
        "until": result.window.last.isoformat(),
        "tolerance": {
            "absolute": result.tolerance.absolute,
            "percent": result.tolerance.percent,
        },
        "messages": [str(m) for m in result.messages],
        "counts": [_count_dict(r) for r in result.counts],
        "over_tolerance": len(result.over_tolerance),
        "deliveries": [_gap_dict(g) for g in result.gaps],
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _print_tables(result: Reconciliation, console: Console) -> None:
    out = Console()
    differing = [row for row in result.counts if row.difference != 0]
    table = Table("message", "metric", "day", "Customer.io", "ciolake", "difference", "")
    for row in differing:
        mark = "over" if row.over_tolerance else "within"
        table.add_row(
            str(row.message),
            row.metric,
            row.day.isoformat(),
            str(row.customerio),
            str(row.ciolake),
            f"{row.difference:+d}",
            mark,
        )
    if differing:
        out.print(table)
    if result.gaps:
        gaps = Table("message", "day", "delivery", "metric", "gap")
        for gap in result.gaps:
            day = gap.day.isoformat()
            gaps.add_row(str(gap.message), day, gap.delivery_id, gap.metric, gap.kind)
        out.print(gaps)
    out.print(
        f"{_plural(len(result.messages), 'message')}, {len(result.counts)} counts compared"
        f" ({result.window.first} to {result.window.last}): {len(differing)} differ,"
        f" {len(result.over_tolerance)} over the tolerance",
        soft_wrap=True,
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
