"""``ciolake dashboard``: the dashboard alone, over the Delta tables, without the receiver.

It is an admin surface like the server's admin listener, with the same rule: loopback by
default, and a token (``CIOLAKE_ADMIN_TOKEN``) required to listen anywhere else.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
import uvicorn

from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.dashboard.app import dashboard_app
from ciolake.logs import configure_logging
from ciolake.runtime.sockets import listening_socket
from ciolake.settings import check_admin_exposure, load_settings
from ciolake.web.admin_auth import guarded


def dashboard(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on [env CIOLAKE_ADMIN_HOST; default 127.0.0.1]; beyond"
            " loopback it needs CIOLAKE_ADMIN_TOKEN."
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8081,
    data_dir: DataDirOption = None,
    tables_uri: TablesUriOption = None,
) -> None:
    """Serve the dashboard on its own at http://HOST:PORT/dashboard (read-only)."""
    settings = load_settings(admin_host=host, data_dir=data_dir, tables_uri=tables_uri)
    check_admin_exposure(settings.admin_host, settings.admin_token)
    configure_logging(settings.log_level)
    # Bound before the URL is printed: a port in use is one line, not a URL and then a failure.
    sock = listening_socket(settings.admin_host, port, reuse_port=False, what="the dashboard")
    bound = sock.getsockname()[1]
    typer.echo(
        f"Dashboard of {settings.tables_location} on http://{settings.admin_host}:{bound}/dashboard"
        + (" (token required)" if settings.admin_token else ""),
        err=True,
    )
    config = uvicorn.Config(
        guarded(dashboard_app(settings, clock=time.time), settings.admin_token),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
