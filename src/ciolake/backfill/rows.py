"""Customer.io's delivery records as channel-table rows: one per metric a delivery reached.

A record of ``/v1/messages`` says when a delivery first reached each metric, and who and what
it was; it carries none of an event's own fields (the link of a click, the device of a push).
Each row gets what the record holds, ``source = 'backfill'``, an event id derived from the
delivery and the metric (so that the same row is never written twice), and the whole record,
as JSON, in ``payload``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final

import msgspec
import pyarrow as pa

from ciolake.analytics.funnels import channel_metrics
from ciolake.customerio.reporting import Delivery
from ciolake.lake.tables import CHANNEL_SPECS
from ciolake.reconcile.compare import RELIABLE_FROM

SOURCE: Final = "backfill"
CHANNEL_OF_TYPE: Final[dict[str, str]] = {
    "email": "email",
    "twilio": "sms",
    "sms": "sms",
    "push": "push",
    "in_app": "in_app",
    "slack": "slack",
    "webhook": "webhook",
    "whatsapp": "whatsapp",
}
"""A delivery's ``type`` in ``/v1/messages``, and the channel (table) of its events."""

_METRICS: Final = {
    table: frozenset(channel_metrics(table.removesuffix("_events"))) for table in CHANNEL_SPECS
}


def event_id(delivery_id: str, metric: str) -> str:
    """The id of the backfilled row of ``delivery_id``'s ``metric``: the same on every run."""
    return f"backfill:{delivery_id}:{metric}"


def table_of(delivery: Delivery) -> str | None:
    """The channel table a delivery's events belong in, or None for a type ciolake lacks."""
    channel = CHANNEL_OF_TYPE.get(delivery.type or "")
    return None if channel is None else f"{channel}_events"


def wanted(delivery: Delivery) -> list[tuple[str, int]]:
    """(metric, unix time) of each metric the delivery reached that its table holds events of."""
    table = table_of(delivery)
    if table is None:
        return []
    return sorted((m, at) for m, at in delivery.metrics.items() if m in _METRICS[table])


def _human(delivery: Delivery, metric: str, at: int) -> bool | None:
    """Whether an open or click was a person's, where Customer.io's answer is reliable."""
    human = f"human_{metric}"
    since = RELIABLE_FROM.get(human)
    if since is None or dt.datetime.fromtimestamp(at, dt.UTC).date() < since:
        return None
    return human in delivery.metrics


def row(delivery: Delivery, metric: str, at: int, *, received_at_us: int) -> dict[str, Any]:
    """The channel row of ``delivery``'s ``metric``, first reached at ``at``."""
    table = table_of(delivery)
    assert table is not None, "wanted() chooses deliveries of a known channel"
    who = delivery.customer_identifiers
    values: dict[str, Any] = {
        "event_id": event_id(delivery.id, metric),
        "object_type": table.removesuffix("_events"),
        "metric": metric,
        "timestamp": at,
        "event_time": at * 1_000_000,
        "event_date": dt.datetime.fromtimestamp(at, dt.UTC).date(),
        "received_at": received_at_us,
        "customer_id": delivery.customer_id,
        "identifier_id": who.id if who else None,
        "identifier_email": who.email if who else None,
        "identifier_cio_id": who.cio_id if who else None,
        "delivery_id": delivery.id,
        "campaign_id": delivery.campaign_id,
        "broadcast_id": delivery.broadcast_id,
        "newsletter_id": delivery.newsletter_id,
        "transactional_message_id": delivery.transactional_message_id,
        "action_id": delivery.action_id,
        "content_id": delivery.content_id,
        "recipient": delivery.recipient,
        "failure_message": delivery.failure_message,
        "origin": message.kind if (message := delivery.message()) is not None else None,
        "spec_violations": [],
        "payload": msgspec.json.encode(delivery).decode(),
        "source": SOURCE,
    }
    if table == "email_events":
        values["subject"] = delivery.subject
        human = _human(delivery, metric, at)
        if metric == "opened" and human is not None:
            values.update(proxied=not human, prefetched=False, synthetic=False)
        if metric == "clicked" and human is not None:
            values["machine"] = not human
    return values


def rows_table(table: str, rows: Iterable[dict[str, Any]]) -> pa.Table:
    """``rows`` of channel table ``table`` in its schema (what they lack is null)."""
    return pa.Table.from_pylist(list(rows), schema=CHANNEL_SPECS[table].schema)
