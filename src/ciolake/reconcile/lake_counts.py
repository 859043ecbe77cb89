"""ciolake's side of a reconciliation: deliveries in the channel tables, bucketed as Customer.io
buckets its own counts.

Customer.io counts deliveries by the day each was *created*. The tables hold events, not
deliveries, so a delivery's creation time here is its earliest event's time (its ``drafted``,
``attempted`` or ``sent``, which follow the creation within seconds); a delivery whose early
events were all lost is dated by the first event that arrived. A delivery reached a metric
when the tables hold an event of that metric for it: no closure (an open does not imply a
delivery here), since the point is to find the events that are missing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from ciolake.analytics.duck import Lake
from ciolake.analytics.funnels import HUMAN_CLICK, HUMAN_OPEN
from ciolake.customerio.reporting import ORIGIN_FIELDS, MessageKind, MessageRef
from ciolake.lake.tables import CHANNEL_SPECS

HUMAN_METRICS: dict[str, str] = {"human_opened": HUMAN_OPEN, "human_clicked": HUMAN_CLICK}
"""The derived metrics Customer.io reports, and the condition on ``email_events`` for each."""


@dataclass(frozen=True, slots=True)
class LakeDelivery:
    """One delivery as the tables know it: the day it is dated by and the metrics it reached."""

    delivery_id: str
    day: dt.date
    metrics: frozenset[str]


def _events_sql(message: MessageRef) -> str:
    """Every event of ``message``'s deliveries, with the human flags where the table has them."""
    where = f"delivery_id IS NOT NULL AND {ORIGIN_FIELDS[message.kind]} = {int(message.id)}"
    if message.action_id is not None:
        where += f" AND action_id = {int(message.action_id)}"
    parts = []
    for table in CHANNEL_SPECS:
        human = [
            f"({condition}) AS {name}" if table == "email_events" else f"FALSE AS {name}"
            for name, condition in HUMAN_METRICS.items()
        ]
        parts.append(
            f"SELECT delivery_id, metric, event_time, {', '.join(human)} FROM {table} WHERE {where}"
        )
    return "\nUNION ALL\n".join(parts)


def _per_delivery_sql(message: MessageRef) -> str:
    flags = ", ".join(f"bool_or({name}) AS {name}" for name in HUMAN_METRICS)
    return (
        f"WITH events AS (\n{_events_sql(message)}\n)\n"
        "SELECT delivery_id,"
        " CAST(timezone($zone, min(event_time)) AS DATE) AS day,"
        f" list(DISTINCT metric) AS metrics, {flags}\n"
        "FROM events GROUP BY delivery_id"
    )


def daily_counts(
    lake: Lake, message: MessageRef, *, first: dt.date, last: dt.date, zone: str
) -> dict[str, dict[dt.date, int]]:
    """Deliveries of ``message`` per metric and creation day (in ``zone``), ``first`` to
    ``last`` inclusive; days with none are absent."""
    human = "".join(
        f" UNION ALL SELECT day, '{name}' AS metric FROM in_range WHERE {name}"
        for name in HUMAN_METRICS
    )
    sql = (
        f"WITH per_delivery AS (\n{_per_delivery_sql(message)}\n),\n"
        "in_range AS (SELECT * FROM per_delivery WHERE day BETWEEN $first AND $last),\n"
        f"reached AS (SELECT day, unnest(metrics) AS metric FROM in_range{human})\n"
        "SELECT metric, day, count(*) FROM reached GROUP BY metric, day"
    )
    result = lake.query(sql, {"zone": zone, "first": first, "last": last})
    counts: dict[str, dict[dt.date, int]] = {}
    for metric, day, count in result.rows:
        counts.setdefault(metric, {})[day] = int(count)
    return counts


def deliveries(
    lake: Lake, message: MessageRef, *, days: frozenset[dt.date], ids: frozenset[str], zone: str
) -> dict[str, LakeDelivery]:
    """``message``'s deliveries dated one of ``days`` (in ``zone``), and those of ``ids``
    whatever their day, by delivery id: one read of the tables for every day walked."""
    sql = (
        f"WITH per_delivery AS (\n{_per_delivery_sql(message)}\n)\n"
        "SELECT * FROM per_delivery"
        " WHERE list_contains($days, day) OR list_contains($ids, delivery_id)"
    )
    result = lake.query(sql, {"zone": zone, "days": sorted(days), "ids": sorted(ids)})
    found: dict[str, LakeDelivery] = {}
    for row in result.dicts():
        metrics = set(row["metrics"]) | {name for name in HUMAN_METRICS if row[name]}
        found[row["delivery_id"]] = LakeDelivery(row["delivery_id"], row["day"], frozenset(metrics))
    return found


def messages_in(lake: Lake, *, first: dt.date, last: dt.date, zone: str) -> list[MessageRef]:
    """Every message with an event in the tables dated ``first`` to ``last`` (in ``zone``)."""
    parts = []
    for table in CHANNEL_SPECS:
        for kind, column in ORIGIN_FIELDS.items():
            parts.append(
                f"SELECT DISTINCT '{kind}' AS kind, {column} AS id FROM {table}"
                f" WHERE {column} IS NOT NULL"
                " AND CAST(timezone($zone, event_time) AS DATE) BETWEEN $first AND $last"
            )
    sql = "SELECT DISTINCT kind, id FROM (\n" + "\nUNION ALL\n".join(parts) + "\n) ORDER BY 1, 2"
    result = lake.query(sql, {"zone": zone, "first": first, "last": last})
    return [MessageRef(cast(MessageKind, kind), int(id_)) for kind, id_ in result.rows]
