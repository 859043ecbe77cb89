"""A history with known gaps: what Customer.io knows, what its webhook delivered, what was lost.

Five days of a campaign's emails (campaign 12, action 34) and a broadcast's SMS (broadcast 7),
recent enough for the broadcast's day counts (the last 45 days). Customer.io knows every
delivery; the webhook lost:

* every event of the second day (the webhook was paused);
* every event of one hour of the fourth day (stalled after a rejected request);
* three ``delivered`` events of the fifth day.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from ciolake.events.samples import sample_event, schema_by_name
from ciolake.settings import Settings
from tests.support import body_of, receive

EASTERN = ZoneInfo("America/New_York")
CAMPAIGN = 12
ACTION = 34
BROADCAST = 7
EMAILS_PER_DAY = 20
SMS_PER_DAY = 5


@dataclass(frozen=True)
class Event:
    """One webhook event of the history."""

    delivery_id: str
    metric: str
    at: int
    body: bytes


@dataclass
class History:
    """The days, Customer.io's deliveries, and the webhook's events split in kept and lost."""

    days: list[dt.date]
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    kept: list[Event] = field(default_factory=list)
    lost: list[Event] = field(default_factory=list)

    @property
    def paused_day(self) -> dt.date:
        return self.days[1]

    @property
    def stalled_hour(self) -> tuple[int, int]:
        start = dt.datetime.combine(self.days[3], dt.time(13), tzinfo=EASTERN)
        return int(start.timestamp()), int(start.timestamp()) + 3600

    def lost_pairs(self) -> set[tuple[str, str]]:
        """(delivery id, metric) of every lost event, human metrics included."""
        human = {
            (d["id"], metric)
            for d in self.deliveries
            for metric in ("human_opened", "human_clicked")
            if metric in d["metrics"]
        }
        pairs = {(e.delivery_id, e.metric) for e in self.lost}
        return pairs | {(i, m) for i, m in human if (i, m.removeprefix("human_")) in pairs}


def _at(day: dt.date, hour: int, minute: int) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=EASTERN).timestamp())


def build(today: dt.date, *, seed: int = 7) -> History:
    """The history of the five days ending four days before ``today`` (Eastern)."""
    rng = random.Random(seed)
    history = History([today - dt.timedelta(days=9 - i) for i in range(5)])
    for day_index, day in enumerate(history.days):
        for i in range(EMAILS_PER_DAY):
            created = _at(day, 10, 0) + i * 15 * 60
            _email(history, rng, f"e{day_index}-{i:02d}", created, i)
        for i in range(SMS_PER_DAY):
            created = _at(day, 11, 0) + i * 30 * 60
            _sms(history, rng, f"s{day_index}-{i:02d}", created)
    _lose(history)
    return history


def _email(history: History, rng: random.Random, delivery_id: str, created: int, i: int) -> None:
    metrics = {"sent": created + 5, "delivered": created + 60}
    human_open = i % 2 == 0
    if i % 3 != 0:
        metrics["opened"] = created + 20 * 60
        if human_open:
            metrics["human_opened"] = metrics["opened"]
    if i % 5 == 0:
        metrics["clicked"] = created + 30 * 60
        metrics["human_clicked"] = metrics["clicked"]
    history.deliveries.append(
        {
            "id": delivery_id,
            "created": created,
            "type": "email",
            "campaign_id": CAMPAIGN,
            "action_id": ACTION,
            "customer_id": f"user-{i}",
            "metrics": metrics,
        }
    )
    for metric in ("sent", "delivered", "opened", "clicked"):
        if metric in metrics:
            event = sample_event(
                schema_by_name(f"email_{metric}"),
                rng=rng,
                timestamp=metrics[metric],
                origin="campaign",
            )
            event["data"].update(delivery_id=delivery_id, campaign_id=CAMPAIGN, action_id=ACTION)
            if metric == "opened":
                event["data"].update(proxied=not human_open, prefetched=False, synthetic=False)
            if metric == "clicked":
                event["data"]["machine"] = False
            history.kept.append(Event(delivery_id, metric, metrics[metric], body_of(event)))


def _sms(history: History, rng: random.Random, delivery_id: str, created: int) -> None:
    metrics = {"sent": created + 5, "delivered": created + 30}
    history.deliveries.append(
        {
            "id": delivery_id,
            "created": created,
            "type": "twilio",
            "broadcast_id": BROADCAST,
            "action_id": 1,
            "metrics": metrics,
        }
    )
    for metric, at in metrics.items():
        event = sample_event(
            schema_by_name(f"sms_{metric}"), rng=rng, timestamp=at, origin="broadcast"
        )
        event["data"].update(delivery_id=delivery_id, broadcast_id=BROADCAST, action_id=1)
        history.kept.append(Event(delivery_id, metric, at, body_of(event)))


def _lose(history: History) -> None:
    paused = history.paused_day
    stall_start, stall_end = history.stalled_hour
    fifth = {f"e4-{i:02d}" for i in (3, 7, 11)}

    def lost(event: Event) -> bool:
        if dt.datetime.fromtimestamp(event.at, EASTERN).date() == paused:
            return True
        if stall_start <= event.at < stall_end:
            return True
        return event.delivery_id in fifth and event.metric == "delivered"

    history.lost = [e for e in history.kept if lost(e)]
    history.kept = [e for e in history.kept if not lost(e)]


def land(settings: Settings, history: History) -> None:
    """The events the webhook delivered, through the embedded receiver, received now."""
    now = time.time()
    receive(settings, [(event.body, False) for event in history.kept], at=now, signed_at=int(now))


def expected_differences(history: History) -> dict[tuple[str, str, str], int]:
    """(message, metric, day) -> ciolake minus Customer.io, from the lost events alone."""
    created = {d["id"]: d for d in history.deliveries}
    differences: dict[tuple[str, str, str], int] = {}
    for delivery_id, metric in history.lost_pairs():
        delivery = created[delivery_id]
        message = (
            f"campaign {CAMPAIGN}" if delivery.get("campaign_id") else f"broadcast {BROADCAST}"
        )
        day = dt.datetime.fromtimestamp(delivery["created"], EASTERN).date().isoformat()
        key = (message, metric, day)
        differences[key] = differences.get(key, 0) - 1
    return differences
