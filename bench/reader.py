"""An independent reader of the Delta tables: DuckDB's delta extension (delta-kernel).

Loaded offline from the ``duckdb-ext-delta`` wheel by ``ciolake.analytics.duck``, as the tests
do, so the harness checks what ciolake wrote without sharing delta-rs, ciolake's writer.
"""

from __future__ import annotations

import duckdb

from ciolake.analytics.duck import delta_connection


def delta_reader() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension loaded from the installed wheel."""
    connection: duckdb.DuckDBPyConnection = delta_connection()
    return connection


def scan(table_uri: str) -> str:
    """``delta_scan('<uri>')`` with the quote escaped."""
    return "delta_scan('" + table_uri.replace("'", "''") + "')"
