"""Re-derive the channel tables (and, on request, the quarantine) from ``raw_events``.

After an upgrade, a schema fix or a decoder fix, ``raw_events`` still holds every delivery as
received. Replay reads it in Arrow batches, decodes each body with today's code, and upserts the
typed events into their channel tables with a merge keyed by ``event_id`` (and ``event_date``,
the partition), so it adds no row twice and can be run again. The earliest delivery of an event
wins, as it does when the committer writes it. With ``include_quarantine``, quarantined
deliveries that now decode are moved to their channel tables.

Each chunk is applied under the commit lock shared with the running server's committer, so
the server keeps receiving, and the two never both decide an event is new.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from ciolake.dedup import DedupIndex, keep_from_day
from ciolake.events.decode import Typed, decode_event
from ciolake.journal import FLAG_STALE, JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import QUARANTINE, RAW_EVENTS
from ciolake.locks import FileLock, commit_lock_path
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
_SECONDS_PER_DAY = 86_400


@dataclass
class ReplayResult:
    """What a replay did."""

    deliveries: int = 0
    upserted: dict[str, int] = field(default_factory=dict)
    moved_from_quarantine: int = 0
    left_in_quarantine: int = 0
    not_typed: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0


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

    def __init__(self, settings: Settings, *, chunk_rows: int = 100_000) -> None:
        self._settings = settings
        self._root = settings.tables_location.rstrip("/")
        self._chunk_rows = chunk_rows

    def count(self, selection: ReplayRange) -> int:
        """How many deliveries the range holds (for a progress bar)."""
        dataset = DeltaTable(self._uri(RAW_EVENTS)).to_pyarrow_dataset()
        return int(dataset.count_rows(filter=selection.expression()))

    def run(
        self,
        selection: ReplayRange,
        *,
        include_quarantine: bool,
        progress: Callable[[int], None] = lambda _rows: None,
    ) -> ReplayResult:
        """Replay the range; ``progress`` is told how many deliveries each chunk held."""
        started = time.monotonic()
        result = ReplayResult()
        quarantined = self._quarantined_deliveries(selection)
        lock = FileLock(commit_lock_path(self._settings.state_dir))
        dedup = DedupIndex(
            self._settings.state_dir / "dedup.sqlite3",
            window_days=self._settings.dedup_window_days,
            cache_mib=self._settings.dedup_cache_mib,
        )
        try:
            for records in self._chunks(selection):
                with lock:
                    self._apply(records, quarantined, include_quarantine, dedup, result)
                result.deliveries += len(records)
                progress(len(records))
        finally:
            dedup.close()
            lock.close()
        result.seconds = time.monotonic() - started
        return result

    def _uri(self, table: str) -> str:
        return f"{self._root}/{table}"

    def _quarantined_deliveries(self, selection: ReplayRange) -> set[tuple[int, int]]:
        dataset = DeltaTable(self._uri(QUARANTINE)).to_pyarrow_dataset()
        keys = dataset.to_table(
            columns=["journal_stream", "journal_lsn"], filter=selection.expression()
        )
        return set(
            zip(
                keys.column("journal_stream").to_pylist(),
                keys.column("journal_lsn").to_pylist(),
                strict=True,
            )
        )

    def _chunks(self, selection: ReplayRange) -> Iterator[list[JournalRecord]]:
        dataset = DeltaTable(self._uri(RAW_EVENTS)).to_pyarrow_dataset()
        scanner = dataset.scanner(
            columns=_RAW_COLUMNS, filter=selection.expression(), batch_size=self._chunk_rows
        )
        for batch in scanner.to_batches():
            if batch.num_rows:
                yield self._records(batch)

    def _records(self, batch: pa.RecordBatch) -> list[JournalRecord]:
        tolerance = self._settings.timestamp_tolerance_s
        received = batch.column("received_at").cast(pa.int64()).to_pylist()
        signed = batch.column("x_cio_timestamp").to_pylist()
        bodies = [
            base64.b64decode(b64) if b64 is not None else text.encode()
            for text, b64 in zip(
                batch.column("body").to_pylist(),
                batch.column("body_base64").to_pylist(),
                strict=True,
            )
        ]
        return [
            JournalRecord(
                lsn=lsn,
                received_at_us=at,
                x_cio_timestamp=ts,
                flags=FLAG_STALE if abs(at / 1_000_000 - ts) > tolerance else 0,
                body=body,
                stream=stream,
            )
            for at, ts, body, stream, lsn in zip(
                received,
                signed,
                bodies,
                batch.column("journal_stream").to_pylist(),
                batch.column("journal_lsn").to_pylist(),
                strict=True,
            )
        ]

    def _apply(
        self,
        records: list[JournalRecord],
        quarantined: set[tuple[int, int]],
        include_quarantine: bool,
        dedup: DedupIndex,
        result: ReplayResult,
    ) -> None:
        first: dict[str, rows.TypedItem] = {}
        moved: list[JournalRecord] = []
        for record in records:
            typed = decode_event(record.body)
            in_quarantine = (record.stream, record.lsn) in quarantined
            if not isinstance(typed, Typed) or record.stale:
                result.not_typed += 1
                result.left_in_quarantine += in_quarantine
                continue
            if in_quarantine:
                if not include_quarantine:
                    result.left_in_quarantine += 1
                    continue
                moved.append(record)
            earlier = first.get(typed.event.event_id)
            if earlier is None or record.received_at_us < earlier[0].received_at_us:
                first[typed.event.event_id] = (record, typed)
        by_table: dict[str, list[rows.TypedItem]] = {}
        for item in first.values():
            by_table.setdefault(item[1].table, []).append(item)
        for table, items in by_table.items():
            self._upsert(table, rows.channel_table(table, items))
            result.upserted[table] = result.upserted.get(table, 0) + len(items)
        dedup.record(
            (
                (event_id, keep_from_day(record.received_at_us, typed.event.timestamp))
                for event_id, (record, typed) in first.items()
            ),
            applied={},
        )
        if moved:
            self._remove_from_quarantine(moved)
            result.moved_from_quarantine += len(moved)

    def _upsert(self, table: str, source: pa.Table) -> None:
        (
            DeltaTable(self._uri(table))
            .merge(
                source,
                predicate="t.event_id = s.event_id AND t.event_date = s.event_date",
                source_alias="s",
                target_alias="t",
            )
            .when_matched_update_all(predicate="s.received_at <= t.received_at")
            .when_not_matched_insert_all()
            .execute()
        )

    def _remove_from_quarantine(self, moved: list[JournalRecord]) -> None:
        keys = pa.table(
            {
                "received_date": pa.array(
                    [r.received_at_us // (_SECONDS_PER_DAY * 1_000_000) for r in moved],
                    pa.date32(),
                ),
                "journal_stream": pa.array([r.stream for r in moved], pa.int64()),
                "journal_lsn": pa.array([r.lsn for r in moved], pa.int64()),
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
