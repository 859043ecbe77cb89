"""``ciolake send-test``: post realistic, correctly signed events to a receiver."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from ciolake.customerio.sender import (
    DEFAULT_TIMEOUT_S,
    MAX_COUNT,
    SendSummary,
    check_accepted,
    choose_schemas,
    iter_bodies,
    post_signed,
)
from ciolake.errors import ConfigurationError
from ciolake.receive.devkey import read_dev_key
from ciolake.settings import load_settings, parse_keys

MAX_TIMEOUT_S = 600.0


def _check_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        usable = False
    if not usable:
        raise typer.BadParameter(
            f"{value!r} is not an http(s) URL; give the receiver's webhook URL, such as "
            "http://127.0.0.1:8080/webhooks/customerio"
        )
    return value


def _check_count(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_COUNT:
        raise typer.BadParameter(
            f"must be from 1 to {MAX_COUNT} (the most one run sends), got {value}"
        )
    return value


def send_test(
    url: Annotated[
        str, typer.Option(help="The receiver's webhook URL, exactly.", callback=_check_url)
    ] = "http://127.0.0.1:8080/webhooks/customerio",
    key: Annotated[
        str | None,
        typer.Option(
            help="Signing key, trimmed as serve trims CIOLAKE_SIGNING_KEYS (of a comma-separated "
            "list, the first). Default: CIOLAKE_SIGNING_KEYS' first key, else the data "
            "directory's development key.",
            envvar="CIOLAKE_SEND_TEST_KEY",
        ),
    ] = None,
    object_type: Annotated[
        str | None, typer.Option(help="Object type, e.g. email, sms, push, customer.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric, e.g. opened, clicked, delivered.")
    ] = None,
    all_schemas: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Cycle through every (object_type, metric) schema of the spec (69); with "
            "--metric or --object-type, through every one matching them (--all --metric opened: "
            "the opened event of every channel).",
        ),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option(
            help=f"How many events, 1 to {MAX_COUNT} (default: one of each schema chosen: 1, "
            "or 69 with --all).",
            callback=_check_count,
        ),
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="At most this many events per second.")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=MAX_TIMEOUT_S,
            help="Seconds to wait for a connection, and then for each answer.",
        ),
    ] = DEFAULT_TIMEOUT_S,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where to find the development key.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for repeatable bodies.")] = None,
) -> None:
    """Sign sample events as Customer.io does, post them, and summarise the answers.

    Exit status: 0 every event was accepted (200); 1 the receiver refused some, or could not be
    reached; 2 bad input, including a URL that redirects (a webhook URL must be exact).
    """
    try:
        schemas = choose_schemas(object_type=object_type, metric=metric, every=all_schemas)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--object-type' / '--metric'") from exc
    signing_key = _given_key(key) if key is not None else _default_key(data_dir)
    total = count if count is not None else len(schemas)
    bodies = iter_bodies(schemas, count=total, rng=random.Random(seed), now=_now())
    summary = post_signed(url, bodies, key=signing_key, rate=rate, timeout_s=timeout)
    _print_summary(summary, url)
    check_accepted(summary, url)


def _given_key(key: str) -> str:
    keys = parse_keys(key)
    if not keys:
        raise typer.BadParameter("the signing key is blank", param_hint="'--key'")
    return keys[0]


def _default_key(data_dir: Path | None) -> str:
    settings = load_settings(data_dir=data_dir)
    if settings.signing_keys:
        return settings.signing_keys[0]
    dev_key = read_dev_key(settings.dev_key_path)
    if dev_key is None:
        raise ConfigurationError(
            f"no --key given, CIOLAKE_SIGNING_KEYS is empty and there is no development "
            f"key at {settings.dev_key_path} (start `ciolake serve --dev-key` first)."
        )
    return dev_key


def _print_summary(summary: SendSummary, url: str) -> None:
    console = Console(stderr=True)
    console.print(f"send-test: {summary.sent} events to {url} in {summary.seconds:.2f}s")
    table = Table()
    table.add_column("answer")
    table.add_column("count", justify="right")
    for status, number in sorted(summary.statuses.items()):
        table.add_row(status, str(number))
    console.print(table)


def _now() -> int:
    return int(time.time())
