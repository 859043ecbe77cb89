"""The event model, its decoding and routing, and sample bodies for every schema."""

from ciolake.events.decode import Decoded, Quarantined, Typed, decode_event
from ciolake.events.model import OBJECT_TYPES, Event, EventBase
from ciolake.events.schemas import ALL_SCHEMAS, MetricSchema, find_schema, target_table

__all__ = [
    "ALL_SCHEMAS",
    "OBJECT_TYPES",
    "Decoded",
    "Event",
    "EventBase",
    "MetricSchema",
    "Quarantined",
    "Typed",
    "decode_event",
    "find_schema",
    "target_table",
]
