"""``ciolake check``: evaluate the operational alerts once, for cron or a scheduled job."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ciolake.checks.rules import (
    Finding,
    Status,
    Thresholds,
    any_fired,
    evaluate,
    http_get_text,
    reconcile_findings,
    scrape_metrics,
)
from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.lake.health import check_tables
from ciolake.lake.location import require_location
from ciolake.settings import Settings, load_settings

_DEFAULTS = Thresholds()
_DAY_MINUTES = 24 * 60
# The same window on previous days: a year back is plenty, and far from the dates' limits.
MAX_BASELINE_DAYS = 366
MAX_WINDOW_MINUTES = 7 * _DAY_MINUTES
_STYLES = {Status.OK: "green", Status.FIRED: "bold red", Status.UNKNOWN: "yellow"}
_UNITS = {
    "no_events": "min",
    "quarantine_share": "%",
    "signature_failures": "/min",
    "freshness": "s",
    "volume_drop": "% drop",
    "metrics_reachable": "",
    "reconcile": " counts",
}


def check(
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
    metrics_url: Annotated[
        str | None,
        typer.Option(
            help="The running server's /metrics [default: http://ADMIN_HOST:ADMIN_PORT/metrics,"
            " from env CIOLAKE_ADMIN_HOST and CIOLAKE_ADMIN_PORT; sends CIOLAKE_ADMIN_TOKEN]."
        ),
    ] = None,
    no_metrics: Annotated[
        bool,
        typer.Option("--no-metrics", help="Skip the checks that need /metrics (tables only)."),
    ] = False,
    sample_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            max=3600,
            help="Scrape /metrics twice this far apart to measure the current rate of signature "
            "failures. 0 scrapes once and averages since the process started, if /metrics "
            "exports its start (process_start_time_seconds); otherwise that check is unknown.",
        ),
    ] = 10.0,
    no_events_minutes: Annotated[
        float, typer.Option(min=0, help="Fire when no delivery arrived for this long.")
    ] = _DEFAULTS.no_events_minutes,
    quarantine_percent: Annotated[
        float, typer.Option(min=0, help="Fire when more of the recent deliveries are quarantined.")
    ] = _DEFAULTS.quarantine_percent,
    quarantine_window_minutes: Annotated[
        float,
        typer.Option(
            min=1, max=MAX_WINDOW_MINUTES, help="The recent deliveries' window for the share."
        ),
    ] = _DEFAULTS.quarantine_window_minutes,
    signature_failures_per_minute: Annotated[
        float, typer.Option(min=0, help="Fire above this many 401 answers per minute.")
    ] = _DEFAULTS.signature_failures_per_minute,
    freshness_seconds: Annotated[
        float, typer.Option(min=0, help="Fire when a journaled delivery waits longer to commit.")
    ] = _DEFAULTS.freshness_seconds,
    volume_drop_percent: Annotated[
        float,
        typer.Option(
            min=0, max=100, help="Fire when a channel's volume falls by more than this much."
        ),
    ] = _DEFAULTS.volume_drop_percent,
    volume_window_minutes: Annotated[
        float,
        typer.Option(min=1, max=_DAY_MINUTES, help="The recent window whose volume is compared."),
    ] = _DEFAULTS.volume_window_minutes,
    volume_baseline_days: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_BASELINE_DAYS,
            help="Compare with the same window on this many previous days.",
        ),
    ] = _DEFAULTS.volume_baseline_days,
    volume_min_baseline: Annotated[
        int, typer.Option(min=0, help="Judge a channel only when its baseline has this many.")
    ] = _DEFAULTS.volume_min_baseline,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Evaluate the alerts once; exit 1 when any fired, 0 when none did."""
    settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
    # A table that cannot be read is not a finding among others: nothing about it is known.
    from ciolake.analytics.duck import refuse_catalog  # noqa: PLC0415

    location = refuse_catalog(settings.tables_location)
    require_location(location)
    check_tables(location.uri)
    thresholds = Thresholds(
        no_events_minutes=no_events_minutes,
        quarantine_percent=quarantine_percent,
        quarantine_window_minutes=quarantine_window_minutes,
        signature_failures_per_minute=signature_failures_per_minute,
        freshness_seconds=freshness_seconds,
        volume_drop_percent=volume_drop_percent,
        volume_window_minutes=volume_window_minutes,
        volume_baseline_days=volume_baseline_days,
        volume_min_baseline=volume_min_baseline,
    )
    reading = None
    if not no_metrics:
        reading = scrape_metrics(
            metrics_url or default_metrics_url(settings),
            sample_seconds=sample_seconds,
            get=partial(http_get_text, token=settings.admin_token),
            sleep=time.sleep,
            clock=time.monotonic,
        )
    now = time.time()
    findings = evaluate(location.uri, thresholds, now=now, metrics=reading)
    findings += reconcile_findings(settings.reconcile_summary_path)
    if as_json:
        _print_json(findings, now)
    else:
        _print_table(findings, now)
    if any_fired(findings):
        raise typer.Exit(code=1)


def default_metrics_url(settings: Settings) -> str:
    """The server's /metrics on its admin listener; over loopback when it listens on all
    addresses (0.0.0.0 or ::), which this machine reaches there too."""
    host = settings.admin_host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.admin_port}/metrics"


def _print_json(findings: list[Finding], now: float) -> None:
    payload = {
        "checked_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "fired": any_fired(findings),
        "findings": [f.as_dict() for f in findings],
    }
    typer.echo(json.dumps(payload))


def _number(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _print_table(findings: list[Finding], now: float) -> None:
    fired = sum(f.status is Status.FIRED for f in findings)
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    table = Table(title=f"ciolake check at {stamp}: {fired} fired")
    for column in ("check", "subject", "status", "value", "threshold", "detail"):
        numeric = column in ("value", "threshold")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "detail")
    for f in findings:
        unit = _UNITS.get(f.check, "")
        value = "-" if f.value is None else f"{_number(f.value)} {unit}".strip()
        threshold = f"{f.threshold:,g} {unit}".strip() if f.check != "metrics_reachable" else "-"
        status = f"[{_STYLES[f.status]}]{f.status.upper()}[/]"
        table.add_row(f.check, f.subject or "-", status, value, threshold, f.detail)
    Console().print(table)
