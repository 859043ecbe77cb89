"""What a table gained between two versions: the deriver's view of ``raw_events``.

Read with delta-rs's change data feed reader (``load_cdf``), which takes each version's ``add``
actions that change data and leaves out rewrites that do not (compaction, small-file merges,
Spark's OPTIMIZE: ``dataChange: false``), so every delivery is read once, in the version that
landed it. ``raw_events`` only ever gains rows (receivers append blindly), so nothing is
read for removals. The reader needs no change data feed on the table for versions after the
first: delta-rs checks the table property only where a version changes the table's metadata,
which ciolake never does after creating the table.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ciolake.errors import StoreUnavailableError, TerminalError
from ciolake.lake.delta import DeltaTable
from ciolake.lake.health import open_table, store_errors, translated
from ciolake.lake.location import TablesLocation, storage_options
from ciolake.lake.table_files import TableFiles
from ciolake.lake.tables import ALL_SPECS

VERSION_COLUMN = "_commit_version"
_CHANGE_COLUMN = "_change_type"


class ChangesGoneError(TerminalError):
    """The data files of versions not read yet were deleted (vacuumed) meanwhile."""


class TableChanges:
    """Table ``name`` under ``location``, followed version by version: its log is read once,
    then only the commits added since (the deriver looks every flush interval)."""

    def __init__(self, location: TablesLocation, name: str) -> None:
        self.location = location
        self.name = name
        self._table: DeltaTable | None = None
        self._options: dict[str, str] = {}

    def latest_version(self) -> int:
        """The table's latest version, or -1 if it does not exist yet.

        Raises:
            TableUnreadableError, StoreUnavailableError: as ``health.open_table``.
        """
        with store_errors(self.location, self.name):
            # Changed only when a table in Unity Catalog had its credentials renewed.
            options = storage_options(self.location, self.name)
        if self._table is None or options != self._options:
            self._table = open_table(self.location, self.name)
            self._options = options
        else:
            with store_errors(self.location, self.name):
                self._table.update_incremental()
        return -1 if self._table is None else self._table.version()

    def added_rows(self, *, first: int, last: int) -> pa.Table:
        """The rows that versions ``first`` to ``last`` (inclusive, at most the latest
        version seen) added, with the version that added each (``_commit_version``), in
        version order.

        Raises:
            ChangesGoneError: some of those versions' data files are gone.
            TableUnreadableError, StoreUnavailableError: as ``health.open_table``.
        """
        schema = ALL_SPECS[self.name].schema.append(pa.field(VERSION_COLUMN, pa.int64()))
        parts = []
        if first == 0:
            # Version 0 creates the table; the reader refuses it unless the change data feed
            # was on from the start, and whatever it holds is all that table had then.
            parts.append(_created_rows(self.location, self.name, schema))
            first = 1
        if first <= last and self._table is not None:
            parts.append(_changes(self._table, self.location, self.name, (first, last), schema))
        if not parts:
            return schema.empty_table()
        return pa.concat_tables(parts).sort_by(VERSION_COLUMN)


def _created_rows(location: TablesLocation, name: str, schema: pa.Schema) -> pa.Table:
    rows = TableFiles(location, name, version=0).dataset().to_table()
    versions = pa.array([0] * rows.num_rows, pa.int64())
    return rows.append_column(VERSION_COLUMN, versions).select(schema.names).cast(schema)


def _changes(
    table: DeltaTable,
    location: TablesLocation,
    name: str,
    versions: tuple[int, int],
    schema: pa.Schema,
) -> pa.Table:
    first, last = versions
    try:
        with store_errors(location, name):
            reader = table.load_cdf(
                starting_version=first,
                ending_version=last,
                columns=[*schema.names, _CHANGE_COLUMN],
            )
            changes = pa.RecordBatchReader.from_stream(reader).read_all()
    except StoreUnavailableError:
        raise
    except Exception as exc:  # delta-rs raises plain Exceptions from its Arrow stream
        raise _gone_or(location, name, versions, exc) from exc
    # The reader gives string_view columns, which pyarrow's kernels do not all take.
    kinds = changes.column(_CHANGE_COLUMN).cast(pa.string())
    typed = changes.select(schema.names).cast(schema)
    # Rows another engine deleted or rewrote are not taken back from the derived tables.
    return typed.filter(pc.equal(kinds, "insert"))


def _gone_or(
    location: TablesLocation, name: str, versions: tuple[int, int], exc: BaseException
) -> BaseException:
    text = str(exc)
    if "not found" in text.lower() or "No such file" in text:
        first, last = versions
        return ChangesGoneError(
            f"{name} versions {first} to {last} name data files that are gone (vacuumed"
            " before they were derived?): rebuild the derived tables with `ciolake replay`,"
            " then derive from the latest version on"
        )
    return translated(location, name, exc, reading=True)
