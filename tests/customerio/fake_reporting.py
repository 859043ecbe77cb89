"""The reporting side of the fake App API: per-message metrics and ``/v1/messages``.

Built from a list of deliveries as ``/v1/messages`` lists them (``id``, ``created``, origin ids,
``metrics``: one unix time per metric reached); the metrics endpoints count those deliveries by
the day each was created, as Customer.io does:

* ``/v1/campaigns/{id}[/actions/{action_id}]/metrics``: ``version=2``, ``res=days``, ``tz``
  (a region name, default Eastern), ``start`` and ``end`` (unix seconds); one bucket per day
  from ``start``'s day to ``end``'s, oldest first;
* ``/v1/broadcasts|newsletters|transactional/{id}/metrics``: ``period=days``, ``steps`` (at most
  45), days in Eastern time ending today;
* ``/v1/messages``: ``limit`` (at most 1000), ``start`` (the cursor of the previous page's
  ``next``), ``start_ts``/``end_ts`` (creation, a window of at most six months), ``campaign_id``,
  ``action_id``, ``newsletter_id``, ``type``, ``metric``.

Every series Customer.io sends is there, those a webhook cannot count too (``created``, ``2xx``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EASTERN = ZoneInfo("America/New_York")
MAX_STEPS = 45
MAX_LIMIT = 1000
MAX_WINDOW_S = 182 * 86_400
SERIES = (
    "attempted",
    "bounced",
    "clicked",
    "converted",
    "created",
    "delivered",
    "drafted",
    "failed",
    "human_clicked",
    "human_opened",
    "opened",
    "prefetch_opened",
    "sent",
    "spammed",
    "suppressed",
    "topic_unsubscribed",
    "undeliverable",
    "unsubscribed",
    "2xx",
)
_CAMPAIGN = re.compile(r"^/v1/campaigns/(\d+)(?:/actions/(\d+))?/metrics$")
_STEPS = re.compile(r"^/v1/(broadcasts|newsletters|transactional)/(\d+)/metrics$")
_ORIGIN_FIELD = {
    "broadcasts": "broadcast_id",
    "newsletters": "newsletter_id",
    "transactional": "transactional_message_id",
}

Answer = tuple[int, dict[str, Any]]


def _error(status: int, detail: str) -> Answer:
    return status, {"errors": [{"detail": detail, "status": str(status)}]}


class FakeReporting:
    """In-memory deliveries and the three reporting endpoints over them.

    Args:
        wall_clock: unix seconds "now", for the endpoints that end today.
    """

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self._wall_clock = wall_clock

    def handles(self, path: str) -> bool:
        """Whether ``path`` (without its query) is one of the reporting endpoints."""
        return path == "/v1/messages" or path.endswith("/metrics")

    def answer(self, method: str, target: str) -> Answer:
        """Answer a request for ``target`` (path and query)."""
        if method != "GET":
            return _error(405, "method not allowed")
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path.rstrip("/")
        try:
            if path == "/v1/messages":
                return self._messages(query)
            if match := _CAMPAIGN.match(path):
                return self._campaign(int(match[1]), _int_or_none(match[2]), query)
            if match := _STEPS.match(path):
                return self._steps(match[1], int(match[2]), query)
        except _BadQueryError as exc:
            return _error(400, str(exc))
        return _error(404, "not found")

    # /v1/messages ------------------------------------------------------------------------------

    def _messages(self, query: dict[str, str]) -> Answer:
        limit = _integer(query, "limit", default=50)
        if not 1 <= limit <= MAX_LIMIT:
            raise _BadQueryError(f"limit must be between 1 and {MAX_LIMIT}")
        start_ts = _integer(query, "start_ts", default=0)
        end_ts = _integer(query, "end_ts", default=int(self._wall_clock()))
        if end_ts - start_ts > MAX_WINDOW_S:
            raise _BadQueryError("the time window between start_ts and end_ts is at most 6 months")
        chosen = [d for d in self._sorted() if start_ts <= d["created"] <= end_ts]
        for name in ("campaign_id", "action_id", "newsletter_id"):
            if name in query:
                chosen = [d for d in chosen if d.get(name) == _integer(query, name)]
        if "type" in query:
            chosen = [d for d in chosen if d.get("type") == query["type"]]
        if "metric" in query:
            chosen = [d for d in chosen if query["metric"] in d["metrics"]]
        offset = _cursor(query.get("start", ""))
        page = chosen[offset : offset + limit]
        following = offset + limit
        next_cursor = f"c{following}" if following < len(chosen) else ""
        return 200, {"messages": page, "next": next_cursor}

    def _sorted(self) -> list[dict[str, Any]]:
        # Newest first, as the API lists them.
        return sorted(self.deliveries, key=lambda d: (-d["created"], d["id"]))

    # Metrics -----------------------------------------------------------------------------------

    def _campaign(self, campaign: int, action: int | None, query: dict[str, str]) -> Answer:
        if query.get("version") != "2":
            raise _BadQueryError("this fake answers version=2 only")
        if query.get("res") != "days":
            raise _BadQueryError("this fake answers res=days only")
        zone = _zone(query.get("tz", "America/New_York"))
        first = _day(_integer(query, "start"), zone)
        last = _day(_integer(query, "end"), zone)
        if last < first:
            raise _BadQueryError("end is before start")
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

        def mine(delivery: dict[str, Any]) -> bool:
            if delivery.get("campaign_id") != campaign:
                return False
            return action is None or delivery.get("action_id") == action

        return 200, self._series(mine, days, zone)

    def _steps(self, kind: str, message_id: int, query: dict[str, str]) -> Answer:
        if query.get("period") != "days":
            raise _BadQueryError("this fake answers period=days only")
        steps = _integer(query, "steps", default=MAX_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise _BadQueryError(f"steps must be between 1 and {MAX_STEPS} for days")
        today = _day(int(self._wall_clock()), EASTERN)
        days = [today - dt.timedelta(days=steps - 1 - i) for i in range(steps)]
        field = _ORIGIN_FIELD[kind]
        return 200, self._series(lambda d: d.get(field) == message_id, days, EASTERN)

    def _series(
        self, mine: Callable[[dict[str, Any]], bool], days: list[dt.date], zone: ZoneInfo
    ) -> dict[str, Any]:
        index = {day: i for i, day in enumerate(days)}
        series = {name: [0] * len(days) for name in SERIES}
        for delivery in filter(mine, self.deliveries):
            slot = index.get(_day(delivery["created"], zone))
            if slot is None:
                continue
            series["created"][slot] += 1
            for metric in delivery["metrics"]:
                series.setdefault(metric, [0] * len(days))[slot] += 1
        return {"metric": {"series": series}}


class _BadQueryError(ValueError):
    pass


def _int_or_none(text: str | None) -> int | None:
    return None if text is None else int(text)


def _integer(query: dict[str, str], name: str, default: int | None = None) -> int:
    if name not in query:
        if default is None:
            raise _BadQueryError(f"{name} is required")
        return default
    try:
        return int(query[name])
    except ValueError:
        raise _BadQueryError(f"{name} must be an integer") from None


def _cursor(text: str) -> int:
    if not text:
        return 0
    if not text.startswith("c") or not text[1:].isdigit():
        raise _BadQueryError("start is not a cursor this API gave")
    return int(text[1:])


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _BadQueryError(f"unknown tz {name!r}") from None


def _day(unix: int, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(unix, zone).date()
