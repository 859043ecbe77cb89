"""What the tables hold right now: rows, commits and files per table, read from the Delta logs."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.dataset as pads

from ciolake.lake.deletions import live_rows, refuse_deletions
from ciolake.lake.delta import DeltaTable
from ciolake.lake.health import open_table, open_tables, store_errors
from ciolake.lake.location import TablesLocation, parse_location, require_location
from ciolake.lake.table_files import TableFiles


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
    """A summary of every ciolake table under ``tables_uri`` (missing ones included).

    Raises:
        InputError: the location is malformed, or a local one names no existing directory.
        TableUnreadableError: a table's log is missing (its data files remain) or damaged.
        StoreUnavailableError: the object store cannot be reached.
    """
    location = parse_location(tables_uri)
    require_location(location)
    return [_summary(location, name, table) for name, table in open_tables(location).items()]


def _summary(location: TablesLocation, name: str, table: DeltaTable | None) -> TableSummary:
    uri = location.table_uri(name)
    if table is None:
        return TableSummary(name, uri, exists=False, rows=0, version=-1, files=0)
    with store_errors(location, name):
        return TableSummary(
            name,
            uri,
            exists=True,
            rows=live_rows(table),
            version=table.version(),
            files=len(table.file_uris()),
        )


def table_dataset(tables_uri: str, name: str) -> pads.Dataset | None:
    """Table ``name`` under ``tables_uri`` as a pyarrow dataset, or None if it does not exist.

    The dataset reads the files through the table's storage (``lake/storage.py``), not through
    ``DeltaTable.to_pyarrow_dataset``: that one reads local files too through delta-rs's Python
    storage handler, and a process that exits right after a scan through it aborted now and
    then ("terminate called without an active exception").

    Raises:
        InputError, TableUnreadableError, StoreUnavailableError: as ``summarize``.
    """
    location = parse_location(tables_uri)
    table = open_table(location, name)
    if table is None:
        return None
    with store_errors(location, name):
        refuse_deletions(table, name, location.table_uri(name))
        return TableFiles(location, name, table=table).dataset()
