"""Decode a raw body into a typed event, route it, and list what breaks the spec.

The fast path is one msgspec decode into the tagged union, with JSON types exactly as the model
declares them. Anything it rejects takes the slow path, which finds out why, by the rules of
``events.definition`` (which DuckDB and Spark follow too): not JSON, a broken envelope or an
unknown object type go to quarantine; a ``data`` field of the wrong type is dropped from the
typed columns (it stays in the payload) and listed in ``spec_violations``, because an authentic
event is never thrown away.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from ciolake.events.definition import (
    BAD_DATA,
    BAD_EVENT_ID,
    BAD_METRIC,
    BAD_OBJECT_TYPE,
    BAD_TIMESTAMP,
    FIELDS,
    INVALID_JSON,
    MAX_TIMESTAMP,
    NOT_AN_OBJECT,
    ORIGINS,
    RENAMED_OBJECT_TYPE,
    TRIGGERED_BROADCAST,
    UNKNOWN_OBJECT_TYPE,
    int_from_text,
)
from ciolake.events.model import (
    DATA_TYPES,
    EVENT_TYPES,
    CommonData,
    Event,
    EventBase,
    object_type_of,
)
from ciolake.events.schemas import find_schema, target_table

_EVENT_DECODER = msgspec.json.Decoder(Event)
_ANY_DECODER = msgspec.json.Decoder()
_DATA_FIELD_TYPES: dict[str, dict[str, Any]] = {
    object_type: {f.name: f.type for f in msgspec.structs.fields(data_type)}
    for object_type, data_type in DATA_TYPES.items()
}


class Quarantined(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A delivery that could not be typed, and why."""

    reason: str
    detail: str
    event_id: str | None = None
    object_type: str | None = None
    metric: str | None = None


class Typed(msgspec.Struct, kw_only=True, gc=False):
    """A typed event with its routing and the spec problems found in it."""

    event: EventBase
    object_type: str
    table: str
    schema: str | None
    origin: str | None
    spec_violations: list[str]


Decoded = Typed | Quarantined


def decode_event(body: bytes) -> Decoded:
    """Type, route and check one webhook body.

    Args:
        body: the raw request body.

    Returns:
        A ``Typed`` event, or ``Quarantined`` with a reason (``invalid_json``,
        ``invalid_envelope``, ``unknown_object_type``).
    """
    try:
        event: EventBase = _EVENT_DECODER.decode(body)
    except msgspec.DecodeError:
        return _decode_slowly(body)
    if not event.event_id or not 0 <= event.timestamp <= MAX_TIMESTAMP:
        return _decode_slowly(body)
    return _check(event, object_type_of(event), [])


def _decode_slowly(body: bytes) -> Decoded:
    try:
        document = _ANY_DECODER.decode(body)
    except msgspec.DecodeError:
        return Quarantined(reason="invalid_json", detail=INVALID_JSON)
    if not isinstance(document, dict):
        return Quarantined(reason="invalid_envelope", detail=NOT_AN_OBJECT)
    return _decode_document(document)


def _decode_document(document: dict[str, Any]) -> Decoded:
    violations: list[str] = []
    object_type = document.get("object_type")
    if object_type is None and "object_type_type" in document:
        # The spec names cio_subscription_preferences_changed's discriminator object_type_type.
        object_type = document["object_type_type"]
        violations.append(RENAMED_OBJECT_TYPE)
    problems = _envelope_problems(document, object_type)
    event_id = _text_or_none(document.get("event_id"))
    metric = _text_or_none(document.get("metric"))
    if problems:
        return Quarantined(
            reason="invalid_envelope",
            detail="; ".join(problems),
            event_id=event_id,
            object_type=_text_or_none(object_type),
            metric=metric,
        )
    assert isinstance(object_type, str)
    assert event_id is not None
    assert metric is not None
    if object_type not in EVENT_TYPES:
        return Quarantined(
            reason="unknown_object_type",
            detail=UNKNOWN_OBJECT_TYPE,
            event_id=event_id,
            object_type=object_type,
            metric=metric,
        )
    data = _convert_data(object_type, document["data"], violations)
    event = EVENT_TYPES[object_type](
        event_id=event_id, metric=metric, timestamp=document["timestamp"], data=data
    )  # type: ignore[call-arg]
    return _check(event, object_type, violations)


def _envelope_problems(document: dict[str, Any], object_type: object) -> list[str]:
    problems = []
    event_id = document.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        problems.append(BAD_EVENT_ID)
    if not isinstance(object_type, str):
        problems.append(BAD_OBJECT_TYPE)
    if not isinstance(document.get("metric"), str):
        problems.append(BAD_METRIC)
    timestamp = document.get("timestamp")
    if not _is_timestamp(timestamp):
        problems.append(BAD_TIMESTAMP)
    if not isinstance(document.get("data"), dict):
        problems.append(BAD_DATA)
    return problems


def _is_timestamp(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return 0 <= value <= MAX_TIMESTAMP


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _convert_data(object_type: str, data: dict[str, Any], violations: list[str]) -> CommonData:
    data_type = DATA_TYPES[object_type]
    try:
        return msgspec.convert(data, data_type)
    except msgspec.ValidationError:
        pass
    field_types = _DATA_FIELD_TYPES[object_type]
    kept: dict[str, Any] = {}
    for field in FIELDS[object_type]:
        value = data.get(field.name)
        if field.kind == "int" and isinstance(value, str):
            value = int_from_text(value)
            if value is None:
                violations.append(f"wrong_type:data.{field.name}")
                continue
        try:
            kept[field.name] = msgspec.convert(value, field_types[field.name])
        except msgspec.ValidationError:
            violations.append(f"wrong_type:data.{field.name}")
    return data_type(**kept)


@functools.cache
def _route(
    object_type: str, metric: str, has_delivery_id: bool
) -> tuple[str | None, str, tuple[str, ...]]:
    """(schema name, table, required fields) of a kind of event; computed once per kind."""
    schema = find_schema(object_type, metric, has_delivery_id=has_delivery_id)
    table = target_table(object_type, metric, has_delivery_id=has_delivery_id)
    if schema is None:
        return None, table, ()
    return schema.name, table, schema.required


def _check(event: EventBase, object_type: str, violations: list[str]) -> Typed:
    data: CommonData = event.data  # type: ignore[attr-defined]
    metric = event.metric
    schema, table, required = _route(object_type, metric, data.delivery_id is not None)
    if schema is None:
        violations.append(f"unknown_metric:{metric}")
    for name in required:
        if getattr(data, name) is None:
            violations.append(f"missing_field:data.{name}")
    return Typed(
        event=event,
        object_type=object_type,
        table=table,
        schema=schema,
        origin=origin_of(data),
        spec_violations=violations,
    )


def origin_of(data: CommonData) -> str | None:
    """Which origin variant the ids describe: recorded, never grounds for rejection."""
    for name, origin in ORIGINS:
        if getattr(data, name) is not None:
            if origin == "broadcast" and data.trigger_id is not None:
                return TRIGGERED_BROADCAST
            return origin
    return None
