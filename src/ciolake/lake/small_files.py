"""Merging the small files of the partitions being written, while the server runs.

Every commit adds a file to each partition it writes, and delta-rs's cost per commit grows
with a table's file count: each commit and refresh reads every file's entry of the last
checkpoint again (about 50 us a file here, docs/performance.md). Through a busy day a table
would gather thousands of files and its commits would slow from milliseconds to seconds.

So the writer tracks the files it committed, by size tier, and merges them after its commits,
as a log-structured merge does: once ``FAN_IN`` files of one tier sit in one
partition, they are rewritten as one file of a higher tier, in a commit that moves rows
without changing them (``dataChange`` false, which streaming readers skip). A partition then
holds at most ``FAN_IN - 1`` files of each merged tier besides its larger files
(``CROWDED - 1`` while the committer is busy), and each row is rewritten at most
``MERGED_TIERS`` times. The closed-day compaction (``lake/maintenance.py``) packs the larger
files to a reader's size.

Only files this writer committed since it last saw another writer's commit are merged: another
writer (a compaction, replay, Spark) may have removed them. The merge commit goes in right after
the writer's own last commit or not at all, and delta-rs refuses a commit that removes a file
a concurrent commit removed, so nothing is ever held twice.
"""

from __future__ import annotations

import itertools
import json
import posixpath
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from ciolake.lake.files import DataFile, RemovedFile, dictionary_columns
from ciolake.lake.maintenance import ROW_GROUP_ROWS
from ciolake.lake.storage import COMPRESSION, TableStorage

FAN_IN = 8
# While the committer has no time to spare, a tier waits until this many files have gathered:
# a merge costs a Parquet encoding of its rows, which the committer then needs for new ones.
CROWDED = 4 * FAN_IN
# Files under this size are tier 0; each tier above spans FAN_IN times the sizes of the last.
SMALLEST_TIER_BYTES = 128 * 1024
# Tiers 0 and 1 are merged: merged files stay under 8 MiB, a fraction of a second to write.
MERGED_TIERS = 2
# A merged file's row groups hold at most this much decoded data (or ROW_GROUP_ROWS rows), so
# that a merge holds little more than one of them: bodies are 3.4 KB on average.
ROW_GROUP_BYTES = 4 * 1024 * 1024
# Rows decoded at a time from the files being merged.
_BATCH_ROWS = 1_024

_PartitionKey = tuple[tuple[str, str | None], ...]


def tier_of(size: int) -> int:
    """The size tier of a file of ``size`` bytes."""
    tier, bound = 0, SMALLEST_TIER_BYTES
    while size >= bound:
        tier, bound = tier + 1, bound * FAN_IN
    return tier


class SmallFiles:
    """One table's files that this writer committed and may merge, by partition and tier."""

    def __init__(self) -> None:
        self._groups: dict[tuple[_PartitionKey, int], list[DataFile]] = defaultdict(list)

    def add(self, files: Iterable[DataFile]) -> None:
        """Track newly committed ``files`` (those of a merged tier)."""
        for data_file in files:
            tier = tier_of(data_file.size)
            if tier < MERGED_TIERS:
                self._groups[(_partition_key(data_file), tier)].append(data_file)

    def forget(self) -> None:
        """Track nothing: another writer committed, and may have removed any of them."""
        self._groups.clear()

    def take_full(self, *, min_files: int = FAN_IN) -> list[DataFile] | None:
        """The files of a tier of one partition that holds ``min_files`` or more, no longer
        tracked; None if there is none."""
        for key, group in self._groups.items():
            if len(group) >= min_files:
                del self._groups[key]
                return group
        return None


def _partition_key(data_file: DataFile) -> _PartitionKey:
    return tuple(sorted(data_file.partition_values.items()))


def merge_files(storage: TableStorage, files: Sequence[DataFile]) -> DataFile:
    """Write the rows of ``files`` (all of one partition) as one new file, holding about one
    row group in memory; its statistics come from theirs."""
    batches = _batches(storage, files)
    first = next(batches)
    schema = first.schema
    name = f"part-00000-{uuid.uuid4()}-c000.{COMPRESSION}.parquet"
    relative = posixpath.join(posixpath.dirname(files[0].path), name)
    size = storage.write_parquet_parts(
        relative,
        schema,
        _row_groups(schema, itertools.chain([first], batches)),
        dictionary=dictionary_columns(pa.Table.from_batches([first])),
    )
    stats = merged_stats([json.loads(f.stats) for f in files])
    stamp = int(time.time() * 1000)
    return DataFile(relative, size, dict(files[0].partition_values), stamp, json.dumps(stats))


def removed(files: Iterable[DataFile]) -> list[RemovedFile]:
    """The ``remove`` side of a merge: ``files`` as they were added."""
    return [RemovedFile(f.path, f.size, dict(f.partition_values)) for f in files]


def _batches(storage: TableStorage, files: Sequence[DataFile]) -> Iterator[pa.RecordBatch]:
    schema: pa.Schema | None = None
    for data_file in files:
        parquet = storage.parquet_file(data_file.path)
        if schema is None:
            schema = parquet.schema_arrow
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, use_threads=False):
            yield batch.cast(schema)


def _row_groups(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in batches:
        pending.append(batch)
        rows, size = rows + batch.num_rows, size + batch.nbytes
        if rows >= ROW_GROUP_ROWS or size >= ROW_GROUP_BYTES:
            yield pa.Table.from_batches(pending, schema=schema)
            pending, rows, size = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending, schema=schema)


def merged_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Delta statistics of the union of files with ``stats``: counts add up, bounds widen, and
    a column keeps its bounds only if every file bounds it (or holds only nulls in it)."""
    records = sum(int(s["numRecords"]) for s in stats)
    nulls: dict[str, int] = {}
    for column in set.intersection(*(set(s.get("nullCount", {})) for s in stats)):
        nulls[column] = sum(int(s["nullCount"][column]) for s in stats)
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    for column in nulls:
        bounds = _column_bounds(stats, column)
        if bounds is not None:
            minimum[column], maximum[column] = bounds
    return {"numRecords": records, "minValues": minimum, "maxValues": maximum, "nullCount": nulls}


def _column_bounds(stats: Sequence[dict[str, Any]], column: str) -> tuple[Any, Any] | None:
    lows: list[Any] = []
    highs: list[Any] = []
    for s in stats:
        low, high = s.get("minValues", {}).get(column), s.get("maxValues", {}).get(column)
        if low is not None and high is not None:
            lows.append(low)
            highs.append(high)
        elif int(s["nullCount"][column]) != int(s["numRecords"]):
            return None  # a file with values but no bounds (long text, say)
    if not lows:
        return None
    # Strings compare by code point, which is UTF-8's byte order; timestamps and dates are
    # fixed-width ISO text, so text order is time order.
    return min(lows), max(highs)
