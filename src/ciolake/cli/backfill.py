"""``ciolake backfill``: Customer.io's delivery records of a window as rows of the channel tables,
where the tables lack them (docs/reconcile.md)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress as Bar

from ciolake.analytics.duck import open_lake
from ciolake.backfill.run import Backfill, BackfillResult, Plan
from ciolake.cli.app_api import (
    DEFAULT_TIMEOUT_S,
    AllowHttpOption,
    BaseUrlOption,
    Region,
    RegionOption,
    TimeoutOption,
    cli_errors,
    open_client,
)
from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.cli.reconcile import (
    ActionOption,
    IdsOption,
    SinceOption,
    UntilOption,
    ZoneOption,
    chosen_scope,
)
from ciolake.customerio.reporting import EASTERN, Messages
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.lake.writer import DeltaWriter
from ciolake.runtime.locks import FileLock, commit_lock_path
from ciolake.settings import load_settings


def backfill(
    since: SinceOption = None,
    until: UntilOption = None,
    campaign: Annotated[IdsOption, typer.Option(metavar="ID", help="A campaign id.")] = None,
    action: ActionOption = None,
    broadcast: Annotated[IdsOption, typer.Option(metavar="ID", help="A broadcast id.")] = None,
    newsletter: Annotated[IdsOption, typer.Option(metavar="ID", help="A newsletter id.")] = None,
    transactional: Annotated[
        IdsOption, typer.Option(metavar="ID", help="A transactional message id.")
    ] = None,
    tz: ZoneOption = EASTERN.key,
    region: RegionOption = Region.us,
    base_url: BaseUrlOption = None,
    allow_http: AllowHttpOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Add Customer.io's deliveries of the window that the tables lack, with source=backfill."""
    scope = chosen_scope(tz, since, until, campaign, action, broadcast, newsletter, transactional)
    plan = Plan(tuple(scope.messages), scope.first, scope.last, scope.zone.key)
    settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
    console = Console(stderr=True)
    with (
        cli_errors(),
        open_client(region, base_url, allow_http, timeout) as api,
        # First: tables that are not there are an error, never created here.
        open_lake(settings.tables_location) as lake,
    ):
        writer = DeltaWriter(settings.tables_location, names=CHANNEL_TABLES)
        lock = FileLock(commit_lock_path(settings.state_dir))
        try:
            writer.ensure_tables()  # adds the source column to tables from before it
            run = Backfill(
                lake=lake,
                messages=Messages(api),
                writer=writer,
                checkpoint=settings.backfill_checkpoint_path,
                clock=time.time,
                lock=lock,
            )
            result = _run(run, plan, console)
        finally:
            lock.close()
            writer.close()
    Console().print(_summary(result), soft_wrap=True)


def _run(run: Backfill, plan: Plan, console: Console) -> BackfillResult:
    with Bar(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("backfilling", total=len(plan.days()))

        def progress(day: dt.date, done: int, total: int) -> None:
            bar.update(task, description=f"backfilled {day}", completed=done, total=total)

        return run.run(plan, progress=progress)


def _summary(result: BackfillResult) -> str:
    added = sum(result.added.values())
    tables = ", ".join(f"{n:,} in {t}" for t, n in sorted(result.added.items()))
    parts = [
        f"{result.deliveries:,} deliveries of {result.days} days read",
        f"{added:,} rows added" + (f" ({tables})" if tables else ""),
        f"{result.present:,} already in the tables",
    ]
    if result.superseded:
        parts.append(f"{result.superseded:,} backfilled rows superseded by late webhook events")
    if result.days_already_done:
        parts.append(f"{result.days_already_done} days done by the interrupted run skipped")
    if result.unknown_types:
        parts.append(f"{result.unknown_types:,} deliveries of a type no table holds")
    return "; ".join(parts)
