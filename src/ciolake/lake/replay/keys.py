"""Replay's view of the rows a table holds already: their keys, read once per data file and kept.

The keys of a stored row are its ``event_id``, its ``received_at`` and its journal position
(stream, sequence number); with each comes the row's file and position in that file.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import pyarrow as pa
import pyarrow.compute as pc

from ciolake.lake.table_files import TableFiles, true_indices

KEY_COLUMNS = ["event_id", "received_at", "journal_stream", "journal_lsn"]


# Stored keys kept between chunks: about 50 bytes an event, so a million events' worth.
DEFAULT_KEY_CACHE_BYTES = 64 * 1024 * 1024

# Stored keys of many files as one table, each row's file (position in the list), file starts.
CombinedKeys = tuple[pa.Table, pa.Int64Array, pa.Int64Array]


class KeyCache:
    """The key columns of stored data files, by path, up to a memory budget.

    A Delta data file never changes once written, so its keys can be kept across chunks: each
    chunk then reads only the files it has not seen, instead of every file of the partitions
    it touches. Each chunk asks for the files in the same order, so past the budget evicting
    the least recently used would drop each file just before it is asked for again, and every
    chunk would read them all. So keys used in the current chunk are not evicted: once they
    fill the budget, further files are read each time they are needed, and only keys unused
    in this chunk (of files compacted away, of other partitions) make room.

    It also keeps, per table, the last chunk's keys in one contiguous table, within a second
    budget as large, over all tables: while nothing is committed, the next chunk asks for the
    same files (at 1,000,000 deliveries, 15 % faster).
    """

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._held = 0
        self._chunk = 0
        # Least recently used first; each with the chunk that last used it.
        self._tables: OrderedDict[tuple[str, str], tuple[int, pa.Table]] = OrderedDict()
        self._combined: dict[str, tuple[tuple[str, ...], CombinedKeys]] = {}

    def next_chunk(self) -> None:
        """Start the next chunk: what it uses is kept until the one after."""
        self._chunk += 1

    def get(self, table: str, path: str) -> pa.Table | None:
        """The keys of ``table``'s file ``path``, if held."""
        entry = self._tables.get((table, path))
        if entry is None:
            return None
        self._tables[(table, path)] = (self._chunk, entry[1])
        self._tables.move_to_end((table, path))
        return entry[1]

    def combined(self, table: str, paths: tuple[str, ...]) -> CombinedKeys | None:
        """The keys of ``table``'s files ``paths`` in one table, if the last chunk kept them."""
        kept = self._combined.get(table)
        return kept[1] if kept is not None and kept[0] == paths else None

    def keep_combined(self, table: str, paths: tuple[str, ...], combined: CombinedKeys) -> None:
        """Keep ``table``'s keys of ``paths`` in one table (from ``_combine``) for the next chunk.

        Replaces the last one: while nothing is committed, each chunk asks for the same files.
        Not kept if the tables kept would then hold more than the budget.
        """
        self._combined.pop(table, None)
        held = sum(kept[0].nbytes for _paths, kept in self._combined.values())
        if held + combined[0].nbytes <= self._budget:
            self._combined[table] = (paths, combined)

    def put(self, table: str, path: str, keys: pa.Table) -> None:
        """Hold the keys of ``table``'s file ``path`` if the budget allows (see the class)."""
        # Table.nbytes walks every buffer (4 % of a replay, called three times a file).
        size = keys.get_total_buffer_size()
        if size > self._budget or (table, path) in self._tables:
            return
        while self._held + size > self._budget:
            oldest, (used_in, dropped) = next(iter(self._tables.items()))
            if used_in == self._chunk:
                return
            del self._tables[oldest]
            self._held -= dropped.get_total_buffer_size()
        self._tables[(table, path)] = (self._chunk, keys)
        self._held += size


def stored_keys(
    files: TableFiles,
    *,
    candidates: pa.Int64Array,
    ids: pa.ChunkedArray,
    cache: KeyCache,
) -> pa.Table:
    """The key columns of the stored rows of the chunk's ids, with the file (index) of each."""
    if not len(candidates):
        return _empty_keys()
    chosen = candidates.to_pylist()
    found = keys_of(files, chosen, cache)
    held = [(i, table) for i in chosen if (table := found[i]).num_rows]
    if not held:
        return _empty_keys()
    paths = tuple(files.paths[i] for i, _table in held)
    combined = cache.combined(files.name, paths)
    if combined is None:
        combined = _combine([table for _i, table in held])
        cache.keep_combined(files.name, paths, combined)
    keys, held_at, starts = combined
    # Every stored key of the partitions is matched in one call: pyarrow builds the hash set of
    # the chunk's ids once per call, which per file would cost more than reading the keys.
    matched = true_indices(pc.is_in(keys.column("event_id"), value_set=ids.combine_chunks()))
    file_at = pa.array([i for i, _table in held], pa.int64())
    held_in = held_at.take(matched)
    return (
        keys.take(matched)
        .append_column("file", file_at.take(held_in))
        .append_column("position", pc.subtract(matched, starts.take(held_in)))
    )


def keys_of(files: TableFiles, indices: list[int], cache: KeyCache) -> dict[int, pa.Table]:
    """The key columns of each local file at ``indices``, from ``cache`` or read (and kept)."""
    held = {i: cache.get(files.name, files.paths[i]) for i in indices}
    found = {i: keys for i, keys in held.items() if keys is not None}
    missing = [i for i in indices if i not in found]
    if missing:
        found.update(_read_keys(files, missing))
        for i in missing:
            cache.put(files.name, files.paths[i], found[i])
    return found


def _combine(tables: list[pa.Table]) -> CombinedKeys:
    """``tables`` as one contiguous table; for each row, which table; where each table starts.

    Contiguous, because matching and taking from a table of thousands of chunks costs a kernel
    call per chunk.
    """
    keys = pa.concat_tables(tables).combine_chunks()
    counts = [t.num_rows for t in tables]
    ends = pa.array(list(itertools.accumulate(counts)), pa.int64())
    positions = pa.array(range(len(tables)), pa.int64())
    held_at = pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(ends, positions))
    starts = pa.array(list(itertools.accumulate(counts[:-1], initial=0)), pa.int64())
    return keys, held_at, starts


def _read_keys(files: TableFiles, indices: list[int]) -> dict[int, pa.Table]:
    """The key columns of each local file at ``indices``, in the table's types.

    A file at a time, in this thread: 0.32 ms a committer's file, against 0.6 ms in a dataset
    scan of a few dozen files (whose readers, run ahead, also held buffers of their own).
    """
    schema = pa.schema([files.spec.schema.field(c) for c in KEY_COLUMNS])
    keys: dict[int, pa.Table] = {}
    for i in indices:
        reader = files.parquet_file(i)
        found = reader.read(columns=KEY_COLUMNS, use_threads=False)
        keys[i] = found.cast(schema).combine_chunks()
    return keys


def _empty_keys() -> pa.Table:
    return pa.table(
        {
            "event_id": pa.array([], pa.string()),
            "received_at": pa.array([], pa.timestamp("us", tz="UTC")),
            "journal_stream": pa.array([], pa.int64()),
            "journal_lsn": pa.array([], pa.int64()),
            "file": pa.array([], pa.int64()),
            "position": pa.array([], pa.int64()),
        }
    )


__all__ = ["KEY_COLUMNS", "CombinedKeys", "KeyCache", "keys_of", "stored_keys"]
