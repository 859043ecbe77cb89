"""Names, Arrow schemas and partitioning of every table ciolake writes (see docs/reference.md).

Partitioned by date only: partitioning by metric multiplies small files. No deletion vectors or
liquid clustering, so that every Delta reader and writer can use the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
TEXT_LIST = pa.list_(pa.string())
PUSH_RECIPIENT = pa.struct(
    [
        ("device_id", pa.string()),
        ("device_platform", pa.string()),
        ("failure_message", pa.string()),
    ]
)

RAW_EVENTS = "raw_events"
QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table's name, columns and partition column."""

    name: str
    schema: pa.Schema
    partition_by: str


_DELIVERY_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("received_at", UTC_TIMESTAMP),
    ("received_date", pa.date32()),
]
_BODY_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("body", pa.string()),
    # Set only when the body is not valid UTF-8, so that no byte is ever lost.
    ("body_base64", pa.string()),
    ("x_cio_timestamp", pa.int64()),
    ("journal_stream", pa.int64()),
    ("journal_lsn", pa.int64()),
]

RAW_SPEC = TableSpec(
    RAW_EVENTS,
    pa.schema(
        [
            *_DELIVERY_COLUMNS,
            ("event_id", pa.string()),
            ("object_type", pa.string()),
            ("metric", pa.string()),
            *_BODY_COLUMNS,
        ]
    ),
    "received_date",
)

QUARANTINE_SPEC = TableSpec(
    QUARANTINE,
    pa.schema(
        [
            *_DELIVERY_COLUMNS,
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("event_id", pa.string()),
            ("object_type", pa.string()),
            ("metric", pa.string()),
            *_BODY_COLUMNS,
        ]
    ),
    "received_date",
)

COMMON_EVENT_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()),
    ("object_type", pa.string()),
    ("metric", pa.string()),
    ("timestamp", pa.int64()),
    ("event_time", UTC_TIMESTAMP),
    ("event_date", pa.date32()),
    ("received_at", UTC_TIMESTAMP),
    ("customer_id", pa.string()),
    ("identifier_id", pa.string()),
    ("identifier_email", pa.string()),
    ("identifier_cio_id", pa.string()),
    ("identifier_phone", pa.string()),
    ("delivery_id", pa.string()),
    ("campaign_id", pa.int64()),
    ("broadcast_id", pa.int64()),
    ("newsletter_id", pa.int64()),
    ("transactional_message_id", pa.int64()),
    ("trigger_id", pa.int64()),
    ("action_id", pa.int64()),
    ("parent_action_id", pa.int64()),
    ("journey_id", pa.string()),
    ("content_id", pa.int64()),
    ("trigger_event_id", pa.string()),
    ("template_id", pa.int64()),
    ("campaign_name", pa.string()),
    ("campaign_tags", TEXT_LIST),
    ("broadcast_name", pa.string()),
    ("broadcast_tags", TEXT_LIST),
    ("newsletter_name", pa.string()),
    ("newsletter_tags", TEXT_LIST),
    ("recipient", pa.string()),
    ("failure_message", pa.string()),
    ("href", pa.string()),
    ("link_id", pa.int64()),
    ("content", pa.string()),
    ("origin", pa.string()),
    ("spec_schema", pa.string()),
    ("spec_violations", TEXT_LIST),
    ("payload", pa.string()),
    # Which journal record the row came from: (stream, lsn) is unique in every table.
    ("journal_stream", pa.int64()),
    ("journal_lsn", pa.int64()),
]

CHANNEL_EXTRA_COLUMNS: dict[str, list[tuple[str, pa.DataType]]] = {
    "customer_events": [("email_address", pa.string())],
    "email_events": [
        ("subject", pa.string()),
        ("proxied", pa.bool_()),
        ("prefetched", pa.bool_()),
        ("synthetic", pa.bool_()),
        ("machine", pa.bool_()),
        ("headers", pa.map_(pa.string(), TEXT_LIST)),
    ],
    "push_events": [
        ("recipients", pa.list_(PUSH_RECIPIENT)),
        ("app_id", pa.string()),
        ("related_delivery_ids", TEXT_LIST),
    ],
    "in_app_events": [("tracked_response", pa.string())],
    "sms_events": [("to", pa.string()), ("inbound_event_id", pa.string())],
    "slack_events": [],
    "webhook_events": [],
    "whatsapp_events": [("to", pa.string()), ("inbound_event_id", pa.string())],
}

SOURCE_COLUMN: tuple[str, pa.DataType] = ("source", pa.string())
"""Where a row comes from: null for the webhook, ``backfill`` for ``ciolake backfill``. Last,
as it was added to existing tables (``writer.ensure_tables`` adds a missing column)."""

CHANNEL_SPECS: dict[str, TableSpec] = {
    name: TableSpec(name, pa.schema([*COMMON_EVENT_COLUMNS, *extra, SOURCE_COLUMN]), "event_date")
    for name, extra in CHANNEL_EXTRA_COLUMNS.items()
}
CHANNEL_TABLES: tuple[str, ...] = tuple(CHANNEL_SPECS)
ALL_SPECS: dict[str, TableSpec] = {
    RAW_EVENTS: RAW_SPEC,
    **CHANNEL_SPECS,
    QUARANTINE: QUARANTINE_SPEC,
}
