"""A realistic traffic mix: which events a Customer.io workspace sends, and how large they are.

Weights are events per 10,000, by schema (``<channel>_<metric>``), after what a typical
email-first workspace with full-resolution opens/clicks sends: email is about 70 % of the
stream and delivered/opened/sent/clicked dominate it; push 12 %, SMS 5.5 %, in-app 5 %,
customer (subscription) events 3 %, webhook 2.5 %, WhatsApp 1.5 %, Slack 0.5 %. Every one of
the spec's 69 schemas has a non-zero weight, so every decode path is exercised.

Bodies: ``*_sent`` events carry the message (as ``with_content`` webhooks do), email bodies
log-uniform between 2 KB and 50 KB, other channels' between 300 B and 2 KB; every other event
is a plain body of about 0.6-1 KB.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator
from typing import Any

from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.events.schemas import MetricSchema

WEIGHTS: dict[str, float] = {
    # email: 7,000
    "email_delivered": 1900,
    "email_opened": 2100,
    "email_sent": 1950,
    "email_clicked": 700,
    "email_attempted": 50,
    "email_drafted": 20,
    "email_converted": 60,
    "email_unsubscribed": 40,
    "email_bounced": 80,
    "email_dropped": 50,
    "email_spammed": 5,
    "email_failed": 20,
    "email_undeliverable": 25,
    # push: 1,200
    "push_sent": 400,
    "push_delivered": 380,
    "push_opened": 250,
    "push_clicked": 60,
    "push_attempted": 10,
    "push_drafted": 5,
    "push_converted": 10,
    "push_bounced": 40,
    "push_dropped": 15,
    "push_failed": 20,
    "push_undeliverable": 10,
    # sms: 550
    "sms_sent": 200,
    "sms_delivered": 190,
    "sms_clicked": 40,
    "sms_attempted": 10,
    "sms_drafted": 5,
    "sms_converted": 10,
    "sms_bounced": 20,
    "sms_failed": 25,
    "sms_undeliverable": 20,
    "sms_replied": 30,
    # in-app: 500
    "in_app_sent": 180,
    "in_app_opened": 200,
    "in_app_clicked": 60,
    "in_app_attempted": 10,
    "in_app_drafted": 5,
    "in_app_converted": 15,
    "in_app_failed": 15,
    "in_app_undeliverable": 15,
    # customer (subscription) events: 300
    "person_subscribed": 80,
    "person_unsubscribed": 120,
    "person_cio_subscription_preferences_changed": 100,
    # webhook: 250
    "webhook_sent": 120,
    "webhook_clicked": 60,
    "webhook_attempted": 20,
    "webhook_drafted": 5,
    "webhook_failed": 30,
    "webhook_undeliverable": 15,
    # whatsapp: 150
    "whatsapp_sent": 40,
    "whatsapp_delivered": 38,
    "whatsapp_opened": 30,
    "whatsapp_clicked": 10,
    "whatsapp_attempted": 3,
    "whatsapp_drafted": 2,
    "whatsapp_converted": 3,
    "whatsapp_bounced": 5,
    "whatsapp_dropped": 3,
    "whatsapp_failed": 6,
    "whatsapp_undeliverable": 4,
    "whatsapp_replied": 6,
    # slack: 50
    "slack_sent": 25,
    "slack_clicked": 8,
    "slack_attempted": 5,
    "slack_drafted": 2,
    "slack_failed": 6,
    "slack_undeliverable": 4,
}

EMAIL_CONTENT_BYTES = (2_000, 50_000)
OTHER_CONTENT_BYTES = (300, 2_000)


def check_weights() -> None:
    """Fail loudly when the spec gains or loses a schema the mix does not know about."""
    names = {name for name, _type, _metric in schema_keys()}
    if names != WEIGHTS.keys():
        missing, unknown = sorted(names - WEIGHTS.keys()), sorted(WEIGHTS.keys() - names)
        raise ValueError(f"traffic mix out of date: missing {missing}, unknown {unknown}")


class EventSource:
    """An endless, seeded stream of unique event bodies following ``WEIGHTS``."""

    def __init__(self, seed: int = 1) -> None:
        check_weights()
        self._rng = random.Random(seed)
        self._schemas: list[MetricSchema] = [schema_by_name(name) for name in WEIGHTS]
        self._cumulative = list(itertools.accumulate(WEIGHTS.values()))

    def event(self, timestamp: int) -> dict[str, Any]:
        """One event of a schema drawn from the mix."""
        schema = self._rng.choices(self._schemas, cum_weights=self._cumulative)[0]
        return sample_event(
            schema,
            rng=self._rng,
            timestamp=timestamp,
            content_bytes=self._content_bytes(schema),
        )

    def bodies(self, count: int, timestamp: int) -> Iterator[bytes]:
        """``count`` compact JSON bodies."""
        for _ in range(count):
            yield body_of(self.event(timestamp))

    def _content_bytes(self, schema: MetricSchema) -> int:
        if schema.metric != "sent":
            return 0
        low, high = EMAIL_CONTENT_BYTES if schema.name == "email_sent" else OTHER_CONTENT_BYTES
        return round(math.exp(self._rng.uniform(math.log(low), math.log(high))))


def body_of(event: dict[str, Any]) -> bytes:
    """The compact JSON bytes Customer.io would send."""
    return json.dumps(event, separators=(",", ":")).encode()
