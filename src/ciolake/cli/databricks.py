"""``ciolake databricks``: ciolake's tables and views in a Databricks workspace's Unity Catalog."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ciolake.cli.app import TYPER_SETTINGS
from ciolake.errors import ConfigurationError, InputError

if TYPE_CHECKING:
    from ciolake.databricks.workspace import Warehouse

app = typer.Typer(
    help="ciolake in Databricks: Unity Catalog tables and views through a SQL warehouse.",
    no_args_is_help=True,
    **TYPER_SETTINGS,
)


@app.command("setup")
def setup(
    catalog: Annotated[str, typer.Option(help="Unity Catalog catalog of the tables.")],
    schema: Annotated[str, typer.Option(help="Schema in the catalog (created if missing).")],
    location: Annotated[
        str,
        typer.Option(
            help="Where the tables live (s3://, abfss:// or gs://, under an external location"
            " of the metastore): each table at <location>/<table>, as --tables-uri gives"
            " ciolake."
        ),
    ],
    warehouse_id: Annotated[
        str | None,
        typer.Option(help="SQL warehouse that runs the statements [env DATABRICKS_WAREHOUSE_ID]."),
    ] = None,
    zerobus_table: Annotated[
        str | None,
        typer.Option(
            help="Also create this managed table in the schema, with raw_events' columns, for"
            " serve --sink zerobus to land raw events in (CIOLAKE_ZEROBUS_TABLE)."
        ),
    ] = None,
) -> None:
    """Create ciolake's tables as Unity Catalog external tables and its views; idempotent.

    Signs in as a service principal (OAuth machine-to-machine): DATABRICKS_HOST,
    DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET. An existing table is checked, not changed:
    one at another location, or with a feature ciolake's writer (delta-rs) cannot write, stops
    the setup before anything is created, with the statements that would fix it.
    """
    from ciolake.databricks import setup as tables  # noqa: PLC0415
    from ciolake.lake.location import parse_location  # noqa: PLC0415

    if parse_location(location).catalog_schema is not None:
        raise InputError(
            f"--location {location}: give the storage path the tables live under (s3://,"
            " abfss:// or gs://); uc://catalog.schema is what ciolake serve writes them through"
        )
    warehouse = warehouse_from_env(warehouse_id, "ciolake databricks setup")
    console = Console(stderr=True)
    with console.status("setting up"):
        steps = tables.setup(
            warehouse,
            catalog=catalog,
            schema=schema,
            location=location,
            zerobus_table=zerobus_table,
        )
    summary = Table(title=f"ciolake in {catalog}.{schema} (tables under {location})")
    for column in ("what", "name", "done"):
        summary.add_column(column)
    for step in steps:
        summary.add_row(step.kind, step.name, step.action)
    Console().print(summary)
    console.print(
        f"ciolake writes them with --tables-uri uc://{catalog}.{schema} (credentials vended by"
        f" Unity Catalog) or --tables-uri {location.rstrip('/')} (the storage's own)"
    )


def warehouse_from_env(warehouse_id: str | None, command: str) -> Warehouse:
    """The SQL warehouse ``warehouse_id`` (else ``DATABRICKS_WAREHOUSE_ID``), signed in as the
    service principal of ``DATABRICKS_HOST``, ``DATABRICKS_CLIENT_ID`` and
    ``DATABRICKS_CLIENT_SECRET``.

    Raises:
        ConfigurationError: one of them is missing (named, with ``command``).
    """
    from ciolake.databricks import workspace  # noqa: PLC0415

    return workspace.connect(
        host=_required(workspace.HOST_ENV, command),
        client_id=_required(workspace.CLIENT_ID_ENV, command),
        client_secret=_required(workspace.CLIENT_SECRET_ENV, command),
        warehouse_id=warehouse_id or _required(workspace.WAREHOUSE_ENV, command, "--warehouse-id"),
    )


def _required(env: str, command: str, flag: str | None = None) -> str:
    value = os.environ.get(env, "").strip()
    if not value:
        where = f"{flag} or {env}" if flag else env
        raise ConfigurationError(f"{command} needs {where}")
    return value
