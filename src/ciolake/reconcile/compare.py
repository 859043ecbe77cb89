"""Customer.io's counts beside the tables': pure comparisons, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ciolake.customerio.reporting import DailySeries, Delivery, MessageRef
from ciolake.events.schemas import ALL_SCHEMAS
from ciolake.reconcile.lake_counts import HUMAN_METRICS, LakeDelivery

RELIABLE_FROM: dict[str, dt.date] = {
    "human_opened": dt.date(2025, 3, 20),
    "human_clicked": dt.date(2025, 4, 20),
}
"""The first day Customer.io says its human-open and human-click counts are reliable."""

COMPARED_METRICS: frozenset[str] = frozenset(
    {schema.metric for schema in ALL_SCHEMAS} | set(HUMAN_METRICS)
)
"""Customer.io's series that the tables can count; the others (``created``, ``2xx``, ...) are
not events of the reporting webhook."""


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far apart the counts may be: a difference within either bound is accepted."""

    absolute: int = 0
    percent: float = 0.0

    def allows(self, customerio: int, difference: int) -> bool:
        """Whether ``difference`` (ciolake minus Customer.io) is within the tolerance."""
        gap = abs(difference)
        return gap <= self.absolute or gap <= customerio * self.percent / 100


@dataclass(frozen=True, slots=True)
class DayCount:
    """One message, metric and day: Customer.io's count beside the tables'."""

    message: MessageRef
    metric: str
    day: dt.date
    zone: str
    customerio: int
    ciolake: int
    over_tolerance: bool

    @property
    def difference(self) -> int:
        """ciolake minus Customer.io: negative when the tables lack deliveries."""
        return self.ciolake - self.customerio


def compare_counts(
    theirs: DailySeries,
    ours: Mapping[str, Mapping[dt.date, int]],
    *,
    tolerance: Tolerance,
) -> list[DayCount]:
    """Every (metric, day) Customer.io counted, beside the tables' count, oldest day first.

    Only the days Customer.io answered for are compared, and the human metrics only from the
    day it calls them reliable.
    """
    rows = []
    for metric in sorted(set(theirs.counts) & COMPARED_METRICS):
        for day, count in sorted(theirs.counts[metric].items()):
            if day < RELIABLE_FROM.get(metric, dt.date.min):
                continue
            mine = ours.get(metric, {}).get(day, 0)
            over = not tolerance.allows(count, mine - count)
            rows.append(DayCount(theirs.message, metric, day, theirs.zone, count, mine, over))
    return rows


GapKind = Literal["missing", "extra"]


@dataclass(frozen=True, slots=True)
class DeliveryGap:
    """A metric of a delivery that the tables lack (``missing``) or that Customer.io does not
    know (``extra``)."""

    message: MessageRef
    day: dt.date
    delivery_id: str
    metric: str
    kind: GapKind
    at: int | None
    """When Customer.io says the delivery reached the metric (unix seconds), if it does."""


def delivery_gaps(
    message: MessageRef,
    day: dt.date,
    theirs: Iterable[Delivery],
    ours: Mapping[str, LakeDelivery],
) -> list[DeliveryGap]:
    """The metrics of ``day``'s deliveries that the two sides disagree on.

    ``ours`` holds the tables' deliveries dated ``day`` and those of Customer.io's that the
    tables date otherwise. A human metric is never called extra: whether Customer.io lists
    them per delivery is not documented.
    """
    gaps = []
    known: set[str] = set()
    for delivery in theirs:
        known.add(delivery.id)
        reached = {m: t for m, t in delivery.metrics.items() if m in COMPARED_METRICS}
        mine = ours[delivery.id].metrics if delivery.id in ours else frozenset()
        for metric in sorted(set(reached) - mine):
            gaps.append(DeliveryGap(message, day, delivery.id, metric, "missing", reached[metric]))
        for metric in sorted(mine - set(reached) - set(HUMAN_METRICS)):
            gaps.append(DeliveryGap(message, day, delivery.id, metric, "extra", None))
    for delivery_id, found in sorted(ours.items()):
        if delivery_id in known or found.day != day:
            continue
        for metric in sorted(found.metrics - set(HUMAN_METRICS)):
            gaps.append(DeliveryGap(message, day, delivery_id, metric, "extra", None))
    return sorted(gaps, key=lambda gap: (gap.delivery_id, gap.metric))
