"""Turn journaled deliveries and their decoded events into Arrow tables, column by column."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from ciolake.events.decode import Quarantined, Typed
from ciolake.journal import JournalRecord
from ciolake.lake.tables import ALL_SPECS, CHANNEL_SPECS, QUARANTINE_SPEC, RAW_SPEC

_SECONDS_PER_DAY = 86_400
_MICROS = 1_000_000

TypedItem = tuple[JournalRecord, Typed]
QuarantineItem = tuple[JournalRecord, Quarantined]
RawItem = tuple[JournalRecord, Typed | Quarantined]

_IDENTIFIER_COLUMNS = {
    "identifier_id": "id",
    "identifier_email": "email",
    "identifier_cio_id": "cio_id",
    "identifier_phone": "phone",
}
_ENVELOPE_COLUMNS = frozenset(
    {
        "event_id",
        "object_type",
        "metric",
        "timestamp",
        "event_time",
        "event_date",
        "received_at",
        "origin",
        "spec_schema",
        "spec_violations",
        "payload",
        "journal_stream",
        "journal_lsn",
        *_IDENTIFIER_COLUMNS,
    }
)
_IDENTIFIERS = pa.struct([(key, pa.string()) for key in _IDENTIFIER_COLUMNS.values()])


def _data_type(table: str) -> pa.StructType:
    fields = [f for f in ALL_SPECS[table].schema if f.name not in _ENVELOPE_COLUMNS]
    return pa.struct([*fields, pa.field("identifiers", _IDENTIFIERS)])


# The Arrow type of each channel table's ``data`` columns, as dicts from msgspec convert to it.
_DATA_TYPES = {table: _data_type(table) for table in CHANNEL_SPECS}


def body_text(body: bytes) -> tuple[str, str | None]:
    """The body as text, and its base64 form when it is not valid UTF-8 (else None)."""
    try:
        return body.decode(), None
    except UnicodeDecodeError:
        return body.decode(errors="replace"), base64.b64encode(body).decode()


def body_columns(bodies: Sequence[bytes]) -> tuple[pa.Array, pa.Array]:
    """Bodies as a string column, and a base64 column (null where the text is exact).

    Built by Arrow from the bytes: its UTF-8 check is one pass in C, where decoding each body
    to a Python string first cost a copy of every body. Only a batch holding a body that is
    not UTF-8 (rare: it cannot be typed) is converted row by row.
    """
    raw = pa.array(bodies, pa.binary())
    try:
        return raw.cast(pa.string()), pa.nulls(len(bodies), pa.string())
    except pa.ArrowInvalid:
        texts = [body_text(body) for body in bodies]
        return pa.array([t for t, _b in texts], pa.string()), pa.array(
            [b for _t, b in texts], pa.string()
        )


def channel_table(table: str, items: Sequence[TypedItem]) -> pa.Table:
    """Rows of one channel table, one per typed event.

    ``data`` becomes plain dicts in one msgspec call and an Arrow struct array in one pyarrow
    call; its fields are the columns. This runs for every event, so no Python runs per cell.
    """
    schema = ALL_SPECS[table].schema
    datas = msgspec.to_builtins([t.event.data for _r, t in items])  # type: ignore[attr-defined]
    data = pa.array(datas, type=_DATA_TYPES[table])
    columns: dict[str, Any] = _envelope_columns(items)
    identifiers = data.field("identifiers")
    for name, key in _IDENTIFIER_COLUMNS.items():
        # pc.struct_field, unlike .field(), keeps the rows where identifiers is null null.
        columns[name] = pc.struct_field(identifiers, key)
    for field in schema:
        if field.name not in columns:
            columns[field.name] = data.field(field.name)
    return pa.Table.from_pydict(columns, schema=schema)


def _envelope_columns(items: Sequence[TypedItem]) -> dict[str, Any]:
    events = [t.event for _r, t in items]
    timestamps = [e.timestamp for e in events]
    return {
        "event_id": [e.event_id for e in events],
        "object_type": [t.object_type for _r, t in items],
        "metric": [e.metric for e in events],
        "timestamp": timestamps,
        "event_time": [ts * _MICROS for ts in timestamps],
        "event_date": [ts // _SECONDS_PER_DAY for ts in timestamps],
        "received_at": [r.received_at_us for r, _t in items],
        "origin": [t.origin for _r, t in items],
        "spec_schema": [t.schema for _r, t in items],
        "spec_violations": [t.spec_violations for _r, t in items],
        "payload": body_columns([r.body for r, _t in items])[0],
        "journal_stream": [r.stream for r, _t in items],
        "journal_lsn": [r.lsn for r, _t in items],
    }


def raw_table(items: Sequence[RawItem]) -> pa.Table:
    """Rows of ``raw_events``: every delivery, duplicates included."""
    text, base64_text = body_columns([r.body for r, _d in items])
    columns = {
        **_delivery_columns(items),
        "event_id": [_decoded_field(d, "event_id") for _r, d in items],
        "object_type": [d.object_type for _r, d in items],
        "metric": [_decoded_field(d, "metric") for _r, d in items],
        "body": text,
        "body_base64": base64_text,
    }
    return pa.Table.from_pydict(columns, schema=RAW_SPEC.schema)


def quarantine_table(items: Sequence[QuarantineItem]) -> pa.Table:
    """Rows of ``quarantine``: deliveries that could not be typed, with the reason."""
    text, base64_text = body_columns([r.body for r, _q in items])
    columns = {
        **_delivery_columns(items),
        "reason": [q.reason for _r, q in items],
        "detail": [q.detail for _r, q in items],
        "event_id": [q.event_id for _r, q in items],
        "object_type": [q.object_type for _r, q in items],
        "metric": [q.metric for _r, q in items],
        "body": text,
        "body_base64": base64_text,
    }
    return pa.Table.from_pydict(columns, schema=QUARANTINE_SPEC.schema)


def _delivery_columns(items: Sequence[tuple[JournalRecord, Any]]) -> dict[str, list[Any]]:
    return {
        "received_at": [r.received_at_us for r, _x in items],
        "received_date": [r.received_at_us // (_SECONDS_PER_DAY * _MICROS) for r, _x in items],
        "x_cio_timestamp": [r.x_cio_timestamp for r, _x in items],
        "journal_stream": [r.stream for r, _x in items],
        "journal_lsn": [r.lsn for r, _x in items],
    }


def _decoded_field(decoded: Typed | Quarantined, name: str) -> str | None:
    if isinstance(decoded, Typed):
        value: str = getattr(decoded.event, name)
        return value
    result: str | None = getattr(decoded, name)
    return result


def stale_quarantine(typed_or_not: Typed | Quarantined, tolerance_s: int) -> Quarantined:
    """The quarantine entry of a delivery whose signed timestamp was outside the tolerance."""
    detail = f"X-CIO-Timestamp more than {tolerance_s}s from the time of receipt"
    if isinstance(typed_or_not, Typed):
        return Quarantined(
            reason="stale_timestamp",
            detail=detail,
            event_id=typed_or_not.event.event_id,
            object_type=typed_or_not.object_type,
            metric=typed_or_not.event.metric,
        )
    return Quarantined(
        reason="stale_timestamp",
        detail=f"{detail}; also {typed_or_not.reason}: {typed_or_not.detail}",
        event_id=typed_or_not.event_id,
        object_type=typed_or_not.object_type,
        metric=typed_or_not.metric,
    )
