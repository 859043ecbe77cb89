"""One reconciliation: which messages, Customer.io's counts beside the tables', and the gaps
delivery by delivery."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ciolake.analytics.duck import Lake
from ciolake.customerio.reporting import (
    EASTERN,
    Delivery,
    MessageMetrics,
    MessageRef,
    Messages,
    day_bounds,
)
from ciolake.reconcile import lake_counts
from ciolake.reconcile.compare import (
    DayCount,
    DeliveryGap,
    Tolerance,
    compare_counts,
    delivery_gaps,
)


@dataclass(frozen=True, slots=True)
class Window:
    """The creation days to compare, ``first`` to ``last`` inclusive.

    ``campaign_zone`` is the time zone campaigns' days are asked in; the other kinds of
    message are counted by Customer.io in Eastern time only.
    """

    first: dt.date
    last: dt.date
    campaign_zone: str

    def zone_of(self, message: MessageRef) -> str:
        """The time zone Customer.io's days of ``message`` are in."""
        return self.campaign_zone if message.kind == "campaign" else EASTERN.key


@dataclass
class Reconciliation:
    """What a run found."""

    window: Window
    tolerance: Tolerance
    messages: list[MessageRef]
    counts: list[DayCount] = field(default_factory=list)
    gaps: list[DeliveryGap] = field(default_factory=list)

    @property
    def over_tolerance(self) -> list[DayCount]:
        """The counts that differ by more than the tolerance."""
        return [row for row in self.counts if row.over_tolerance]


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the two sides are read from."""

    lake: Lake
    metrics: MessageMetrics
    messages: Messages


Progress = Callable[[str, int, int], None]
"""Called with what is being done, how many of how many."""


def discover(sources: Sources, window: Window, progress: Progress) -> list[MessageRef]:
    """Every message with a delivery created in the window, by Customer.io's deliveries or by
    the tables' events."""
    found = set(
        lake_counts.messages_in(
            sources.lake, first=window.first, last=window.last, zone=window.campaign_zone
        )
    )
    start, _ = day_bounds(window.first, ZoneInfo(window.campaign_zone))
    _, end = day_bounds(window.last, ZoneInfo(window.campaign_zone))
    for seen, delivery in enumerate(sources.messages.created_between(None, start=start, end=end)):
        if (message := delivery.message()) is not None:
            found.add(message)
        if seen % 1000 == 999:
            progress("listing Customer.io's deliveries", seen + 1, 0)
    return sorted(found, key=lambda m: (m.kind, m.id, m.action_id or 0))


def reconcile(
    sources: Sources,
    messages: Sequence[MessageRef],
    window: Window,
    *,
    tolerance: Tolerance,
    walk_deliveries: bool,
    progress: Progress,
) -> Reconciliation:
    """Compare each message's counts; with ``walk_deliveries``, list the deliveries behind
    every day that is over the tolerance."""
    result = Reconciliation(window, tolerance, list(messages))
    for done, message in enumerate(messages):
        progress(f"comparing {message}", done, len(messages))
        result.counts.extend(_compare(sources, message, window, tolerance))
    if walk_deliveries:
        days: dict[MessageRef, set[dt.date]] = {}
        for row in result.over_tolerance:
            days.setdefault(row.message, set()).add(row.day)
        for done, (message, chosen) in enumerate(days.items()):
            progress(f"walking {message}'s deliveries", done, len(days))
            result.gaps.extend(_walk(sources, message, sorted(chosen), window.zone_of(message)))
    return result


def _compare(
    sources: Sources, message: MessageRef, window: Window, tolerance: Tolerance
) -> list[DayCount]:
    zone = window.zone_of(message)
    theirs = sources.metrics.daily(message, first=window.first, last=window.last, zone=zone)
    ours = lake_counts.daily_counts(
        sources.lake, message, first=window.first, last=window.last, zone=zone
    )
    return compare_counts(theirs, ours, tolerance=tolerance)


def _walk(
    sources: Sources, message: MessageRef, days: list[dt.date], zone: str
) -> list[DeliveryGap]:
    theirs: dict[dt.date, list[Delivery]] = {}
    for day in days:
        start, end = day_bounds(day, ZoneInfo(zone))
        theirs[day] = list(sources.messages.created_between(message, start=start, end=end))
    ids = frozenset(d.id for listed in theirs.values() for d in listed)
    ours = lake_counts.deliveries(sources.lake, message, days=frozenset(days), ids=ids, zone=zone)
    gaps = []
    for day, listed in theirs.items():
        known = {d.id for d in listed}
        mine = {i: d for i, d in ours.items() if d.day == day or i in known}
        gaps.extend(delivery_gaps(message, day, listed, mine))
    return gaps
