"""Turn journaled deliveries and their decoded events into Arrow tables, column by column."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pyarrow as pa

from ciolake.events.decode import Quarantined, Typed
from ciolake.events.model import CommonData, PushRecipient
from ciolake.journal import JournalRecord
from ciolake.lake.tables import ALL_SPECS, QUARANTINE_SPEC, RAW_SPEC

_SECONDS_PER_DAY = 86_400
_MICROS = 1_000_000

TypedItem = tuple[JournalRecord, Typed]
QuarantineItem = tuple[JournalRecord, Quarantined]
RawItem = tuple[JournalRecord, Typed | Quarantined]

_ENVELOPE: dict[str, Callable[[JournalRecord, Typed], Any]] = {
    "event_id": lambda r, t: t.event.event_id,
    "object_type": lambda r, t: t.object_type,
    "metric": lambda r, t: t.event.metric,
    "timestamp": lambda r, t: t.event.timestamp,
    "event_time": lambda r, t: t.event.timestamp * _MICROS,
    "event_date": lambda r, t: t.event.timestamp // _SECONDS_PER_DAY,
    "received_at": lambda r, t: r.received_at_us,
    "origin": lambda r, t: t.origin,
    "spec_schema": lambda r, t: t.schema,
    "spec_violations": lambda r, t: t.spec_violations,
    "payload": lambda r, t: body_text(r.body)[0],
    "journal_stream": lambda r, t: r.stream,
    "journal_lsn": lambda r, t: r.lsn,
}
_IDENTIFIER_COLUMNS = {
    "identifier_id": "id",
    "identifier_email": "email",
    "identifier_cio_id": "cio_id",
    "identifier_phone": "phone",
}


def body_text(body: bytes) -> tuple[str, str | None]:
    """The body as text, and its base64 form when it is not valid UTF-8 (else None)."""
    try:
        return body.decode(), None
    except UnicodeDecodeError:
        return body.decode(errors="replace"), base64.b64encode(body).decode()


def channel_table(table: str, items: Sequence[TypedItem]) -> pa.Table:
    """Rows of one channel table, one per typed event."""
    schema = ALL_SPECS[table].schema
    columns = {field.name: _column(field.name, items) for field in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def _column(name: str, items: Sequence[TypedItem]) -> list[Any]:
    if name in _ENVELOPE:
        extract = _ENVELOPE[name]
        return [extract(r, t) for r, t in items]
    if name in _IDENTIFIER_COLUMNS:
        key = _IDENTIFIER_COLUMNS[name]
        return [_identifier(t, key) for _r, t in items]
    return [_data_value(_data(t), name) for _r, t in items]


def _data(typed: Typed) -> CommonData:
    data: CommonData = typed.event.data  # type: ignore[attr-defined]
    return data


def _identifier(typed: Typed, key: str) -> str | None:
    identifiers = _data(typed).identifiers
    return None if identifiers is None else getattr(identifiers, key)


def _data_value(data: CommonData, name: str) -> Any:
    value = getattr(data, name, None)
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list) and value and isinstance(value[0], PushRecipient):
        return msgspec.to_builtins(value)
    return value


def raw_table(items: Sequence[RawItem]) -> pa.Table:
    """Rows of ``raw_events``: every delivery, duplicates included."""
    texts = [body_text(r.body) for r, _d in items]
    columns = {
        **_delivery_columns(items),
        "event_id": [_decoded_field(d, "event_id") for _r, d in items],
        "object_type": [d.object_type for _r, d in items],
        "metric": [_decoded_field(d, "metric") for _r, d in items],
        "body": [text for text, _b64 in texts],
        "body_base64": [b64 for _text, b64 in texts],
    }
    return pa.Table.from_pydict(columns, schema=RAW_SPEC.schema)


def quarantine_table(items: Sequence[QuarantineItem]) -> pa.Table:
    """Rows of ``quarantine``: deliveries that could not be typed, with the reason."""
    texts = [body_text(r.body) for r, _q in items]
    columns = {
        **_delivery_columns(items),
        "reason": [q.reason for _r, q in items],
        "detail": [q.detail for _r, q in items],
        "event_id": [q.event_id for _r, q in items],
        "object_type": [q.object_type for _r, q in items],
        "metric": [q.metric for _r, q in items],
        "body": [text for text, _b64 in texts],
        "body_base64": [b64 for _text, b64 in texts],
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
