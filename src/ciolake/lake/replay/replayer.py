"""Re-derive the channel tables (and, on request, the quarantine) from ``raw_events``.

After an upgrade, a schema fix or a decoder fix, ``raw_events`` still holds every delivery as
received. Replay reads it in chunks of Arrow batches, decodes each body with today's code, keeps
the earliest delivery of each event (smallest ``received_at``, then journal position, as the
committer keeps the first), and reconciles the chunk with each channel table, as planned by
``ciolake.lake.replay.plan``:

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
import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ciolake.commit.dedup import DedupIndex, keep_from_day
from ciolake.errors import InputError
from ciolake.events.decode import Typed, decode_event
from ciolake.lake import rows
from ciolake.lake.deletions import refuse_deletions
from ciolake.lake.delta import DeltaTable
from ciolake.lake.files import DataFile, write_files
from ciolake.lake.health import open_table, open_tables
from ciolake.lake.location import parse_location, storage_options
from ciolake.lake.replay.keys import DEFAULT_KEY_CACHE_BYTES, KeyCache
from ciolake.lake.replay.plan import Plan, plan_chunk, plan_holds
from ciolake.lake.replay.reads import in_order, raw_batches, remainders, rows_of
from ciolake.lake.table_files import TableFiles, true_count, true_indices
from ciolake.lake.tables import QUARANTINE, RAW_EVENTS
from ciolake.lake.transactions import CommitConflictError, UnsupportedTableError, commit_files
from ciolake.lake.writer import ensure_tables
from ciolake.runtime.locks import FileLock, commit_lock_path
from ciolake.runtime.memory import return_free_memory
from ciolake.settings import Settings
from ciolake.units import SECONDS_PER_DAY

_MICROS_PER_DAY = SECONDS_PER_DAY * 1_000_000

DEFAULT_CHUNK_ROWS = 100_000

# Bodies per chunk: the chunk, its derived rows and the stored rows read back are each about
# this size, so it bounds the process's memory more than the row count does.
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024

_COMMIT_ATTEMPTS = 5


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
        self._location = parse_location(settings.tables_location)
        self._chunk_rows = chunk_rows
        self._chunk_bytes = chunk_bytes
        self._keys = KeyCache(key_cache_bytes)
        self._tables: dict[str, TableFiles] = {}
        # Tables ``split`` opened (and checked), for this process's first use of each.
        self._opened: dict[str, DeltaTable] = {}

    def count(self, selection: ReplayRange) -> int:
        """How many deliveries the range holds (for a progress bar).

        Raises:
            InputError: there is no ``raw_events`` table.
            TableUnreadableError: ``raw_events`` cannot be read, or has rows deleted by
                deletion vectors.
        """
        opened = open_table(self._location, RAW_EVENTS)
        if opened is None:
            raise InputError(self._no_raw_events())
        refuse_deletions(opened, RAW_EVENTS, self._location.table_uri(RAW_EVENTS))
        raw = TableFiles(self._location, RAW_EVENTS, table=opened)
        # From the files' statistics: opening every file took 55 MiB and seconds.
        return _deliveries_in(raw, selection)

    def split(self, selection: ReplayRange, parts: int) -> list[RawSlice]:
        """The range's deliveries in up to ``parts`` slices of about as many rows, as of now.

        Contiguous in replay's order (of receipt), so each slice's stored rows sit in files of
        their own: two replays over slices of one range read back different files. A remote

        Every table is checked first, and a derived table that does not exist (a channel
        table lost and moved away) is created, to be rebuilt from ``raw_events``.

        Raises:
            InputError: there is no ``raw_events`` table.
            TableUnreadableError: a table's log is missing (its data files remain) or damaged.
            StoreUnavailableError: the object store cannot be reached.
        """
        lock = FileLock(commit_lock_path(self._settings.state_dir))
        try:
            # Both as of one moment: the committer writes a delivery's raw row and its
            # quarantine row under this lock, so no replayed delivery misses the latter.
            with lock:
                self._opened = self._prepare()
                raw = self._table_files(RAW_EVENTS)
                quarantine = self._table_files(QUARANTINE)
        finally:
            lock.close()
        whole = RawSlice(raw.version, quarantine.version, 0, None)
        if parts <= 1:
            return [whole]
        total = _deliveries_in(raw, selection)
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
            self._settings.dedup_path,
            window_days=self._settings.dedup_window_days,
            cache_mib=self._settings.dedup_cache_mib,
        )
        try:
            if part is None:
                (part,) = self.split(selection, 1)
            raw = self._table_files(RAW_EVENTS, version=part.raw_version)
            quarantine = self._table_files(QUARANTINE, version=part.quarantine_version)
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

    def _prepare(self) -> dict[str, DeltaTable]:
        """Every table, checked; the derived ones missing created, for replay to fill."""
        found = open_tables(self._location)
        if found[RAW_EVENTS] is None:
            raise InputError(self._no_raw_events())
        for name, table in found.items():
            if table is not None:
                refuse_deletions(table, name, self._location.table_uri(name))
        missing = [name for name, table in found.items() if table is None]
        created = ensure_tables(self._location, names=missing) if missing else {}
        return {name: table or created[name] for name, table in found.items()}

    def _table_files(self, table: str, *, version: int | None = None) -> TableFiles:
        """``table`` as of ``version`` (default latest), reusing what ``split`` opened."""
        opened = self._opened.pop(table, None)
        if opened is not None and version not in (None, opened.version()):
            opened = None
        files = TableFiles(self._location, table, version=version, table=opened)
        if opened is not None and version is None:
            # Opened when the range was split: commits may have come since.
            files.refresh()
        return files

    def _no_raw_events(self) -> str:
        return (
            f"nothing to replay: no raw_events table under {self._location.uri} (check"
            " --data-dir; ciolake serve creates the tables on its first start)"
        )

    def _files(self, table: str) -> TableFiles:
        """``table`` as of now: loaded once, then brought up to date at each use."""
        files = self._tables.get(table)
        if files is None:
            files = self._tables[table] = self._table_files(table)
        else:
            files.refresh()
        return files

    def _chunks(
        self, raw: TableFiles, selection: ReplayRange, raw_slice: RawSlice
    ) -> Iterator[pa.Table]:
        """``raw_slice`` of ``raw_events`` in chunks of up to ``chunk_rows`` rows or about
        ``chunk_bytes``."""
        in_range = in_order(raw, since=selection.since, until=selection.until)
        batches = raw_batches(raw, in_range, raw_slice.start, raw_slice.stop)
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
        meanwhile cannot change it (``plan_holds``); else that table is planned again.
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
    ) -> tuple[str, pa.Table, _Bodies, Plan]:
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
        plan = plan_chunk(self._files(table), derived, self._keys)
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
        planned: Plan,
        result: ReplayResult,
    ) -> pa.BooleanArray:
        """Bring ``table`` in line with ``derived`` (``planned`` earlier, at some version);
        return which derived rows were written."""
        result.count(result.upserted, table, derived.num_rows)
        plan: Plan | None = planned
        for attempt in range(_COMMIT_ATTEMPTS):
            files = self._files(table)
            if plan is None or not plan_holds(plan, files, derived, self._keys):
                result.planned_again += 1
                plan = plan_chunk(files, derived, self._keys)
            try:
                self._write(files, derived, bodies, plan)
            except CommitConflictError:
                # Compaction (or a schema change) got in between: plan again from its version.
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                plan = None
                continue
            written = pc.or_(plan.new, plan.rewrite)
            added, rewritten = true_count(plan.new), true_count(plan.rewrite)
            result.count(result.added, table, added)
            result.count(result.rewritten, table, rewritten)
            result.count(result.unchanged, table, derived.num_rows - added - rewritten)
            return written
        raise AssertionError("unreachable")

    def _write(self, files: TableFiles, derived: pa.Table, bodies: _Bodies, plan: Plan) -> None:
        written_rows = pc.or_(plan.new, plan.rewrite)
        incoming = bodies.fill(derived.filter(written_rows), written_rows)
        if not incoming.num_rows:
            return
        rewrite_files = files.indices_of(plan.rewrite_paths)
        written: list[DataFile] = []
        try:
            if len(rewrite_files):
                rewritten_ids = derived.column("event_id").filter(plan.rewrite)
                for remainder in remainders(files, rewrite_files, rewritten_ids):
                    written += _write_files(files, remainder)
            written += _write_files(files, incoming)
        except BaseException:
            _discard(files, written)
            raise
        try:
            commit_files(
                files.table,
                storage=files.storage,
                spec=files.spec,
                adds=written,
                removes=[files.removed(i) for i in rewrite_files.to_pylist()],
            )
        except (CommitConflictError, UnsupportedTableError):
            # Nothing committed. (After any other failure the commit may have landed, and
            # its files must stay.)
            _discard(files, written)
            raise

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
            DeltaTable(
                self._location.table_uri(QUARANTINE),
                storage_options=storage_options(self._location, QUARANTINE),
            )
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


def _write_files(files: TableFiles, rows: pa.Table) -> list[DataFile]:
    return write_files(files.storage, rows, partition_by=files.spec.partition_by)


def _discard(files: TableFiles, written: list[DataFile]) -> None:
    """Remove files no commit refers to, rather than leave them to a full vacuum."""
    for data_file in written:
        files.storage.delete(data_file.path)


def _deliveries_in(raw: TableFiles, selection: ReplayRange) -> int:
    """How many deliveries the local ``raw_events`` holds in the range (from statistics)."""
    in_range = in_order(raw, since=selection.since, until=selection.until)
    return sum(rows_of(raw, i) for i in in_range)


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
        for i in true_indices(pc.is_valid(encoded)).to_pylist():
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


__all__ = ["RawSlice", "ReplayRange", "ReplayResult", "Replayer"]
