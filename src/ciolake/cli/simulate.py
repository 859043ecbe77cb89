"""``ciolake simulate``: land a realistic history with known, exact rates through the receiver."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ciolake.analytics.simulate import (
    CHANNELS,
    Arrivals,
    History,
    Rates,
    SimulationConfig,
    build_history,
    feed,
)
from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.errors import ConfigurationError
from ciolake.settings import Settings, load_settings

_R = Rates()
_A = Arrivals()
_SHARE = {"min": 0.0, "max": 1.0}


def simulate(
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 3,
    deliveries: Annotated[int, typer.Option(min=1, help="Messages per channel per day.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same history.")] = 0,
    start: Annotated[
        str | None,
        typer.Option(help="First day, YYYY-MM-DD (UTC) [default: DAYS days before today]."),
    ] = None,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
    delivery_rate: Annotated[float, typer.Option(**_SHARE, help="delivered / sent.")] = _R.delivery,
    bounce_rate: Annotated[float, typer.Option(**_SHARE, help="bounced / sent.")] = _R.bounce,
    failure_rate: Annotated[
        float, typer.Option(**_SHARE, help="failed / deliveries (never sent).")
    ] = _R.failure,
    drop_rate: Annotated[
        float, typer.Option(**_SHARE, help="dropped / deliveries (email, push, whatsapp).")
    ] = _R.drop,
    open_rate: Annotated[
        float, typer.Option(**_SHARE, help="opened / delivered (in-app: / sent).")
    ] = _R.open,
    machine_open_share: Annotated[
        float, typer.Option(**_SHARE, help="Share of opened emails opened only by machines.")
    ] = _R.machine_open_share,
    click_rate: Annotated[
        float, typer.Option(**_SHARE, help="clicked / delivered (in-app, slack, webhook: / sent).")
    ] = _R.click,
    machine_click_share: Annotated[
        float, typer.Option(**_SHARE, help="Share of clicked emails clicked only by machines.")
    ] = _R.machine_click_share,
    conversion_rate: Annotated[
        float, typer.Option(**_SHARE, help="converted / delivered.")
    ] = _R.conversion,
    unsubscribe_rate: Annotated[
        float, typer.Option(**_SHARE, help="Email unsubscribed / delivered.")
    ] = _R.unsubscribe,
    spam_rate: Annotated[
        float, typer.Option(**_SHARE, help="Email spammed / delivered.")
    ] = _R.spam,
    reply_rate: Annotated[
        float, typer.Option(**_SHARE, help="SMS and WhatsApp replied / delivered.")
    ] = _R.reply,
    missing_sent_rate: Annotated[
        float,
        typer.Option(**_SHARE, help="Share of delivered or bounced messages with no sent webhook."),
    ] = _R.missing_sent,
    duplicate_rate: Annotated[
        float, typer.Option(**_SHARE, help="Share of events delivered again later (retries).")
    ] = _A.duplicate,
    late_rate: Annotated[
        float, typer.Option(**_SHARE, help="Share of events arriving 1-48 hours late.")
    ] = _A.late,
    quarantined_per_day: Annotated[
        int, typer.Option(min=0, help="Deliveries per day that go to quarantine.")
    ] = _A.quarantined_per_day,
) -> None:
    """Write a realistic history for every channel, with exact known rates, via the receiver.

    Do not run it on a data directory a running `ciolake serve` writes to.
    """
    rates = Rates(
        delivery=delivery_rate,
        bounce=bounce_rate,
        failure=failure_rate,
        drop=drop_rate,
        open=open_rate,
        machine_open_share=machine_open_share,
        click=click_rate,
        machine_click_share=machine_click_share,
        conversion=conversion_rate,
        unsubscribe=unsubscribe_rate,
        spam=spam_rate,
        reply=reply_rate,
        missing_sent=missing_sent_rate,
    )
    arrivals = Arrivals(
        duplicate=duplicate_rate, late=late_rate, quarantined_per_day=quarantined_per_day
    )
    config = SimulationConfig(
        start=_first_day(start, days),
        days=days,
        deliveries=deliveries,
        seed=seed,
        rates=rates,
        arrivals=arrivals,
    )
    try:
        settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
        history = build_history(config)
    except (ConfigurationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    _feed_with_progress(settings, history)
    _summarize(history, settings)


def _first_day(start: str | None, days: int) -> date:
    if start is None:
        return datetime.now(UTC).date() - timedelta(days=days)
    try:
        return date.fromisoformat(start)
    except ValueError as exc:
        raise typer.BadParameter(f"--start must be YYYY-MM-DD, got {start!r}") from exc


def _feed_with_progress(settings: Settings, history: History) -> None:
    columns = (
        TextColumn("landing deliveries"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("feed", total=len(history.arrivals))
        feed(
            settings,
            history.arrivals,
            on_progress=lambda done: progress.update(task, completed=done),
        )


def _summarize(history: History, settings: Settings) -> None:
    console = Console(stderr=True)
    kinds = Counter(a.kind for a in history.arrivals)
    config = history.config
    last = date.fromordinal(config.start.toordinal() + config.days - 1)
    console.print(
        f"simulate: {len(history.deliveries):,} messages, {len(history.events()):,} events "
        f"({config.start} to {last}), {len(history.arrivals):,} deliveries to the receiver: "
        f"{kinds['landed']:,} landed, {kinds['duplicate']:,} duplicates, "
        f"{kinds['quarantine']:,} quarantined; tables under {settings.tables_location}"
    )
    table = Table(title="true outcomes (messages)")
    outcomes = ("sent", "delivered", "opened", "clicked", "converted", "bounced", "failed")
    for column in ("channel", "messages", *outcomes):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for channel in CHANNELS:
        group = [d for d in history.deliveries if d.channel == channel]
        counts = [sum(1 for d in group if o in d.outcomes) for o in outcomes]
        table.add_row(channel, f"{len(group):,}", *(f"{c:,}" for c in counts))
    console.print(table)
    console.print("See them with: ciolake report" + _data_dir_flag(settings))


def _data_dir_flag(settings: Settings) -> str:
    return f" --data-dir {settings.data_dir}" if settings.tables_uri is None else ""
