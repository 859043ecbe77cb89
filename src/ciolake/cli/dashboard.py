"""``ciolake dashboard``: the dashboard alone, over the Delta tables, without the receiver."""

from __future__ import annotations

import time
from typing import Annotated

import typer
import uvicorn

from ciolake.analytics.dashboard import dashboard_app
from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.errors import ConfigurationError
from ciolake.logs import configure_logging
from ciolake.settings import load_settings


def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on \\[env CIOLAKE_HOST].")
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Serve the dashboard on its own at http://HOST:PORT/dashboard (read-only)."""
    try:
        settings = load_settings(host=host, data_dir=data_dir, tables_uri=tables_uri)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    configure_logging(settings.log_level)
    typer.echo(
        f"Dashboard of {settings.tables_location} on http://{settings.host}:{port}/dashboard",
        err=True,
    )
    config = uvicorn.Config(
        dashboard_app(settings, clock=time.time),
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    uvicorn.Server(config).run()
