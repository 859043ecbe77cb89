"""Blind-append commits to a local Delta table's log, written directly.

delta-rs spends about 20 ms of CPU on each commit (the commit itself and the snapshot update
after it), whatever its size; with a commit per table per batch that was a third of the
server's CPU under load. A blind append (new files, no reads, no schema change) needs only
one new JSON file in ``_delta_log``, created if absent, as the Delta protocol asks of a
filesystem without atomic rename-if-absent: ``os.link`` fails if the version exists.

If another writer took the version first (``ciolake compact`` or replay, which go through
delta-rs), its commit is read: files it added or removed do not conflict with a blind append,
so the append moves to the next version. A change of metadata or protocol does conflict, and
is left to delta-rs (``MetadataChangedError``). Every ``CHECKPOINT_INTERVAL`` versions a
checkpoint is written with delta-rs, as delta-rs itself would after its own commits.
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ciolake import __version__
from ciolake.errors import TransientError
from ciolake.journal.fsync import fsync_directory, write_new_file
from ciolake.lake.delta import DeltaTable
from ciolake.lake.files import DataFile

CHECKPOINT_INTERVAL = 100


def checkpoint_due(table_root: Path, version: int) -> bool:
    """Whether a checkpoint follows ``version`` of the table: one every
    ``CHECKPOINT_INTERVAL`` versions, at an offset of its own per table.

    The server commits to every table in the same batch, so at a shared offset all of them
    would checkpoint together: a burst of CPU, and each loads its whole table state at once.
    """
    offset = zlib.crc32(table_root.name.encode()) % CHECKPOINT_INTERVAL
    return version % CHECKPOINT_INTERVAL == offset


class MetadataChangedError(TransientError):
    """Another writer changed the table's metadata or protocol since it was last read."""


class LocalDeltaLog:
    """The log of one Delta table on the local filesystem, appended to by this process."""

    def __init__(self, table_root: Path, *, version: int) -> None:
        """Args:
        table_root: the table's directory.
        version: the table's latest version, as last read.
        """
        self._root = table_root
        self._log = table_root / "_delta_log"
        self._version = version

    @property
    def version(self) -> int:
        """The latest version this log has written or seen."""
        return self._version

    def append(
        self,
        files: Sequence[DataFile],
        *,
        transactions: Sequence[tuple[str, int]],
        partition_by: str,
        now_ms: int,
    ) -> int:
        """Commit ``files`` and the app transactions in the next free version; return it.

        Raises:
            MetadataChangedError: a commit since the last one seen changed metadata or
                protocol; nothing was committed.
        """
        entry = _commit_text(files, transactions, partition_by=partition_by, now_ms=now_ms)
        self._version = _commit_after(self._root, self._version, entry, removed=frozenset())
        return self._version


def _commit_text(
    files: Sequence[DataFile],
    transactions: Sequence[tuple[str, int]],
    *,
    partition_by: str,
    now_ms: int,
) -> bytes:
    info = {
        "commitInfo": {
            "timestamp": now_ms,
            "operation": "WRITE",
            "operationParameters": {"mode": "Append", "partitionBy": json.dumps([partition_by])},
            "isBlindAppend": True,
            "engineInfo": f"ciolake/{__version__}",
        }
    }
    lines = [info, *(f.add_entry() for f in files)]
    lines += [{"txn": {"appId": a, "version": v, "lastUpdated": now_ms}} for a, v in transactions]
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


class ConcurrentRemoveError(TransientError):
    """Another writer removed a file that this commit also removes (e.g. compaction)."""


@dataclass(frozen=True, slots=True)
class RemovedFile:
    """A data file a commit takes out of the table, as its ``add`` action described it."""

    path: str
    size: int
    partition_values: dict[str, str | None]

    def remove_entry(self, now_ms: int) -> dict[str, Any]:
        """The file's ``remove`` action as a Delta log line."""
        return {
            "remove": {
                "path": self.path,
                "deletionTimestamp": now_ms,
                "dataChange": True,
                "extendedFileMetadata": True,
                "partitionValues": self.partition_values,
                "size": self.size,
            }
        }


def commit_rewrite(
    table_root: Path,
    *,
    read_version: int,
    removes: Sequence[RemovedFile],
    adds: Sequence[DataFile],
    operation: str,
    now_ms: int,
) -> int:
    """Commit, in one version, files taken out of a local table and files put in; return it.

    The commit goes in the first free version after ``read_version`` (the version the
    removed files were read at). Commits in between are checked as delta-rs would: one that
    changed metadata or protocol, or removed one of the same files (compaction rewrote it,
    so its rows now live elsewhere too), conflicts, and nothing is committed.

    Raises:
        MetadataChangedError: a commit since ``read_version`` changed metadata or protocol.
        ConcurrentRemoveError: a commit since ``read_version`` removed one of ``removes``.
    """
    info = {
        "commitInfo": {
            "timestamp": now_ms,
            "operation": operation,
            "operationParameters": {},
            "readVersion": read_version,
            "isBlindAppend": not removes,
            "engineInfo": f"ciolake/{__version__}",
        }
    }
    lines = [info, *(r.remove_entry(now_ms) for r in removes), *(f.add_entry() for f in adds)]
    entry = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
    return _commit_after(
        table_root, read_version, entry, removed=frozenset(r.path for r in removes)
    )


def _commit_after(table_root: Path, version: int, entry: bytes, *, removed: frozenset[str]) -> int:
    """Create ``entry`` as the first free version after ``version``; return that version.

    Versions taken meanwhile are checked (``_check_no_conflict``); a checkpoint follows when
    one is due.
    """
    log = table_root / "_delta_log"
    staged = log / f".{uuid.uuid4()}.json.tmp"
    write_new_file(staged, entry)
    try:
        while True:
            version += 1
            try:
                os.link(staged, log / f"{version:020d}.json")
                break
            except FileExistsError:
                _check_no_conflict(table_root, version, removed)
    finally:
        staged.unlink(missing_ok=True)
    fsync_directory(log)
    if checkpoint_due(table_root, version):
        DeltaTable(str(table_root)).create_checkpoint()
    return version


def _check_no_conflict(table_root: Path, version: int, removed: frozenset[str]) -> None:
    text = (table_root / "_delta_log" / f"{version:020d}.json").read_text()
    for line in text.splitlines():
        if not line:
            continue
        action = json.loads(line)
        kind = next(iter(action))
        if kind in ("metaData", "protocol"):
            raise MetadataChangedError(
                f"{table_root.name}: version {version} changed the table's metadata"
            )
        if kind == "remove" and unquote(action["remove"]["path"]) in removed:
            raise ConcurrentRemoveError(
                f"{table_root.name}: version {version} removed a file this commit rewrites"
            )
