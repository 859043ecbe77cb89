"""``ciolake serve``: the receiver and writer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from ciolake.receive.devkey import load_or_create_dev_key
from ciolake.runtime.launch import exec_supervisor
from ciolake.settings import Settings, check_admin_exposure, load_settings


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address of the public (webhook) listener [env CIOLAKE_HOST; default 127.0.0.1]."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port of the public (webhook) listener [env CIOLAKE_PORT; default 8080]."
        ),
    ] = None,
    admin_host: Annotated[
        str | None,
        typer.Option(
            help="Address of the admin listener (/ready with reasons, /metrics, /dashboard)"
            " [env CIOLAKE_ADMIN_HOST; default 127.0.0.1]; beyond loopback it needs"
            " CIOLAKE_ADMIN_TOKEN."
        ),
    ] = None,
    admin_port: Annotated[
        int | None,
        typer.Option(help="Port of the admin listener [env CIOLAKE_ADMIN_PORT; default 8090]."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Journal, state and tables directory [env CIOLAKE_DATA_DIR]."),
    ] = None,
    tables_uri: Annotated[
        str | None,
        typer.Option(
            help="Put the Delta tables here instead of <data-dir>/tables [env CIOLAKE_TABLES_URI]."
        ),
    ] = None,
    dev_key: Annotated[
        bool,
        typer.Option(
            "--dev-key",
            help="With no CIOLAKE_SIGNING_KEYS, use (or create) <data-dir>/dev-signing-key.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes answering requests [env CIOLAKE_WORKERS; default: cores].",
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="Log level [env CIOLAKE_LOG_LEVEL].")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            help="all: receive and derive the channel tables; receiver: land raw_events only,"
            " one of several sharing --tables-uri, with `ciolake derive` deriving"
            " [env CIOLAKE_ROLE; default all]."
        ),
    ] = None,
    receiver_id: Annotated[
        int | None,
        typer.Option(
            help="With --role receiver: this receiver's number, 1 or more, different for every"
            " receiver of the lake [env CIOLAKE_RECEIVER_ID]."
        ),
    ] = None,
    sink: Annotated[
        str | None,
        typer.Option(
            help="delta: write the Delta tables; zerobus: send raw events to a Unity Catalog"
            " managed table through Zerobus Ingest (CIOLAKE_ZEROBUS_ENDPOINT,"
            " CIOLAKE_ZEROBUS_TABLE), for the bundle's Spark job to derive the rest"
            " [env CIOLAKE_SINK; default delta]."
        ),
    ] = None,
) -> None:
    """Receive Customer.io reporting webhooks and land them in Delta tables."""
    settings = load_settings(
        role=role,
        receiver_id=receiver_id,
        host=host,
        port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        workers=workers,
        data_dir=data_dir,
        tables_uri=tables_uri,
        log_level=log_level,
        sink=sink,
    )
    check_admin_exposure(settings.admin_host, settings.admin_token)
    # A malformed tables location is bad input (exit 2), found before any process starts.
    from ciolake.lake.location import parse_location  # noqa: PLC0415

    parse_location(settings.tables_location)
    if settings.sink == "zerobus":
        from ciolake.databricks.zerobus import target_of  # noqa: PLC0415

        target_of(settings)
    if not settings.signing_keys:
        settings = _with_dev_key(settings) if dev_key else _no_keys()
    sys.stdout.flush()
    sys.stderr.flush()
    exec_supervisor(settings)


def _no_keys() -> Settings:
    typer.echo(
        "error: no signing key. Set CIOLAKE_SIGNING_KEYS to your reporting webhook's signing "
        "key (comma-separate several while rotating), or pass --dev-key for local development.",
        err=True,
    )
    raise typer.Exit(code=2)


def _with_dev_key(settings: Settings) -> Settings:
    key, created = load_or_create_dev_key(settings.dev_key_path)
    url = f"http://{settings.host}:{settings.port}/webhooks/customerio"
    what = "Generated a development signing key" if created else "Using the development key"
    print(
        f"{what} in {settings.dev_key_path}: {key}\n"
        "Send a signed test event from another terminal:\n"
        f"  .venv/bin/ciolake send-test --url {url} --data-dir {settings.data_dir}\n"
        "or with curl:\n"
        f"  body='{_EXAMPLE_BODY}'; ts=$(date +%s)\n"
        f"  sig=$(printf 'v0:%s:%s' \"$ts\" \"$body\" | openssl dgst -sha256 -hmac '{key}' "
        "| sed 's/^.* //')\n"
        f"  curl -sS {url} -H 'Content-Type: application/json' "
        '-H "X-CIO-Timestamp: $ts" -H "X-CIO-Signature: $sig" -d "$body"\n'
        f"Then see it land:\n  .venv/bin/ciolake tables --data-dir {settings.data_dir}\n"
        f"Metrics and the dashboard (admin listener): http://{settings.admin_host}:"
        f"{settings.admin_port}/dashboard",
        file=sys.stderr,
        flush=True,
    )
    return msgspec.structs.replace(settings, signing_keys=(key,))


_EXAMPLE_BODY = (
    '{"event_id":"01JCURLEXAMPLE0000000000001","object_type":"email","metric":"opened",'
    '"timestamp":1790000000,"data":{"delivery_id":"RCURL1","campaign_id":1,"action_id":2,'
    '"identifiers":{"id":"42"},"recipient":"person@example.com","subject":"Hello"}}'
)
