"""The one definition of how a delivery is typed: field kinds, routes, violations and texts.

The committer and replay type deliveries in Python (``events.decode``), DuckDB and Spark run
SQL generated from this module (``ciolake.derive``), and ``tests/derive`` requires the same rows
from all three. Everything here is read from the event model (``events.model``) and the spec's
schemas (``events.schemas``): a field added to a ``Data`` struct reaches every engine. The rules
themselves are written out in docs/reference.md ("Typing").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import msgspec

from ciolake.events.model import DATA_TYPES, OBJECT_TYPES, Identifiers, PushRecipient
from ciolake.events.schemas import ALL_SCHEMAS, find_schema, target_table

Kind = Literal["text", "int", "bool", "text_list", "headers", "recipients", "identifiers"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_TIMESTAMP = 253_402_300_799
"""Unix seconds for 9999-12-31T23:59:59Z: beyond it no date column can hold the event."""

# A string an integer field takes: ASCII digits with an optional minus, nothing else.
DIGITS = re.compile(r"-?[0-9]+")
DIGITS_SQL = "-?[0-9]+"
MAX_DIGITS = 20  # "-9223372036854775808"; Python refuses to parse 4,300 digits or more

IDENTIFIER_KEYS: tuple[str, ...] = tuple(Identifiers.__struct_fields__)
RECIPIENT_KEYS: tuple[str, ...] = tuple(PushRecipient.__struct_fields__)

INVALID_JSON = "body is not valid JSON"
NOT_AN_OBJECT = "body is not a JSON object"
BAD_EVENT_ID = "event_id must be a non-empty string"
BAD_OBJECT_TYPE = "object_type must be a string"
BAD_METRIC = "metric must be a string"
BAD_TIMESTAMP = f"timestamp must be integer unix seconds from 0 to {MAX_TIMESTAMP}"
BAD_DATA = "data must be an object"
UNKNOWN_OBJECT_TYPE = f"object_type is none of {', '.join(OBJECT_TYPES)}"
RENAMED_OBJECT_TYPE = "renamed_field:object_type_type"
"""The spec names ``cio_subscription_preferences_changed``'s discriminator ``object_type_type``."""

ORIGINS: tuple[tuple[str, str], ...] = (
    ("transactional_message_id", "transactional"),
    ("newsletter_id", "newsletter"),
    ("campaign_id", "campaign"),
    ("broadcast_id", "broadcast"),
)
"""The first id present names the origin; a broadcast with a ``trigger_id`` is API-triggered."""
TRIGGERED_BROADCAST = "api_triggered_broadcast"


@dataclass(frozen=True, slots=True)
class DataField:
    """One field of ``data`` and the kind of JSON value it takes."""

    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Route:
    """Where events of one kind land, the schema they follow and the fields it requires."""

    object_type: str
    metric: str
    has_delivery_id: bool
    table: str
    schema: str | None
    required: tuple[str, ...]


def _kind_of(info: msgspec.inspect.Type) -> Kind:
    # Every field is ``X | None``; X names the kind.
    assert isinstance(info, msgspec.inspect.UnionType), info
    (inner,) = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
    if isinstance(inner, msgspec.inspect.StrType):
        return "text"
    if isinstance(inner, msgspec.inspect.IntType):
        assert (inner.ge, inner.le) == (INT64_MIN, INT64_MAX), "integers are 64-bit (Int64)"
        return "int"
    if isinstance(inner, msgspec.inspect.BoolType):
        return "bool"
    if isinstance(inner, msgspec.inspect.DictType):
        return "headers"
    if isinstance(inner, msgspec.inspect.StructType):
        assert inner.cls is Identifiers, inner
        return "identifiers"
    assert isinstance(inner, msgspec.inspect.ListType), inner
    if isinstance(inner.item_type, msgspec.inspect.StrType):
        return "text_list"
    assert isinstance(inner.item_type, msgspec.inspect.StructType), inner
    assert inner.item_type.cls is PushRecipient, inner
    return "recipients"


def _fields(data_type: type[msgspec.Struct]) -> tuple[DataField, ...]:
    info = msgspec.inspect.type_info(data_type)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(DataField(f.name, _kind_of(f.type)) for f in info.fields)


FIELDS: dict[str, tuple[DataField, ...]] = {
    object_type: _fields(data_type) for object_type, data_type in DATA_TYPES.items()
}
"""Each object type's ``data`` fields, in the order their violations are listed."""


def _all_fields() -> tuple[DataField, ...]:
    found: dict[str, DataField] = {}
    for fields in FIELDS.values():
        for field in fields:
            assert found.setdefault(field.name, field) == field, f"{field.name} has two kinds"
    return tuple(found.values())


ALL_FIELDS: tuple[DataField, ...] = _all_fields()
"""Every ``data`` field of any object type, each once."""

KNOWN_METRICS: tuple[str, ...] = tuple(sorted({s.metric for s in ALL_SCHEMAS}))


def _routes() -> tuple[Route, ...]:
    routes = []
    for object_type in OBJECT_TYPES:
        for metric in KNOWN_METRICS:
            for has_delivery_id in (False, True):
                schema = find_schema(object_type, metric, has_delivery_id=has_delivery_id)
                table = target_table(object_type, metric, has_delivery_id=has_delivery_id)
                names = {f.name for f in FIELDS[object_type]}
                assert schema is None or set(schema.required) <= names, schema
                routes.append(
                    Route(
                        object_type,
                        metric,
                        has_delivery_id,
                        table,
                        None if schema is None else schema.name,
                        () if schema is None else schema.required,
                    )
                )
    return tuple(routes)


ROUTES: tuple[Route, ...] = _routes()
"""Every known object type and metric, with and without a ``delivery_id``."""


def unrouted_table(object_type: str) -> str:
    """Where an event of a metric no schema knows lands: its object type's table."""
    return f"{object_type}_events"


def int_from_text(text: str) -> int | None:
    """The integer a string spells (``DIGITS``, within 64 bits), else None."""
    if len(text) > MAX_DIGITS or DIGITS.fullmatch(text) is None:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def stale_detail(tolerance_s: int) -> str:
    """The quarantine detail of a delivery signed too far from its receipt."""
    return f"X-CIO-Timestamp more than {tolerance_s}s from the time of receipt"
