"""Table maintenance without Spark: compact small files per date partition, checkpoint, vacuum.

Safe while the server writes: compaction rewrites files with ``dataChange=false`` and retries
when a concurrent commit wins the race; vacuum only deletes files no snapshot younger than
the retention refers to.

The log is cleaned here too: after its checkpoint, each table's commit files older than its
``delta.logRetentionDuration`` (30 days by default) that precede a checkpoint as old are
deleted, as Spark does, so every version younger than the retention can still be read. The
committer's own commits leave that to this pass, which the server runs every
``CIOLAKE_COMPACT_INTERVAL_S`` (lake/transactions.py says why).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from ciolake.errors import InputError
from ciolake.lake.delta import CommitFailedError, DeltaTable, WriterProperties
from ciolake.lake.health import open_table, open_tables, store_errors
from ciolake.lake.location import TablesLocation, parse_location, storage_options
from ciolake.lake.tables import ALL_SPECS
from ciolake.settings import MAX_RETENTION_HOURS

logger = logging.getLogger(__name__)

_ATTEMPTS = 5
# Parquet files of about this size are a good unit for every Delta reader.
TARGET_FILE_BYTES = 128 * 1024 * 1024
# Rows per row group of a compacted file. delta-rs's default puts a whole partition in one row
# group, which a reader decodes whole: replay held 1.5 GiB for a partition of 137,000 email
# rows. 8,192 email rows are ~70 MB decoded, the size Spark's writer aims for.
ROW_GROUP_ROWS = 8_192


@dataclass(frozen=True)
class CompactionResult:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    files_removed: int
    files_added: int
    vacuumed: int
    # False for a table not created yet: nothing was done to it.
    exists: bool = True


def compact_table(
    tables_uri: str,
    table: str,
    *,
    before: dt.date | None,
    retention_hours: int,
) -> CompactionResult:
    """Compact, checkpoint and vacuum one table (nothing if it does not exist yet).

    Args:
        tables_uri: where the tables live.
        table: which table.
        before: compact only partitions dated before this day (None: every partition).
        retention_hours: vacuum data files unreferenced for longer than this.

    Raises:
        InputError: the location is malformed, or the retention is out of range.
        TableUnreadableError: the table's log is missing (its data files remain) or damaged.
        StoreUnavailableError: the object store cannot be reached.
    """
    _check_retention(retention_hours)
    location = parse_location(tables_uri)
    opened = open_table(location, table)
    if opened is None:
        return CompactionResult(table, 0, 0, 0, 0, 0, exists=False)
    with store_errors(location, table):
        return _compacted(location, table, opened, before, retention_hours)


def _compacted(
    location: TablesLocation,
    table: str,
    opened: DeltaTable,
    before: dt.date | None,
    retention_hours: int,
) -> CompactionResult:
    uri = location.table_uri(table)
    options = storage_options(location, table)
    column = ALL_SPECS[table].partition_by
    filters = [(column, "<", before.isoformat())] if before else None
    files_before = len(opened.file_uris())
    metrics = _compact_with_retries(uri, filters, options)
    current = DeltaTable(uri, storage_options=options)
    current.create_checkpoint()
    # The committer leaves expired log files to this (see lake/transactions.py).
    current.cleanup_metadata()
    vacuumed = current.vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
    )
    return CompactionResult(
        table=table,
        files_before=files_before,
        files_after=len(DeltaTable(uri, storage_options=options).file_uris()),
        files_removed=_count(metrics, "numFilesRemoved"),
        files_added=_count(metrics, "numFilesAdded"),
        vacuumed=len(vacuumed),
    )


def _check_retention(hours: int) -> None:
    # delta-rs's vacuum panics on durations past its arithmetic (see MAX_RETENTION_HOURS).
    if not 0 <= hours <= MAX_RETENTION_HOURS:
        raise InputError(
            f"the vacuum retention must be 0 to {MAX_RETENTION_HOURS:,} hours, got {hours:,}"
        )


def _count(metrics: dict[str, object], name: str) -> int:
    value = metrics.get(name, 0)
    return value if isinstance(value, int) else 0


def _compact_with_retries(
    uri: str, filters: list[tuple[str, str, str]] | None, options: dict[str, str]
) -> dict[str, object]:
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            table = DeltaTable(uri, storage_options=options)
            result: dict[str, object] = table.optimize.compact(
                partition_filters=filters,
                target_size=TARGET_FILE_BYTES,
                writer_properties=WriterProperties(
                    max_row_group_size=ROW_GROUP_ROWS,
                    # Given writer properties, delta-rs writes uncompressed unless told.
                    compression="ZSTD",
                ),
            )
            return result
        except CommitFailedError:
            # The committer appended meanwhile; start again from the new version.
            if attempt == _ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def compact_all(
    tables_uri: str,
    *,
    tables: list[str] | None,
    before: dt.date | None,
    retention_hours: int,
) -> list[CompactionResult]:
    """Run ``compact_table`` on each named table (every table when None).

    Every table is checked before any is compacted, so a damaged one stops the run before
    it starts.

    Raises:
        InputError, TableUnreadableError, StoreUnavailableError: as ``compact_table``.
    """
    _check_retention(retention_hours)
    names = tables or list(ALL_SPECS)
    open_tables(parse_location(tables_uri), names=names)
    return [
        compact_table(tables_uri, name, before=before, retention_hours=retention_hours)
        for name in names
    ]


def closed_days_before(now: float) -> dt.date:
    """Today's UTC date: every partition before it is a closed day."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def compact_closed_days(tables_uri: str, *, now: float, retention_hours: int) -> None:
    """Background maintenance: compact every table's closed days, logging what it did."""
    started = time.monotonic()
    results = compact_all(
        tables_uri, tables=None, before=closed_days_before(now), retention_hours=retention_hours
    )
    logger.info(
        "tables compacted",
        extra={
            "seconds": round(time.monotonic() - started, 3),
            "files_removed": sum(r.files_removed for r in results),
            "files_added": sum(r.files_added for r in results),
            "vacuumed": sum(r.vacuumed for r in results),
        },
    )
