"""A known truth: a realistic Customer.io history, landed through the real receiver path.

Every rate is exact by construction. For each channel and each day, ``deliveries`` messages are
sent; ``round(rate * n)`` of the eligible ones get each outcome, chosen by a seeded sample, so a
test can assert exact equality of numerators and denominators. The bodies follow the spec's
schemas (no ``spec_violations``) and are signed, verified and handed to a
:class:`ciolake.runtime.embedded.Receiver` (journal, committer, Delta) whose clock is the
simulated one:
``received_at`` is the event time plus a realistic lag, some events arrive hours late, some are
delivered again later (Customer.io retries), and some deliveries go to quarantine.

Two random streams are kept apart: one decides what happened (the world), the other when each
delivery arrives. So the same seed with other arrival settings yields the same events, which is
how the tests show that arrival order, lateness and retries change no view.

Simulated rows can be told from real ones: every simulated ``event_id`` starts with
:data:`SIMULATED_EVENT_ID_PREFIX` (real Customer.io event ids are ULIDs, which never do), and
:func:`foreign_deliveries` counts the deliveries of a table location that carry no such id.
No receipt time is ever later than the wall clock: :func:`build_history_before` moves a history
back by whole days until its last receipt is past, and :func:`feed` refuses any other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pyarrow.compute as pc

from ciolake.events.model import MESSAGE_CHANNELS
from ciolake.events.samples import new_event_id, schema_by_name
from ciolake.lake.inventory import table_dataset
from ciolake.lake.tables import RAW_EVENTS
from ciolake.metrics import Metrics
from ciolake.receive.verify import sign, verify
from ciolake.runtime.embedded import Receiver
from ciolake.settings import Settings
from ciolake.units import SECONDS_PER_DAY, SECONDS_PER_HOUR

CHANNELS = MESSAGE_CHANNELS
"""The messaging channels simulated (customer events are simulated as subscription changes)."""

SIMULATION_KEY = "ciolake-simulation-signing-key"
SIMULATED_EVENT_ID_PREFIX = "sim-"
"""Every simulated ``event_id`` starts with it; a real one (a ULID) never does."""
MAX_DAYS = 366
MAX_DELIVERIES = 10_000
MAX_MESSAGES_PER_CHANNEL = 20_000
"""Bound of ``days * deliveries``: the whole history is built in memory (about 5 KB a message)."""
MAX_QUARANTINED_PER_DAY = 1_000
EARLIEST_START = date(2000, 1, 1)
# Sends happen before 22:00 UTC, so a delivery's first events fall on its send day.
_SEND_WINDOW_S = 22 * SECONDS_PER_HOUR
_MARKED_ID = re.compile(
    rb'"event_id":"(' + re.escape(SIMULATED_EVENT_ID_PREFIX.encode()) + rb'[^"]+)"'
)
_MARKER_IN_BODY = f'"event_id":"{SIMULATED_EVENT_ID_PREFIX}'
_FEED_CHUNK = 2_000
_CHUNK_SPAN_S = 6 * SECONDS_PER_HOUR
# Commits at least this often: the feed waits for the committer to catch up (see _max_lead_s).
_FLUSH_INTERVAL_S = 0.2
_CHANNELS_WITH = {
    "delivered": frozenset({"email", "push", "sms", "whatsapp"}),
    "dropped": frozenset({"email", "push", "whatsapp"}),
    "opened": frozenset({"email", "push", "in_app", "whatsapp"}),
    "replied": frozenset({"sms", "whatsapp"}),
    "converted": frozenset({"email", "push", "in_app", "sms", "whatsapp"}),
}
_FAILURES = {
    "email": ("550 5.1.1 The email account that you tried to reach does not exist",),
    "push": ("NoDevicesSynced", "BadDeviceToken"),
    "in_app": ("Message expired before it was displayed",),
    "sms": ("Twilio Error 30003: Unreachable destination handset",),
    "slack": ("channel_not_found",),
    "webhook": ("Request timed out after 4s", "HTTP 502 from https://hooks.example.com"),
    "whatsapp": ("131026: Message undeliverable",),
}
_DROP_MESSAGE = "Recipient is on the suppression list"
_IN_APP_CLICKS = "in-app click rate must not exceed the open rate (a click is seen)"
# Push reports failures per device, inside recipients.
_DEVICE_FAILURES = {"bounced": "Unregistered", "dropped": _DROP_MESSAGE}
# Filled per event (the machine flags) or left out as webhooks without with_content do.
_SET_ELSEWHERE = frozenset({"content", "headers", "proxied", "prefetched", "synthetic", "machine"})


@dataclass(frozen=True, slots=True)
class Rates:
    """The true rates of the simulated world (each a share in 0..1).

    Attributes:
        delivery: delivered / sent (email, push, sms, whatsapp).
        bounce: bounced / sent; ``delivery + bounce`` must not exceed 1.
        failure: failed / deliveries (never sent).
        drop: dropped / deliveries (email, push, whatsapp; never sent).
        open: opened / delivered (in-app: / sent).
        machine_open_share: of the opened email deliveries, the share opened only by machines.
        click: clicked / delivered (in-app, slack, webhook: / sent).
        machine_click_share: of the clicked email deliveries, the share clicked only by machines.
        conversion: converted / delivered (in-app: / sent).
        unsubscribe: email deliveries unsubscribed from / delivered.
        spam: email deliveries marked as spam / delivered.
        reply: replied / delivered (sms, whatsapp).
        missing_sent: share of delivered or bounced deliveries whose ``sent`` webhook never comes.
    """

    delivery: float = 0.95
    bounce: float = 0.02
    failure: float = 0.01
    drop: float = 0.01
    open: float = 0.45
    machine_open_share: float = 0.4
    click: float = 0.08
    machine_click_share: float = 0.25
    conversion: float = 0.03
    unsubscribe: float = 0.004
    spam: float = 0.002
    reply: float = 0.06
    missing_sent: float = 0.02


@dataclass(frozen=True, slots=True)
class Arrivals:
    """How deliveries reach the receiver.

    Attributes:
        duplicate: share of events delivered a second time, 1 minute to 6 hours later.
        late: share of events whose first delivery comes 1 to 48 hours after the event.
        quarantined_per_day: deliveries per day that cannot be typed or carry a stale
            timestamp (cycling through invalid_json, unknown_object_type, invalid_envelope,
            stale_timestamp).
        min_lag_s: shortest lag from event to receipt of an on-time event.
        max_lag_s: longest lag of an on-time event.
    """

    duplicate: float = 0.05
    late: float = 0.02
    quarantined_per_day: int = 4
    min_lag_s: float = 0.2
    max_lag_s: float = 8.0


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate: ``deliveries`` messages per channel per day for ``days`` days."""

    start: date
    days: int
    deliveries: int
    seed: int = 0
    rates: Rates = field(default_factory=Rates)
    arrivals: Arrivals = field(default_factory=Arrivals)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message comes from: a campaign action, a broadcast, a newsletter, ..."""

    origin: str
    ids: tuple[tuple[str, int | str], ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One webhook event of the simulated history."""

    event_id: str
    object_type: str
    metric: str
    timestamp: int
    delivery_id: str | None
    customer_key: str
    body: bytes
    failure_messages: tuple[str, ...] = ()


@dataclass(slots=True)
class SimDelivery:
    """One message and what really happened to it.

    ``outcomes`` holds the flags the views derive (sent, delivered, opened, human_opened,
    clicked, human_clicked, converted, bounced, dropped, spammed, unsubscribed, failed,
    replied); ``missing_sent`` says its ``sent`` webhook never comes. Push deliveries list
    their devices and which of them were delivered or failed.
    """

    channel: str
    delivery_id: str
    day: date
    send_time: int
    origin: Origin
    person: int
    outcomes: set[str] = field(default_factory=set)
    missing_sent: bool = False
    devices: list[str] = field(default_factory=list)
    devices_delivered: set[str] = field(default_factory=set)
    devices_failed: set[str] = field(default_factory=set)
    events: list[SimEvent] = field(default_factory=list)

    @property
    def cohort_time(self) -> int:
        """The ``sent`` event's time, else the time of the earliest event."""
        sent = [e.timestamp for e in self.events if e.metric == "sent"]
        return min(sent) if sent else min(e.timestamp for e in self.events)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One delivery of a body to the receiver, and what the receiver should make of it.

    ``kind`` is ``landed`` (first delivery of its event id), ``duplicate`` or ``quarantine``.
    """

    receive_time: float
    body: bytes
    x_cio_timestamp: int
    event: SimEvent | None
    kind: str
    reason: str | None = None

    @property
    def received_at_us(self) -> int:
        """``received_at`` as the receiver stores it (same arithmetic as its clock)."""
        return int(self.receive_time * 1_000_000)

    @property
    def event_id(self) -> str | None:
        """The simulated event id the body carries (a quarantined body's too, if it names one)."""
        if self.event is not None:
            return self.event.event_id
        return _marked_id(self.body)


@dataclass(slots=True)
class History:
    """The simulated world and the schedule of its deliveries."""

    config: SimulationConfig
    deliveries: list[SimDelivery]
    customer_events: list[SimEvent]
    arrivals: list[Arrival]

    def events(self) -> list[SimEvent]:
        """Every distinct event: the deliveries' and the subscription changes."""
        return [e for d in self.deliveries for e in d.events] + self.customer_events


# (receipt time, body, X-CIO-Timestamp, event, quarantine reason)
_Timed = tuple[float, bytes, int, SimEvent | None, str | None]


@dataclass(slots=True)
class _Context:
    """What a delivery's bodies share."""

    rng: random.Random
    delivery: SimDelivery


def build_history(config: SimulationConfig) -> History:
    """Decide every delivery, event and arrival of the simulation (no I/O).

    Raises:
        ValueError: the rates are out of range or contradict each other.
    """
    _check(config)
    world = random.Random(f"{config.seed}:world")
    deliveries: list[SimDelivery] = []
    customer_events: list[SimEvent] = []
    for offset in range(config.days):
        day = date.fromordinal(config.start.toordinal() + offset)
        for channel in CHANNELS:
            deliveries.extend(_simulate_group(world, config, channel, day))
        customer_events.extend(_subscription_events(world, config, day))
    events = [e for d in deliveries for e in d.events] + customer_events
    arrivals = _schedule(config, events, random.Random(f"{config.seed}:arrivals"))
    return History(config, deliveries, customer_events, arrivals)


def last_receipt(history: History) -> float:
    """The latest simulated receipt time (unix seconds), or 0 for a history with no arrival."""
    return max((a.receive_time for a in history.arrivals), default=0.0)


def days_late(history: History, now: float) -> int:
    """By how many whole days the history must move back for no receipt to be after ``now``."""
    return max(0, math.ceil((last_receipt(history) - now) / SECONDS_PER_DAY))


def build_history_before(config: SimulationConfig, now: float) -> History:
    """Build the history, moved back by whole days until its last receipt is not after ``now``.

    A history and the one starting ``k`` days earlier are the same world, ``k`` days apart:
    every random draw is relative to a day's start. Whole days keep the send days whole.

    Raises:
        ValueError: as :func:`build_history`, or the history cannot end before ``now`` without
            starting before :data:`EARLIEST_START`.
    """
    history = build_history(config)
    while (late := days_late(history, now)) > 0:
        config = dataclasses.replace(config, start=config.start - timedelta(days=late))
        history = build_history(config)
    return history


def check_config(config: SimulationConfig) -> None:
    """Refuse a configuration :func:`build_history` would refuse, before anything is built.

    Raises:
        ValueError: a size is out of its bounds, or the rates are out of range or contradict
            each other.
    """
    _check(config)


def _check_sizes(config: SimulationConfig) -> None:
    if not 1 <= config.days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS:,}, got {config.days:,}")
    if not 1 <= config.deliveries <= MAX_DELIVERIES:
        raise ValueError(
            f"deliveries must be between 1 and {MAX_DELIVERIES:,}, got {config.deliveries:,}"
        )
    if config.days * config.deliveries > MAX_MESSAGES_PER_CHANNEL:
        raise ValueError(
            f"days x deliveries must be at most {MAX_MESSAGES_PER_CHANNEL:,} messages per channel"
            f" (the history is built in memory), got {config.days * config.deliveries:,}"
        )
    if not 0 <= config.arrivals.quarantined_per_day <= MAX_QUARANTINED_PER_DAY:
        raise ValueError(
            f"quarantined_per_day must be between 0 and {MAX_QUARANTINED_PER_DAY:,},"
            f" got {config.arrivals.quarantined_per_day:,}"
        )
    if config.start < EARLIEST_START:
        raise ValueError(f"start must be {EARLIEST_START} or later, got {config.start}")


def _check(config: SimulationConfig) -> None:
    _check_sizes(config)
    shares = {**_as_dict(config.rates), "duplicate": config.arrivals.duplicate}
    shares["late"] = config.arrivals.late
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"rate {name} must be between 0 and 1, got {value}")
    if config.rates.delivery + config.rates.bounce > 1.0:
        raise ValueError("delivery rate + bounce rate must not exceed 1")
    if config.rates.failure + config.rates.drop > 1.0:
        raise ValueError("failure rate + drop rate must not exceed 1")
    # In-app messages are all reached when sent: the same count decides opens and clicks.
    in_app_sent = config.deliveries - _count(config.rates.failure, config.deliveries)
    if _count(config.rates.click, in_app_sent) > _count(config.rates.open, in_app_sent):
        raise ValueError(_IN_APP_CLICKS)


def _as_dict(rates: Rates) -> dict[str, float]:
    return {name: getattr(rates, name) for name in rates.__dataclass_fields__}


def _count(rate: float, population: int) -> int:
    """How many of ``population`` get an outcome of this rate (half rounds away from zero)."""
    return int(rate * population + 0.5)


def _take(rng: random.Random, population: Sequence[SimDelivery], rate: float) -> list[SimDelivery]:
    return rng.sample(list(population), _count(rate, len(population)))


def _simulate_group(
    rng: random.Random, config: SimulationConfig, channel: str, day: date
) -> list[SimDelivery]:
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    persons = max(20, config.deliveries * config.days // 2)
    origins = _origins_for(channel)
    group = [
        SimDelivery(
            channel=channel,
            delivery_id=_delivery_id(rng),
            day=day,
            send_time=day_start + rng.randrange(_SEND_WINDOW_S),
            origin=rng.choice(origins),
            person=rng.randrange(persons),
        )
        for _ in range(config.deliveries)
    ]
    _choose_outcomes(rng, config.rates, channel, group)
    for delivery in group:
        delivery.events = _events_of(_Context(rng, delivery))
    return group


def _choose_outcomes(
    rng: random.Random, rates: Rates, channel: str, group: list[SimDelivery]
) -> None:
    """Give each delivery its outcomes: exact counts, chosen by seeded samples."""
    failed = _take(rng, group, rates.failure)
    rest = _without(group, failed)
    dropped = rng.sample(rest, _count(rates.drop, len(group))) if _has("dropped", channel) else []
    sent = _without(rest, dropped)
    _mark(failed, "failed")
    _mark(dropped, "dropped")
    _mark(sent, "sent")
    reached = sent
    if _has("delivered", channel):
        reached = _take(rng, sent, rates.delivery)
        bounced = rng.sample(_without(sent, reached), _count(rates.bounce, len(sent)))
        _mark(reached, "delivered")
        _mark(bounced, "bounced")
        # Only deliveries whose later events prove they were sent may lack the sent webhook.
        _mark_missing_sent(_take(rng, reached + bounced, rates.missing_sent))
    _choose_engagement(rng, rates, channel, reached)
    if channel == "push":
        _choose_devices(rng, group)


def _choose_engagement(
    rng: random.Random, rates: Rates, channel: str, reached: list[SimDelivery]
) -> None:
    opened: list[SimDelivery] = []
    if _has("opened", channel):
        opened = _take(rng, reached, rates.open)
        _mark(opened, "opened")
        machine = _take(rng, opened, rates.machine_open_share) if channel == "email" else []
        _mark(_without(opened, machine), "human_opened")
    clicks = _count(rates.click, len(reached))
    if channel == "in_app" and clicks > len(opened):
        raise ValueError(_IN_APP_CLICKS)
    # Clicks come mostly from opened messages; the rest are clicks with images off.
    from_opened = rng.sample(opened, min(clicks, len(opened)))
    others = _without(reached, opened)
    clicked = from_opened + rng.sample(others, clicks - len(from_opened))
    _mark(clicked, "clicked")
    machine_clicks = _take(rng, clicked, rates.machine_click_share) if channel == "email" else []
    _mark(_without(clicked, machine_clicks), "human_clicked")
    if _has("converted", channel):
        _mark(_take(rng, reached, rates.conversion), "converted")
    if channel == "email":
        _mark(_take(rng, reached, rates.unsubscribe), "unsubscribed")
        _mark(_take(rng, reached, rates.spam), "spammed")
    if _has("replied", channel):
        _mark(_take(rng, reached, rates.reply), "replied")


def _choose_devices(rng: random.Random, group: list[SimDelivery]) -> None:
    """One to three devices per push; a quarter of multi-device deliveries miss one device.

    Only deliveries with a ``sent`` webhook miss one: it is the only event naming every device.
    """
    for delivery in group:
        delivery.devices = [_hex(rng, 64) for _ in range(rng.randint(1, 3))]
        if "failed" in delivery.outcomes:
            # Failed before sending: no event names a device.
            delivery.devices = []
        if "delivered" in delivery.outcomes:
            delivery.devices_delivered = set(delivery.devices)
        if "bounced" in delivery.outcomes or "dropped" in delivery.outcomes:
            delivery.devices_failed = set(delivery.devices)
    partial = [
        d for d in group if "delivered" in d.outcomes and len(d.devices) > 1 and not d.missing_sent
    ]
    for delivery in rng.sample(partial, len(partial) // 4):
        delivery.devices_delivered.discard(delivery.devices[-1])


def _without(population: Sequence[SimDelivery], chosen: Sequence[SimDelivery]) -> list[SimDelivery]:
    taken = {id(d) for d in chosen}
    return [d for d in population if id(d) not in taken]


def _has(metric: str, channel: str) -> bool:
    return channel in _CHANNELS_WITH[metric]


def _mark(deliveries: Iterable[SimDelivery], outcome: str) -> None:
    for delivery in deliveries:
        delivery.outcomes.add(outcome)


def _mark_missing_sent(deliveries: Iterable[SimDelivery]) -> None:
    for delivery in deliveries:
        delivery.missing_sent = True


def _origins_for(channel: str) -> list[Origin]:
    campaign = (("journey_id", "01JSIMJOURNEY0000000000000"), ("trigger_event_id", "01JSIMTRG"))
    origins = [
        Origin("campaign", (("campaign_id", 1), ("action_id", 11), *campaign), "Welcome series"),
        Origin("campaign", (("campaign_id", 1), ("action_id", 12), *campaign), "Welcome series"),
        Origin("campaign", (("campaign_id", 2), ("action_id", 21), *campaign), "Win-back"),
        Origin("broadcast", (("broadcast_id", 5), ("action_id", 51)), "Spring sale"),
        Origin(
            "api_triggered_broadcast",
            (("broadcast_id", 6), ("action_id", 61), ("trigger_id", 600)),
            "Price drop",
        ),
        Origin("newsletter", (("newsletter_id", 7), ("content_id", 1)), "Weekly digest"),
    ]
    if schema_by_name(f"{channel}_sent").origin_variants == "event_common_data":
        origins.append(Origin("transactional", (("transactional_message_id", 9),)))
    return origins


def _delivery_id(rng: random.Random) -> str:
    return "R" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(27))


def _hex(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(size))


def _events_of(ctx: _Context) -> list[SimEvent]:
    """The webhook events of one delivery, with times that follow what happened."""
    delivery, rng = ctx.delivery, ctx.rng
    t = delivery.send_time
    outcomes = delivery.outcomes
    events: list[SimEvent] = []
    if "failed" in outcomes:
        for attempt in range(rng.randint(0, 2)):
            events.append(_event(ctx, "attempted", t + 60 * attempt))
        return [*events, _event(ctx, "failed", t + rng.randint(300, 900))]
    if "dropped" in outcomes:
        return [_event(ctx, "dropped", t + rng.randint(0, 2))]
    if not delivery.missing_sent:
        events.append(_event(ctx, "sent", t))
    delivered_at = t + rng.randint(1, 120)
    if "delivered" in outcomes:
        events.append(_event(ctx, "delivered", delivered_at))
    if "bounced" in outcomes:
        events.append(_event(ctx, "bounced", t + rng.randint(5, 600)))
    events.extend(_engagement_events(ctx, delivered_at))
    return events


def _engagement_events(ctx: _Context, delivered_at: int) -> list[SimEvent]:
    delivery, rng = ctx.delivery, ctx.rng
    outcomes = delivery.outcomes
    events = _open_events(ctx, delivered_at)
    opened_at = min((e.timestamp for e in events), default=delivered_at)
    if "clicked" in outcomes:
        events.extend(_click_events(ctx, opened_at))
    last = max((e.timestamp for e in events), default=delivered_at)
    later: list[tuple[str, int, int]] = [
        ("converted", 600, 2 * SECONDS_PER_DAY),
        ("unsubscribed", 600, 3 * SECONDS_PER_DAY),
        ("spammed", 600, SECONDS_PER_DAY),
        ("replied", 60, 6 * SECONDS_PER_HOUR),
    ]
    for metric, low, high in later:
        if metric in outcomes:
            events.append(_event(ctx, metric, last + rng.randint(low, high)))
    return events


def _open_events(ctx: _Context, delivered_at: int) -> list[SimEvent]:
    delivery, rng = ctx.delivery, ctx.rng
    if "opened" not in delivery.outcomes:
        return []
    if delivery.channel != "email":
        return [_event(ctx, "opened", delivered_at + rng.randint(30, 30 * SECONDS_PER_HOUR))]
    events = []
    human = "human_opened" in delivery.outcomes
    # Apple Mail Privacy Protection fetches at delivery, often before the delivered webhook.
    if not human or rng.random() < 0.4:
        flag = rng.choice(("proxied", "prefetched", "synthetic"))
        events.append(_event(ctx, "opened", delivery.send_time + rng.randint(0, 5), {flag: True}))
    if human:
        for _ in range(rng.randint(1, 3)):
            moment = delivered_at + rng.randint(120, 36 * SECONDS_PER_HOUR)
            events.append(_event(ctx, "opened", moment, _human_open_flags(rng)))
    return events


def _human_open_flags(rng: random.Random) -> dict[str, bool]:
    """Human opens carry explicit false flags, or none at all as older payloads do."""
    if rng.random() < 0.5:
        return {}
    return {"proxied": False, "prefetched": False, "synthetic": False}


def _click_events(ctx: _Context, opened_at: int) -> list[SimEvent]:
    delivery, rng = ctx.delivery, ctx.rng
    human = "human_clicked" in delivery.outcomes or delivery.channel != "email"
    events = []
    if delivery.channel == "email" and (not human or rng.random() < 0.3):
        # Link scanners click within seconds of delivery.
        events.append(_event(ctx, "clicked", delivery.send_time + rng.randint(2, 60), _machine()))
    if human:
        for _ in range(rng.randint(1, 2)):
            extra = {"machine": False} if rng.random() < 0.5 else {}
            events.append(_event(ctx, "clicked", opened_at + rng.randint(5, 3600), extra))
    return events


def _machine() -> dict[str, bool]:
    return {"machine": True}


def _event(
    ctx: _Context, metric: str, timestamp: int, extra: dict[str, bool] | None = None
) -> SimEvent:
    delivery, rng = ctx.delivery, ctx.rng
    data, failures = _data_for(ctx, metric)
    data.update(extra or {})
    body = {
        "event_id": _event_id(rng, timestamp),
        "object_type": delivery.channel,
        "metric": metric,
        "timestamp": timestamp,
        "data": data,
    }
    return SimEvent(
        event_id=str(body["event_id"]),
        object_type=delivery.channel,
        metric=metric,
        timestamp=timestamp,
        delivery_id=delivery.delivery_id,
        customer_key=_cio_id(delivery.person),
        body=_encode(body),
        failure_messages=failures,
    )


def _data_for(ctx: _Context, metric: str) -> tuple[dict[str, object], tuple[str, ...]]:
    """``data`` of one delivery event: identity, origin, and the fields its schema names."""
    delivery, rng = ctx.delivery, ctx.rng
    data: dict[str, object] = {**_identity(delivery.person), "delivery_id": delivery.delivery_id}
    data.update(dict(delivery.origin.ids))
    data["template_id"] = 100 + len(delivery.origin.ids)
    if delivery.origin.name is not None:
        data[f"{_name_prefix(delivery.origin.origin)}_name"] = delivery.origin.name
    schema = schema_by_name(f"{delivery.channel}_{metric}")
    failures: tuple[str, ...] = ()
    for name in (*schema.required, *schema.optional):
        if name == "failure_message":
            message = (
                _DROP_MESSAGE if metric == "dropped" else rng.choice(_FAILURES[delivery.channel])
            )
            data[name] = message
            failures = (message,)
        elif name == "recipients":
            data[name] = _recipients(delivery, metric)
        elif name not in _SET_ELSEWHERE:
            data[name] = _field(name, delivery, rng)
    if metric in _DEVICE_FAILURES and delivery.channel == "push":
        failures = tuple(_DEVICE_FAILURES[metric] for _ in delivery.devices_failed)
    return data, failures


def _name_prefix(origin: str) -> str:
    return "broadcast" if origin == "api_triggered_broadcast" else origin


def _recipients(delivery: SimDelivery, metric: str) -> list[dict[str, str]]:
    platform = "ios" if delivery.person % 2 else "android"
    if metric == "delivered":
        devices = [d for d in delivery.devices if d in delivery.devices_delivered]
    elif metric == "bounced":
        devices = [d for d in delivery.devices if d in delivery.devices_failed]
    elif metric in ("opened", "clicked", "converted"):
        devices = [next(d for d in delivery.devices if d in delivery.devices_delivered)]
    else:
        devices = delivery.devices
    failure = {"failure_message": _DEVICE_FAILURES[metric]} if metric in _DEVICE_FAILURES else {}
    return [{"device_id": d, "device_platform": platform, **failure} for d in devices]


def _field(name: str, delivery: SimDelivery, rng: random.Random) -> object:
    person = delivery.person
    values: dict[str, object] = {
        "recipient": _recipient(delivery.channel, person),
        "subject": "Welcome aboard" if delivery.origin.origin == "campaign" else "Spring sale",
        "href": f"https://example.com/landing/{rng.randrange(5)}",
        "link_id": rng.randrange(1, 6),
        "tracked_response": rng.choice(("accept", "learn_more")),
        "inbound_event_id": new_event_id(rng, delivery.send_time),
        "to": "+15005550006",
    }
    return values[name]


def _recipient(channel: str, person: int) -> str:
    if channel in ("sms", "whatsapp"):
        return f"+1555{person:07d}"
    if channel == "slack":
        return "#signups"
    if channel == "webhook":
        return "https://hooks.example.com/receive"
    if channel == "in_app":
        return f"user-{person}"
    return f"person{person}@example.com"


def _identity(person: int) -> dict[str, object]:
    return {
        "customer_id": f"user-{person}",
        "identifiers": {
            "id": f"user-{person}",
            "email": f"person{person}@example.com",
            "cio_id": _cio_id(person),
        },
    }


def _cio_id(person: int) -> str:
    return f"c{person:08x}"


def _encode(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _subscription_events(rng: random.Random, config: SimulationConfig, day: date) -> list[SimEvent]:
    """Person-level subscription changes: distinct times, some sent with ``object_type`` email."""
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    persons = max(20, config.deliveries * config.days // 2)
    count = max(3, config.deliveries // 10)
    moments = sorted(rng.sample(range(day_start, day_start + SECONDS_PER_DAY), count))
    metrics = ("subscribed", "unsubscribed", "cio_subscription_preferences_changed")
    return [
        _customer_event(rng, moment, rng.choice(metrics), rng.randrange(persons))
        for moment in moments
    ]


def _customer_event(rng: random.Random, timestamp: int, metric: str, person: int) -> SimEvent:
    data: dict[str, object] = {**_identity(person), "email_address": f"person{person}@example.com"}
    if metric == "cio_subscription_preferences_changed":
        choice = "true" if rng.random() < 0.5 else "false"
        data["content"] = f'{{"topics":{{"topic_{rng.randint(1, 3)}":{choice}}}}}'
    object_type = "email" if rng.random() < 0.25 else "customer"
    body = {
        "event_id": _event_id(rng, timestamp),
        "object_type": object_type,
        "metric": metric,
        "timestamp": timestamp,
        "data": data,
    }
    return SimEvent(
        event_id=str(body["event_id"]),
        object_type=object_type,
        metric=metric,
        timestamp=timestamp,
        delivery_id=None,
        customer_key=_cio_id(person),
        body=_encode(body),
    )


def _schedule(
    config: SimulationConfig, events: list[SimEvent], rng: random.Random
) -> list[Arrival]:
    """When each body reaches the receiver; the result is in receipt order, classified."""
    settings = config.arrivals
    late = {e.event_id for e in rng.sample(events, _count(settings.late, len(events)))}
    timed: list[_Timed] = []
    first_at: dict[str, float] = {}
    for event in events:
        lag = (
            rng.uniform(SECONDS_PER_HOUR, 48 * SECONDS_PER_HOUR)
            if event.event_id in late
            else rng.uniform(settings.min_lag_s, settings.max_lag_s)
        )
        moment = event.timestamp + lag
        first_at[event.event_id] = moment
        timed.append((moment, event.body, _signed_at(rng, moment), event, None))
    for event in rng.sample(events, _count(settings.duplicate, len(events))):
        moment = first_at[event.event_id] + rng.uniform(60, 6 * SECONDS_PER_HOUR)
        timed.append((moment, event.body, _signed_at(rng, moment), event, None))
    timed.extend(_quarantined(config, events, first_at, rng))
    timed.sort(key=lambda item: item[0])
    return _classify(timed)


def _signed_at(rng: random.Random, moment: float) -> int:
    """Customer.io signs a request just before it sends it."""
    return int(moment - rng.uniform(0.0, 1.0))


def _quarantined(
    config: SimulationConfig,
    events: list[SimEvent],
    first_at: dict[str, float],
    rng: random.Random,
) -> list[_Timed]:
    found: list[_Timed] = []
    per_day = config.arrivals.quarantined_per_day
    for offset in range(config.days):
        day_start = int(datetime.combine(config.start, datetime.min.time(), UTC).timestamp())
        day_start += offset * SECONDS_PER_DAY
        for index in range(per_day):
            moment = day_start + rng.uniform(0, SECONDS_PER_DAY)
            reason = ("invalid_json", "unknown_object_type", "invalid_envelope", "stale")[index % 4]
            if reason == "stale":
                # A retry signed two days before it arrives: outside any sane tolerance.
                event = rng.choice(events)
                moment = first_at[event.event_id] + rng.uniform(60, SECONDS_PER_HOUR)
                found.append(
                    (moment, event.body, int(moment) - 2 * SECONDS_PER_DAY, event, "stale")
                )
                continue
            body = _junk(reason, rng, int(moment))
            found.append((moment, body, _signed_at(rng, moment), None, reason))
    return found


def _junk(reason: str, rng: random.Random, timestamp: int) -> bytes:
    event_id = _event_id(rng, timestamp)
    if reason == "invalid_json":
        return f'{{"event_id":"{event_id}","object_type":"email","metric":"sent",'.encode()
    if reason == "unknown_object_type":
        body = {"event_id": event_id, "object_type": "carrier_pigeon", "metric": "sent"}
        return _encode({**body, "timestamp": timestamp, "data": {}})
    # No timestamp: a broken envelope that still carries the simulated marker.
    return _encode({"event_id": event_id, "object_type": "email", "metric": "opened", "data": {}})


def _event_id(rng: random.Random, timestamp: int) -> str:
    return SIMULATED_EVENT_ID_PREFIX + new_event_id(rng, timestamp)


def _classify(
    timed: list[_Timed],
) -> list[Arrival]:
    """What the receiver makes of each delivery, in the order it receives them."""
    landed: set[str] = set()
    arrivals = []
    for moment, body, signed_at, event, junk in timed:
        if junk is not None:
            reason = "stale_timestamp" if junk == "stale" else junk
            arrivals.append(Arrival(moment, body, signed_at, event, "quarantine", reason))
        elif event is not None and event.event_id not in landed:
            landed.add(event.event_id)
            arrivals.append(Arrival(moment, body, signed_at, event, "landed"))
        else:
            arrivals.append(Arrival(moment, body, signed_at, event, "duplicate"))
    return arrivals


class SimulatedClock:
    """The receiver's clock during a simulation: set to each delivery's receipt time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class Landed:
    """What the receiver made of a simulated history, counted by the receiver itself.

    Attributes:
        delivered: deliveries journaled.
        events: events new to the channel tables.
        duplicates: deliveries of an event id already stored (retries).
        quarantined: deliveries put in quarantine.
    """

    delivered: int
    events: int
    duplicates: int
    quarantined: int


class Landing:
    """An embedded receiver opened on one data directory, ready to take one history.

    Opening takes the data directory's owner lock and creates the tables, so a directory a
    ``ciolake serve`` owns is refused before anything is delivered.
    """

    def __init__(self, settings: Settings, arrivals: Sequence[Arrival]) -> None:
        """Open the receiver.

        Raises:
            ValueError: an arrival's receipt time is after the wall clock.
            DataDirBusyError: a ``ciolake serve`` (or another receiver) owns the data directory.
        """
        _refuse_future(arrivals, time.time())
        self._arrivals = arrivals
        self._clock = SimulatedClock(arrivals[0].receive_time if arrivals else 0.0)
        tuned = msgspec.structs.replace(
            settings,
            signing_keys=(SIMULATION_KEY,),
            flush_interval_s=min(settings.flush_interval_s, _FLUSH_INTERVAL_S),
        )
        self._receiver = Receiver(tuned, clock=self._clock)
        self._receiver.open()
        self._closed = False

    def run(self, on_progress: Callable[[int], None] | None = None) -> Landed:
        """Deliver every arrival, wait until all is committed, and close the receiver.

        An interruption (Ctrl-C) still closes the receiver, committing what was journaled.
        """
        if self._closed:
            raise RuntimeError("this landing is closed")
        self._closed = True
        asyncio.run(_deliver_all(self._receiver, self._clock, self._arrivals, on_progress))
        return _landed(self._receiver.metrics)

    def close(self) -> None:
        """Close the receiver without delivering (no-op once run or closed)."""
        if not self._closed:
            self._closed = True
            asyncio.run(self._receiver.close())


def _refuse_future(arrivals: Sequence[Arrival], now: float) -> None:
    latest = max((a.receive_time for a in arrivals), default=0.0)
    if latest > now:
        moment = datetime.fromtimestamp(latest, UTC).isoformat(timespec="seconds")
        raise ValueError(f"a simulated delivery would be received at {moment}, after now")


def _landed(metrics: Metrics) -> Landed:
    return Landed(
        delivered=_total(metrics, "ciolake_deliveries_journaled_total"),
        events=_total(metrics, "ciolake_events_accepted_total"),
        duplicates=_total(metrics, "ciolake_events_duplicate_total"),
        quarantined=_total(metrics, "ciolake_events_quarantined_total"),
    )


def _total(metrics: Metrics, sample: str) -> int:
    values = (s.value for m in metrics.registry.collect() for s in m.samples if s.name == sample)
    return int(sum(values))


def feed(
    settings: Settings,
    arrivals: Sequence[Arrival],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> Landed:
    """Deliver bodies to an in-process receiver, as Customer.io would, and wait until landed.

    Each body is signed as Customer.io signs it and verified by
    :func:`ciolake.receive.verify.verify` at its simulated receipt time; the receiver journals
    it with that time as ``received_at``.

    Args:
        settings: where the journal, state and tables live.
        arrivals: the deliveries, in receipt order; none may be received after now.
        on_progress: called with the number of deliveries handed over so far.

    Returns:
        What landed, as the receiver counted it.

    Raises:
        ValueError: an arrival's receipt time is after the wall clock.
        DataDirBusyError: a ``ciolake serve`` owns the data directory.
    """
    return Landing(settings, arrivals).run(on_progress)


def foreign_deliveries(tables_uri: str) -> int:
    """How many deliveries of ``raw_events`` under ``tables_uri`` were not simulated.

    A delivery is simulated when its ``event_id`` starts with :data:`SIMULATED_EVENT_ID_PREFIX`;
    one without an ``event_id`` (invalid JSON) when its body names such an id. Only
    ``event_id`` is read unless every id carries the marker.

    Returns:
        The count, 0 when the table does not exist.
    """
    dataset = _raw_dataset(tables_uri)
    if dataset is None:
        return 0
    event_id = pc.field("event_id")
    marked = pc.starts_with(event_id, pattern=SIMULATED_EVENT_ID_PREFIX)
    count: int = dataset.count_rows(filter=event_id.is_valid() & ~marked)
    if count:
        return count
    body = pc.field("body")
    names_marker = pc.match_substring(body, pattern=_MARKER_IN_BODY)
    # A null body (a delivery that is not UTF-8) was never simulated.
    unmarked = event_id.is_null() & (body.is_null() | ~names_marker)
    found: int = dataset.count_rows(filter=unmarked)
    return found


def stored_event_ids(tables_uri: str) -> set[str]:
    """The simulated event ids ``raw_events`` under ``tables_uri`` already holds.

    A delivery without an ``event_id`` (invalid JSON) counts by the id its body names. A run
    leaves these out, so landing the same history twice lands it once: the dedup index alone
    forgets ids older than its window.

    Returns:
        The ids, none when the table does not exist.
    """
    dataset = _raw_dataset(tables_uri)
    if dataset is None:
        return set()
    event_id = pc.field("event_id")
    marked = pc.starts_with(event_id, pattern=SIMULATED_EVENT_ID_PREFIX)
    ids = dataset.to_table(columns=["event_id"], filter=marked).column("event_id")
    found: set[str] = set(pc.unique(ids).to_pylist())
    names_marker = pc.match_substring(pc.field("body"), pattern=_MARKER_IN_BODY)
    bodies = dataset.to_table(columns=["body"], filter=event_id.is_null() & names_marker)
    for body in bodies.column("body").to_pylist():
        if (named := _marked_id(body.encode())) is not None:
            found.add(named)
    return found


def _raw_dataset(tables_uri: str) -> Any:
    """``raw_events`` under ``tables_uri`` as a pyarrow dataset, or None if it does not exist."""
    return table_dataset(tables_uri, RAW_EVENTS)


def _marked_id(body: bytes) -> str | None:
    found = _MARKED_ID.search(body)
    return found.group(1).decode() if found else None


async def _deliver_all(
    receiver: Receiver,
    clock: SimulatedClock,
    arrivals: Sequence[Arrival],
    on_progress: Callable[[int], None] | None,
) -> None:
    tolerance = receiver.settings.timestamp_tolerance_s
    lead_s = _max_lead_s(receiver.settings.dedup_window_days)
    done = 0
    try:
        for chunk in _chunks(arrivals):
            # As Customer.io would on a 503: wait for the committer instead of piling on.
            while receiver.overloaded() or _lead_s(receiver, clock) > lead_s:
                await asyncio.sleep(0.02)
            await asyncio.gather(*(_deliver(receiver, clock, a, tolerance) for a in chunk))
            done += len(chunk)
            if on_progress is not None:
                on_progress(done)
        await _drained(receiver)
    finally:
        await receiver.close()


def _chunks(arrivals: Sequence[Arrival]) -> Iterable[Sequence[Arrival]]:
    """Runs of arrivals, each at most ``_FEED_CHUNK`` long and ``_CHUNK_SPAN_S`` wide."""
    start = 0
    while start < len(arrivals):
        stop = start + 1
        limit = arrivals[start].receive_time + _CHUNK_SPAN_S
        while (
            stop < min(len(arrivals), start + _FEED_CHUNK) and arrivals[stop].receive_time <= limit
        ):
            stop += 1
        yield arrivals[start:stop]
        start = stop


def _max_lead_s(dedup_window_days: int) -> float:
    """How far the simulated clock may run ahead of the oldest delivery not yet committed.

    The committer prunes its dedup index by this clock: days ahead of what it commits, it would
    forget a first delivery before its retry (at most 6 hours later) is checked against it.
    Half the window, less a day, keeps lead + chunk + retry inside the window.
    """
    return max(float(SECONDS_PER_HOUR), (dedup_window_days - 1) * SECONDS_PER_DAY / 2)


def _lead_s(receiver: Receiver, clock: SimulatedClock) -> float:
    oldest = receiver.oldest_pending_us()
    return 0.0 if oldest is None else clock.now - oldest / 1_000_000


async def _deliver(
    receiver: Receiver, clock: SimulatedClock, arrival: Arrival, tolerance_s: int
) -> None:
    # Setting the clock and accepting happen in one step of the event loop, so each
    # delivery is journaled with its own receipt time, in receipt order.
    clock.now = arrival.receive_time
    headers = {
        "X-CIO-Timestamp": str(arrival.x_cio_timestamp),
        "X-CIO-Signature": sign(arrival.body, SIMULATION_KEY, arrival.x_cio_timestamp),
    }
    verdict = verify(
        arrival.body,
        headers,
        (SIMULATION_KEY,),
        now=arrival.receive_time,
        tolerance_s=tolerance_s,
    )
    await receiver.accept(arrival.body, verdict)


async def _drained(receiver: Receiver) -> None:
    while receiver.backlog()[0]:
        await asyncio.sleep(0.02)


def run(
    config: SimulationConfig,
    settings: Settings,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> History:
    """Build a history and land it through the receiver; return the history (the truth).

    Raises:
        ValueError: the rates are out of range or contradict each other, or a delivery would
            be received after now.
    """
    history = build_history(config)
    feed(settings, history.arrivals, on_progress=on_progress)
    return history
