"""The derivation in Python: the committer's own decoder and row builders over ``raw_events`` rows.

The reference the SQL engines are held to, and what replay runs: a delivery signed too far from
its receipt, or one that cannot be typed, goes to the quarantine; of the typed deliveries of
one event, the earliest (smallest ``received_at``, then journal position) is kept.
"""

from __future__ import annotations

import base64
from collections import defaultdict

import pyarrow as pa

from ciolake.events.decode import Typed, decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import CHANNEL_SPECS, QUARANTINE

_MICROS = 1_000_000


def raw_records(raw: pa.Table) -> list[JournalRecord]:
    """``raw_events`` rows as the journal records they were landed from."""
    received = raw.column("received_at").cast(pa.int64()).to_pylist()
    texts = raw.column("body").to_pylist()
    encoded = raw.column("body_base64").to_pylist()
    return [
        JournalRecord(lsn, received_us, x_cio, 0, _body(text, b64), stream)
        for received_us, x_cio, stream, lsn, text, b64 in zip(
            received,
            raw.column("x_cio_timestamp").to_pylist(),
            raw.column("journal_stream").to_pylist(),
            raw.column("journal_lsn").to_pylist(),
            texts,
            encoded,
            strict=True,
        )
    ]


def _body(text: str, encoded: str | None) -> bytes:
    return text.encode() if encoded is None else base64.b64decode(encoded)


def is_stale(record: JournalRecord, tolerance_s: int) -> bool:
    """Whether a delivery's signed timestamp was outside the tolerance of its receipt."""
    return abs(record.received_at_us / _MICROS - record.x_cio_timestamp) > tolerance_s


def derive_rows(raw: pa.Table, *, tolerance_s: int) -> dict[str, pa.Table]:
    """The channel rows and quarantine records of ``raw_events`` rows, by table.

    Every channel table and the quarantine is in the answer, empty where nothing goes to it.
    """
    quarantined: list[rows.QuarantineItem] = []
    earliest: dict[str, tuple[JournalRecord, Typed]] = {}
    for record in raw_records(raw):
        decoded = decode_event(record.body)
        if is_stale(record, tolerance_s):
            quarantined.append((record, rows.stale_quarantine(decoded, tolerance_s)))
        elif not isinstance(decoded, Typed):
            quarantined.append((record, decoded))
        else:
            kept = earliest.get(decoded.event.event_id)
            if kept is None or _order(record) < _order(kept[0]):
                earliest[decoded.event.event_id] = (record, decoded)
    by_table: dict[str, list[rows.TypedItem]] = defaultdict(list)
    for record, typed in earliest.values():
        by_table[typed.table].append((record, typed))
    derived = {name: rows.channel_table(name, by_table[name]) for name in CHANNEL_SPECS}
    derived[QUARANTINE] = rows.quarantine_table(quarantined)
    return derived


def _order(record: JournalRecord) -> tuple[int, int, int]:
    return (record.received_at_us, record.stream, record.lsn)
