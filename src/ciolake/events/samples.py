"""Realistic sample bodies for every (object_type, metric) schema of the spec.

Used by ``ciolake send-test``, the tests and the benchmarks. Bodies are built from the schema
table, so a schema added to the spec gets samples without code changes here.
"""

from __future__ import annotations

import random
import string
from typing import Any

from ciolake.events.schemas import ALL_SCHEMAS, MetricSchema

_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ORIGINS_BY_VARIANT: dict[str | None, tuple[str, ...]] = {
    "event_common_data": (
        "campaign",
        "broadcast",
        "api_triggered_broadcast",
        "newsletter",
        "transactional",
    ),
    "other_event_common_data": ("campaign", "broadcast", "api_triggered_broadcast", "newsletter"),
    "person_cio_subscription_preferences_common": (
        "campaign",
        "broadcast",
        "api_triggered_broadcast",
        "newsletter",
    ),
    None: (None,),  # type: ignore[dict-item]
}
_FAILURES = (
    "550 5.1.1 The email account that you tried to reach does not exist",
    "Twilio Error 21408: Permission to send an SMS has not been enabled for the region",
    "NoDevicesSynced",
    "Request timed out after 4s",
)


def new_event_id(rng: random.Random, timestamp: int) -> str:
    """A ULID-shaped id: 10 characters of millisecond time, then 16 random ones."""
    millis = timestamp * 1000 + rng.randrange(1000)
    head = "".join(_ULID_ALPHABET[(millis >> (5 * i)) & 31] for i in reversed(range(10)))
    return head + "".join(rng.choice(_ULID_ALPHABET) for _ in range(16))


def schema_keys() -> list[tuple[str, str, str]]:
    """(schema name, object_type, metric) for every schema, customer ones as ``customer``."""
    keys = []
    for schema in ALL_SCHEMAS:
        object_type = (
            "customer" if len(schema.object_types) > 1 else next(iter(schema.object_types))
        )
        keys.append((schema.name, object_type, schema.metric))
    return keys


def schema_by_name(name: str) -> MetricSchema:
    """The schema with this name (e.g. ``email_opened``)."""
    for schema in ALL_SCHEMAS:
        if schema.name == name:
            return schema
    raise KeyError(name)


def sample_event(
    schema: MetricSchema,
    *,
    rng: random.Random,
    timestamp: int,
    object_type: str | None = None,
    origin: str | None = None,
    content_bytes: int = 0,
) -> dict[str, Any]:
    """A body for ``schema`` with every required and optional field filled in.

    Args:
        schema: which of the 69 schemas to follow.
        rng: source of randomness, so that a seed gives the same bodies.
        timestamp: the event's unix time.
        object_type: for customer-family schemas, which of the eight object types to use.
        origin: campaign, broadcast, api_triggered_broadcast, newsletter or transactional;
            chosen from those the schema allows when None.
        content_bytes: size of the ``content`` field where the schema has one
            (as ``with_content`` webhooks send).
    """
    chosen_type = object_type or (
        "customer" if len(schema.object_types) > 1 else next(iter(schema.object_types))
    )
    origins = _ORIGINS_BY_VARIANT[schema.origin_variants]
    chosen_origin = origin if origin is not None else rng.choice(origins)
    person = f"user-{rng.randrange(1, 50_000)}"
    data: dict[str, Any] = {
        "customer_id": person,
        "identifiers": {
            "id": person,
            "email": f"{person}@example.com",
            "cio_id": f"c{rng.randrange(16**8):08x}",
        },
    }
    if chosen_origin is not None:
        data.update(_origin_fields(chosen_origin, rng))
    for name in (*schema.required, *schema.optional):
        if name in ("customer_id", "identifiers"):
            continue
        data[name] = _field_value(name, chosen_type, rng, content_bytes)
    if schema.metric == "unsubscribed" and len(schema.object_types) > 1:
        data.pop("delivery_id", None)
    return {
        "event_id": new_event_id(rng, timestamp),
        "object_type": chosen_type,
        "metric": schema.metric,
        "timestamp": timestamp,
        "data": data,
    }


def _origin_fields(origin: str, rng: random.Random) -> dict[str, Any]:
    delivery = {"delivery_id": "R" + "".join(rng.choice(string.ascii_letters) for _ in range(27))}
    action = {"action_id": rng.randrange(1, 500)}
    if origin == "campaign":
        return {
            **delivery,
            **action,
            "campaign_id": rng.randrange(1, 60),
            "journey_id": new_event_id(rng, 1_700_000_000),
            "parent_action_id": rng.randrange(1, 500),
            "trigger_event_id": new_event_id(rng, 1_700_000_000),
        }
    if origin == "broadcast":
        return {**delivery, **action, "broadcast_id": rng.randrange(1, 30)}
    if origin == "api_triggered_broadcast":
        return {
            **delivery,
            **action,
            "broadcast_id": rng.randrange(1, 30),
            "trigger_id": rng.randrange(1, 900),
        }
    if origin == "newsletter":
        return {
            **delivery,
            "newsletter_id": rng.randrange(1, 200),
            "content_id": rng.randrange(1, 9),
        }
    if origin == "transactional":
        return {**delivery, "transactional_message_id": rng.randrange(1, 40)}
    raise ValueError(f"unknown origin {origin!r}")


def _field_value(name: str, object_type: str, rng: random.Random, content_bytes: int) -> Any:
    if name == "recipient":
        return _recipient(object_type, rng)
    if name == "recipients":
        platform = rng.choice(["ios", "android"])
        return [
            {
                "device_id": "".join(rng.choice(string.hexdigits) for _ in range(64)),
                "device_platform": platform,
            }
        ]
    if name == "content":
        return _content(object_type, rng, content_bytes)
    values: dict[str, Any] = {
        "subject": rng.choice(["Welcome aboard", "Your receipt", "We miss you", "Weekly digest"]),
        "failure_message": rng.choice(_FAILURES),
        "href": f"https://example.com/landing/{rng.randrange(100)}",
        "link_id": rng.randrange(1, 20),
        "proxied": rng.random() < 0.3,
        "prefetched": rng.random() < 0.2,
        "synthetic": rng.random() < 0.05,
        "machine": rng.random() < 0.1,
        "headers": {"X-Campaign": [f"c{rng.randrange(100)}"]},
        "tracked_response": rng.choice(["accept", "dismiss", "learn_more"]),
        "inbound_event_id": new_event_id(rng, 1_700_000_000),
        "to": "+15005550006",
        "email_address": f"person{rng.randrange(10_000)}@example.com",
    }
    return values[name]


def _recipient(object_type: str, rng: random.Random) -> str:
    if object_type in ("sms", "whatsapp"):
        return f"+1555{rng.randrange(10**7):07d}"
    if object_type == "slack":
        return "#" + rng.choice(["signups", "alerts", "sales"])
    if object_type == "webhook":
        return "https://hooks.example.com/receive"
    if object_type == "in_app":
        return f"user-{rng.randrange(1, 50_000)}"
    return f"person{rng.randrange(10_000)}@example.com"


def _content(object_type: str, rng: random.Random, content_bytes: int) -> str:
    if object_type == "customer":
        topic, chosen = rng.randrange(1, 6), rng.choice(["true", "false"])
        return f'{{"topics":{{"topic_{topic}":{chosen}}}}}'
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "
    size = max(content_bytes, 40)
    return (filler * (size // len(filler) + 1))[:size]
