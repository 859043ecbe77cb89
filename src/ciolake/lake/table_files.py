"""One Delta table as of one version, as replay sees it: its data files, their partition,
row counts and statistics."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ciolake.errors import TableUnreadableError
from ciolake.lake.delta import DeltaError, DeltaTable
from ciolake.lake.files import RemovedFile
from ciolake.lake.health import open_table, translated
from ciolake.lake.location import TablesLocation
from ciolake.lake.storage import table_storage
from ciolake.lake.tables import ALL_SPECS

_STATISTICS = ("event_id", "received_at", "journal_lsn")

_ACTION_COLUMNS = frozenset(
    {
        "path",
        "size_bytes",
        "num_records",
        "partition.event_date",
        "partition.received_date",
        *(f"{bound}.{column}" for bound in ("min", "max") for column in _STATISTICS),
    }
)


class TableFiles:
    """One Delta table as of one version: its data files, their partition and statistics.

    Datasets are built straight from the files, with one partition expression per file
    (``DeltaTable.to_pyarrow_dataset`` turns every file's statistics into an expression first,
    which took 2.5 s for a table of 600 files, on every chunk), wherever the table lives: the
    table's storage (``lake/storage.py``) reads a local directory or an object store alike.
    """

    def __init__(
        self,
        location: TablesLocation,
        name: str,
        *,
        version: int | None = None,
        table: DeltaTable | None = None,
    ) -> None:
        """Open table ``name`` under ``location`` (as of ``version``, default latest), or
        take ``table``, already opened there.

        Raises:
            TableUnreadableError: the table does not exist, or its log cannot be read.
            StoreUnavailableError: the object store cannot be reached.
        """
        self.location = location
        self.uri = location.table_uri(name)
        self.name = name
        self.spec = ALL_SPECS[name]
        self.storage = table_storage(location, name)
        if table is None:
            table = open_table(location, name, version=version)
        if table is None:
            raise TableUnreadableError(
                name, f"table {name} at {self.uri} does not exist (was it moved away meanwhile?)"
            )
        self.table: DeltaTable = table
        self.version = -1
        self._index_version = -1
        self._index: dict[str, int] = {}
        self.refresh()

    def refresh(self) -> None:
        """Catch up with the table's latest version (cheap when nothing was committed)."""
        if self.version >= 0:
            if not self.storage.has_commit(self.version + 1):
                # No newer commit: delta-rs would still list the log (3 % of a replay).
                return
            try:
                self.table.update_incremental()
            except (DeltaError, OSError) as exc:
                raise translated(self.location, self.name, exc, reading=True) from exc
        if self.table.version() == self.version:
            return
        self.version = self.table.version()
        actions = pa.table(self.table.get_add_actions(flatten=True))
        # Only what select() and removed() use: every column's statistics are most of it.
        actions = actions.select([n for n in actions.column_names if n in _ACTION_COLUMNS])
        self.paths: list[str] = actions.column("path").to_pylist()
        self.sizes: list[int] = actions.column("size_bytes").to_pylist()
        self.rows: list[int | None] = (
            actions.column("num_records").to_pylist()
            if "num_records" in actions.column_names
            else [None] * len(self.paths)
        )
        column = f"partition.{self.spec.partition_by}"
        self.partitions: pa.ChunkedArray = (
            actions.column(column).cast(pa.date32())
            if column in actions.column_names
            else pa.chunked_array([], pa.date32())
        )
        self._actions = actions

    def __len__(self) -> int:
        return len(self.paths)

    def parquet_file(self, index: int) -> pq.ParquetFile:
        """File ``index``, opened for reading (close it, or use it as a context manager)."""
        storage = self.storage
        return pq.ParquetFile(
            storage.path(self.paths[index]), filesystem=storage.filesystem, pre_buffer=False
        )

    def select(
        self,
        *,
        partitions: pa.Array | None = None,
        ranges: Sequence[tuple[str, pa.Scalar, pa.Scalar]] = (),
    ) -> pa.Int64Array:
        """Indices of the files in ``partitions`` whose statistics overlap every range.

        A file without statistics for a column is kept: it may hold anything.
        """
        keep = pa.array([True] * len(self.paths), pa.bool_())
        if partitions is not None:
            keep = pc.and_(keep, pc.is_in(self.partitions, value_set=partitions))
        names = self._actions.column_names
        for column, low, high in ranges:
            if f"min.{column}" not in names or f"max.{column}" not in names:
                continue
            below = pc.less_equal(self._actions.column(f"min.{column}"), high)
            above = pc.greater_equal(self._actions.column(f"max.{column}"), low)
            keep = pc.and_(keep, pc.and_(pc.fill_null(below, True), pc.fill_null(above, True)))
        return true_indices(keep)

    def statistic(self, column: str) -> pa.ChunkedArray | None:
        """Per file, the statistic ``column`` of the add actions (e.g. ``min.received_at``)."""
        if column not in self._actions.column_names:
            return None
        return self._actions.column(column)

    def dataset(self, indices: pa.Int64Array | None = None) -> pads.Dataset:
        """The files at ``indices`` (all when None) as a dataset with the table's schema.

        A scan's ``__fragment_index`` is the position in ``indices``.
        """
        chosen = range(len(self.paths)) if indices is None else indices.to_pylist()
        partition = pads.field(self.spec.partition_by)
        return pads.FileSystemDataset.from_paths(
            [self.storage.path(self.paths[i]) for i in chosen],
            schema=self.spec.schema,
            format=pads.ParquetFileFormat(),
            filesystem=self.storage.filesystem,
            partitions=[partition == self.partitions[i] for i in chosen],
        )

    def indices_of(self, paths: Sequence[str]) -> pa.Int64Array:
        """The indices of the files at ``paths`` (all of which the table holds)."""
        if self._index_version != self.version:
            self._index = {path: i for i, path in enumerate(self.paths)}
            self._index_version = self.version
        return pa.array([self._index[path] for path in paths], pa.int64())

    def removed(self, index: int) -> RemovedFile:
        """The ``remove`` description of file ``index``."""
        value = self.partitions[index].as_py()
        return RemovedFile(
            self.paths[index],
            self.sizes[index],
            {self.spec.partition_by: None if value is None else value.isoformat()},
        )


def true_indices(mask: pa.BooleanArray | pa.ChunkedArray) -> pa.Int64Array:
    """Positions where ``mask`` is true."""
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.indices_nonzero(mask).cast(pa.int64())


def true_count(mask: pa.BooleanArray | pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


__all__ = ["TableFiles", "true_count", "true_indices"]
