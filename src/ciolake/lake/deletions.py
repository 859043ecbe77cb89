"""Rows deleted by deletion vectors, which another engine (Spark, Databricks) may leave.

A deletion vector marks rows of a data file as deleted without rewriting the file, so the
file's row count (its ``numRecords`` statistic) still counts them. ciolake never writes one,
but a table it owns may get them from a ``DELETE`` or ``MERGE`` run elsewhere. Row counts
subtract them; replay and ``simulate``'s check of a directory, which read data files directly,
refuse such a table rather than bring deleted rows back.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ciolake.errors import TableUnreadableError
from ciolake.lake.delta import DeltaTable

_FEATURE = "deletionVectors"


def may_have_deletions(table: DeltaTable) -> bool:
    """Whether the table's protocol allows deletion vectors at all (cheap: no file read)."""
    return _FEATURE in (table.protocol().reader_features or [])


def deleted_rows(table: DeltaTable) -> int:
    """How many rows the table's deletion vectors delete (0 without any)."""
    if not may_have_deletions(table):
        return 0
    vectors = pa.table(table.deletion_vectors())
    if not vectors.num_rows:
        return 0
    kept = pc.list_flatten(vectors.column("selection_vector"))
    return int(len(kept) - pc.sum(kept.cast(pa.int64())).as_py())


def live_rows(table: DeltaTable) -> int:
    """The table's rows, as a Delta reader sees them: deleted rows left out."""
    return int(table.count()) - deleted_rows(table)


def refuse_deletions(table: DeltaTable, name: str, uri: str) -> None:
    """Raise if rows of the table are deleted by deletion vectors.

    Raises:
        TableUnreadableError: some are; the message says how to purge them.
    """
    deleted = deleted_rows(table)
    if deleted:
        raise TableUnreadableError(
            name,
            f"table {name} at {uri} has {deleted:,} row(s) deleted by deletion vectors, which"
            " ciolake (it reads data files directly) would bring back: purge them first on the"
            f" engine that deleted them (REORG TABLE delta.`{uri}` APPLY (PURGE)), or turn off"
            " delta.enableDeletionVectors before deleting",
        )
