"""Replay's reads: ``raw_events`` in order of receipt, and stored rows read back to compare or
to keep when their file is rewritten, a few pages at a time."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ciolake.lake.files import columns_held, conformed
from ciolake.lake.table_files import TableFiles

RAW_COLUMNS = [
    "body",
    "body_base64",
    "received_at",
    "x_cio_timestamp",
    "journal_stream",
    "journal_lsn",
    "received_date",
]

# Rows per read of a raw file, and of a stored one.
RAW_BATCH_ROWS = 4_096
_STORED_BATCH_ROWS = 2_048
# Files read back at once to compare or rewrite, by size on disk (text compresses ~10x).
READ_GROUP_BYTES = 4 * 1024 * 1024
# Rows kept from a rewritten file go to new files of about this size in memory.
_REMAINDER_BYTES = 64 * 1024 * 1024


def in_order(raw: TableFiles, *, since: dt.date | None, until: dt.date | None) -> list[int]:
    """The local ``raw_events`` files received from ``since`` to ``until`` (both included, None
    for no bound), in order of their first receipt.

    In order of receipt, so a chunk's deliveries are close in time, as are the stored rows
    they are compared with (files are then picked by their received_at statistics).
    """
    days = raw.partitions
    keep = pa.array([True] * len(raw), pa.bool_())
    if since is not None:
        keep = pc.and_(keep, pc.greater_equal(days, pa.scalar(since, pa.date32())))
    if until is not None:
        keep = pc.and_(keep, pc.less_equal(days, pa.scalar(until, pa.date32())))
    first_received = raw.statistic("min.received_at")
    if first_received is None:
        order = pa.array(range(len(raw)), pa.int64())
    else:
        order = pc.sort_indices(first_received.cast(pa.int64()).fill_null(0)).cast(pa.int64())
    chosen: list[int] = order.filter(pc.take(keep, order)).to_pylist()
    return chosen


def rows_of(raw: TableFiles, index: int) -> int:
    """How many rows file ``index`` holds (from its statistics, else its footer)."""
    rows = raw.rows[index]
    if rows is None:
        rows = raw.parquet_file(index).metadata.num_rows
    return rows


def raw_batches(
    raw: TableFiles, indices: list[int], start: int, stop: int | None
) -> Iterator[pa.Table]:
    """Rows ``start`` to ``stop`` of the raw columns of the files at ``indices`` (in that
    order), a file at a time, a few pages at a time.

    Read by a Parquet reader in this thread's order: a dataset scan reads ahead in the
    background, and held 1 GiB of bodies while a chunk was decoded, and 800 MiB for one
    compacted file whatever its readahead settings.
    """
    offset = 0
    for index in indices:
        rows = rows_of(raw, index)
        skip, end = max(0, start - offset), rows if stop is None else min(rows, stop - offset)
        offset += rows
        if skip < end:
            with raw.parquet_file(index) as reader:
                day = raw.partitions[index].as_py()
                yield from _file_raw_batches(raw, reader, day, skip=skip, end=end)
        if stop is not None and offset >= stop:
            return


def _file_raw_batches(
    raw: TableFiles, reader: pq.ParquetFile, day: dt.date | None, *, skip: int, end: int
) -> Iterator[pa.Table]:
    """Rows ``skip`` to ``end`` of one raw file, reading only the row groups holding them."""
    target = pa.schema([raw.spec.schema.field(name) for name in RAW_COLUMNS])
    in_file = [name for name in RAW_COLUMNS if name != "received_date"]
    metadata = reader.metadata
    groups: list[int] = []
    first = 0
    position = 0
    for group in range(metadata.num_row_groups):
        size = metadata.row_group(group).num_rows
        if position + size > skip and position < end:
            if not groups:
                first = position
            groups.append(group)
        position += size
    position = first
    for batch in reader.iter_batches(batch_size=RAW_BATCH_ROWS, row_groups=groups, columns=in_file):
        low, high = max(skip - position, 0), min(end - position, batch.num_rows)
        position += batch.num_rows
        if low < high:
            piece = pa.Table.from_batches([batch.slice(low, high - low)])
            days = pa.array([day] * piece.num_rows, pa.date32())
            yield piece.append_column("received_date", days).cast(target)


def stored_rows(
    files: TableFiles,
    group: pa.Int64Array,
    wanted: pa.Array,
    positions: dict[int, list[int]],
    compared: list[str],
) -> pa.Table:
    """The ``compared`` columns of the rows of the files at ``group`` whose event id is
    ``wanted``. ``positions`` says where in each file they are."""
    if max(files.sizes[i] for i in group.to_pylist()) <= READ_GROUP_BYTES:
        return _scan_rows(files, group, wanted, compared)
    kept = [
        _rows_at(files, index, positions[index], wanted, compared) for index in group.to_pylist()
    ]
    return pa.concat_tables(kept)


def _rows_at(
    files: TableFiles, index: int, positions: list[int], wanted: pa.Array, columns: list[str]
) -> pa.Table:
    """The rows of the big file ``index`` at ``positions`` whose id is ``wanted``, from the
    row groups holding those positions only.

    A compacted file holds a whole partition, of which a chunk wants a few runs of rows.
    Should the rows found be fewer than the positions, the whole file is read after all.
    """
    reader = files.parquet_file(index)
    metadata = reader.metadata
    ends = list(
        itertools.accumulate(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    )
    holding = sorted({_row_group_of(ends, position) for position in positions})
    found = _file_rows(files, index, reader, row_groups=holding, wanted=wanted, columns=columns)
    if found.num_rows < len(positions):
        found = _file_rows(files, index, reader, row_groups=None, wanted=wanted, columns=columns)
    return found


def _row_group_of(ends: list[int], position: int) -> int:
    """The row group holding row ``position``, given where each row group ends."""
    return bisect.bisect_right(ends, position)


def _file_rows(
    files: TableFiles,
    index: int,
    reader: pq.ParquetFile,
    *,
    row_groups: list[int] | None,
    wanted: pa.Array,
    columns: list[str],
) -> pa.Table:
    """The ``columns`` of the rows of ``row_groups`` (all when None) whose id is ``wanted``."""
    pieces = list(
        _file_pieces(
            files, index, reader, wanted, matching=True, columns=columns, row_groups=row_groups
        )
    )
    if pieces:
        return pa.concat_tables(pieces)
    return pa.schema([files.spec.schema.field(name) for name in columns]).empty_table()


def _scan_rows(
    files: TableFiles, group: pa.Int64Array, wanted: pa.Array, columns: list[str]
) -> pa.Table:
    """The ``columns`` of the rows of small files whose event id is ``wanted``, in one scan.

    A committer's file holds a few hundred rows, so opening it costs more than its rows: over
    200,000 deliveries in files of a few hundred rows, replay took 18 s this way instead of
    22 s opening each file apart. In this thread: the scanner's threads cost more than they
    gave on 2 cores.
    """
    scanner = files.dataset(group).scanner(
        columns=columns,
        use_threads=False,
        fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False),
    )
    found = scanner.to_table()
    return found.filter(pc.is_in(found.column("event_id"), value_set=wanted))


def _file_pieces(
    files: TableFiles,
    index: int,
    reader: pq.ParquetFile,
    ids: pa.Array,
    *,
    matching: bool,
    columns: list[str],
    row_groups: list[int] | None = None,
) -> Iterator[pa.Table]:
    """The rows of file ``index`` (open in ``reader``; only ``row_groups``, if given) whose
    event id is (or, if not ``matching``, is not) in ``ids``: their ``columns``, in the table's
    schema, a few pages at a time.

    Streamed and filtered as they come: a file delta-rs rewrote (a delete, or a compaction
    before compaction bounded its row groups) holds a partition in one row group, which a
    dataset scan decodes whole (2.4 GiB for 123,000 email rows) whatever its batch size.
    """
    schema = files.spec.schema
    partition = files.spec.partition_by
    names = [name for name in columns if name != partition]
    target = pa.schema([schema.field(name) for name in names])
    value = files.partitions[index]
    batches = reader.iter_batches(
        batch_size=_STORED_BATCH_ROWS,
        row_groups=row_groups,
        columns=columns_held(reader.schema_arrow, names),
    )
    for batch in batches:
        piece = pa.Table.from_batches([batch])
        if piece.schema != target:
            # delta-rs writes string views and its own list item names; an older file lacks
            # the columns added since.
            piece = conformed(piece, target)
        found = pc.is_in(piece.column("event_id"), value_set=ids)
        piece = piece.filter(found if matching else pc.invert(found))
        if piece.num_rows:
            dates = pa.array([value.as_py()] * piece.num_rows, pa.date32())
            yield piece.append_column(partition, dates).select(columns)


def remainders(
    files: TableFiles, indices: pa.Int64Array, removed_ids: pa.ChunkedArray
) -> Iterator[pa.Table]:
    """The rows of the files at ``indices`` other than ``removed_ids``, in bounded pieces."""
    value_set = removed_ids.combine_chunks()
    pending: list[pa.Table] = []
    held = 0
    for index in indices.to_pylist():
        reader = files.parquet_file(index)
        columns = files.spec.schema.names
        for piece in _file_pieces(files, index, reader, value_set, matching=False, columns=columns):
            pending.append(piece)
            held += piece.nbytes
            if held >= _REMAINDER_BYTES:
                yield pa.concat_tables(pending)
                pending, held = [], 0
    if pending:
        yield pa.concat_tables(pending)


def by_size(files: TableFiles, indices: pa.Int64Array) -> Iterator[pa.Int64Array]:
    """``indices`` in groups of about ``READ_GROUP_BYTES`` on disk."""
    group: list[int] = []
    held = 0
    for index in indices.to_pylist():
        group.append(index)
        held += files.sizes[index]
        if held >= READ_GROUP_BYTES:
            yield pa.array(group, pa.int64())
            group, held = [], 0
    if group:
        yield pa.array(group, pa.int64())


__all__ = [
    "by_size",
    "in_order",
    "raw_batches",
    "remainders",
    "rows_of",
    "stored_rows",
]
