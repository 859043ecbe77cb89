"""What the views should show, computed from a simulated history in plain Python.

Independent of the SQL: these helpers restate the documented definitions (docs/analytics.md)
and apply them to the simulator's per-delivery truth.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from ciolake.simulate.simulator import Arrival, History, SimDelivery, SimEvent

# rate -> (numerator outcome, denominator outcome or None for every delivery), per channel.
RATES: dict[str, dict[str, tuple[str, str | None]]] = {
    "email": {
        "delivery": ("delivered", "sent"),
        "open": ("opened", "delivered"),
        "human_open": ("human_opened", "delivered"),
        "click": ("clicked", "delivered"),
        "human_click": ("human_clicked", "delivered"),
        "click_to_open": ("clicked", "opened"),
        "human_click_to_open": ("human_clicked", "human_opened"),
        "conversion": ("converted", "delivered"),
        "bounce": ("bounced", "sent"),
        "spam_complaint": ("spammed", "delivered"),
        "unsubscribe": ("unsubscribed", "delivered"),
        "failure": ("failed", None),
    },
    "push": {
        "delivery": ("delivered", "sent"),
        "open": ("opened", "delivered"),
        "click": ("clicked", "delivered"),
        "conversion": ("converted", "delivered"),
        "bounce": ("bounced", "sent"),
        "failure": ("failed", None),
    },
    "in_app": {
        "open": ("opened", "sent"),
        "click": ("clicked", "sent"),
        "click_to_open": ("clicked", "opened"),
        "conversion": ("converted", "sent"),
        "failure": ("failed", None),
    },
    "sms": {
        "delivery": ("delivered", "sent"),
        "click": ("clicked", "delivered"),
        "conversion": ("converted", "delivered"),
        "reply": ("replied", "delivered"),
        "bounce": ("bounced", "sent"),
        "failure": ("failed", None),
    },
    "slack": {"send": ("sent", None), "failure": ("failed", None)},
    "webhook": {"send": ("sent", None), "failure": ("failed", None)},
    "whatsapp": {
        "delivery": ("delivered", "sent"),
        "open": ("opened", "delivered"),
        "click": ("clicked", "delivered"),
        "conversion": ("converted", "delivered"),
        "reply": ("replied", "delivered"),
        "bounce": ("bounced", "sent"),
        "failure": ("failed", None),
    },
}
ORIGIN_KEYS = (
    "origin",
    "campaign_id",
    "broadcast_id",
    "newsletter_id",
    "transactional_message_id",
    "action_id",
)


def half_up(rate: float, population: int) -> int:
    """``round(rate * n)`` with halves rounded up, as the simulator promises."""
    return math.floor(rate * population + 0.5)


def utc(seconds: float) -> datetime:
    """A UTC datetime from unix seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def origin_key(delivery: SimDelivery) -> tuple[Any, ...]:
    """(origin, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id)."""
    ids = dict(delivery.origin.ids)
    return (delivery.origin.origin, *(ids.get(k) for k in ORIGIN_KEYS[1:]))


def has(delivery: SimDelivery, outcome: str | None) -> bool:
    """Whether a delivery has an outcome (``None`` stands for every delivery)."""
    return outcome is None or outcome in delivery.outcomes


def expected_rates(
    deliveries: Iterable[SimDelivery],
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(channel, cohort date, *origin, rate) -> (numerator, denominator) from the truth."""
    found: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for d in deliveries:
        for rate, (numerator, denominator) in RATES[d.channel].items():
            key = (d.channel, d.day, *origin_key(d), f"{rate}_rate")
            if has(d, denominator):
                found[key][1] += 1
                found[key][0] += has(d, numerator)
        if d.channel == "push":
            device = (d.channel, d.day, *origin_key(d))
            found[(*device, "device_delivery_rate")][0] += len(d.devices_delivered)
            found[(*device, "device_delivery_rate")][1] += len(d.devices)
            found[(*device, "device_failure_rate")][0] += len(d.devices_failed)
            found[(*device, "device_failure_rate")][1] += len(d.devices)
    return {key: (n, m) for key, (n, m) in found.items()}


def event_day(event: SimEvent) -> date:
    """The UTC day an event happened."""
    return utc(event.timestamp).date()


def hour_of(arrival: Arrival) -> datetime:
    """The UTC hour an arrival was received in, as the receiver stores it."""
    micros = arrival.received_at_us
    return utc(micros // 3_600_000_000 * 3600)


def interpolated(values: list[float], share: float) -> float:
    """The linearly interpolated quantile (DuckDB's quantile_cont, Spark's percentile)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_health(history: History) -> dict[datetime, dict[str, Any]]:
    """Per hour of receipt: counts by kind and reason, and the lags of landed events."""
    hours: dict[datetime, dict[str, Any]] = defaultdict(
        lambda: {
            "received": 0,
            "landed": 0,
            "duplicates": 0,
            "reasons": defaultdict(int),
            "lags": [],
        }
    )
    for arrival in history.arrivals:
        hour = hours[hour_of(arrival)]
        hour["received"] += 1
        if arrival.kind == "landed":
            assert arrival.event is not None
            hour["landed"] += 1
            hour["lags"].append(
                (arrival.received_at_us - arrival.event.timestamp * 1_000_000) / 1e6
            )
        elif arrival.kind == "duplicate":
            hour["duplicates"] += 1
        else:
            hour["reasons"][arrival.reason] += 1
    return hours
