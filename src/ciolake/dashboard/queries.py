"""The rows behind each dashboard panel: one query over the analytics views per panel.

Message panels filter on the event's date (cohort panels on the send date); pipeline panels on
the receipt date. Every query reads the Delta tables afresh, so a refresh shows new events.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from ciolake.analytics.duck import DatabaseError, Lake, LakeReadError, open_lake
from ciolake.analytics.funnels import CHANNELS, Channel
from ciolake.dashboard.app import DashboardDataError, Filters
from ciolake.errors import (
    CiolakeError,
    ConfigurationError,
    InputError,
    StoreUnavailableError,
    TableUnreadableError,
)

Row = dict[str, Any]

_BY_NAME: dict[str, Channel] = {c.name: c for c in CHANNELS}
_FUNNEL_STAGES: tuple[tuple[str, str], ...] = (
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("opened", "Opened"),
    ("human_opened", "Opened by a person"),
    ("clicked", "Clicked"),
    ("human_clicked", "Clicked by a person"),
    ("converted", "Converted"),
)
_COHORT_RATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("delivery_rate", ("delivery",)),
    ("open_rate", ("human_open", "open")),
    ("click_rate", ("human_click", "click")),
    ("conversion_rate", ("conversion",)),
    ("unsubscribe_rate", ("unsubscribe",)),
    ("failure_rate", ("failure",)),
)
_CHANGE_LABELS = {
    "subscribed": "Subscribed",
    "unsubscribed": "Unsubscribed",
    "preferences_changed": "Preferences changed",
}


def _channel(filters: Filters) -> Channel:
    # The channel of the funnel, engagement and cohort panels (email for all channels).
    return _BY_NAME[filters.channel or "email"]


class Reader(Protocol):
    """What the panels' queries read through: DuckDB over the Delta tables (``LakeReader``), or
    a Databricks SQL warehouse (``dashboard.warehouse.WarehouseReader``)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query (DuckDB's dialect, ``?`` placeholders); JSON-ready rows."""
        ...

    def close(self) -> None:
        """Release what the reader holds."""
        ...


class LakeReader:
    """The analytics views over the Delta tables, opened on first use; one query at a time.

    A DuckDB connection serves one thread at a time, so queries from the server's worker
    threads take turns (each still runs on all cores).
    """

    def __init__(self, tables_uri: str) -> None:
        self.tables_uri = tables_uri
        self._lock = threading.Lock()
        self._lake: Lake | None = None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query; JSON-ready rows.

        Raises:
            DashboardDataError: the tables cannot be read (see ``reason_of``), or DuckDB is
                not installed.
        """
        with self._lock:
            if self._lake is None:
                self._lake = _open(self.tables_uri)
            try:
                result = self._lake.query(sql, params)
            except LakeReadError as exc:
                # Opened again (and the tables checked again) by the next query.
                self._lake.close()
                self._lake = None
                raise DashboardDataError(str(exc), reason=reason_of(exc)) from exc
        return [{n: _plain(v) for n, v in row.items()} for row in result.dicts()]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            if self._lake is not None:
                self._lake.close()
                self._lake = None


def _open(tables_uri: str) -> Lake:
    try:
        return open_lake(tables_uri)
    except CiolakeError as exc:
        raise DashboardDataError(str(exc), reason=reason_of(exc)) from exc


def reason_of(exc: CiolakeError) -> str:
    """The stable reason code the dashboard answers for why the tables cannot be read."""
    if isinstance(exc, InputError):
        return "tables_location_invalid"
    if isinstance(exc, StoreUnavailableError):
        return "store_unavailable"
    if isinstance(exc, (TableUnreadableError, LakeReadError, DatabaseError)):
        return "tables_unreadable"
    if isinstance(exc, ConfigurationError):
        return "tables_missing"
    return "tables_unreadable"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def default_until(lake: Reader, today: date) -> date:
    """The last day with events, or ``today`` when there are none (or they are later)."""
    (row,) = lake.rows("SELECT max(event_date) AS last FROM customerio_events")
    last = row["last"]
    return today if last is None else min(date.fromisoformat(last), today)


def _range(filters: Filters) -> list[Any]:
    return [filters.since, filters.until]


def _table_filter(filters: Filters) -> tuple[str, list[Any]]:
    # SQL (and its parameter) keeping the chosen channel's table of ``customerio_events``.
    if filters.channel is None:
        return "", []
    return " AND source_table = ?", [f"{filters.channel}_events"]


def _channel_filter(filters: Filters, column: str) -> tuple[str, list[Any]]:
    # SQL (and its parameter) keeping the rows whose ``column`` is the chosen channel.
    if filters.channel is None:
        return "", []
    return f" AND {column} = ?", [filters.channel]


def summary(lake: Reader, filters: Filters) -> list[Row]:
    """Headline tiles: events, messages, the main rates, quarantine share and median lag."""
    where, params = _table_filter(filters)
    (events,) = lake.rows(
        "SELECT count(*) AS events, quantile_cont(epoch(received_at) - epoch(event_time), 0.5)"
        " AS lag_p50_s, sum(CASE WHEN source = 'backfill' THEN 1 ELSE 0 END) AS backfilled"
        " FROM customerio_events WHERE event_date BETWEEN ? AND ?" + where,
        _range(filters) + params,
    )
    channel = _channel(filters)
    rates = _cohort_totals(lake, filters, channel)
    (pipeline,) = lake.rows(
        "SELECT sum(deliveries_received) AS received, sum(quarantined) AS quarantined"
        " FROM pipeline_health WHERE CAST(hour AS DATE) BETWEEN ? AND ?",
        _range(filters),
    )
    return [
        _tile("Events", events["events"], "number", _events_note(events["backfilled"])),
        _tile("Messages", rates["messages"], "number", f"{channel.name} deliveries, by send day"),
        _tile("Delivery rate", rates["delivery_rate"], "percent", f"{channel.name}: delivered"),
        _tile("Open rate", rates["open_rate"], "percent", _rate_note(channel, "open")),
        _tile("Click rate", rates["click_rate"], "percent", _rate_note(channel, "click")),
        _tile(
            "Quarantined",
            _share(pipeline["quarantined"], pipeline["received"]),
            "percent",
            f"{pipeline['quarantined'] or 0:,} of {pipeline['received'] or 0:,} deliveries",
        ),
        _tile("Median lag", events["lag_p50_s"], "seconds", "event time to receipt"),
    ]


def _events_note(backfilled: Any) -> str:
    if not backfilled:
        return "one per event_id"
    return f"one per event_id; {int(backfilled):,} backfilled from Customer.io's records"


def _tile(title: str, value: Any, format_: str, note: str) -> Row:
    return {"title": title, "value": value, "format": format_, "note": note}


def _rate_note(channel: Channel, rate: str) -> str:
    names = {r.name for r in channel.rates}
    if f"human_{rate}" in names:
        return f"{channel.name}: by people, machines excluded"
    return f"{channel.name}: all" if rate in names else f"{channel.name} has none"


def _share(part: Any, whole: Any) -> float | None:
    return None if not whole else float(part or 0) / float(whole)


def _rate_sql(channel: Channel, candidates: Sequence[str]) -> str:
    names = {r.name for r in channel.rates}
    for name in candidates:
        if name in names:
            return f"CAST(sum({name}_numerator) AS DOUBLE) / nullif(sum({name}_denominator), 0)"
    return "CAST(NULL AS DOUBLE)"


def _cohort_totals(lake: Reader, filters: Filters, channel: Channel) -> Row:
    rates = ", ".join(f"{_rate_sql(channel, c)} AS {alias}" for alias, c in _COHORT_RATES)
    (row,) = lake.rows(
        f"SELECT sum(deliveries) AS messages, {rates} FROM {channel.cohort_view}"
        " WHERE cohort_date BETWEEN ? AND ?",
        _range(filters),
    )
    return row


def events_per_day(lake: Reader, filters: Filters) -> list[Row]:
    """Events per event date: by channel, or by metric once a channel is chosen."""
    series = "metric" if filters.channel else "replace(source_table, '_events', '')"
    variant = "metric" if filters.channel else "channel"
    where, params = _table_filter(filters)
    return lake.rows(
        f"SELECT event_date AS day, {series} AS series, count(*) AS events, '{variant}' AS variant"
        " FROM customerio_events WHERE event_date BETWEEN ? AND ?"
        f"{where} GROUP BY ALL ORDER BY day, series",
        _range(filters) + params,
    )


def funnel(lake: Reader, filters: Filters) -> list[Row]:
    """Deliveries reaching each step, for the deliveries sent in the range (send-date cohorts)."""
    channel = _channel(filters)
    flags = {f.name for f in channel.flags}
    stages = [(name, label) for name, label in _FUNNEL_STAGES if name in flags]
    # count_if, not sum: Spark (the warehouse) does not add booleans up.
    sums = ", ".join(f"count_if({name}) AS {name}" for name, _label in stages)
    (row,) = lake.rows(
        f"SELECT {sums} FROM {channel.funnel_view} WHERE cohort_date BETWEEN ? AND ?",
        _range(filters),
    )
    first = row[stages[0][0]] or 0
    return [
        {
            "step": index,
            "stage": label,
            "deliveries": row[name] or 0,
            "share": _share(row[name], first),
            "channel": channel.name,
        }
        for index, (name, label) in enumerate(stages)
        if first
    ]


def engagement(lake: Reader, filters: Filters) -> list[Row]:
    """Open and click rates per send day; for email, people and machines apart."""
    channel = _channel(filters)
    names = {r.name for r in channel.rates}
    measures = [m for m in ("open", "click") if m in names]
    if not measures:
        return []
    columns = ", ".join(
        f"sum({r}_numerator) AS {r}_n, sum({r}_denominator) AS {r}_d"
        for m in measures
        for r in (m, f"human_{m}")
        if r in names
    )
    daily = lake.rows(
        f"SELECT cohort_date AS day, {columns} FROM {channel.cohort_view}"
        " WHERE cohort_date BETWEEN ? AND ? GROUP BY ALL ORDER BY day",
        _range(filters),
    )
    return [row for day in daily for m in measures for row in _engagement_rows(day, m, names)]


def _engagement_rows(day: Row, measure: str, names: set[str]) -> list[Row]:
    label = "Open rate" if measure == "open" else "Click rate"
    total = _share(day[f"{measure}_n"], day[f"{measure}_d"])
    base = {"day": day["day"], "measure": label}
    if f"human_{measure}" not in names:
        return [{**base, "audience": "All", "rate": total, "variant": "all"}]
    human = _share(day[f"human_{measure}_n"], day[f"human_{measure}_d"])
    machine = None if total is None or human is None else total - human
    return [
        {**base, "audience": "People", "rate": human},
        {**base, "audience": "Machines only", "rate": machine},
    ]


def cohorts(lake: Reader, filters: Filters) -> list[Row]:
    """Send-date cohort rates per campaign, broadcast, newsletter or transactional message."""
    channel = _channel(filters)
    rates = ", ".join(f"{_rate_sql(channel, c)} AS {alias}" for alias, c in _COHORT_RATES)
    origin_id = "coalesce(campaign_id, broadcast_id, newsletter_id, transactional_message_id)"
    return lake.rows(
        f"""
        WITH names AS (
            SELECT origin, {origin_id} AS origin_id,
                max(coalesce(campaign_name, broadcast_name, newsletter_name)) AS name
            FROM {channel.table} GROUP BY ALL
        ), cohorts AS (
            SELECT origin, {origin_id} AS origin_id, sum(deliveries) AS messages, {rates}
            FROM {channel.cohort_view} WHERE cohort_date BETWEEN ? AND ? GROUP BY ALL
        )
        SELECT coalesce(n.name, c.origin || ' ' || coalesce(CAST(c.origin_id AS VARCHAR), ''))
                AS message,
            replace(c.origin, '_', ' ') AS origin, c.* EXCLUDE (origin, origin_id)
        FROM cohorts AS c
        LEFT JOIN names AS n ON n.origin IS NOT DISTINCT FROM c.origin
            AND n.origin_id IS NOT DISTINCT FROM c.origin_id
        ORDER BY messages DESC, message LIMIT 50
        """,
        _range(filters),
    )


def failures(lake: Reader, filters: Filters) -> list[Row]:
    """The most frequent failure messages in the range."""
    where, params = _channel_filter(filters, "channel")
    return lake.rows(
        "SELECT channel, failure_message, sum(failures) AS failures FROM failure_reasons"
        f" WHERE event_date BETWEEN ? AND ?{where} GROUP BY ALL"
        " ORDER BY failures DESC, failure_message LIMIT 12",
        _range(filters) + params,
    )


def subscriptions(lake: Reader, filters: Filters) -> list[Row]:
    """Subscription changes per day and kind."""
    where, params = _channel_filter(filters, "object_type")
    rows = lake.rows(
        "SELECT event_date AS day, change, count(*) AS changes FROM subscription_changes"
        f" WHERE event_date BETWEEN ? AND ?{where} GROUP BY ALL ORDER BY day, change",
        _range(filters) + params,
    )
    return [{**row, "change": _CHANGE_LABELS.get(row["change"], row["change"])} for row in rows]


def _grain(filters: Filters) -> str:
    return "hour" if filters.hourly else "day"


def throughput(lake: Reader, filters: Filters) -> list[Row]:
    """Deliveries received per hour or day: landed, duplicate or quarantined."""
    grain = _grain(filters)
    rows = lake.rows(
        f"SELECT date_trunc('{grain}', hour) AS period, sum(events_landed) AS landed,"
        " sum(duplicates) AS duplicates, sum(quarantined) AS quarantined FROM pipeline_health"
        " WHERE CAST(hour AS DATE) BETWEEN ? AND ? GROUP BY ALL ORDER BY period",
        _range(filters),
    )
    kinds = (("landed", "Landed"), ("duplicates", "Duplicate"), ("quarantined", "Quarantined"))
    return [
        {"period": row["period"], "kind": label, "deliveries": row[key], "grain": grain}
        for row in rows
        for key, label in kinds
    ]


def lag(lake: Reader, filters: Filters) -> list[Row]:
    """Seconds from event time to receipt of the landed events: median, 99th percentile, max."""
    grain = _grain(filters)
    where, params = _table_filter(filters)
    rows = lake.rows(
        f"""
        WITH lags AS (
            SELECT date_trunc('{grain}', received_at) AS period,
                greatest(epoch(received_at) - epoch(event_time), 0) AS lag_s
            FROM customerio_events
            WHERE CAST(received_at AS DATE) BETWEEN ? AND ?{where}
        )
        SELECT period, quantile_cont(lag_s, 0.5) AS p50, quantile_cont(lag_s, 0.99) AS p99,
            max(lag_s) AS max
        FROM lags GROUP BY period ORDER BY period
        """,
        _range(filters) + params,
    )
    stats = (("p50", "Median"), ("p99", "99th percentile"), ("max", "Maximum"))
    return [
        {"period": row["period"], "stat": label, "seconds": row[key], "grain": grain}
        for row in rows
        for key, label in stats
    ]


def quarantine(lake: Reader, filters: Filters) -> list[Row]:
    """Quarantined deliveries per hour or day and reason."""
    grain = _grain(filters)
    return lake.rows(
        f"SELECT date_trunc('{grain}', received_at) AS period,"
        " CASE reason WHEN 'invalid_json' THEN 'invalid JSON' WHEN 'unknown_object_type'"
        " THEN 'unknown object type' ELSE replace(reason, '_', ' ') END AS reason,"
        " count(*) AS deliveries,"
        f" '{grain}' AS grain FROM quarantine WHERE received_date BETWEEN ? AND ?"
        " GROUP BY ALL ORDER BY period, reason",
        _range(filters),
    )


QUERIES: dict[str, Callable[[Reader, Filters], list[Row]]] = {
    "summary": summary,
    "events_per_day": events_per_day,
    "funnel": funnel,
    "engagement": engagement,
    "cohorts": cohorts,
    "failures": failures,
    "subscriptions": subscriptions,
    "throughput": throughput,
    "lag": lag,
    "quarantine": quarantine,
}
"""Every panel's query, by panel name."""
