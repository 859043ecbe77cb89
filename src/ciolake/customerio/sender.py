"""Post signed sample events to a receiver exactly as Customer.io does (``send-test``).

Bodies are built one at a time as they are posted, so a large count costs no memory. The first
failure that every later post would share (no connection, no answer in time, a redirect) stops
the run with an error naming the URL; other answers are counted in the summary.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin

import httpx

from ciolake.errors import InputError, TerminalError, TransientError
from ciolake.events.model import OBJECT_TYPES
from ciolake.events.samples import sample_event
from ciolake.events.schemas import ALL_SCHEMAS, MetricSchema, find_schema
from ciolake.receive.verify import sign

MAX_COUNT: Final = 1_000_000
DEFAULT_TIMEOUT_S: Final = 10.0
CUSTOMER_TYPE: Final = "customer"
_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")


class ReceiverUnreachableError(TransientError):
    """The receiver could not be reached, or did not answer within the timeout."""


class ReceiverRedirectError(InputError):
    """The receiver answered a redirect: the URL given is not the webhook's exact URL."""


class ReceiverRefusedError(TerminalError):
    """The receiver answered, but not every event was accepted (200)."""


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

    With ``every``, every schema of the spec that matches the ``object_type`` and ``metric``
    given (all 69 when neither is). Without it, ``object_type`` alone means every schema of
    that type, ``metric`` alone that metric of email, and neither ``email`` ``opened``.

    Raises:
        ValueError: the object type or metric is not in the spec, or nothing matches both.
    """
    if object_type is not None and object_type not in OBJECT_TYPES:
        raise ValueError(f"unknown object type {object_type!r}; one of {', '.join(OBJECT_TYPES)}")
    if object_type is not None and metric is not None:
        return [_one(object_type, metric)]
    if every or object_type is not None:
        chosen = [
            (s, _default_type(s))
            for s in ALL_SCHEMAS
            if object_type in (None, _default_type(s)) and metric in (None, s.metric)
        ]
        if not chosen:
            kind = "" if object_type is None else f"{object_type} "
            raise ValueError(f"the spec has no {kind}event with metric {metric!r}")
        return chosen
    return [_one("email", metric or "opened")]


def _one(object_type: str, metric: str) -> tuple[MetricSchema, str]:
    schema = find_schema(object_type, metric, has_delivery_id=True)
    if schema is None:
        raise ValueError(f"the spec has no {object_type} event with metric {metric!r}")
    return schema, object_type


def _default_type(schema: MetricSchema) -> str:
    return CUSTOMER_TYPE if len(schema.object_types) > 1 else next(iter(schema.object_types))


def iter_bodies(
    schemas: Sequence[tuple[MetricSchema, str]], *, count: int, rng: random.Random, now: int
) -> Iterator[bytes]:
    """``count`` bodies, cycling through ``schemas``, each with a fresh event id, built lazily."""
    for index in range(count):
        schema, object_type = schemas[index % len(schemas)]
        event = sample_event(schema, rng=rng, timestamp=now, object_type=object_type)
        yield json.dumps(event, separators=(",", ":")).encode()


def build_bodies(
    schemas: Sequence[tuple[MetricSchema, str]], *, count: int, rng: random.Random, now: int
) -> list[bytes]:
    """``count`` bodies, cycling through ``schemas``, each with a fresh event id."""
    return list(iter_bodies(schemas, count=count, rng=rng, now=now))


def post_signed(
    url: str,
    bodies: Iterable[bytes],
    *,
    key: str,
    rate: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SendSummary:
    """Sign each body with ``key`` and POST it, at most ``rate`` per second if given.

    Every answer is counted by status, except those that every later post would share too.

    Raises:
        ReceiverUnreachableError: no connection, or no answer within ``timeout_s``.
        ReceiverRedirectError: the receiver answered a redirect (3xx).
    """
    summary = SendSummary()
    started = time.monotonic()
    with httpx.Client(timeout=timeout_s) as client:
        for index, body in enumerate(bodies):
            if rate:
                _pace(started, index, rate, sleep)
            try:
                response = _post_one(client, url, body, key, int(clock()))
            except httpx.TransportError as exc:
                raise _unreachable(url, exc, timeout_s, summary.sent) from None
            if 300 <= response.status_code < 400:
                raise ReceiverRedirectError(_redirect_message(url, response))
            summary.statuses[str(response.status_code)] += 1
    summary.seconds = time.monotonic() - started
    return summary


def check_accepted(summary: SendSummary, url: str) -> None:
    """Raise unless the receiver accepted (200) every event.

    Raises:
        ReceiverRefusedError: some answers were not 200; the message says what to check.
    """
    refused = {status: n for status, n in sorted(summary.statuses.items()) if status != "200"}
    if summary.ok or not refused:
        return
    counts = ", ".join(f"{n} answered {status}" for status, n in refused.items())
    raise ReceiverRefusedError(
        f"{sum(refused.values())} of {summary.sent} events to {url} were not accepted "
        f"({counts}): {_refusal_hint(refused)}"
    )


def _refusal_hint(refused: dict[str, int]) -> str:
    if "401" in refused:
        return "sign with one of the receiver's CIOLAKE_SIGNING_KEYS (--key)"
    if "404" in refused or "405" in refused:
        return "check the path of --url (ciolake receives at /webhooks/customerio)"
    return "see the receiver's log for why"


def _pace(started: float, index: int, rate: float, sleep: Callable[[float], None]) -> None:
    wait = started + index / rate - time.monotonic()
    if wait > 0:
        sleep(wait)


def _post_one(
    client: httpx.Client, url: str, body: bytes, key: str, timestamp: int
) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-CIO-Timestamp": str(timestamp),
        "X-CIO-Signature": sign(body, key, timestamp),
    }
    return client.post(url, content=body, headers=headers)


def _unreachable(
    url: str, exc: httpx.TransportError, timeout_s: float, answered: int
) -> ReceiverUnreachableError:
    after = f" after {answered} answered" if answered else ""
    if isinstance(exc, httpx.TimeoutException):
        return ReceiverUnreachableError(
            f"no answer from {url} within {timeout_s:g}s{after}: check that the receiver there "
            "is up and not stuck, or wait longer with --timeout"
        )
    return ReceiverUnreachableError(
        f"cannot connect to {url} ({_reason(exc)}){after}: check that the receiver "
        "(`ciolake serve`) runs there and that --url names its scheme, host and port"
    )


def _redirect_message(url: str, response: httpx.Response) -> str:
    answered = f"{url} answered {response.status_code}, a redirect"
    exact = "a webhook URL must be exact (redirects are not followed)"
    location = response.headers.get("Location")
    if not location:
        return f"{answered}: {exact}"
    target = urljoin(url, location)
    return f"{answered} to {target}: {exact}; use --url {target}"


def _reason(exc: httpx.TransportError) -> str:
    text = _ERRNO_PREFIX.sub("", str(exc)).strip()
    return text[:1].lower() + text[1:] if text else type(exc).__name__
