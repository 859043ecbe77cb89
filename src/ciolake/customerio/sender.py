"""Post signed sample events to a receiver exactly as Customer.io does (``send-test``)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from ciolake.events.model import OBJECT_TYPES
from ciolake.events.samples import sample_event
from ciolake.events.schemas import ALL_SCHEMAS, MetricSchema, find_schema
from ciolake.verify import sign


@dataclass(slots=True)
class SendSummary:
    """What the receiver answered."""

    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> bool:
        return self.sent > 0 and set(self.statuses) == {"200"}


def choose_schemas(
    *, object_type: str | None, metric: str | None, every: bool
) -> list[tuple[MetricSchema, str]]:
    """The (schema, object_type) pairs to send.

    Raises:
        ValueError: the object type or metric is not in the spec.
    """
    if every:
        return [(s, _default_type(s)) for s in ALL_SCHEMAS]
    chosen_type = object_type or "email"
    if chosen_type not in OBJECT_TYPES:
        raise ValueError(f"unknown object type {chosen_type!r}; one of {', '.join(OBJECT_TYPES)}")
    if metric is None:
        matches = [s for s in ALL_SCHEMAS if s.object_types == frozenset({chosen_type})]
        return [(s, chosen_type) for s in matches] if object_type else _email_opened()
    schema = find_schema(chosen_type, metric, has_delivery_id=True)
    if schema is None:
        raise ValueError(f"the spec has no {chosen_type} event with metric {metric!r}")
    return [(schema, chosen_type)]


def _default_type(schema: MetricSchema) -> str:
    return "customer" if len(schema.object_types) > 1 else next(iter(schema.object_types))


def _email_opened() -> list[tuple[MetricSchema, str]]:
    schema = find_schema("email", "opened", has_delivery_id=True)
    assert schema is not None
    return [(schema, "email")]


def build_bodies(
    schemas: Sequence[tuple[MetricSchema, str]], *, count: int, rng: random.Random, now: int
) -> list[bytes]:
    """``count`` bodies, cycling through ``schemas``, each with a fresh event id."""
    bodies = []
    for index in range(count):
        schema, object_type = schemas[index % len(schemas)]
        event = sample_event(schema, rng=rng, timestamp=now, object_type=object_type)
        bodies.append(json.dumps(event, separators=(",", ":")).encode())
    return bodies


def post_signed(
    url: str,
    bodies: Sequence[bytes],
    *,
    key: str,
    rate: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = 4.0,
) -> SendSummary:
    """Sign each body with ``key`` and POST it, at most ``rate`` per second if given.

    Connection failures are counted under their exception name instead of raising, so that a
    summary always comes back.
    """
    summary = SendSummary()
    started = time.monotonic()
    with httpx.Client(timeout=timeout_s) as client:
        for index, body in enumerate(bodies):
            if rate:
                _pace(started, index, rate, sleep)
            summary.statuses[_post_one(client, url, body, key, int(clock()))] += 1
    summary.seconds = time.monotonic() - started
    return summary


def _pace(started: float, index: int, rate: float, sleep: Callable[[float], None]) -> None:
    wait = started + index / rate - time.monotonic()
    if wait > 0:
        sleep(wait)


def _post_one(client: httpx.Client, url: str, body: bytes, key: str, timestamp: int) -> str:
    headers = {
        "Content-Type": "application/json",
        "X-CIO-Timestamp": str(timestamp),
        "X-CIO-Signature": sign(body, key, timestamp),
    }
    try:
        return str(client.post(url, content=body, headers=headers).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__
