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
from collections.abc import Sequence
from pathlib import Path

from deltalake import DeltaTable

from ciolake import __version__
from ciolake.errors import TransientError
from ciolake.fsync import fsync_directory, write_new_file
from ciolake.lake.files import DataFile

CHECKPOINT_INTERVAL = 100


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
        staged = self._log / f".{uuid.uuid4()}.json.tmp"
        write_new_file(staged, entry)
        try:
            version = self._link_next(staged)
        finally:
            staged.unlink(missing_ok=True)
        fsync_directory(self._log)
        if version % CHECKPOINT_INTERVAL == 0:
            DeltaTable(str(self._root)).create_checkpoint()
        return version

    def _link_next(self, staged: Path) -> int:
        while True:
            version = self._version + 1
            try:
                os.link(staged, self._log / f"{version:020d}.json")
            except FileExistsError:
                self._check_compatible(version)
                self._version = version
                continue
            self._version = version
            return version

    def _check_compatible(self, version: int) -> None:
        text = (self._log / f"{version:020d}.json").read_text()
        for line in text.splitlines():
            if line and next(iter(json.loads(line))) in ("metaData", "protocol"):
                raise MetadataChangedError(
                    f"{self._root.name}: version {version} changed the table's metadata"
                )


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
