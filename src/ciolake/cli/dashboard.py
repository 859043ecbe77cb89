"""``ciolake dashboard``: the dashboard alone, over the Delta tables, without the receiver.

It is an admin surface like the server's admin listener, with the same rule: loopback by
default, and a token (``CIOLAKE_ADMIN_TOKEN``) required to listen anywhere else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from ciolake.cli.options import DataDirOption, TablesUriOption
from ciolake.dashboard.app import dashboard_app
from ciolake.errors import InputError
from ciolake.logs import configure_logging
from ciolake.runtime.sockets import listening_socket
from ciolake.settings import check_admin_exposure, load_settings
from ciolake.web.admin_auth import guarded

if TYPE_CHECKING:
    from ciolake.dashboard.queries import Reader


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
    warehouse_id: Annotated[
        str | None,
        typer.Option(
            help="Read the views in --catalog.--schema through this Databricks SQL warehouse"
            " instead of DuckDB [env DATABRICKS_WAREHOUSE_ID]; signed in with DATABRICKS_HOST,"
            " DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET."
        ),
    ] = None,
    catalog: Annotated[
        str | None, typer.Option(help="Through a SQL warehouse: the views' Unity Catalog catalog.")
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Through a SQL warehouse: the views' schema.")
    ] = None,
    databricks_app: Annotated[
        bool,
        typer.Option(
            "--databricks-app",
            help="Serve as a Databricks App: on 0.0.0.0:$DATABRICKS_APP_PORT, where the"
            " workspace signs every visitor in (refused outside an App).",
        ),
    ] = False,
) -> None:
    """Serve the dashboard on its own at http://HOST:PORT/dashboard (read-only)."""
    settings = load_settings(admin_host=host, data_dir=data_dir, tables_uri=tables_uri)
    open_reader, source = _reader(warehouse_id, catalog, schema)
    if databricks_app:
        host_, port = _databricks_app_address()
    else:
        host_ = settings.admin_host
        check_admin_exposure(settings.admin_host, settings.admin_token)
    configure_logging(settings.log_level)
    # Bound before the URL is printed: a port in use is one line, not a URL and then a failure.
    sock = listening_socket(host_, port, reuse_port=False, what="the dashboard")
    bound = sock.getsockname()[1]
    typer.echo(
        f"Dashboard of {source or settings.tables_location} on http://{host_}:{bound}/dashboard"
        + (" (token required)" if settings.admin_token else ""),
        err=True,
    )
    app = dashboard_app(settings, clock=time.time, open_reader=open_reader, source=source)
    config = uvicorn.Config(
        guarded(app, settings.admin_token),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _reader(
    warehouse_id: str | None, catalog: str | None, schema: str | None
) -> tuple[Callable[[], Reader] | None, str | None]:
    if not (warehouse_id or catalog or schema):
        return None, None
    if not (catalog and schema):
        raise InputError("a SQL warehouse needs --catalog and --schema (where the views are)")
    from ciolake.cli.databricks import warehouse_from_env  # noqa: PLC0415
    from ciolake.dashboard.warehouse import WarehouseReader  # noqa: PLC0415

    warehouse = warehouse_from_env(warehouse_id, "ciolake dashboard")

    def open_reader() -> Reader:
        return WarehouseReader(warehouse, catalog=catalog, schema=schema)

    return open_reader, f"{catalog}.{schema} (through a SQL warehouse)"


def _databricks_app_address() -> tuple[str, int]:
    # The App's proxy signs visitors in before they reach this port: no token of ours.
    port = os.environ.get("DATABRICKS_APP_PORT", "").strip()
    if not port.isdigit():
        raise InputError(
            "--databricks-app serves only inside a Databricks App (no DATABRICKS_APP_PORT)"
        )
    return "0.0.0.0", int(port)
