"""DuckDB, the local engine of the analytics views: the only module that imports duckdb.

DuckDB comes with the ``analytics`` extra; without it, :func:`connect` raises a
:class:`~ciolake.errors.ConfigurationError` that says so, and nothing else of ciolake needs it.
The delta extension is loaded from the ``duckdb-ext-delta`` wheel when it is installed, so no
download is needed. Every connection runs in UTC, so hours and dates never depend on the
machine's time zone.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ciolake.analytics.views import base_statements, view_statements
from ciolake.errors import ConfigurationError, InputError, TerminalError
from ciolake.lake.health import check_tables
from ciolake.lake.location import TablesLocation, parse_location, require_location

_MISSING = (
    "the analytics commands need DuckDB and its delta extension: install the analytics extra"
    " (pip install 'ciolake[analytics]')"
)


class LakeReadError(TerminalError):
    """DuckDB could not run a query over the tables (one vanished or was damaged meanwhile)."""


class DatabaseError(TerminalError):
    """The DuckDB database file cannot be created or opened."""


@dataclass(frozen=True, slots=True)
class Result:
    """Rows of a query, with their column names."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dictionaries keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Lake:
    """A DuckDB connection that knows the ciolake tables (and, once created, the views)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """Run a statement that returns nothing of interest.

        Raises:
            LakeReadError: DuckDB failed (a table could not be read).
        """
        with _read_errors():
            self._connection.execute(sql, list(parameters))

    def query(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Result:
        """Run a query and fetch every row.

        Args:
            sql: the query, with ``?`` placeholders, or ``$name`` ones for a mapping.
            parameters: the placeholders' values.

        Raises:
            LakeReadError: DuckDB failed (a table could not be read).
        """
        values = dict(parameters) if isinstance(parameters, Mapping) else list(parameters)
        with _read_errors():
            cursor = self._connection.execute(sql, values)
            columns = [d[0] for d in cursor.description]
            return Result(columns, [tuple(row) for row in cursor.fetchall()])

    def arrow(self, sql: str) -> Any:
        """Run a query; its rows as one Arrow table.

        Raises:
            LakeReadError: DuckDB failed.
        """
        with _read_errors():
            return self._connection.execute(sql).fetch_arrow_table()

    def create_views(self, tables_uri: str) -> None:
        """Create the base-table views over the Delta tables, then every analytics view.

        Raises:
            InputError: the location is malformed, or names no existing directory.
            ConfigurationError: the tables do not exist under ``tables_uri``.
            TableUnreadableError: a table's log is missing (its data files remain) or damaged.
            StoreUnavailableError: the object store cannot be reached.
        """
        check_lake(tables_uri)
        for statement in base_statements(absolute_uri(tables_uri)):
            self.execute(statement)
        self.create_analytics_views()

    def create_analytics_views(self) -> None:
        """Create every analytics view over base tables already known by their plain names."""
        for statement in view_statements():
            self.execute(statement)

    def register(self, name: str, table: Any) -> None:
        """Make an Arrow table queryable as ``name`` (in place of a Delta table)."""
        self._connection.register(name, table)

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> Lake:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _duckdb() -> Any:
    try:
        return importlib.import_module("duckdb")
    except ImportError as exc:
        raise ConfigurationError(_MISSING) from exc


@contextmanager
def _read_errors() -> Iterator[None]:
    duckdb = _duckdb()
    try:
        yield
    except duckdb.Error as exc:
        raise LakeReadError(
            f"DuckDB could not read the tables: {_first_line(str(exc))}"
            " (run ciolake tables to see which table is damaged)"
        ) from exc


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def connect(database: str | Path = ":memory:") -> Lake:
    """A DuckDB connection with the delta extension loaded, in UTC.

    Args:
        database: a DuckDB database file, or ``:memory:``.

    Raises:
        ConfigurationError: DuckDB or its delta extension is not installed.
    """
    return Lake(delta_connection(database))


def delta_connection(database: str | Path = ":memory:") -> Any:
    """The raw ``duckdb`` connection behind ``connect``: delta extension loaded, in UTC.

    For the tests and the benchmark, which read the tables with DuckDB as an independent
    Delta reader (delta-kernel, not ciolake's delta-rs writer).

    Raises:
        ConfigurationError: DuckDB or its delta extension is not installed.
    """
    duckdb = _duckdb()
    extensions = _wheel_extensions()
    config: dict[str, Any] = {}
    if extensions is not None:
        config = {
            "extension_directory": str(extensions),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    try:
        connection = duckdb.connect(str(database), config=config)
    except duckdb.Error as exc:
        raise DatabaseError(
            f"cannot open the DuckDB database {database}: {_first_line(str(exc))}"
            " (choose another --data-dir)"
        ) from exc
    try:
        connection.execute("LOAD delta")
    except duckdb.Error as exc:
        connection.close()
        raise ConfigurationError(f"{_MISSING}: {exc}") from exc
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def _wheel_extensions() -> Path | None:
    """Where the duckdb-ext-delta wheel keeps the extension, if it is installed."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "extensions"


def open_lake(tables_uri: str, database: str | Path = ":memory:") -> Lake:
    """A connection with every view created over the Delta tables under ``tables_uri``.

    Raises:
        ConfigurationError: DuckDB is missing, or the tables do not exist.
        InputError, TableUnreadableError, StoreUnavailableError: as ``check_lake``.
        DatabaseError: ``database`` cannot be created or opened.
    """
    lake = connect(database)
    try:
        lake.create_views(tables_uri)
    except BaseException:
        lake.close()
        raise
    return lake


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def absolute_uri(uri: str) -> str:
    """A tables location with local paths made absolute, so saved views work from anywhere."""
    if not _is_local(uri):
        return uri
    return str(Path(uri.removeprefix("file://")).resolve())


def check_lake(tables_uri: str) -> None:
    """Check, before DuckDB reads them, that the tables under ``tables_uri`` can be read.

    DuckDB's own errors name no table; these say which one, and what to do.

    Raises:
        InputError: the location is malformed, or names no existing directory.
        TableUnreadableError: a table's log is missing (its data files remain) or damaged.
        StoreUnavailableError: the object store cannot be reached.
        ConfigurationError: the location holds no ciolake tables yet.
    """
    location = refuse_catalog(tables_uri)
    require_location(location)
    check_tables(location.uri)
    _check_tables(location.uri)


def refuse_catalog(tables_uri: str) -> TablesLocation:
    """The parsed location, unless it is a Unity Catalog schema, which DuckDB cannot read.

    Raises:
        InputError: the location is malformed, or is ``uc://catalog.schema``.
    """
    location = parse_location(tables_uri)
    schema = location.catalog_schema
    if schema is not None:
        catalog, _, name = schema.partition(".")
        raise InputError(
            f"DuckDB does not read tables through Unity Catalog ({location.uri}): read them in"
            f" Databricks (the bundle's dashboard and alerts, or `ciolake dashboard --catalog"
            f" {catalog} --schema {name}`), or give --tables-uri their storage location with"
            " credentials of its own"
        )
    return location


def _check_tables(tables_uri: str) -> None:
    if not _is_local(tables_uri):
        return
    root = Path(absolute_uri(tables_uri))
    missing = [name for name in ("raw_events", "email_events") if not (root / name).is_dir()]
    if missing:
        raise ConfigurationError(
            f"no ciolake tables under {root} (missing {', '.join(missing)}): start the receiver"
            " (ciolake serve) or run ciolake simulate first"
        )
