"""An independent reader of the Delta tables: DuckDB's delta extension (delta-kernel).

Loaded offline from the ``duckdb-ext-delta`` wheel, as the tests do, so the harness checks what
ciolake wrote without sharing delta-rs, ciolake's writer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb


def delta_reader() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension loaded from the installed wheel."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("duckdb-ext-delta is not installed (pip install -e '.[analytics]')")
    extensions = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    connection = duckdb.connect(
        config={
            "extension_directory": str(extensions),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    connection.execute("LOAD delta")
    return connection


def scan(table_uri: str) -> str:
    """``delta_scan('<uri>')`` with the quote escaped."""
    return "delta_scan('" + table_uri.replace("'", "''") + "')"
