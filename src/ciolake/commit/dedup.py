"""The exactly-once index: which event ids already have a row in their channel table.

A SQLite file (stdlib, one writer: the committer thread) keyed by event id. Each id is kept for
``window_days`` after the later of its receipt and its event time, which covers Customer.io's
7-day retry period; older ids are pruned by day, through an index, once an hour. Memory is
bounded by SQLite's page cache (``cache_mib``) whatever the volume; the disk holds about
60 bytes per distinct event of the window.

The same transaction that records a batch's ids also records, per journal stream, the batch's
last sequence number (the applied watermark): the committer writes it after the Delta commits,
so after a crash every journaled delivery above it is applied again, idempotently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ciolake.units import SECONDS_PER_DAY

_DERIVED_VERSION = "derived_version"
# SQLite's default limit on bound parameters in old builds is 999.
_CHUNK = 900
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, day INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS seen_by_day ON seen (day)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


def keep_from_day(received_at_us: int, event_timestamp: int) -> int:
    """The day an id's window starts: the later of its receipt and its event time."""
    received_day = received_at_us // (SECONDS_PER_DAY * 1_000_000)
    return max(received_day, event_timestamp // SECONDS_PER_DAY)


class DedupIndex:
    """Persistent, bounded set of event ids seen within the window."""

    def __init__(self, path: Path, *, window_days: int, cache_mib: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._window_days = window_days
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: the applied watermark must be as durable as the Delta commits before it.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
        self._db.execute("PRAGMA mmap_size=0")
        # replay writes from another process, between the committer's batches.
        self._db.execute("PRAGMA busy_timeout=30000")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def applied_lsn(self, stream: int) -> int:
        """The last sequence number of journal ``stream`` fully applied (0 if none)."""
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (f"applied_lsn:{stream}",)
        ).fetchone()
        return int(row[0]) if row else 0

    def streams(self) -> list[int]:
        """Journal streams with an applied watermark."""
        rows = self._db.execute("SELECT key FROM meta WHERE key LIKE 'applied_lsn:%'")
        return sorted(int(key.split(":", 1)[1]) for (key,) in rows)

    def derived_version(self) -> int:
        """The last ``raw_events`` version whose deliveries every derived table holds (the
        deriver's position; -1 if none)."""
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (_DERIVED_VERSION,)
        ).fetchone()
        return int(row[0]) if row else -1

    def save_derived_version(self, version: int) -> None:
        """Record the deriver's position (see ``derived_version``)."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            (_DERIVED_VERSION, version),
        )

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        """The subset of ``event_ids`` already recorded."""
        found: set[str] = set()
        for start in range(0, len(event_ids), _CHUNK):
            chunk = event_ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT event_id FROM seen WHERE event_id IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    def record(self, entries: Iterable[tuple[str, int]], *, applied: Mapping[int, int]) -> None:
        """Record (event id, day) pairs and the applied watermarks in one transaction.

        Args:
            entries: each event id with the day number (days since 1970-01-01) it is kept from.
            applied: per journal stream, the last sequence number of the batch.
        """
        with self._transaction():
            self._db.executemany(
                "INSERT INTO seen (event_id, day) VALUES (?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET day = max(day, excluded.day)",
                entries,
            )
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                [(f"applied_lsn:{stream}", lsn) for stream, lsn in applied.items()],
            )

    def prune(self, *, today: int) -> int:
        """Forget ids whose window has passed; return how many were removed."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM seen WHERE day < ?", (today - self._window_days,)
            )
        return cursor.rowcount

    def count(self) -> int:
        """How many ids the index holds."""
        return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
