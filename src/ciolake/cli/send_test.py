"""``ciolake send-test``: post realistic, correctly signed events to a receiver."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ciolake.customerio.sender import build_bodies, choose_schemas, post_signed
from ciolake.devkey import read_dev_key
from ciolake.settings import load_settings


def send_test(
    url: Annotated[
        str, typer.Option(help="The receiver's webhook URL.")
    ] = "http://127.0.0.1:8080/webhooks/customerio",
    key: Annotated[
        str | None,
        typer.Option(
            help="Signing key. Default: CIOLAKE_SIGNING_KEYS' first key, else the data directory's "
            "development key.",
            envvar="CIOLAKE_SEND_TEST_KEY",
        ),
    ] = None,
    object_type: Annotated[
        str | None, typer.Option(help="Object type, e.g. email, sms, push.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric, e.g. opened, clicked, delivered.")
    ] = None,
    all_schemas: Annotated[
        bool,
        typer.Option("--all", help="Cycle through every (object_type, metric) schema of the spec."),
    ] = False,
    count: Annotated[
        int, typer.Option(min=0, help="How many events (default: 1, or 69 with --all).")
    ] = 0,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="At most this many events per second.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where to find the development key.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for repeatable bodies.")] = None,
) -> None:
    """Sign sample events as Customer.io does, post them, and summarise the answers."""
    signing_key = key or _default_key(data_dir)
    try:
        schemas = choose_schemas(object_type=object_type, metric=metric, every=all_schemas)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    total = count or len(schemas)
    bodies = build_bodies(schemas, count=total, rng=random.Random(seed), now=_now())
    summary = post_signed(url, bodies, key=signing_key, rate=rate)
    console = Console(stderr=True)
    console.print(f"send-test: {summary.sent} events to {url} in {summary.seconds:.2f}s")
    table = Table()
    table.add_column("answer")
    table.add_column("count", justify="right")
    for status, number in sorted(summary.statuses.items()):
        table.add_row(status, str(number))
    console.print(table)
    if not summary.ok:
        raise typer.Exit(code=1)


def _default_key(data_dir: Path | None) -> str:
    settings = load_settings(data_dir=data_dir)
    if settings.signing_keys:
        return settings.signing_keys[0]
    dev_key = read_dev_key(settings.dev_key_path)
    if dev_key is None:
        typer.echo(
            f"error: no --key given, CIOLAKE_SIGNING_KEYS is empty and there is no development "
            f"key at {settings.dev_key_path} (start `ciolake serve --dev-key` first).",
            err=True,
        )
        raise typer.Exit(code=2)
    return dev_key


def _now() -> int:
    return int(time.time())
