"""``ciolake dashboard``: the dashboard alone, over the Delta tables, without the receiver.

It is an admin surface like the server's admin listener, with the same rule: loopback by
default, and a token (``CIOLAKE_ADMIN_TOKEN``) required to listen anywhere else.
"""

from __future__ import annotations

import socket
import time
from typing import Annotated

import typer
import uvicorn

from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.dashboard.app import dashboard_app
from ciolake.errors import ConfigurationError
from ciolake.logs import configure_logging
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
    sock = _listen(settings.admin_host, port)
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


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)"
        ) from exc
    sock.listen(128)
    return sock
