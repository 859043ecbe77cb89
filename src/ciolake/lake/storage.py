"""Where one table's data files live, and how they are written, read and made durable.

The Delta log is delta-rs's alone (``lake/transactions.py``); this is the other half of a commit,
the Parquet files. A table on the local filesystem and one on an object store differ only
here, chosen once by ``table_storage``:

- local files are written through a file descriptor and synced, with their directory, before
  the commit that names them: the journal is deleted once the commit is in, so the files must
  outlive a power cut, and so must the commit itself (``make_durable``, after it);
- an object store's files are written (one PUT each: a PUT that returned is durable) and
  deleted through obstore, the Python binding of the Rust ``object_store`` crate that delta-rs
  itself uses, with the same credentials from the environment and the location's time limits.
  It releases the GIL while it waits for the store; delta-rs's Python storage handler does
  not, and with a store that stopped answering it outlasted its time limits and froze every
  thread of the server. Reads (replay's) go through that handler as a pyarrow filesystem.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from obstore import delete as delete_object
from obstore import get, head, open_writer
from obstore.exceptions import NotFoundError
from obstore.store import ObjectStore, from_url

from ciolake.journal.fsync import fsync_directory, fsync_path
from ciolake.lake.catalog import unity_tables
from ciolake.lake.delta import DeltaStorageHandler
from ciolake.lake.location import (
    MAX_RETRIES,
    TablesLocation,
    storage_options,
    store_time_limits,
)

if TYPE_CHECKING:
    from obstore import WritableFile

COMPRESSION = "snappy"


class TableStorage(Protocol):
    """A table's directory, wherever it is; paths are relative to the table's root."""

    @property
    def uri(self) -> str:
        """Where the table lives, as the user named it."""
        ...

    @property
    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem that reads the table's files."""
        ...

    def path(self, relative: str) -> str:
        """The path of ``relative`` for ``filesystem``."""
        ...

    def write_parquet(self, relative: str, data: pa.Table, *, dictionary: list[str]) -> int:
        """Write ``data`` as a new Parquet file; return its size in bytes."""
        ...

    def write_parquet_parts(
        self, relative: str, schema: pa.Schema, parts: Iterable[pa.Table], *, dictionary: list[str]
    ) -> int:
        """Write ``parts`` as one new Parquet file, a row group or more per part, holding one
        part at a time in memory; return the file's size in bytes."""
        ...

    def parquet_file(self, relative: str) -> pq.ParquetFile:
        """One of the table's Parquet files, to read in batches."""
        ...

    def delete(self, relative: str) -> None:
        """Delete the file, if it exists."""
        ...

    def has_commit(self, version: int) -> bool:
        """Whether the log holds a commit of ``version``."""
        ...

    def make_durable(self, versions: range) -> None:
        """Make the log's commits of ``versions`` survive a power cut."""
        ...


def table_storage(location: TablesLocation, name: str) -> TableStorage:
    """The storage of table ``name`` under ``location``."""
    if location.path is not None:
        return LocalStorage(location.path / name)
    uri = location.table_uri(name)
    handler = DeltaStorageHandler(uri, storage_options(location, name))
    schema = location.catalog_schema
    vended = None if schema is None else partial(unity_tables(schema).credential, name)
    return ObjectStorage(uri, pafs.PyFileSystem(handler), object_store(uri, credentials=vended))


def object_store(uri: str, *, credentials: Callable[[], Any] | None = None) -> ObjectStore:
    """An obstore client of ``uri``, with the location's time limits (``lake/location.py``)
    and the credentials of the environment, as delta-rs reads them, or those ``credentials``
    gives (a table in Unity Catalog: asked again when they are due for renewal)."""
    limits = store_time_limits()
    return from_url(
        uri,
        credential_provider=credentials,
        client_options={
            "connect_timeout": f"{limits.connect_s}s",
            "timeout": f"{limits.request_s}s",
            # A local test server (AWS_ALLOW_HTTP, as delta-rs reads it).
            "allow_http": os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true",
        },
        retry_config={
            "max_retries": int(MAX_RETRIES),
            "retry_timeout": dt.timedelta(seconds=limits.retry_s),
        },
    )


def _commit_name(version: int) -> str:
    return f"_delta_log/{version:020d}.json"


@dataclass(frozen=True)
class LocalStorage:
    """A table directory on this machine's filesystem."""

    root: Path
    filesystem: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem)

    @property
    def uri(self) -> str:
        return str(self.root)

    def path(self, relative: str) -> str:
        return str(self.root / relative)

    def write_parquet(self, relative: str, data: pa.Table, *, dictionary: list[str]) -> int:
        return self.write_parquet_parts(relative, data.schema, [data], dictionary=dictionary)

    def write_parquet_parts(
        self, relative: str, schema: pa.Schema, parts: Iterable[pa.Table], *, dictionary: list[str]
    ) -> int:
        path = self.root / relative
        new_directory = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            _write_parts(handle, schema, parts, dictionary)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        fsync_directory(path.parent)
        if new_directory:
            fsync_directory(path.parent.parent)
        return size

    def parquet_file(self, relative: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.root / relative, pre_buffer=False)

    def delete(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def has_commit(self, version: int) -> bool:
        return (self.root / _commit_name(version)).exists()

    def make_durable(self, versions: range) -> None:
        # delta-rs renames each commit into place without syncing it.
        for version in versions:
            commit = self.root / _commit_name(version)
            if commit.exists():
                fsync_path(commit)
        fsync_directory(self.root / "_delta_log")


@dataclass(frozen=True)
class ObjectStorage:
    """A table on an object store: written through obstore, read through delta-rs's storage
    handler (see the module)."""

    uri: str
    filesystem: pafs.FileSystem
    store: ObjectStore

    def path(self, relative: str) -> str:
        return relative

    def write_parquet(self, relative: str, data: pa.Table, *, dictionary: list[str]) -> int:
        return self.write_parquet_parts(relative, data.schema, [data], dictionary=dictionary)

    def write_parquet_parts(
        self, relative: str, schema: pa.Schema, parts: Iterable[pa.Table], *, dictionary: list[str]
    ) -> int:
        # One PUT when the file fits obstore's buffer (10 MiB), a multipart upload beyond; an
        # object appears only when the writer is closed, so a failure leaves nothing behind.
        upload = open_writer(self.store, relative)
        sink = _CountingSink(upload)
        _write_parts(pa.PythonFile(sink, mode="w"), schema, parts, dictionary)
        upload.close()
        return sink.size

    def parquet_file(self, relative: str) -> pq.ParquetFile:
        # The file is fetched whole (compressed, a few MiB at most) and decoded in batches.
        return pq.ParquetFile(pa.BufferReader(get(self.store, relative).bytes()))

    def delete(self, relative: str) -> None:
        try:
            delete_object(self.store, relative)
        except (FileNotFoundError, NotFoundError):
            return

    def has_commit(self, version: int) -> bool:
        try:
            head(self.store, _commit_name(version))
        except (FileNotFoundError, NotFoundError):
            return False
        return True

    def make_durable(self, versions: range) -> None:
        return


def _write_parts(
    sink: object, schema: pa.Schema, parts: Iterable[pa.Table], dictionary: list[str]
) -> None:
    with pq.ParquetWriter(sink, schema, compression=COMPRESSION, use_dictionary=dictionary) as out:
        for part in parts:
            out.write_table(part)


class _CountingSink:
    """What pyarrow needs of a file to write to obstore's upload: ``write`` and ``tell``."""

    def __init__(self, upload: WritableFile) -> None:
        self._upload = upload
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._upload.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        return

    def close(self) -> None:
        self.closed = True
