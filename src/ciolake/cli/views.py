"""``ciolake views``: print the analytics views' SQL, or create them in a DuckDB file."""

from __future__ import annotations

import contextlib
import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ciolake.analytics import views as sql
from ciolake.analytics.duck import DatabaseError, absolute_uri, check_lake, open_lake
from ciolake.errors import ConfigurationError, InputError
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
        if apply:
            _apply(settings.tables_location, settings.data_dir / ANALYTICS_DATABASE)
            return
        typer.echo(
            sql.render(sql.duckdb_statements(absolute_uri(settings.tables_location))), nl=False
        )
    except ConfigurationError as exc:
        # Also said by ciolake's main(); here too for callers of the command alone.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _apply(tables_uri: str, database: Path) -> None:
    # Everything is checked before anything is created: a refusal leaves nothing behind.
    check_lake(tables_uri)
    made = _make_directory(database.parent)
    existed = database.exists()
    try:
        open_lake(tables_uri, database).close()
    except BaseException:
        _remove(made, database if not existed else None)
        raise
    names = sql.view_names()
    console = Console(stderr=True)
    console.print(f"created {len(names)} views in {database}:")
    console.print(", ".join(names))


def _remove(directories: list[Path], database: Path | None) -> None:
    """Remove what a failed ``--apply`` created (best effort: it is failing already)."""
    with contextlib.suppress(OSError):
        if database is not None:
            for leftover in (database, database.with_name(database.name + ".wal")):
                leftover.unlink(missing_ok=True)
        for directory in reversed(directories):
            directory.rmdir()


def _make_directory(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return those created, outermost first.

    Raises:
        InputError: the path, or one of its parents, is a file.
        DatabaseError: the file system refused (read-only, no permission, /proc).
    """
    lineage = (directory, *directory.parents)
    missing = [d for d in lineage if not d.exists()][::-1]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((d for d in lineage if d.exists() and not d.is_dir()), directory)
        raise InputError(
            f"cannot create the data directory {directory}: {blocker} is a file"
            " (choose another --data-dir)"
        ) from exc
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the data directory {directory}: {exc.strerror or exc}"
            " (choose another --data-dir)"
        ) from exc
    return missing
