"""Operational checks for cron or a scheduled job: what ``ciolake check`` evaluates.

Table signals are read from the Delta tables with DuckDB; signature failures and freshness are
read from a running server's ``/metrics``. Every function takes the current time as an argument,
so the same data always gives the same findings.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ciolake.analytics.duck import Lake, connect
from ciolake.lake.tables import CHANNEL_SPECS, QUARANTINE, RAW_EVENTS
from ciolake.reconcile.summary import COMPARED as RECONCILE_COMPARED
from ciolake.reconcile.summary import LAST_RUN as RECONCILE_LAST_RUN
from ciolake.reconcile.summary import OVER_TOLERANCE as RECONCILE_OVER_TOLERANCE
from ciolake.units import SECONDS_PER_DAY

NO_EVENTS = "no_events"
QUARANTINE_SHARE = "quarantine_share"
SIGNATURE_FAILURES = "signature_failures"
FRESHNESS = "freshness"
VOLUME_DROP = "volume_drop"
METRICS_REACHABLE = "metrics_reachable"
RECONCILE = "reconcile"

CHANNEL_TABLES: tuple[str, ...] = tuple(name for name in CHANNEL_SPECS if name != "customer_events")
"""Tables whose volume is watched: one per messaging channel."""

# Customer.io retries for 7 days, so an event received now has an event_date at most this old.
_LATE_DAYS = 8
_REJECTED = "ciolake_requests_rejected_total"
# Where a scrape has them (OpenMetrics, or a process collector), they date the process start.
_RECEIVED_CREATED = "ciolake_requests_received_created"
_PROCESS_START = "process_start_time_seconds"
_FRESHNESS = "ciolake_freshness_seconds"


class Status(enum.StrEnum):
    """What one check concluded."""

    OK = "ok"
    FIRED = "fired"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When each check fires. Defaults are those of ``ciolake check`` and the alert rules."""

    no_events_minutes: float = 15.0
    quarantine_percent: float = 5.0
    quarantine_window_minutes: float = 60.0
    signature_failures_per_minute: float = 5.0
    freshness_seconds: float = 60.0
    volume_drop_percent: float = 50.0
    volume_window_minutes: float = 60.0
    volume_baseline_days: int = 7
    volume_min_baseline: int = 20


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one check, for one subject (a channel table, or the whole service)."""

    check: str
    status: Status
    value: float | None
    threshold: float
    detail: str
    subject: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the finding."""
        return {**asdict(self), "status": str(self.status)}


@dataclass(frozen=True, slots=True)
class Sample:
    """One Prometheus sample."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Scrape:
    """One parsed ``/metrics`` answer and when (on the sampling clock) it was taken."""

    at: float
    samples: tuple[Sample, ...]

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        values = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None


@dataclass(frozen=True, slots=True)
class MetricsReading:
    """What scraping a server's ``/metrics`` gave: one or two scrapes, or why there are none."""

    url: str
    scrapes: tuple[Scrape, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Window:
    start: float
    end: float

    @property
    def first_date(self) -> str:
        return datetime.fromtimestamp(self.start, UTC).date().isoformat()


def _exists(uri: str) -> bool:
    # False for a local table path without a Delta log (not created yet); True otherwise.
    return "://" in uri or (Path(uri) / "_delta_log").is_dir()


def _scan(uri: str) -> str:
    return "delta_scan('" + uri.replace("'", "''") + "')"


def parse_metrics(text: str, *, at: float) -> Scrape:
    """Parse Prometheus text format.

    Args:
        text: the body of a ``/metrics`` answer.
        at: when it was taken, in seconds on the sampling clock.

    Raises:
        ValueError: the text is not Prometheus text format.
    """
    samples = tuple(
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )
    return Scrape(at, samples)


def http_get_text(url: str, *, timeout_s: float = 5.0, token: str | None = None) -> str:
    """GET ``url`` and return its body.

    Args:
        url: what to get.
        timeout_s: how long to wait for the connection and for each read.
        token: sent as ``Authorization: Bearer <token>`` when given (the admin listener's).

    Raises:
        httpx.HTTPError: the server could not be reached or did not answer 200.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, timeout=timeout_s, headers=headers)
    response.raise_for_status()
    return response.text


def scrape_metrics(
    url: str,
    *,
    sample_seconds: float,
    get: Callable[[str], str],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> MetricsReading:
    """Scrape ``url`` once, or twice ``sample_seconds`` apart when that is above zero.

    Args:
        url: a ciolake ``/metrics`` address.
        sample_seconds: time between the two scrapes; 0 scrapes once.
        get: fetches a URL's body; raises ``httpx.HTTPError`` or ``OSError`` on failure.
        sleep: waits this many seconds.
        clock: a monotonic clock, in seconds, to time the scrapes.
    """
    scrapes: list[Scrape] = []
    try:
        scrapes.append(parse_metrics(get(url), at=clock()))
        if sample_seconds > 0:
            sleep(sample_seconds)
            scrapes.append(parse_metrics(get(url), at=clock()))
    except (httpx.HTTPError, OSError) as exc:
        return MetricsReading(url, error=f"{type(exc).__name__}: {exc}")
    except ValueError as exc:
        return MetricsReading(url, error=f"not Prometheus text format: {exc}")
    return MetricsReading(url, tuple(scrapes))


def evaluate(
    tables_uri: str,
    thresholds: Thresholds,
    *,
    now: float,
    metrics: MetricsReading | None,
) -> list[Finding]:
    """Run every check.

    Args:
        tables_uri: where the Delta tables are.
        thresholds: when each check fires.
        now: the current unix time, in seconds.
        metrics: a scrape of the server's ``/metrics``; ``None`` skips the checks that need it.
    """
    findings = table_findings(tables_uri, thresholds, now=now)
    if metrics is not None:
        findings += metrics_findings(metrics, thresholds, now=now)
    return findings


def reconcile_findings(summary_path: Path) -> list[Finding]:
    """The last ``ciolake reconcile``'s verdict, if one ran: fired while it found counts that
    differ from Customer.io's beyond its tolerance.

    Raises:
        ValueError: the summary is not Prometheus text format.
    """
    if not summary_path.exists():
        return []
    summary = parse_metrics(summary_path.read_text(), at=0.0)
    over = summary.total(RECONCILE_OVER_TOLERANCE)
    compared = summary.total(RECONCILE_COMPARED) or 0
    ran = summary.total(RECONCILE_LAST_RUN)
    if over is None or ran is None:
        return [Finding(RECONCILE, Status.UNKNOWN, None, 0, f"{summary_path} is incomplete")]
    stamp = datetime.fromtimestamp(ran, UTC).strftime("%Y-%m-%d %H:%M UTC")
    detail = (
        f"{over:g} of {compared:g} counts differ from Customer.io's beyond the tolerance"
        f" (ciolake reconcile at {stamp})"
    )
    return [Finding(RECONCILE, Status.FIRED if over > 0 else Status.OK, over, 0, detail)]


def any_fired(findings: Iterable[Finding]) -> bool:
    """Whether at least one finding fired."""
    return any(f.status is Status.FIRED for f in findings)


def table_findings(tables_uri: str, thresholds: Thresholds, *, now: float) -> list[Finding]:
    """The checks read from the Delta tables: no events, quarantine share, volume drops.

    Raises:
        ConfigurationError: DuckDB or its delta extension is not installed.
    """
    base = tables_uri.rstrip("/")
    lake = connect()
    try:
        findings = [
            _guarded(
                NO_EVENTS,
                "",
                thresholds.no_events_minutes,
                partial(_no_events, lake, base, thresholds, now),
            ),
            _guarded(
                QUARANTINE_SHARE,
                "",
                thresholds.quarantine_percent,
                partial(_quarantine_share, lake, base, thresholds, now),
            ),
        ]
        for table in CHANNEL_TABLES:
            findings.append(
                _guarded(
                    VOLUME_DROP,
                    table,
                    thresholds.volume_drop_percent,
                    partial(_volume_drop, lake, f"{base}/{table}", thresholds, now),
                )
            )
        return findings
    finally:
        lake.close()


def _guarded(check: str, subject: str, threshold: float, run: Callable[[], Finding]) -> Finding:
    try:
        return run()
    except Exception as exc:  # DuckDB's errors: a table that exists but cannot be read.
        # Not knowing is not fine here: a table that cannot be read needs someone's attention.
        detail = f"cannot read the tables: {exc}".splitlines()[0]
        return Finding(check, Status.FIRED, None, threshold, detail, subject)


def _no_events(lake: Lake, tables_uri: str, thresholds: Thresholds, now: float) -> Finding:
    limit = thresholds.no_events_minutes
    uri = f"{tables_uri.rstrip('/')}/{RAW_EVENTS}"
    last = _last_received(lake, uri) if _exists(uri) else None
    if last is None:
        return Finding(NO_EVENTS, Status.FIRED, None, limit, "no delivery has been stored yet")
    minutes = max(0.0, now - last) / 60
    status = Status.FIRED if minutes > limit else Status.OK
    stamp = datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    detail = f"last delivery received {minutes:,.1f} min ago ({stamp})"
    return Finding(NO_EVENTS, status, round(minutes, 2), limit, detail)


def _last_received(lake: Lake, uri: str) -> float | None:
    (row,) = lake.query(f"SELECT max(epoch(received_at)) FROM {_scan(uri)}").rows
    return None if row[0] is None else float(row[0])


def _quarantine_share(lake: Lake, tables_uri: str, thresholds: Thresholds, now: float) -> Finding:
    limit = thresholds.quarantine_percent
    window = _Window(now - thresholds.quarantine_window_minutes * 60, now)
    base = tables_uri.rstrip("/")
    delivered = _received_in(lake, f"{base}/{RAW_EVENTS}", window)
    quarantined = _received_in(lake, f"{base}/{QUARANTINE}", window)
    minutes = f"{thresholds.quarantine_window_minutes:g} min"
    if delivered == 0:
        detail = f"no deliveries in the last {minutes}"
        return Finding(QUARANTINE_SHARE, Status.OK, None, limit, detail)
    share = 100 * quarantined / delivered
    status = Status.FIRED if share > limit else Status.OK
    detail = f"{quarantined:,} of {delivered:,} deliveries in the last {minutes} quarantined"
    return Finding(QUARANTINE_SHARE, status, round(share, 2), limit, detail)


def _received_in(lake: Lake, uri: str, window: _Window) -> int:
    if not _exists(uri):
        return 0
    query = (
        f"SELECT count(*) FROM {_scan(uri)} WHERE received_date >= CAST(? AS DATE) "
        "AND epoch(received_at) > ? AND epoch(received_at) <= ?"
    )
    (row,) = lake.query(query, [window.first_date, window.start, window.end]).rows
    return int(row[0])


def _volume_drop(lake: Lake, uri: str, thresholds: Thresholds, now: float) -> Finding:
    table = Path(uri).name
    limit = thresholds.volume_drop_percent
    counts = _same_window_counts(lake, uri, thresholds, now) if _exists(uri) else {}
    current = counts.get(0, 0)
    days = thresholds.volume_baseline_days
    baseline = statistics.median([counts.get(day, 0) for day in range(1, days + 1)])
    minutes = f"{thresholds.volume_window_minutes:g} min"
    detail = f"{current:,} in the last {minutes}; median {baseline:,g} on the previous {days} days"
    if baseline < thresholds.volume_min_baseline:
        detail += f" (under {thresholds.volume_min_baseline}: not judged)"
        return Finding(VOLUME_DROP, Status.OK, None, limit, detail, table)
    drop = 100 * (1 - current / baseline)
    status = Status.FIRED if drop > limit else Status.OK
    return Finding(VOLUME_DROP, status, round(drop, 2), limit, detail, table)


def _same_window_counts(lake: Lake, uri: str, thresholds: Thresholds, now: float) -> dict[int, int]:
    # Events received in the window ending ``day`` days before ``now``, for day 0..N.
    window_s = thresholds.volume_window_minutes * 60
    days = thresholds.volume_baseline_days
    earliest = _Window(now - days * SECONDS_PER_DAY - window_s - _LATE_DAYS * SECONDS_PER_DAY, now)
    query = f"""
        WITH aged AS (
            SELECT ? - epoch(received_at) AS age FROM {_scan(uri)}
            WHERE event_date >= CAST(? AS DATE) AND epoch(received_at) > ?
        )
        SELECT CAST(floor(age / {SECONDS_PER_DAY}) AS INTEGER) AS day, count(*)
        FROM aged
        WHERE age >= 0 AND age - floor(age / {SECONDS_PER_DAY}) * {SECONDS_PER_DAY} < ?
        GROUP BY day
    """
    params = [now, earliest.first_date, now - days * SECONDS_PER_DAY - window_s, window_s]
    rows = lake.query(query, params).rows
    return {int(day): int(count) for day, count in rows if int(day) <= days}


def metrics_findings(
    reading: MetricsReading, thresholds: Thresholds, *, now: float
) -> list[Finding]:
    """The checks read from ``/metrics``: reachability, signature failures, freshness.

    Args:
        reading: one or two scrapes, or the error that prevented them.
        thresholds: when each check fires.
        now: the current unix time, used with one scrape to measure since the process started.
    """
    if reading.error is not None or not reading.scrapes:
        why = reading.error or "nothing scraped"
        return [
            Finding(
                METRICS_REACHABLE, Status.FIRED, None, 0, f"cannot scrape {reading.url}: {why}"
            ),
            _unknown(SIGNATURE_FAILURES, thresholds.signature_failures_per_minute),
            _unknown(FRESHNESS, thresholds.freshness_seconds),
        ]
    reachable = Finding(METRICS_REACHABLE, Status.OK, None, 0, f"scraped {reading.url}")
    return [
        reachable,
        _signature_failures(reading.scrapes, thresholds, now),
        _freshness(reading.scrapes[-1], thresholds),
    ]


def _unknown(check: str, threshold: float) -> Finding:
    return Finding(check, Status.UNKNOWN, None, threshold, "/metrics could not be read")


def _signature_failures(scrapes: Sequence[Scrape], thresholds: Thresholds, now: float) -> Finding:
    limit = thresholds.signature_failures_per_minute
    rate, how = _per_minute(scrapes, now)
    if rate is None:
        return Finding(SIGNATURE_FAILURES, Status.UNKNOWN, None, limit, how)
    status = Status.FIRED if rate > limit else Status.OK
    detail = f"{rate:,.2f} requests/min answered 401 ({how})"
    return Finding(SIGNATURE_FAILURES, status, round(rate, 3), limit, detail)


def _per_minute(scrapes: Sequence[Scrape], now: float) -> tuple[float | None, str]:
    last = scrapes[-1]
    count = last.total(_REJECTED, status="401") or 0.0
    if len(scrapes) > 1:
        first = scrapes[0]
        elapsed = last.at - first.at
        before = first.total(_REJECTED, status="401") or 0.0
        # A drop means the server restarted in between: count from zero, as Prometheus does.
        increase = count - before if count >= before else count
        return increase * 60 / max(elapsed, 1e-9), f"over {elapsed:.1f} s between two scrapes"
    started = last.total(_PROCESS_START) or last.total(_RECEIVED_CREATED)
    if started is None:
        return None, "one scrape gives no rate without the process start: use --sample-seconds"
    minutes = max(now - started, 1.0) / 60
    return count / minutes, f"average over {minutes:,.1f} min since the process started"


def _freshness(scrape: Scrape, thresholds: Thresholds) -> Finding:
    limit = thresholds.freshness_seconds
    age = scrape.total(_FRESHNESS)
    if age is None:
        return Finding(FRESHNESS, Status.UNKNOWN, None, limit, f"{_FRESHNESS} is missing")
    status = Status.FIRED if age > limit else Status.OK
    detail = f"oldest uncommitted delivery is {age:,.1f} s old"
    return Finding(FRESHNESS, status, round(age, 3), limit, detail)
