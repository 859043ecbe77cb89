"""Turn journaled deliveries and their decoded events into Arrow tables, column by column."""

from __future__ import annotations

import array
import base64
import itertools
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from ciolake.events.decode import Quarantined, Typed
from ciolake.events.definition import stale_detail
from ciolake.journal.records import JournalRecord
from ciolake.lake.tables import (
    ALL_SPECS,
    CHANNEL_SPECS,
    QUARANTINE_SPEC,
    RAW_SPEC,
    TEXT_LIST,
)
from ciolake.units import SECONDS_PER_DAY

_MICROS = 1_000_000
_MAX_STRING_BYTES = 2**31  # Arrow's string offsets are int32
# Arrow scalars, not Python ints: given a Python number, each pyarrow.compute call tries to
# import numpy (absent here) and took 65 us instead of 6.
_DAY_SECONDS = pa.scalar(SECONDS_PER_DAY, pa.int64())
_SECOND_MICROS = pa.scalar(_MICROS, pa.int64())

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
        "source",
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


def _joined_text(bodies: Sequence[bytes]) -> pa.Array:
    offsets = array.array("q", [0])
    offsets.extend(itertools.accumulate(map(len, bodies)))
    kind = pa.string() if offsets[-1] < _MAX_STRING_BYTES else pa.large_string()
    if kind == pa.string():
        offsets = array.array("i", offsets)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(bodies))]
    text = pa.Array.from_buffers(kind, len(bodies), buffers)
    text.validate(full=True)  # raises ArrowInvalid unless every body is UTF-8
    return text.cast(pa.string())


def body_columns(bodies: Sequence[bytes]) -> tuple[pa.Array, pa.Array]:
    """Bodies as a string column, and a base64 column (null where the text is exact).

    The column is laid over one joined copy of the bytes, and Arrow checks it is UTF-8 in one
    pass in C. Decoding each body to a Python string, or Arrow's array builder (which grows
    its buffer by doubling), each cost another copy or two of every body. Only a batch holding
    a body that is not UTF-8 (rare: it cannot be typed) is converted row by row.
    """
    try:
        return _joined_text(bodies), pa.nulls(len(bodies), pa.string())
    except pa.ArrowInvalid:
        texts = [body_text(body) for body in bodies]
        return pa.array([t for t, _b in texts], pa.string()), pa.array(
            [b for _t, b in texts], pa.string()
        )


def channel_table(table: str, items: Sequence[TypedItem]) -> pa.Table:
    """Rows of one channel table, one per typed event (as the committer writes them)."""
    records = [r for r, _t in items]
    return channel_table_of(
        table,
        [t for _r, t in items],
        received_at=pa.array([r.received_at_us for r in records], pa.int64()),
        journal_stream=pa.array([r.stream for r in records], pa.int64()),
        journal_lsn=pa.array([r.lsn for r in records], pa.int64()),
        payload=body_columns([r.body for r in records])[0],
    )


def channel_table_of(
    table: str,
    typed: Sequence[Typed],
    *,
    received_at: pa.Array,
    journal_stream: pa.Array,
    journal_lsn: pa.Array,
    payload: pa.Array,
) -> pa.Table:
    """Rows of one channel table, from decoded events and their deliveries' Arrow columns.

    ``data`` becomes plain dicts in one msgspec call and an Arrow struct array in one pyarrow
    call; its fields are the columns. The event's time and date are computed by Arrow. Replay
    passes the delivery columns as ``raw_events`` holds them; the committer builds them from
    its journal records (``channel_table``). No Python runs per cell.

    Args:
        table: the channel table.
        typed: one decoded event per row.
        received_at: each row's receipt time (timestamp or int64 microseconds).
        journal_stream: each row's journal stream.
        journal_lsn: each row's journal sequence number.
        payload: each row's body as text.
    """
    schema = ALL_SPECS[table].schema
    events = [t.event for t in typed]
    datas = msgspec.to_builtins([e.data for e in events])  # type: ignore[attr-defined]
    data = pa.array(datas, type=_DATA_TYPES[table])
    timestamps = pa.array([e.timestamp for e in events], pa.int64())
    # The decoder only types timestamps in 0..MAX_TIMESTAMP, so truncating division floors.
    days = pc.divide(timestamps, _DAY_SECONDS).cast(pa.int32())
    columns: dict[str, Any] = {
        "event_id": pa.array([e.event_id for e in events], pa.string()),
        "object_type": pa.array([t.object_type for t in typed], pa.string()),
        "metric": pa.array([e.metric for e in events], pa.string()),
        "timestamp": timestamps,
        "event_time": pc.multiply(timestamps, _SECOND_MICROS).cast(schema.field("event_time").type),
        "event_date": days.cast(pa.date32()),
        "received_at": received_at.cast(pa.int64()).cast(schema.field("received_at").type),
        "origin": pa.array([t.origin for t in typed], pa.string()),
        "spec_schema": pa.array([t.schema for t in typed], pa.string()),
        "spec_violations": pa.array([t.spec_violations for t in typed], TEXT_LIST),
        "payload": payload.cast(pa.string()),
        "journal_stream": journal_stream.cast(pa.int64()),
        "journal_lsn": journal_lsn.cast(pa.int64()),
        "source": pa.nulls(len(events), pa.string()),
    }
    identifiers = data.field("identifiers")
    for name, key in _IDENTIFIER_COLUMNS.items():
        # pc.struct_field, unlike .field(), keeps the rows where identifiers is null null.
        columns[name] = pc.struct_field(identifiers, key)
    for field in schema:
        if field.name not in columns:
            columns[field.name] = data.field(field.name)
    return pa.Table.from_pydict(columns, schema=schema)


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
        "received_date": [r.received_at_us // (SECONDS_PER_DAY * _MICROS) for r, _x in items],
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
    detail = stale_detail(tolerance_s)
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
