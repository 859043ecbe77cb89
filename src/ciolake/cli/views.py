"""``ciolake views``: print the analytics views' SQL, or create them in a DuckDB file."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ciolake.analytics import views as sql
from ciolake.analytics.duck import absolute_uri, open_lake
from ciolake.errors import ConfigurationError
from ciolake.settings import load_settings

ANALYTICS_DATABASE = "analytics.duckdb"
"""The DuckDB file ``--apply`` writes, in the data directory."""


class Dialect(enum.StrEnum):
    """SQL dialects the views are printed in."""

    DUCKDB = "duckdb"
    SPARK = "spark"


def views(
    dialect: Annotated[
        Dialect, typer.Option(case_sensitive=False, help="SQL dialect to print.")
    ] = Dialect.DUCKDB,
    catalog: Annotated[
        str | None, typer.Option(help="Spark: catalog of the tables and views (with --schema).")
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Spark: schema of the tables and views.")
    ] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply", help=f"Create the views in <data-dir>/{ANALYTICS_DATABASE} (DuckDB)."
        ),
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env CIOLAKE_DATA_DIR].")
    ] = None,
    tables_uri: Annotated[
        str | None,
        typer.Option(
            help="Where the Delta tables are [env CIOLAKE_TABLES_URI]. With --dialect spark, "
            "also print statements registering them as external tables there."
        ),
    ] = None,
) -> None:
    """Print the SQL of the analytics views, or create them in a DuckDB database."""
    try:
        if dialect is Dialect.SPARK:
            if apply:
                raise typer.BadParameter(
                    "--apply creates DuckDB views; run the printed Spark SQL on Databricks"
                )
            statements = sql.spark_statements(catalog=catalog, schema=schema, tables_uri=tables_uri)
            typer.echo(sql.render(statements), nl=False)
            return
        settings = load_settings(data_dir=data_dir, tables_uri=tables_uri)
        tables = absolute_uri(settings.tables_location)
        if apply:
            _apply(settings.tables_location, settings.data_dir / ANALYTICS_DATABASE)
            return
        typer.echo(sql.render(sql.duckdb_statements(tables)), nl=False)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _apply(tables_uri: str, database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    open_lake(tables_uri, database).close()
    names = sql.view_names()
    console = Console(stderr=True)
    console.print(f"created {len(names)} views in {database}:")
    console.print(", ".join(names))
