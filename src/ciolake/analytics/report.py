"""``ciolake report``: the headline tables, read from the analytics views.

Three sections: cohort rates per channel (numerators and denominators summed over the chosen
send dates, so the rate of a period is never an average of daily rates), the top failure
messages, and the receiver's health per hour. Each is a :class:`Section` of plain values that
the command line renders as a table, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ciolake.analytics.duck import Lake
from ciolake.analytics.funnels import CHANNELS

SECTIONS: tuple[str, ...] = ("cohort", "failures", "health")
"""Report sections, in the order they are shown."""

_RATE_ORDER = {
    (channel.name, f"{rate.name}_rate"): index
    for channel in CHANNELS
    for index, rate in enumerate(channel.rates)
}
_CHANNEL_ORDER = {channel.name: index for index, channel in enumerate(CHANNELS)}


@dataclass(frozen=True, slots=True)
class Filters:
    """What the report covers: send or event dates (inclusive), channel and campaign.

    ``campaign`` applies to the cohort rates only (failures and health are not per campaign).
    """

    since: date | None = None
    until: date | None = None
    channel: str | None = None
    campaign: int | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """One headline table."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


def build(
    lake: Lake,
    filters: Filters,
    *,
    sections: Sequence[str] = SECTIONS,
    by_day: bool = False,
    top: int = 5,
    hours: int = 24,
) -> list[Section]:
    """The chosen sections, computed from the views of ``lake``.

    Args:
        lake: a connection with the analytics views created.
        filters: dates, channel and campaign to report on.
        sections: which of ``cohort``, ``failures``, ``health`` to build.
        by_day: cohort rates per send date instead of over the whole period.
        top: failure messages per channel.
        hours: the most recent hours of pipeline health within the dates.
    """
    builders = {
        "cohort": lambda: cohort_section(lake, filters, by_day=by_day),
        "failures": lambda: failures_section(lake, filters, top=top),
        "health": lambda: health_section(lake, filters, hours=hours),
    }
    return [builders[name]() for name in SECTIONS if name in sections]


def _where(conditions: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the conditions whose value is given, and its parameters."""
    kept = [(sql, value) for sql, value in conditions if value is not None]
    if not kept:
        return "", []
    return "WHERE " + " AND ".join(sql for sql, _v in kept), [v for _s, v in kept]


def cohort_section(lake: Lake, filters: Filters, *, by_day: bool = False) -> Section:
    """Rates per channel by send-date cohort: sums of numerators over sums of denominators."""
    where, parameters = _where(
        [
            ("cohort_date >= ?", filters.since),
            ("cohort_date <= ?", filters.until),
            ("channel = ?", filters.channel),
            ("campaign_id = ?", filters.campaign),
        ]
    )
    keys = "channel, cohort_date, rate" if by_day else "channel, rate"
    result = lake.query(
        f"SELECT {keys}, sum(numerator) AS numerator, sum(denominator) AS denominator,"
        " CASE WHEN sum(denominator) = 0 THEN NULL"
        " ELSE CAST(sum(numerator) AS DOUBLE) / sum(denominator) END AS rate_value"
        f" FROM cohort_rates {where} GROUP BY {keys}",
        parameters,
    )
    rows = sorted(result.rows, key=lambda row: _rate_key(row, by_day))
    columns = [c if c != "rate_value" else "value" for c in result.columns]
    rows = [(*row[:-3], int(row[-3]), int(row[-2]), row[-1]) for row in rows]
    return Section("cohort", "Cohort rates (by send date)", columns, rows)


def _rate_key(row: tuple[Any, ...], by_day: bool) -> tuple[Any, ...]:
    channel, rate = row[0], row[2] if by_day else row[1]
    day = row[1] if by_day else None
    return (_CHANNEL_ORDER.get(channel, 99), day, _RATE_ORDER.get((channel, rate), 99))


def failures_section(lake: Lake, filters: Filters, *, top: int = 5) -> Section:
    """The most frequent failure messages per channel over the event dates."""
    where, parameters = _where(
        [
            ("event_date >= ?", filters.since),
            ("event_date <= ?", filters.until),
            ("channel = ?", filters.channel),
        ]
    )
    result = lake.query(
        "SELECT channel, metric, failure_message, failures, days FROM ("
        " SELECT channel, metric, failure_message, sum(failures) AS failures,"
        " count(DISTINCT event_date) AS days,"
        " row_number() OVER (PARTITION BY channel"
        "  ORDER BY sum(failures) DESC, metric, failure_message) AS position"
        f" FROM failure_reasons {where} GROUP BY channel, metric, failure_message"
        ") AS ranked WHERE position <= ? ORDER BY channel, position",
        [*parameters, top],
    )
    rows = sorted(result.rows, key=lambda row: _CHANNEL_ORDER.get(row[0], 99))
    rows = [(*row[:3], int(row[3]), int(row[4])) for row in rows]
    return Section("failures", f"Top {top} failure messages per channel", result.columns, rows)


def health_section(lake: Lake, filters: Filters, *, hours: int = 24) -> Section:
    """Receipt, duplicates, quarantine and lag for the most recent hours within the dates."""
    where, parameters = _where(
        [
            ("CAST(hour AS DATE) >= ?", filters.since),
            ("CAST(hour AS DATE) <= ?", filters.until),
        ]
    )
    result = lake.query(
        "SELECT hour, deliveries_received, events_landed, duplicates, quarantined,"
        " lag_p50_s, lag_p99_s"
        f" FROM pipeline_health {where} ORDER BY hour DESC LIMIT ?",
        [*parameters, hours],
    )
    rows = [(row[0], *(int(v) for v in row[1:5]), *row[5:]) for row in result.rows]
    return Section("health", f"Pipeline health (last {hours} hours)", result.columns, rows)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_json(sections: Sequence[Section], filters: Filters) -> str:
    """The sections as one JSON document: filters, then rows keyed by column per section."""
    document = {
        "filters": {
            "since": _plain(filters.since),
            "until": _plain(filters.until),
            "channel": filters.channel,
            "campaign": filters.campaign,
        },
        "sections": {
            s.name: [{c: _plain(v) for c, v in zip(s.columns, row, strict=True)} for row in s.rows]
            for s in sections
        },
    }
    return json.dumps(document, indent=2)


def to_csv(sections: Sequence[Section]) -> str:
    """CSV: one block per section; with several, each starts with a ``# <section>`` line."""
    blocks = []
    for section in sections:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(section.columns)
        writer.writerows([[_plain(v) for v in row] for row in section.rows])
        prefix = f"# {section.name}\n" if len(sections) > 1 else ""
        blocks.append(prefix + buffer.getvalue())
    return "\n".join(blocks)
