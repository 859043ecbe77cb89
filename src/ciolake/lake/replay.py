"""Re-derive the channel tables (and, on request, the quarantine) from ``raw_events``.

After an upgrade, a schema fix or a decoder fix, ``raw_events`` still holds every delivery as
received. Replay reads it in chunks of Arrow batches, decodes each body with today's code, keeps
the earliest delivery of each event (smallest ``received_at``, then journal position, as the
committer keeps the first), and reconciles the chunk with each channel table:

- it reads, from the ``event_date`` partitions the chunk touches only, the keys of the stored
  rows (``event_id``, ``received_at``, journal position) and joins them to the chunk's;
- an event with no stored row is appended (a blind append);
- a stored row from an earlier delivery than the chunk's wins and is left alone;
- a stored row from the same delivery is read back (only the files holding such rows, and all
  its columns but the payload, which is that delivery's body) and compared column by column
  with what today's code derives; it is rewritten only if it differs, as is a stored row from a
  later delivery, or a duplicated one;
- a rewrite takes the rows out of the files that hold them (each rewritten without them) and
  adds the new rows, in one commit, so readers never see a row twice or missing.

So each chunk costs work in proportion to itself plus one pass over the key columns of the
partitions it touches, never a rewrite of whole partitions, and holds about a chunk's worth of
memory. Running it again changes nothing. With ``include_quarantine``, quarantined deliveries
that now decode are moved to their channel tables.

A chunk is decoded and planned without the commit lock shared with the running server's
committer, then written under it: a plan is kept only if nothing committed since (by the
committer, a compaction or another replay) touches its events or its partitions' files, and
made again otherwise. So the server keeps receiving, the two never both decide an event is
new, and replays over different deliveries can plan at once; ids added or rewritten enter the
dedup index.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from ciolake.dedup import DedupIndex, keep_from_day
from ciolake.events.decode import Typed, decode_event
from ciolake.lake import rows
from ciolake.lake.files import DataFile, write_files
from ciolake.lake.log import (
    ConcurrentRemoveError,
    LocalDeltaLog,
    MetadataChangedError,
    RemovedFile,
    commit_rewrite,
)
from ciolake.lake.tables import ALL_SPECS, QUARANTINE, RAW_EVENTS
from ciolake.lake.writer import local_directory
from ciolake.locks import FileLock, commit_lock_path
from ciolake.memory import return_free_memory
from ciolake.settings import Settings

_RAW_COLUMNS = [
    "body",
    "body_base64",
    "received_at",
    "x_cio_timestamp",
    "journal_stream",
    "journal_lsn",
    "received_date",
]
_KEY_COLUMNS = ["event_id", "received_at", "journal_stream", "journal_lsn"]
# A stored row from the same delivery (journal stream and lsn) was built from the same body, so
# its copy of the body cannot differ: it is not read back to compare (it is most of a row).
_NOT_COMPARED = frozenset({"payload"})
_FRAGMENT = "__fragment_index"
_SECONDS_PER_DAY = 86_400
_MICROS_PER_DAY = _SECONDS_PER_DAY * 1_000_000

DEFAULT_CHUNK_ROWS = 100_000
# Bodies per chunk: the chunk, its derived rows and the stored rows read back are each about
# this size, so it bounds the process's memory more than the row count does.
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024
# Stored keys kept between chunks: about 50 bytes an event, so a million events' worth.
DEFAULT_KEY_CACHE_BYTES = 64 * 1024 * 1024
# Files read back at once to compare or rewrite, by size on disk (text compresses ~10x).
_READ_GROUP_BYTES = 4 * 1024 * 1024
_COMMIT_ATTEMPTS = 5
_STORED_BATCH_ROWS = 2_048
_RAW_BATCH_ROWS = 4_096
# Rows kept from a rewritten file go to new files of about this size in memory.
_REMAINDER_BYTES = 64 * 1024 * 1024
# Stored keys of many files as one table, each row's file (position in the list), file starts.
CombinedKeys = tuple[pa.Table, pa.Int64Array, pa.Int64Array]
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


@dataclass
class ReplayResult:
    """What a replay did.

    ``upserted`` counts, per table, the events the replayed deliveries type into (whether or
    not their row needed a change); ``added``, ``rewritten`` and ``unchanged`` split them.
    """

    deliveries: int = 0
    upserted: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    moved_from_quarantine: int = 0
    left_in_quarantine: int = 0
    not_typed: int = 0
    chunks: int = 0
    # Tables planned again under the commit lock, as a commit since changed what was planned.
    planned_again: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    def count(self, kind: dict[str, int], table: str, value: int) -> None:
        """Add ``value`` to ``kind[table]``."""
        kind[table] = kind.get(table, 0) + value


@dataclass(frozen=True)
class RawSlice:
    """Rows ``start`` to ``stop`` (excluded) of ``raw_events`` at ``raw_version``, in replay's
    order, with ``quarantine`` at ``quarantine_version``: what one replay process takes."""

    raw_version: int
    quarantine_version: int
    start: int
    stop: int | None


@dataclass(frozen=True)
class ReplayRange:
    """Which deliveries to replay, by their ``received_date`` (both ends included)."""

    since: dt.date | None = None
    until: dt.date | None = None

    def expression(self) -> pads.Expression | None:
        """The Arrow filter selecting the range, or None for everything."""
        parts = []
        if self.since is not None:
            parts.append(pads.field("received_date") >= pa.scalar(self.since, pa.date32()))
        if self.until is not None:
            parts.append(pads.field("received_date") <= pa.scalar(self.until, pa.date32()))
        if not parts:
            return None
        expression = parts[0]
        for part in parts[1:]:
            expression = expression & part
        return expression


class TableFiles:
    """One Delta table as of one version: its data files, their partition and statistics.

    For a local table, datasets are built straight from the files, with one partition
    expression per file: ``DeltaTable.to_pyarrow_dataset`` turns every file's statistics into
    an expression first, which took 2.5 s for a table of 600 files, on every chunk. For other
    locations, delta-rs's dataset is used, and filters prune files as it sees fit.
    """

    def __init__(self, uri: str, name: str, *, version: int | None = None) -> None:
        self.uri = uri
        self.name = name
        self.spec = ALL_SPECS[name]
        self.root = local_directory(uri)
        self.table = DeltaTable(uri, version=version)
        self.version = -1
        self._index_version = -1
        self._index: dict[str, int] = {}
        self.refresh()

    def refresh(self) -> None:
        """Catch up with the table's latest version (cheap when nothing was committed)."""
        if self.version >= 0:
            if self.root is not None and not self._next_commit().exists():
                # No newer commit: delta-rs would still list the log (3 % of a replay).
                return
            self.table.update_incremental()
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

    def _next_commit(self) -> Path:
        assert self.root is not None
        return self.root / "_delta_log" / f"{self.version + 1:020d}.json"

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
        return _indices(keep)

    def statistic(self, column: str) -> pa.ChunkedArray | None:
        """Per file, the statistic ``column`` of the add actions (e.g. ``min.received_at``)."""
        if column not in self._actions.column_names:
            return None
        return self._actions.column(column)

    def dataset(self, indices: pa.Int64Array | None = None) -> pads.Dataset:
        """The files at ``indices`` (all when None) as a dataset with the table's schema.

        A scan's ``__fragment_index`` is the position in ``indices``.
        """
        schema = self.spec.schema
        if self.root is None:
            return self.table.to_pyarrow_dataset()
        chosen = range(len(self.paths)) if indices is None else indices.to_pylist()
        partition = pads.field(self.spec.partition_by)
        return pads.FileSystemDataset.from_paths(
            [str(self.root / self.paths[i]) for i in chosen],
            schema=schema,
            format=pads.ParquetFileFormat(),
            filesystem=pafs.LocalFileSystem(),
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


class Replayer:
    """Replays ``raw_events`` of one data directory into its channel tables."""

    def __init__(
        self,
        settings: Settings,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        key_cache_bytes: int = DEFAULT_KEY_CACHE_BYTES,
    ) -> None:
        self._settings = settings
        self._root = settings.tables_location.rstrip("/")
        self._chunk_rows = chunk_rows
        self._chunk_bytes = chunk_bytes
        self._keys = KeyCache(key_cache_bytes)
        self._tables: dict[str, TableFiles] = {}

    def count(self, selection: ReplayRange) -> int:
        """How many deliveries the range holds (for a progress bar)."""
        raw = TableFiles(self._uri(RAW_EVENTS), RAW_EVENTS)
        if raw.root is None:
            return int(raw.dataset().count_rows(filter=selection.expression()))
        # From the files' statistics: opening every file took 55 MiB and seconds.
        return sum(_rows_of(raw, i) for i in _in_order(raw, selection))

    def split(self, selection: ReplayRange, parts: int) -> list[RawSlice]:
        """The range's deliveries in up to ``parts`` slices of about as many rows, as of now.

        Contiguous in replay's order (of receipt), so each slice's stored rows sit in files of
        their own: two replays over slices of one range read back different files. A remote
        ``raw_events`` is one slice: delta-rs's dataset orders its files itself.
        """
        with FileLock(commit_lock_path(self._settings.state_dir)):
            raw = TableFiles(self._uri(RAW_EVENTS), RAW_EVENTS)
            quarantine = TableFiles(self._uri(QUARANTINE), QUARANTINE)
        whole = RawSlice(raw.version, quarantine.version, 0, None)
        if raw.root is None or parts <= 1:
            return [whole]
        total = sum(_rows_of(raw, i) for i in _in_order(raw, selection))
        bounds = sorted({total * k // parts for k in range(parts)} | {total})
        return [
            RawSlice(raw.version, quarantine.version, start, stop)
            for start, stop in itertools.pairwise(bounds)
        ] or [whole]

    def run(
        self,
        selection: ReplayRange,
        *,
        include_quarantine: bool,
        progress: Callable[[int], None] = lambda _rows: None,
        part: RawSlice | None = None,
    ) -> ReplayResult:
        """Replay the range (only ``part`` of it, if given, from ``split``); ``progress`` is
        told how many deliveries each chunk held."""
        started = time.monotonic()
        result = ReplayResult()
        lock = FileLock(commit_lock_path(self._settings.state_dir))
        dedup = DedupIndex(
            self._settings.state_dir / "dedup.sqlite3",
            window_days=self._settings.dedup_window_days,
            cache_mib=self._settings.dedup_cache_mib,
        )
        try:
            if part is None:
                # Both as of one moment: the committer writes a delivery's raw row and its
                # quarantine row under this lock, so no replayed delivery misses the latter.
                with lock:
                    raw = TableFiles(self._uri(RAW_EVENTS), RAW_EVENTS)
                    quarantine = TableFiles(self._uri(QUARANTINE), QUARANTINE)
                part = RawSlice(raw.version, quarantine.version, 0, None)
            else:
                raw = TableFiles(self._uri(RAW_EVENTS), RAW_EVENTS, version=part.raw_version)
                quarantine = TableFiles(
                    self._uri(QUARANTINE), QUARANTINE, version=part.quarantine_version
                )
            for chunk in self._chunks(raw, selection, part):
                self._apply(
                    chunk,
                    quarantine=quarantine,
                    include_quarantine=include_quarantine,
                    dedup=dedup,
                    result=result,
                    lock=lock,
                )
                result.deliveries += chunk.num_rows
                result.chunks += 1
                progress(chunk.num_rows)
                del chunk
                return_free_memory()
        finally:
            dedup.close()
            lock.close()
        result.seconds = time.monotonic() - started
        return result

    def _uri(self, table: str) -> str:
        return f"{self._root}/{table}"

    def _files(self, table: str) -> TableFiles:
        """``table`` as of now: loaded once, then brought up to date at each use."""
        files = self._tables.get(table)
        if files is None:
            files = self._tables[table] = TableFiles(self._uri(table), table)
        else:
            files.refresh()
        return files

    def _chunks(
        self, raw: TableFiles, selection: ReplayRange, raw_slice: RawSlice
    ) -> Iterator[pa.Table]:
        """``raw_slice`` of ``raw_events`` in chunks of up to ``chunk_rows`` rows or about
        ``chunk_bytes``."""
        if raw.root is None:
            batches = _remote_raw_batches(raw.dataset(), selection.expression())
        else:
            batches = _raw_batches(raw, _in_order(raw, selection), raw_slice.start, raw_slice.stop)
        pending: list[pa.Table] = []
        held_rows = held_bytes = 0
        for batch in batches:
            row_bytes = batch.nbytes / max(1, batch.num_rows)
            part = batch
            while part.num_rows:
                # Cut within a file too: compacted files hold far more than a chunk.
                fits = max(1, int((self._chunk_bytes - held_bytes) / row_bytes))
                room = min(self._chunk_rows - held_rows, fits)
                piece, part = part.slice(0, room), part.slice(room)
                pending.append(piece)
                held_rows += piece.num_rows
                held_bytes += int(piece.num_rows * row_bytes)
                if held_rows >= self._chunk_rows or held_bytes >= self._chunk_bytes:
                    yield pa.concat_tables(pending)
                    pending, held_rows, held_bytes = [], 0, 0
        if pending:
            yield pa.concat_tables(pending)

    def _apply(
        self,
        chunk: pa.Table,
        *,
        quarantine: TableFiles,
        include_quarantine: bool,
        dedup: DedupIndex,
        result: ReplayResult,
        lock: FileLock,
    ) -> None:
        """Decode and plan the chunk without the commit lock, then write under it.

        Planning is most of a chunk's work; holding the lock through it kept the server's
        committer waiting for it. Under the lock, a plan is used only if what was committed
        meanwhile cannot change it (``_plan_holds``); else that table is planned again.
        """
        # One contiguous chunk: takes from a table of hundreds of small batches cost more.
        chunk = chunk.combine_chunks()
        self._keys.next_chunk()
        chosen = self._choose(chunk, quarantine, include_quarantine, result)
        planned = [
            self._planned(chunk, table, *chosen.by_table[table])
            for table in sorted(chosen.by_table)
        ]
        with lock:
            recorded: list[tuple[str, int]] = []
            for table, derived, bodies, plan in planned:
                written = self._reconcile(table, derived, bodies, plan, result)
                recorded.extend(_dedup_entries(derived.filter(written)))
            if recorded:
                dedup.record(recorded, applied={})
            if chosen.moved:
                self._remove_from_quarantine(chunk, chosen.moved)
                result.moved_from_quarantine += len(chosen.moved)

    def _planned(
        self, chunk: pa.Table, table: str, indices: list[int], typed: list[Typed]
    ) -> tuple[str, pa.Table, _Bodies, _Plan]:
        """The rows today's code derives for ``table`` from the chunk, and their plan."""
        taken = pa.array(indices, pa.int64())
        derived = rows.channel_table_of(
            table,
            typed,
            received_at=chunk.column("received_at").take(taken),
            journal_stream=chunk.column("journal_stream").take(taken),
            journal_lsn=chunk.column("journal_lsn").take(taken),
            # Most of a row, and needed only for rows written: taken then (_Bodies).
            payload=pa.nulls(len(indices), pa.string()),
        )
        plan = _plan(self._files(table), derived, self._keys)
        return table, derived, _Bodies(chunk.column("body"), taken), plan

    def _choose(
        self,
        chunk: pa.Table,
        quarantine: TableFiles,
        include_quarantine: bool,
        result: ReplayResult,
    ) -> _Chosen:
        """Decode the chunk and keep, per event, its earliest delivery that types now."""
        tolerance = self._settings.timestamp_tolerance_s
        received = chunk.column("received_at").cast(pa.int64())
        seconds = pc.divide(received.cast(pa.float64()), 1_000_000.0)
        drift = pc.abs(pc.subtract(seconds, chunk.column("x_cio_timestamp").cast(pa.float64())))
        stale = pc.greater(drift, float(tolerance)).to_pylist()
        streams = chunk.column("journal_stream").to_pylist()
        lsns = chunk.column("journal_lsn").to_pylist()
        received_list = received.to_pylist()
        held = _quarantined(quarantine, chunk)
        chosen = _Chosen()
        first: dict[str, tuple[int, Typed]] = {}
        for i, body in enumerate(_bodies(chunk)):
            in_quarantine = bool(held) and (streams[i], lsns[i]) in held
            typed = None if stale[i] else decode_event(body)  # type: ignore[arg-type]
            if not isinstance(typed, Typed):
                result.not_typed += 1
                result.left_in_quarantine += in_quarantine
                continue
            if in_quarantine:
                if not include_quarantine:
                    result.left_in_quarantine += 1
                    continue
                chosen.moved.append(i)
            event_id = typed.event.event_id
            earlier = first.get(event_id)
            if earlier is None or (received_list[i], streams[i], lsns[i]) < (
                received_list[earlier[0]],
                streams[earlier[0]],
                lsns[earlier[0]],
            ):
                first[event_id] = (i, typed)
        for index, typed in first.values():
            indices, items = chosen.by_table.setdefault(typed.table, ([], []))
            indices.append(index)
            items.append(typed)
        return chosen

    def _reconcile(
        self,
        table: str,
        derived: pa.Table,
        bodies: _Bodies,
        planned: _Plan,
        result: ReplayResult,
    ) -> pa.BooleanArray:
        """Bring ``table`` in line with ``derived`` (``planned`` earlier, at some version);
        return which derived rows were written."""
        result.count(result.upserted, table, derived.num_rows)
        plan: _Plan | None = planned
        for attempt in range(_COMMIT_ATTEMPTS):
            files = self._files(table)
            if plan is None or not _plan_holds(plan, files, derived, self._keys):
                result.planned_again += 1
                plan = _plan(files, derived, self._keys)
            try:
                self._write(files, derived, bodies, plan)
            except (ConcurrentRemoveError, MetadataChangedError):
                # Compaction (or a schema change) got in between: plan again from its version.
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                plan = None
                continue
            written = pc.or_(plan.new, plan.rewrite)
            added, rewritten = _true_count(plan.new), _true_count(plan.rewrite)
            result.count(result.added, table, added)
            result.count(result.rewritten, table, rewritten)
            result.count(result.unchanged, table, derived.num_rows - added - rewritten)
            return written
        raise AssertionError("unreachable")

    def _write(self, files: TableFiles, derived: pa.Table, bodies: _Bodies, plan: _Plan) -> None:
        written_rows = pc.or_(plan.new, plan.rewrite)
        incoming = bodies.fill(derived.filter(written_rows), written_rows)
        if not incoming.num_rows:
            return
        if files.root is None:
            self._write_remote(files, incoming, has_rewrites=_true_count(plan.rewrite) > 0)
            return
        partition_by = files.spec.partition_by
        now_ms = int(time.time() * 1000)
        written: list[DataFile] = []
        try:
            rewrite_files = files.indices_of(plan.rewrite_paths)
            if not len(rewrite_files):
                written = write_files(files.root, incoming, partition_by=partition_by)
                LocalDeltaLog(files.root, version=files.version).append(
                    written, transactions=[], partition_by=partition_by, now_ms=now_ms
                )
                return
            rewritten_ids = derived.column("event_id").filter(plan.rewrite)
            for remainder in _remainders(files, rewrite_files, rewritten_ids):
                written += write_files(files.root, remainder, partition_by=partition_by)
            written += write_files(files.root, incoming, partition_by=partition_by)
            commit_rewrite(
                files.root,
                read_version=files.version,
                removes=[files.removed(i) for i in rewrite_files.to_pylist()],
                adds=written,
                operation="REPLAY",
                now_ms=now_ms,
            )
        except BaseException:
            # Files no commit refers to: remove them rather than leave them to a full vacuum.
            for data_file in written:
                (files.root / data_file.path).unlink(missing_ok=True)
            raise

    def _write_remote(self, files: TableFiles, incoming: pa.Table, *, has_rewrites: bool) -> None:
        if not has_rewrites:
            write_deltalake(
                files.table, incoming, mode="append", partition_by=[files.spec.partition_by]
            )
            return
        (
            files.table.merge(
                incoming,
                predicate="t.event_id = s.event_id AND t.event_date = s.event_date",
                source_alias="s",
                target_alias="t",
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def _remove_from_quarantine(self, chunk: pa.Table, moved: list[int]) -> None:
        taken = pa.array(moved, pa.int64())
        received = chunk.column("received_at").take(taken).cast(pa.int64())
        keys = pa.table(
            {
                "received_date": pc.divide(received, _MICROS_PER_DAY)
                .cast(pa.int32())
                .cast(pa.date32()),
                "journal_stream": chunk.column("journal_stream").take(taken),
                "journal_lsn": chunk.column("journal_lsn").take(taken),
            }
        )
        (
            DeltaTable(self._uri(QUARANTINE))
            .merge(
                keys,
                predicate=(
                    "t.received_date = s.received_date AND t.journal_stream = s.journal_stream"
                    " AND t.journal_lsn = s.journal_lsn"
                ),
                source_alias="s",
                target_alias="t",
            )
            .when_matched_delete()
            .execute()
        )


def _in_order(raw: TableFiles, selection: ReplayRange) -> list[int]:
    """The local ``raw_events`` files in the range, in order of their first receipt.

    In order of receipt, so a chunk's deliveries are close in time, as are the stored rows
    they are compared with (files are then picked by their received_at statistics).
    """
    days = raw.partitions
    keep = pa.array([True] * len(raw), pa.bool_())
    if selection.since is not None:
        keep = pc.and_(keep, pc.greater_equal(days, pa.scalar(selection.since, pa.date32())))
    if selection.until is not None:
        keep = pc.and_(keep, pc.less_equal(days, pa.scalar(selection.until, pa.date32())))
    first_received = raw.statistic("min.received_at")
    if first_received is None:
        order = pa.array(range(len(raw)), pa.int64())
    else:
        order = pc.sort_indices(first_received.cast(pa.int64()).fill_null(0)).cast(pa.int64())
    chosen: list[int] = order.filter(pc.take(keep, order)).to_pylist()
    return chosen


def _rows_of(raw: TableFiles, index: int) -> int:
    """How many rows file ``index`` holds (from its statistics, else its footer)."""
    rows = raw.rows[index]
    if rows is None:
        assert raw.root is not None
        rows = pq.ParquetFile(str(raw.root / raw.paths[index])).metadata.num_rows
    return rows


def _raw_batches(
    raw: TableFiles, indices: list[int], start: int, stop: int | None
) -> Iterator[pa.Table]:
    """Rows ``start`` to ``stop`` of the raw columns of the files at ``indices`` (in that
    order), a file at a time, a few pages at a time.

    Read by a Parquet reader in this thread's order: a dataset scan reads ahead in the
    background, and held 1 GiB of bodies while a chunk was decoded, and 800 MiB for one
    compacted file whatever its readahead settings.
    """
    assert raw.root is not None
    offset = 0
    for index in indices:
        rows = _rows_of(raw, index)
        skip, end = max(0, start - offset), rows if stop is None else min(rows, stop - offset)
        offset += rows
        if skip < end:
            with pq.ParquetFile(str(raw.root / raw.paths[index]), pre_buffer=False) as reader:
                day = raw.partitions[index].as_py()
                yield from _file_raw_batches(raw, reader, day, skip=skip, end=end)
        if stop is not None and offset >= stop:
            return


def _file_raw_batches(
    raw: TableFiles, reader: pq.ParquetFile, day: dt.date | None, *, skip: int, end: int
) -> Iterator[pa.Table]:
    """Rows ``skip`` to ``end`` of one raw file, reading only the row groups holding them."""
    target = pa.schema([raw.spec.schema.field(name) for name in _RAW_COLUMNS])
    in_file = [name for name in _RAW_COLUMNS if name != "received_date"]
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
    for batch in reader.iter_batches(
        batch_size=_RAW_BATCH_ROWS, row_groups=groups, columns=in_file
    ):
        low, high = max(skip - position, 0), min(end - position, batch.num_rows)
        position += batch.num_rows
        if low < high:
            piece = pa.Table.from_batches([batch.slice(low, high - low)])
            days = pa.array([day] * piece.num_rows, pa.date32())
            yield piece.append_column("received_date", days).cast(target)


def _remote_raw_batches(
    dataset: pads.Dataset, expression: pads.Expression | None
) -> Iterator[pa.Table]:
    """The raw columns of a remote table's files, a file at a time, a few pages at a time."""
    target = pa.schema([dataset.schema.field(name) for name in _RAW_COLUMNS])
    in_file = [name for name in _RAW_COLUMNS if name != "received_date"]
    for fragment in dataset.get_fragments(filter=expression):
        day = pads.get_partition_keys(fragment.partition_expression).get("received_date")
        with fragment.filesystem.open_input_file(fragment.path) as source:
            reader = pq.ParquetFile(source, pre_buffer=False)
            for batch in reader.iter_batches(batch_size=_RAW_BATCH_ROWS, columns=in_file):
                if batch.num_rows:
                    days = pa.array([day] * batch.num_rows, pa.date32())
                    piece = pa.Table.from_batches([batch]).append_column("received_date", days)
                    yield piece.cast(target)


@dataclass(frozen=True)
class _Bodies:
    """The chunk's bodies, and the chunk row of each derived row: the payloads to write."""

    chunk_bodies: pa.ChunkedArray
    chunk_rows: pa.Int64Array

    def fill(self, incoming: pa.Table, rows: pa.BooleanArray) -> pa.Table:
        """``incoming`` (the derived rows where ``rows``) with their payload column."""
        index = incoming.schema.get_field_index("payload")
        payload = self.chunk_bodies.take(self.chunk_rows.filter(rows)).cast(pa.string())
        return incoming.set_column(index, incoming.schema.field(index), payload)


@dataclass
class _Chosen:
    """Per channel table, the chunk rows to replay and their decoded events."""

    by_table: dict[str, tuple[list[int], list[Typed]]] = field(default_factory=dict)
    # Chunk rows that are in quarantine and move out of it.
    moved: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    """What to do with each derived row (boolean masks), and which stored files to rewrite;
    made at table ``version`` from the files ``seen`` in the partitions ``dates``."""

    new: pa.BooleanArray
    rewrite: pa.BooleanArray
    rewrite_paths: tuple[str, ...]
    version: int
    dates: pa.Array
    seen: frozenset[str]


def _plan(files: TableFiles, derived: pa.Table, cache: KeyCache) -> _Plan:
    """Sort the derived rows into new, to rewrite, and unchanged (the rest)."""
    count = derived.num_rows
    ids = derived.column("event_id")
    partition = files.spec.partition_by
    dates = pc.unique(derived.column(partition))
    in_dates = files.select(partitions=dates)
    seen = frozenset(files.paths[i] for i in in_dates.to_pylist())
    nothing = pa.array([False] * count, pa.bool_())
    if not len(in_dates):
        return _Plan(pc.invert(nothing), nothing, (), files.version, dates, seen)
    low, high = pc.min_max(ids).values()
    candidates = files.select(partitions=dates, ranges=[("event_id", low, high)])
    stored = _stored_keys(
        files, candidates=candidates, ids=ids, dates=dates, partition=partition, cache=cache
    )
    # One row per stored copy of a chunk event: which derived row, which file, which delivery.
    joined = stored.join(
        pa.table({"event_id": ids, "row": pa.array(range(count), pa.int64())}),
        "event_id",
        join_type="inner",
    )
    row = joined.column("row")
    theirs = [joined.column(c).cast(pa.int64()) for c in _KEY_COLUMNS[1:]]
    ours = [derived.column(c).cast(pa.int64()).take(row) for c in _KEY_COLUMNS[1:]]
    earlier, same = _compare_keys(theirs, ours)
    later = pc.and_not(pc.invert(earlier), same)
    per_row = (
        pa.table({"row": row, "earlier": earlier, "later": later})
        .group_by("row")
        .aggregate([("earlier", "any"), ("later", "any"), ("row", "count")])
    )
    flags = (
        pa.table({"row": pa.array(range(count), pa.int64())})
        .join(per_row, "row", join_type="left outer")
        .sort_by("row")
    )
    new = pc.is_null(flags.column("row_count"))
    stored_earlier = pc.fill_null(flags.column("earlier_any"), False)
    stored_later = pc.fill_null(flags.column("later_any"), False)
    copies = pc.fill_null(flags.column("row_count"), 0)
    open_rows = pc.invert(pc.or_(new, stored_earlier))
    rewrite = pc.and_(open_rows, pc.or_(stored_later, pc.greater(copies, 1)))
    # Stored from the very delivery the chunk has: equal unless the derivation changed.
    check = pc.and_not(open_rows, rewrite)
    # Remote tables: delta-rs numbers its own fragments, and rewrites go through a merge.
    held_in = joined.column("file").cast(pa.int64())
    if _true_count(check):
        checked = pc.take(check, row)
        holding = pa.table(
            {
                "file": held_in.filter(checked),
                "position": joined.column("position").filter(checked),
            }
        )
        rewrite = pc.or_(rewrite, _changed(files, derived, check, holding))
    rewrite_paths: tuple[str, ...] = ()
    if files.root is not None:
        rewrite_files = pc.unique(held_in.filter(pc.take(rewrite, row))).to_pylist()
        rewrite_paths = tuple(files.paths[i] for i in rewrite_files)
    return _Plan(
        new.combine_chunks(), rewrite.combine_chunks(), rewrite_paths, files.version, dates, seen
    )


def _plan_holds(plan: _Plan, files: TableFiles, derived: pa.Table, cache: KeyCache) -> bool:
    """Whether ``plan`` still holds for ``files``, which may be at a later version.

    It does if no file of its partitions has gone since (a rewrite or a compaction, which
    may have moved or changed rows), and no file added since holds a row of its events (the
    committer took a retried delivery of one, or another replay wrote one). A remote table's
    plan holds only at its own version.
    """
    if plan.version == files.version:
        return True
    if files.root is None:
        return False
    in_dates = files.select(partitions=plan.dates).to_pylist()
    now = {files.paths[i]: i for i in in_dates}
    if not plan.seen <= now.keys():
        return False
    added = [i for path, i in now.items() if path not in plan.seen]
    ids = derived.column("event_id").combine_chunks()
    return not any(
        pc.any(pc.is_in(keys.column("event_id"), value_set=ids)).as_py()
        for keys in _keys_of(files, added, cache).values()
    )


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


def _stored_keys(
    files: TableFiles,
    *,
    candidates: pa.Int64Array,
    ids: pa.ChunkedArray,
    dates: pa.Array,
    partition: str,
    cache: KeyCache,
) -> pa.Table:
    """The key columns of the stored rows of the chunk's ids, with the file (index) of each."""
    if not len(candidates):
        return _empty_keys()
    if files.root is None:
        keys = files.dataset().to_table(
            columns=[*_KEY_COLUMNS, _FRAGMENT],
            filter=pads.field(partition).isin(dates) & pads.field("event_id").isin(ids),
        )
        keys = keys.rename_columns([*_KEY_COLUMNS, "file"])
        return keys.append_column("position", pa.nulls(keys.num_rows, pa.int64()))
    chosen = candidates.to_pylist()
    found = _keys_of(files, chosen, cache)
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
    matched = _indices(pc.is_in(keys.column("event_id"), value_set=ids.combine_chunks()))
    file_at = pa.array([i for i, _table in held], pa.int64())
    held_in = held_at.take(matched)
    return (
        keys.take(matched)
        .append_column("file", file_at.take(held_in))
        .append_column("position", pc.subtract(matched, starts.take(held_in)))
    )


def _keys_of(files: TableFiles, indices: list[int], cache: KeyCache) -> dict[int, pa.Table]:
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
    assert files.root is not None
    schema = pa.schema([files.spec.schema.field(c) for c in _KEY_COLUMNS])
    keys: dict[int, pa.Table] = {}
    for i in indices:
        reader = pq.ParquetFile(str(files.root / files.paths[i]), pre_buffer=False)
        found = reader.read(columns=_KEY_COLUMNS, use_threads=False)
        keys[i] = found.cast(schema).combine_chunks()
    return keys


def _changed(
    files: TableFiles, derived: pa.Table, check: pa.BooleanArray, holding: pa.Table
) -> pa.BooleanArray:
    """Which ``check`` rows differ from their stored row (read back from ``holding``: the
    file and the position in it of each)."""
    changed = [False] * derived.num_rows
    to_check = _indices(check)
    if files.root is None:
        # Remote: compare through delta-rs's dataset, filtered to the rows themselves.
        wanted = derived.column("event_id").take(to_check)
        dates = pc.unique(derived.column(files.spec.partition_by).take(to_check))
        stored = files.dataset().to_table(
            filter=pads.field(files.spec.partition_by).isin(dates)
            & pads.field("event_id").isin(wanted)
        )
        _mark_changed(stored, derived, to_check, changed)
    else:
        wanted = derived.column("event_id").take(to_check)
        positions: dict[int, list[int]] = {}
        for index, position in zip(
            holding.column("file").to_pylist(), holding.column("position").to_pylist(), strict=True
        ):
            positions.setdefault(index, []).append(position)
        for group in _by_size(files, pa.array(sorted(positions), pa.int64())):
            stored = _stored_rows(files, group, wanted, positions)
            _mark_changed(stored, derived, to_check, changed)
    return pa.array(changed, pa.bool_())


def _stored_rows(
    files: TableFiles, group: pa.Int64Array, wanted: pa.Array, positions: dict[int, list[int]]
) -> pa.Table:
    """The rows of the files at ``group`` whose event id is ``wanted``: the table's columns
    but those ``_NOT_COMPARED``. ``positions`` says where in each file they are."""
    compared = [name for name in files.spec.schema.names if name not in _NOT_COMPARED]
    if max(files.sizes[i] for i in group.to_pylist()) <= _READ_GROUP_BYTES:
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
    assert files.root is not None
    reader = pq.ParquetFile(str(files.root / files.paths[index]), pre_buffer=False)
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
        batch_size=_STORED_BATCH_ROWS, row_groups=row_groups, columns=names
    )
    for batch in batches:
        piece = pa.Table.from_batches([batch])
        if piece.schema != target:
            # delta-rs writes string views and its own list item names.
            piece = piece.cast(target)
        found = pc.is_in(piece.column("event_id"), value_set=ids)
        piece = piece.filter(found if matching else pc.invert(found))
        if piece.num_rows:
            dates = pa.array([value.as_py()] * piece.num_rows, pa.date32())
            yield piece.append_column(partition, dates).select(columns)


def _mark_changed(
    stored: pa.Table, derived: pa.Table, to_check: pa.Int64Array, changed: list[bool]
) -> None:
    """Set ``changed`` for the ``to_check`` rows of ``derived`` that differ from ``stored``."""
    stored_rows = pa.array(range(stored.num_rows), pa.int64())
    pairs = (
        pa.table({"event_id": stored.column("event_id"), "stored_row": stored_rows})
        .join(
            pa.table({"event_id": derived.column("event_id").take(to_check), "row": to_check}),
            "event_id",
            join_type="inner",
        )
        .sort_by("stored_row")
    )
    if not pairs.num_rows:
        return
    order, picked = pairs.column("row"), pairs.column("stored_row")
    # Text columns are most of a stored row's size, and copying them in derived order cost more
    # than comparing them: flat columns are compared in stored order, against the derived rows
    # taken into that order (null where a stored row is not one to check, e.g. another chunk's
    # row in the same file); nested columns, which are small, are taken in pair order.
    whole = pairs.num_rows == stored.num_rows
    index = order
    if not whole:
        index = (
            pa.table({"stored_row": pa.array(range(stored.num_rows), pa.int64())})
            .join(pairs, "stored_row", join_type="left outer")
            .sort_by("stored_row")
            .column("row")
        )
    for column in derived.schema:
        if column.name in _NOT_COMPARED:
            continue
        theirs = stored.column(column.name)
        if theirs.type != column.type:
            theirs = theirs.cast(column.type)
        rows_of = index
        if pa.types.is_nested(column.type) and not whole:
            theirs, rows_of = theirs.take(picked), order
        ours = derived.column(column.name).take(rows_of)
        if theirs.equals(ours):
            continue
        found = _differing(theirs, ours)
        if rows_of is index and not whole:
            found = pc.and_(found, pc.is_valid(index))
        for row in rows_of.filter(found).to_pylist():
            changed[row] = True


def _differing(
    a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray
) -> pa.BooleanArray | pa.ChunkedArray:
    """Per row, whether ``a`` and ``b`` differ (null equals null)."""
    if not pa.types.is_nested(a.type):
        unequal = pc.fill_null(pc.not_equal(a, b), False)
        return pc.or_(unequal, pc.xor(pc.is_null(a), pc.is_null(b)))
    # Lists, maps and structs have no comparison kernel: halve until the rows are found.
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if isinstance(b, pa.ChunkedArray):
        b = b.combine_chunks()
    out = [False] * len(a)
    _bisect(a, b, 0, len(a), out)
    return pa.array(out, pa.bool_())


def _bisect(a: pa.Array, b: pa.Array, start: int, stop: int, out: list[bool]) -> None:
    size = stop - start
    if a.slice(start, size).equals(b.slice(start, size)):
        return
    if size == 1:
        out[start] = True
        return
    middle = start + size // 2
    _bisect(a, b, start, middle, out)
    _bisect(a, b, middle, stop, out)


def _remainders(
    files: TableFiles, indices: pa.Int64Array, removed_ids: pa.ChunkedArray
) -> Iterator[pa.Table]:
    """The rows of the files at ``indices`` other than ``removed_ids``, in bounded pieces."""
    assert files.root is not None
    value_set = removed_ids.combine_chunks()
    pending: list[pa.Table] = []
    held = 0
    for index in indices.to_pylist():
        reader = pq.ParquetFile(str(files.root / files.paths[index]), pre_buffer=False)
        columns = files.spec.schema.names
        for piece in _file_pieces(files, index, reader, value_set, matching=False, columns=columns):
            pending.append(piece)
            held += piece.nbytes
            if held >= _REMAINDER_BYTES:
                yield pa.concat_tables(pending)
                pending, held = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _by_size(files: TableFiles, indices: pa.Int64Array) -> Iterator[pa.Int64Array]:
    """``indices`` in groups of about ``_READ_GROUP_BYTES`` on disk."""
    group: list[int] = []
    held = 0
    for index in indices.to_pylist():
        group.append(index)
        held += files.sizes[index]
        if held >= _READ_GROUP_BYTES:
            yield pa.array(group, pa.int64())
            group, held = [], 0
    if group:
        yield pa.array(group, pa.int64())


def _compare_keys(
    theirs: list[pa.Array], ours: list[pa.Array]
) -> tuple[pa.BooleanArray, pa.BooleanArray]:
    """Elementwise (stored key < derived key, stored key == derived key), lexicographically."""
    earlier = pa.array([False] * len(theirs[0]), pa.bool_())
    same = pa.array([True] * len(theirs[0]), pa.bool_())
    for stored, chunk in zip(theirs, ours, strict=True):
        earlier = pc.or_(earlier, pc.and_(same, pc.less(stored, chunk)))
        same = pc.and_(same, pc.equal(stored, chunk))
    return earlier, same


def _quarantined(quarantine: TableFiles, chunk: pa.Table) -> set[tuple[int, int]]:
    """(stream, lsn) of the chunk's deliveries that ``quarantine`` holds."""
    if not len(quarantine):
        return set()
    dates = pc.unique(chunk.column("received_date"))
    lsns = chunk.column("journal_lsn")
    low, high = pc.min_max(lsns).values()
    candidates = quarantine.select(partitions=dates, ranges=[("journal_lsn", low, high)])
    if not len(candidates):
        return set()
    keys = quarantine.dataset(candidates).to_table(
        columns=["journal_stream", "journal_lsn"],
        filter=pads.field("received_date").isin(dates)
        & (pads.field("journal_lsn") >= low)
        & (pads.field("journal_lsn") <= high),
    )
    return set(
        zip(
            keys.column("journal_stream").to_pylist(),
            keys.column("journal_lsn").to_pylist(),
            strict=True,
        )
    )


def _bodies(chunk: pa.Table) -> list[memoryview | bytes]:
    """Each delivery's exact bytes, as views into the chunk's buffers where they are text.

    ``decode_event`` reads any buffer, so most bodies are never copied into Python bytes.
    """
    text = chunk.column("body").combine_chunks()
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        text = text.cast(pa.large_string())
    buffers = text.buffers()
    kind = pa.int64() if pa.types.is_large_string(text.type) else pa.int32()
    offsets = pa.Array.from_buffers(
        kind, len(text) + 1, [None, buffers[1]], offset=text.offset
    ).to_pylist()
    data = buffers[2]
    view = memoryview(data) if data is not None else memoryview(b"")
    bodies: list[memoryview | bytes] = [view[offsets[i] : offsets[i + 1]] for i in range(len(text))]
    encoded = chunk.column("body_base64")
    if encoded.null_count < len(encoded):
        # Bodies that were not UTF-8: their exact bytes are in base64.
        for i in _indices(pc.is_valid(encoded)).to_pylist():
            bodies[i] = base64.b64decode(encoded[i].as_py())
    return bodies


def _dedup_entries(written: pa.Table) -> Iterator[tuple[str, int]]:
    received = written.column("received_at").cast(pa.int64()).to_pylist()
    return (
        (event_id, keep_from_day(at, timestamp))
        for event_id, at, timestamp in zip(
            written.column("event_id").to_pylist(),
            received,
            written.column("timestamp").to_pylist(),
            strict=True,
        )
    )


def _indices(mask: pa.BooleanArray | pa.ChunkedArray) -> pa.Int64Array:
    """Positions where ``mask`` is true."""
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.indices_nonzero(mask).cast(pa.int64())


def _true_count(mask: pa.BooleanArray | pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


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


__all__ = ["RawSlice", "ReplayRange", "ReplayResult", "Replayer", "TableFiles"]
