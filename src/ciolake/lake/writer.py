"""Delta I/O: create the tables, and append one batch to several tables idempotently.

Each append carries one delta-rs app transaction per journal in the batch,
``(app_id(stream), version)``, where version is that journal's last sequence number in the
batch. The table's log remembers them, so after a crash the committer knows exactly which
journaled deliveries a table already holds, and never writes a batch twice.

Receivers sharing a lake (``serve --role receiver``) number their journals apart: the writer
adds its ``stream_base`` to every stream in the rows it writes and in the app transactions, so
one receiver's progress is never taken for another's.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from ciolake.errors import AnotherWriterError, TableWriteError
from ciolake.lake.delta import DeltaTable, Field, Transaction
from ciolake.lake.files import DataFile, write_files
from ciolake.lake.health import open_tables, store_errors
from ciolake.lake.location import TablesLocation, parse_location
from ciolake.lake.location import storage_options as location_options
from ciolake.lake.small_files import CROWDED, FAN_IN, SmallFiles, merge_files, removed
from ciolake.lake.storage import TableStorage, table_storage
from ciolake.lake.tables import ALL_SPECS
from ciolake.lake.transactions import CommitConflictError, UnsupportedTableError, commit_files

logger = logging.getLogger(__name__)

# A checkpoint every 10 versions instead of Delta's 100: delta-rs's refresh after each commit
# replays the commit files since the last checkpoint, most of a commit's CPU (the figures are
# in docs/performance.md). Any Delta reader honours the property.
TABLE_PROPERTIES = {"delta.checkpointInterval": "10"}
_DELETE_CHUNK = 500


def ensure_tables(
    location: TablesLocation, *, names: Iterable[str] | None = None
) -> dict[str, DeltaTable]:
    """Every table (of ``names``, default all), created with its schema and partitioning
    where it does not exist yet.

    Every table is checked before any is created (``health.open_tables``, what
    ``check_tables`` does): a table directory whose log is gone while its data files remain
    is never given a new, empty log that would hide them.

    Raises:
        TableUnreadableError: a table's log is missing (its data files remain) or damaged.
        StoreUnavailableError: the object store cannot be reached.
    """
    found = open_tables(location, names=names)
    return {
        name: _add_missing_columns(location, name, table)
        if table is not None
        else _create(location, name)
        for name, table in found.items()
    }


def _add_missing_columns(location: TablesLocation, name: str, table: DeltaTable) -> DeltaTable:
    """``table`` with the columns of its spec that a later ciolake added, added (nullable,
    last, as the spec has them); its rows read them as null.

    Must come before the first commit: delta-rs (1.6) commits files with a column the table
    lacks without a word, and no reader would ever see that column.
    """
    spec = ALL_SPECS[name]
    present = set(table.schema().to_arrow().names)
    missing = [field for field in spec.schema if field.name not in present]
    if missing:
        with store_errors(location, name):
            table.alter.add_columns([Field.from_arrow(field) for field in missing])
        logger.info(
            "columns added to an existing table",
            extra={"table": name, "columns": [field.name for field in missing]},
        )
    return table


def _create(location: TablesLocation, name: str) -> DeltaTable:
    spec = ALL_SPECS[name]
    with store_errors(location, name):
        return DeltaTable.create(
            location.table_uri(name),
            spec.schema,
            mode="ignore",
            partition_by=[spec.partition_by],
            storage_options=location_options(location, name),
            configuration=TABLE_PROPERTIES,
        )


def app_id(stream: int) -> str:
    """The app transaction id under which journal ``stream``'s progress is recorded."""
    return f"ciolake-journal-{stream}"


class DeltaWriter:
    """Owns the Delta tables under one location."""

    def __init__(
        self,
        tables_uri: str,
        *,
        names: Iterable[str] = ALL_SPECS,
        stream_base: int = 0,
        owner: str | None = None,
    ) -> None:
        """Args:
        tables_uri: where the tables live.
        names: the tables this writer creates, reads and appends to.
        stream_base: added to every journal stream number written (see the module).
        owner: an app id the tables allow one writer at a time to commit as (one deriver
            per lake, one server per receiver id): every commit carries it, with this
            writer's instance number (drawn at random) as its version, so two writers
            committing as one owner conflict (delta-rs's check of concurrent app
            transactions), and the one that then finds another's number stops
            (``AnotherWriterError``).

        Raises:
            InputError: ``tables_uri`` is malformed or of an unsupported scheme.
        """
        self._names = tuple(names)
        self._stream_base = stream_base
        self._owner = owner
        self._instance = secrets.randbelow(2**62) + 1
        # Per table, the owner's instance number found at the first read (a writer before).
        self._owner_at_start: dict[str, int | None] = {}
        self._location = parse_location(tables_uri)
        self._tables: dict[str, DeltaTable] = {}
        # The storage options each table was opened with (a table in Unity Catalog is opened
        # again when its credentials are renewed).
        self._opened_with: dict[str, dict[str, str]] = {}
        # Made at first use: a table in Unity Catalog is resolved then, not at construction.
        self._storages: dict[str, TableStorage] = {}
        self._small_files = {name: SmallFiles() for name in self._names}
        # One merge at a time: two at once doubled what merging adds to the peak memory.
        self._merging = threading.Lock()
        # Per table and stream, the highest transaction version committed or read.
        self._txn: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()
        # Two commits at a time: more buy no speed on a small machine, and each writer thread
        # keeps its own heap (four held 60 MiB more than one between batches).
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ciolake-delta")

    def table_uri(self, name: str) -> str:
        """Where table ``name`` lives."""
        return self._location.table_uri(name)

    def ensure_tables(self) -> None:
        """Create every table that does not exist yet, with its schema and partitioning.

        Never over a table directory whose log is gone while its data files remain (see the
        module function ``ensure_tables``).

        Raises:
            TableUnreadableError: a table's log is missing (its data files remain) or damaged.
            StoreUnavailableError: the object store cannot be reached.
        """
        for name, table in ensure_tables(self._location, names=self._names).items():
            with store_errors(self._location, name):
                self._track(name, table, location_options(self._location, name))

    def committed_versions(self, streams: Iterable[int]) -> dict[str, dict[int, int]]:
        """Per table and journal stream, the last sequence number committed (0 if none)."""
        wanted = list(streams)
        versions: dict[str, dict[int, int]] = {}
        for name in self._names:
            with store_errors(self._location, name):
                options = location_options(self._location, name)
                table = DeltaTable(self.table_uri(name), storage_options=options)
            self._track(name, table, options)
            versions[name] = {k: self._transaction_version(table, k) for k in wanted}
            self._check_owner(name, table, versions[name])
            self._txn.setdefault(name, {}).update(versions[name])
        return versions

    def _check_owner(self, name: str, table: DeltaTable, versions: Mapping[int, int]) -> None:
        """Refuse to go on beside another writer of this owner (see ``owner``).

        Another writer is there when the owner's transaction names a third instance (one
        that started after this writer), or when a stream this writer commits moved past
        what this writer knows while the last owner to commit was not this writer (a commit
        of this writer's that landed although it failed moves it too, under its own number).
        """
        if self._owner is None:
            return
        owner = table.transaction_version(self._owner)
        found = self._owner_at_start.setdefault(name, owner)
        known = self._txn.get(name, {})
        moved = any(v > known[k] for k, v in versions.items() if k in known)
        if owner not in (found, self._instance) or (moved and owner != self._instance):
            raise AnotherWriterError(
                f"another process commits to {self.table_uri(name)} as {self._owner};"
                " this one stops committing (what it has not committed stays where it was"
                " read from)"
            )

    def _transaction_version(self, table: DeltaTable, stream: int) -> int:
        return table.transaction_version(app_id(self._stream_base + stream)) or 0

    def _track(self, name: str, table: DeltaTable, options: dict[str, str]) -> None:
        self._tables[name] = table
        self._opened_with[name] = options
        self._small_files[name].forget()

    def _table(self, name: str) -> DeltaTable:
        """Table ``name`` as tracked, opened again if its credentials were renewed since."""
        with store_errors(self._location, name):
            options = location_options(self._location, name)
            if options != self._opened_with.get(name):
                table = DeltaTable(self.table_uri(name), storage_options=options)
                self._track(name, table, options)
        return self._tables[name]

    def _storage(self, name: str) -> TableStorage:
        storage = self._storages.get(name)
        if storage is None:
            with store_errors(self._location, name):
                storage = self._storages[name] = table_storage(self._location, name)
        return storage

    def append_all(
        self,
        batches: Mapping[str, pa.Table],
        *,
        versions: Mapping[int, int],
        small_files: Literal["merge", "defer"] = "merge",
    ) -> dict[str, float]:
        """Append each table's rows in one commit per table, the commits running in parallel.

        After its commit, a table's small files are merged (``lake/small_files.py``) where
        ``FAN_IN`` of a tier have gathered in a partition, or with ``small_files="defer"``
        (the caller has no time to spare) only where ``CROWDED`` have. A merge runs beside
        the other tables' commits, one merge at a time; one that fails leaves its files as
        they were (logged).

        Returns:
            Seconds each commit took.

        Raises:
            TableWriteError: at least one commit failed (the others may have succeeded; their
                app transaction makes a retry skip them).
        """
        futures = {
            name: self._pool.submit(self._append, name, rows, versions, small_files)
            for name, rows in batches.items()
        }
        seconds: dict[str, float] = {}
        failures: list[str] = []
        for name, future in futures.items():
            try:
                seconds[name] = future.result()
            except Exception as exc:  # delta-rs raises several unrelated types
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
        if failures:
            raise TableWriteError("; ".join(failures))
        return seconds

    def _append(
        self,
        name: str,
        rows: pa.Table,
        versions: Mapping[int, int],
        small_files: Literal["merge", "defer"],
    ) -> float:
        started = time.monotonic()
        # A table's transaction version never goes down: after a crash, a batch of recovered
        # deliveries may end below what the table already holds (the dedup watermark lags the
        # tables), and a lower version would make the next batch write those deliveries again.
        known = self._txn.setdefault(name, {})
        versions = {k: max(v, known.get(k, 0)) for k, v in versions.items()}
        base = self._stream_base
        transactions = [Transaction(app_id(base + k), v) for k, v in sorted(versions.items())]
        if self._owner is not None:
            transactions.append(Transaction(self._owner, self._instance))
        if base:
            rows = _shift_streams(rows, base)
        spec = ALL_SPECS[name]
        storage = self._storage(name)
        table = self._table(name)
        files = write_files(storage, rows, partition_by=spec.partition_by)
        before = table.version()
        try:
            after = commit_files(
                table, storage=storage, spec=spec, adds=files, transactions=transactions
            )
        except (CommitConflictError, UnsupportedTableError):
            # Nothing was committed: the committer reads the tables again and retries the
            # batch, and files no commit names would only wait for a vacuum. (After any other
            # failure the commit may have landed, so its files stay.)
            _discard(storage, files)
            raise
        known.update(versions)
        self._merge_small_files(
            name,
            files,
            others_committed=after != before + 1,
            min_files=FAN_IN if small_files == "merge" else CROWDED,
        )
        return time.monotonic() - started

    def _merge_small_files(
        self, name: str, committed: list[DataFile], *, others_committed: bool, min_files: int
    ) -> None:
        small_files = self._small_files[name]
        if others_committed:
            small_files.forget()
        small_files.add(committed)
        while (group := small_files.take_full(min_files=min_files)) is not None:
            merged = self._merge(name, group)
            if merged is None:
                small_files.forget()
                return
            small_files.add([merged])

    def _merge(self, name: str, group: list[DataFile]) -> DataFile | None:
        # A merge only saves work: when it fails, its files stay as they are, for the
        # closed-day compaction, and the batch it follows is committed all the same.
        storage = self._storage(name)
        try:
            with self._merging:
                merged = merge_files(storage, group)
        except Exception as exc:  # pyarrow and the store raise many unrelated types
            logger.warning("could not merge small files", extra={"table": name, "error": str(exc)})
            return None
        try:
            commit_files(
                self._tables[name],
                storage=storage,
                spec=ALL_SPECS[name],
                adds=[merged],
                removes=removed(group),
                data_change=False,
            )
        except Exception as exc:  # delta-rs raises several unrelated types
            if isinstance(exc, CommitConflictError | UnsupportedTableError):
                _discard(storage, [merged])
            logger.warning("could not merge small files", extra={"table": name, "error": str(exc)})
            return None
        return merged

    def delete_events(self, name: str, event_ids: Sequence[str]) -> int:
        """Delete the rows of table ``name`` with these event ids (delta-rs rewrites the files
        holding them, in commits of a few hundred ids); return how many rows went."""
        deleted = 0
        for start in range(0, len(event_ids), _DELETE_CHUNK):
            listed = ", ".join(
                "'" + event_id.replace("'", "''") + "'"
                for event_id in event_ids[start : start + _DELETE_CHUNK]
            )
            with store_errors(self._location, name):
                found = self._table(name).delete(f"event_id IN ({listed})")
            deleted += int(found.get("num_deleted_rows", 0))
        # The files it tracked may be among those rewritten.
        self._small_files[name].forget()
        return deleted

    def close(self) -> None:
        """Stop the commit threads."""
        self._pool.shutdown(wait=True)


def _shift_streams(rows: pa.Table, base: int) -> pa.Table:
    index = rows.schema.get_field_index("journal_stream")
    shifted = pc.add(rows.column(index), pa.scalar(base, pa.int64()))
    return rows.set_column(index, rows.field(index), shifted)


def _discard(storage: TableStorage, files: list[DataFile]) -> None:
    for data_file in files:
        try:
            storage.delete(data_file.path)
        except OSError as exc:
            logger.warning("could not delete an uncommitted data file", extra={"error": str(exc)})
