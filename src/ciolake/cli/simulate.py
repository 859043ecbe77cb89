"""``ciolake simulate``: land a realistic history with known, exact rates through the receiver.

It writes to a directory of its own (``./demo`` unless ``--data-dir`` says otherwise) and never
to one holding deliveries it did not simulate, unless ``--into-existing`` is given: simulated
rows mixed with real ones would skew every view, report, dashboard panel and alert.
"""

from __future__ import annotations

import errno
import os
import shlex
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ciolake.errors import InputError
from ciolake.lake.location import parse_location
from ciolake.runtime.locks import lock_data_dir
from ciolake.settings import Settings, load_settings
from ciolake.simulate.simulator import (
    CHANNELS,
    EARLIEST_START,
    MAX_DAYS,
    MAX_DELIVERIES,
    MAX_MESSAGES_PER_CHANNEL,
    MAX_QUARANTINED_PER_DAY,
    SIMULATED_EVENT_ID_PREFIX,
    Arrival,
    Arrivals,
    History,
    Landed,
    Landing,
    Rates,
    SimulationConfig,
    build_history,
    build_history_before,
    check_config,
    days_late,
    foreign_deliveries,
    last_receipt,
    stored_event_ids,
)

DEMO_DIR = Path("demo")
"""Where simulated histories go unless ``--data-dir`` says otherwise: never ``./data``."""

# Where simulate writes comes from its flags only: a CIOLAKE_DATA_DIR or CIOLAKE_TABLES_URI
# exported for `ciolake serve` would otherwise send simulated rows into the real tables.
_LOCATION_ENV = frozenset({"CIOLAKE_DATA_DIR", "CIOLAKE_TABLES_URI"})
# A full or failing disk is the world's failure (exit 1), not a wrong choice of directory.
_WORLD_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})

_R = Rates()
_A = Arrivals()
_SHARE = {"min": 0.0, "max": 1.0}


def simulate(
    days: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_DAYS,
            help=f"Days of history; days x deliveries at most {MAX_MESSAGES_PER_CHANNEL:,}.",
        ),
    ] = 3,
    deliveries: Annotated[
        int,
        typer.Option(min=1, max=MAX_DELIVERIES, help="Messages per channel per day."),
    ] = 200,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same history.")] = 0,
    start: Annotated[
        str | None,
        typer.Option(
            help=f"First day, YYYY-MM-DD (UTC), {EARLIEST_START} or later; every delivery must"
            " be received before now [default: as late as that allows].",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Data directory [default ./demo; CIOLAKE_DATA_DIR is not read, so that"
            " simulated rows never reach the real tables]."
        ),
    ] = None,
    tables_uri: Annotated[
        str | None,
        typer.Option(
            help="Tables location [default <data-dir>/tables; CIOLAKE_TABLES_URI is not read]."
        ),
    ] = None,
    into_existing: Annotated[
        bool,
        typer.Option(
            "--into-existing",
            help="Write even into tables holding deliveries simulate did not write"
            f" (simulated event_ids start with {SIMULATED_EVENT_ID_PREFIX}).",
        ),
    ] = False,
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
        int,
        typer.Option(
            min=0, max=MAX_QUARANTINED_PER_DAY, help="Deliveries per day that go to quarantine."
        ),
    ] = _A.quarantined_per_day,
) -> None:
    """Write a realistic history for every channel, with exact known rates, via the receiver.

    It goes to ./demo unless --data-dir says otherwise, and is refused in a directory holding
    deliveries simulate did not write (real or test events) unless --into-existing is given.
    Simulated event_ids start with "sim-". No delivery is received after now: without --start,
    the history ends as late as that allows. Refused while a ciolake serve uses the directory.
    """
    _check_size(days, deliveries)
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
    schedule = Arrivals(
        duplicate=duplicate_rate, late=late_rate, quarantined_per_day=quarantined_per_day
    )
    config = SimulationConfig(
        start=_first_day(start, days),
        days=days,
        deliveries=deliveries,
        seed=seed,
        rates=rates,
        arrivals=schedule,
    )
    try:
        check_config(config)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = _settings(data_dir, tables_uri)
    _run(config, settings, into_existing=into_existing, explicit_start=start is not None)


def _run(
    config: SimulationConfig, settings: Settings, *, into_existing: bool, explicit_start: bool
) -> None:
    _claim(settings, into_existing=into_existing)
    history = _history(config, explicit_start=explicit_start)
    stored = stored_event_ids(settings.tables_location)
    # What an earlier run landed is left out: the dedup index forgets ids after its window.
    todo = [a for a in history.arrivals if a.event_id not in stored]
    landing = _open(settings, todo)
    landed = _feed_with_progress(landing, len(todo))
    already = sum(1 for e in history.events() if e.event_id in stored)
    _summarize(history, landed, already, settings)


def _check_size(days: int, deliveries: int) -> None:
    if days * deliveries > MAX_MESSAGES_PER_CHANNEL:
        raise typer.BadParameter(
            f"--days {days:,} x --deliveries {deliveries:,} is {days * deliveries:,} messages per"
            f" channel; at most {MAX_MESSAGES_PER_CHANNEL:,}, since the whole history is built"
            " in memory",
            param_hint="'--deliveries'",
        )


def _first_day(start: str | None, days: int) -> date:
    today = datetime.now(UTC).date()
    if start is None:
        # A first guess: a history's last receipts usually come within 4 days of its last day.
        return today - timedelta(days=days + 4)
    try:
        first = date.fromisoformat(start)
    except ValueError as exc:
        raise typer.BadParameter(
            f"must be YYYY-MM-DD, got {start!r}", param_hint="'--start'"
        ) from exc
    if first < EARLIEST_START:
        raise typer.BadParameter(
            f"must be {EARLIEST_START} or later, got {first}", param_hint="'--start'"
        )
    if first > today - timedelta(days=days):
        raise typer.BadParameter(
            f"{first} with --days {days} runs into today or the future (today is {today}, UTC);"
            " choose an earlier --start, or leave it out",
            param_hint="'--start'",
        )
    return first


def _settings(data_dir: Path | None, tables_uri: str | None) -> Settings:
    environ = {k: v for k, v in os.environ.items() if k not in _LOCATION_ENV}
    return load_settings(environ, data_dir=data_dir or DEMO_DIR, tables_uri=tables_uri)


def _claim(settings: Settings, *, into_existing: bool) -> None:
    """Refuse, before any work, a directory that cannot be written, is busy or holds real data.

    Raises:
        InputError: the directory cannot be written, or holds deliveries simulate did not write
            (unless ``into_existing``).
        DataDirBusyError: a ``ciolake serve`` uses it.
    """
    try:
        fd = lock_data_dir(settings.data_dir)
    except OSError as exc:
        raise _unusable(settings.data_dir, exc) from exc
    try:
        tables = parse_location(settings.tables_location).path
        if tables is not None and settings.tables_uri is not None:
            _make_directory(tables, flag="--tables-uri")
        foreign = 0 if into_existing else foreign_deliveries(settings.tables_location)
    finally:
        os.close(fd)
    if foreign:
        raise InputError(
            f"{_where(settings)} already holds {foreign:,} deliveries that ciolake simulate did not"
            " write (real or test events), and simulated ones would mix with them in every view:"
            f" leave --data-dir out to use ./{DEMO_DIR}, choose an empty directory, or pass"
            f" --into-existing (simulated event_ids start with {SIMULATED_EVENT_ID_PREFIX})"
        )


def _make_directory(path: Path, *, flag: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(path, exc, flag=flag) from exc


def _unusable(path: Path, exc: OSError, *, flag: str = "--data-dir") -> OSError | InputError:
    """The one-line refusal of a directory the user chose, naming it."""
    if exc.errno in _WORLD_ERRNOS:
        return exc
    reason = {
        errno.ENOTDIR: "it is not a directory",
        errno.EEXIST: "it is not a directory",
        errno.EROFS: "the file system is read-only",
    }.get(exc.errno or 0, (exc.strerror or type(exc).__name__).lower())
    return InputError(f"cannot write to {path}: {reason} (choose another {flag})")


def _where(settings: Settings) -> str:
    return settings.tables_location if settings.tables_uri else str(settings.data_dir)


def _history(config: SimulationConfig, *, explicit_start: bool) -> History:
    """The history, none of whose deliveries is received after now."""
    now = datetime.now(UTC).timestamp()
    if not explicit_start:
        return build_history_before(config, now)
    history = build_history(config)
    late = days_late(history, now)
    if late:
        until = datetime.fromtimestamp(last_receipt(history), UTC).strftime("%Y-%m-%d %H:%M")
        latest = config.start - timedelta(days=late)
        raise InputError(
            f"--start {config.start} with --days {config.days}: the last deliveries would be"
            f" received until {until} UTC, after now; choose --start {latest} or earlier, or"
            " leave --start out"
        )
    return history


def _open(settings: Settings, arrivals: Sequence[Arrival]) -> Landing:
    try:
        return Landing(settings, arrivals)
    except OSError as exc:
        raise _unusable(settings.data_dir, exc) from exc
    except sqlite3.Error as exc:
        raise InputError(
            f"cannot write to {settings.state_dir}: {exc} (choose another --data-dir)"
        ) from exc


def _feed_with_progress(landing: Landing, total: int) -> Landed:
    columns = (
        TextColumn("landing deliveries"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("feed", total=total)
            return landing.run(on_progress=lambda done: progress.update(task, completed=done))
    finally:
        # Whatever stopped the run, the receiver commits what it journaled and lets go.
        landing.close()


def _summarize(history: History, landed: Landed, already: int, settings: Settings) -> None:
    console = Console(stderr=True)
    config = history.config
    last = date.fromordinal(config.start.toordinal() + config.days - 1)
    console.print(
        f"simulate: {len(history.deliveries):,} messages, {len(history.events()):,} events "
        f"({config.start} to {last}): {landed.events:,} events landed, {already:,} were already "
        f"there; {landed.delivered:,} deliveries to the receiver, of which "
        f"{landed.duplicates:,} retries and {landed.quarantined:,} quarantined; "
        f"tables under {settings.tables_location}",
        soft_wrap=True,
        markup=False,
        highlight=False,
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
    flag = _location_flag(settings)
    console.print(
        f"See them with: ciolake report{flag}  (or ciolake dashboard{flag})",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


def _location_flag(settings: Settings) -> str:
    if settings.tables_uri is not None:
        return f" --tables-uri {shlex.quote(settings.tables_uri)}"
    return f" --data-dir {shlex.quote(str(settings.data_dir))}"
