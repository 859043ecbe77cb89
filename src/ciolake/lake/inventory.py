"""What the tables hold right now: rows, commits and files per table, read from the Delta logs."""

from __future__ import annotations

from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from ciolake.lake.tables import ALL_SPECS


@dataclass(frozen=True, slots=True)
class TableSummary:
    """One table's size."""

    name: str
    uri: str
    exists: bool
    rows: int
    version: int
    files: int


def summarize(tables_uri: str) -> list[TableSummary]:
    """A summary of every ciolake table under ``tables_uri`` (missing ones included)."""
    return [_summary(name, f"{tables_uri.rstrip('/')}/{name}") for name in ALL_SPECS]


def _summary(name: str, uri: str) -> TableSummary:
    try:
        table = DeltaTable(uri)
    except TableNotFoundError:
        return TableSummary(name, uri, exists=False, rows=0, version=-1, files=0)
    return TableSummary(
        name,
        uri,
        exists=True,
        rows=table.count(),
        version=table.version(),
        files=len(table.file_uris()),
    )
