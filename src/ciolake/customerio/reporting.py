"""Customer.io's own numbers: per-message metrics by day, and the delivery records behind them.

Two App API resources, both read-only, through ``AppApiClient._request`` (rate limit, retries,
typed errors):

* ``MessageMetrics``: ``/v1/campaigns/{id}/metrics`` (and its actions') with ``version=2``,
  ``res=days`` and a time zone of our choosing; ``/v1/broadcasts|newsletters|transactional/{id}
  /metrics`` with ``period=days`` and ``steps``, which end today and count days in Eastern time.
  Counts are of deliveries, bucketed by the day each delivery was created.
* ``Messages``: ``/v1/messages``, the deliveries themselves, each with one timestamp per metric
  it reached, a cursor page of at most 1,000 at a time, creation windows of at most six months.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, cast
from zoneinfo import ZoneInfo

import msgspec

from ciolake.customerio.client import AppApiClient, decode_answer
from ciolake.events.definition import ORIGINS

MessageKind = Literal["campaign", "broadcast", "newsletter", "transactional"]
EASTERN: Final = ZoneInfo("America/New_York")
"""The time zone of the ``period``/``steps`` endpoints ("days start at 00:00 EST")."""
MAX_DAY_STEPS: Final = 45
"""The most days the ``period``/``steps`` endpoints return."""
PAGE_LIMIT: Final = 1000
MAX_WINDOW: Final = dt.timedelta(days=182)
"""``/v1/messages`` answers creation windows of at most six months."""

ORIGIN_FIELDS: Final[dict[MessageKind, str]] = {
    cast(MessageKind, origin): field for field, origin in ORIGINS
}
"""Each kind of message and the id field (and table column) naming it, in the order the
webhook's origin is decided (``events.definition.ORIGINS``)."""

_STEPS_PATHS: Final[dict[str, str]] = {
    "broadcast": "/v1/broadcasts",
    "newsletter": "/v1/newsletters",
    "transactional": "/v1/transactional",
}


@dataclass(frozen=True, slots=True)
class MessageRef:
    """One message of Customer.io: a campaign (or one of its actions), a broadcast, a newsletter
    or a transactional message."""

    kind: MessageKind
    id: int
    action_id: int | None = None

    def __str__(self) -> str:
        action = f" action {self.action_id}" if self.action_id is not None else ""
        return f"{self.kind} {self.id}{action}"


@dataclass(frozen=True, slots=True)
class DailySeries:
    """Customer.io's counts of one message: ``counts[metric][day]``, days in ``zone``."""

    message: MessageRef
    zone: str
    counts: dict[str, dict[dt.date, int]]


class _Series(msgspec.Struct):
    series: dict[str, list[int | None]] = msgspec.field(default_factory=dict)


class _MetricAnswer(msgspec.Struct):
    metric: _Series


class Identifiers(msgspec.Struct, frozen=True):
    """Who a delivery went to."""

    id: str | None = None
    email: str | None = None
    cio_id: str | None = None


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery as ``/v1/messages`` lists it; ``metrics`` maps a metric to when it was
    first reached (unix seconds)."""

    id: str
    created: int
    metrics: dict[str, int] = msgspec.field(default_factory=dict)
    type: str | None = None
    customer_id: str | None = None
    customer_identifiers: Identifiers | None = None
    recipient: str | None = None
    subject: str | None = None
    failure_message: str | None = None
    campaign_id: int | None = None
    action_id: int | None = None
    newsletter_id: int | None = None
    broadcast_id: int | None = None
    content_id: int | None = None
    transactional_message_id: int | None = None

    def message(self) -> MessageRef | None:
        """The message that sent this delivery (a campaign as a whole, not its action)."""
        for kind, field in ORIGIN_FIELDS.items():
            if (id_ := getattr(self, field)) is not None:
                return MessageRef(kind, id_)
        return None

    def belongs_to(self, message: MessageRef) -> bool:
        """Whether this delivery was sent by ``message``."""
        if getattr(self, ORIGIN_FIELDS[message.kind]) != message.id:
            return False
        return message.action_id is None or self.action_id == message.action_id


class _MessagesPage(msgspec.Struct):
    messages: list[Delivery]
    next: str | None = None


def day_bounds(day: dt.date, zone: dt.tzinfo) -> tuple[int, int]:
    """Unix seconds of ``day``'s first and last second in ``zone``."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp()) - 1


class MessageMetrics:
    """The metrics resource of campaigns, actions, broadcasts, newsletters and transactional
    messages."""

    def __init__(self, client: AppApiClient, *, today_eastern: dt.date) -> None:
        self._client = client
        self._today_eastern = today_eastern

    def daily(
        self, message: MessageRef, *, first: dt.date, last: dt.date, zone: str
    ) -> DailySeries:
        """Customer.io's per-day counts of ``message`` from ``first`` to ``last`` (inclusive).

        Campaigns and actions are asked in ``zone``; the other kinds answer in Eastern time,
        and only for the last ``MAX_DAY_STEPS`` days up to today: days before that are absent
        from the answer.
        """
        if message.kind == "campaign":
            return self._campaign(message, first=first, last=last, zone=zone)
        return self._steps(message, first=first, last=last)

    def _campaign(
        self, message: MessageRef, *, first: dt.date, last: dt.date, zone: str
    ) -> DailySeries:
        path = f"/v1/campaigns/{message.id}"
        if message.action_id is not None:
            path += f"/actions/{message.action_id}"
        path += "/metrics"
        start, _ = day_bounds(first, ZoneInfo(zone))
        _, end = day_bounds(last, ZoneInfo(zone))
        params: dict[str, str | int] = {
            "version": 2,
            "res": "days",
            "tz": zone,
            "start": start,
            "end": end,
        }
        series = self._get(path, params)
        # Oldest first, one bucket per day from ``first``.
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        return DailySeries(message, zone, _by_day(series, days, align="start"))

    def _steps(self, message: MessageRef, *, first: dt.date, last: dt.date) -> DailySeries:
        path = f"{_STEPS_PATHS[message.kind]}/{message.id}/metrics"
        today = self._today_eastern
        steps = max(1, min(MAX_DAY_STEPS, (today - first).days + 1))
        series = self._get(path, {"period": "days", "steps": steps})
        days = [today - dt.timedelta(days=steps - 1 - i) for i in range(steps)]
        counts = _by_day(series, days, align="end")
        wanted = {
            metric: {day: n for day, n in by_day.items() if first <= day <= last}
            for metric, by_day in counts.items()
        }
        return DailySeries(message, EASTERN.key, wanted)

    def _get(self, path: str, params: dict[str, str | int]) -> dict[str, list[int | None]]:
        raw = self._client._request("GET", path, params=params)
        answer = decode_answer(self._client, raw, _MetricAnswer, method="GET", path=path)
        return answer.metric.series


def _by_day(
    series: dict[str, list[int | None]],
    days: list[dt.date],
    *,
    align: Literal["start", "end"],
) -> dict[str, dict[dt.date, int]]:
    """Each series' buckets by day; a series of another length is aligned at ``align``."""
    counts: dict[str, dict[dt.date, int]] = {}
    for metric, values in series.items():
        if align == "start":
            pairs = zip(days, values, strict=False)
        else:
            pairs = zip(reversed(days), reversed(values), strict=False)
        counts[metric] = {day: int(value or 0) for day, value in pairs}
    return counts


class Messages:
    """The deliveries resource: ``/v1/messages``."""

    def __init__(self, client: AppApiClient) -> None:
        self._client = client

    def created_between(
        self,
        message: MessageRef | None,
        *,
        start: int,
        end: int,
        page_limit: int = PAGE_LIMIT,
    ) -> Iterator[Delivery]:
        """Every delivery created from ``start`` to ``end`` (unix seconds, inclusive), of
        ``message`` or of every message (None), page after page, in windows of at most six
        months."""
        window = int(MAX_WINDOW.total_seconds())
        for window_start in range(start, end + 1, window):
            window_end = min(end, window_start + window - 1)
            yield from self._window(message, window_start, window_end, page_limit)

    def _window(
        self, message: MessageRef | None, start: int, end: int, page_limit: int
    ) -> Iterator[Delivery]:
        params: dict[str, str | int] = {"limit": page_limit, "start_ts": start, "end_ts": end}
        # The API filters by campaign, action and newsletter; broadcasts and transactional
        # messages are picked out of the window's deliveries here.
        if message is not None and message.kind == "campaign":
            params["campaign_id"] = message.id
        elif message is not None and message.kind == "newsletter":
            params["newsletter_id"] = message.id
        if message is not None and message.action_id is not None:
            params["action_id"] = message.action_id
        while True:
            page = self._page(params)
            yield from (d for d in page.messages if message is None or d.belongs_to(message))
            if not page.next or not page.messages:
                return
            params["start"] = page.next

    def _page(self, params: dict[str, str | int]) -> _MessagesPage:
        path = "/v1/messages"
        raw = self._client._request("GET", path, params=params)
        return decode_answer(self._client, raw, _MessagesPage, method="GET", path=path)
