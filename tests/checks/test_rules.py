"""The checks of ``ciolake check``, on tables written by the real receiver with a fake clock."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from ciolake.checks.rules import (
    FRESHNESS,
    METRICS_REACHABLE,
    NO_EVENTS,
    QUARANTINE_SHARE,
    SIGNATURE_FAILURES,
    VOLUME_DROP,
    Finding,
    MetricsReading,
    Status,
    Thresholds,
    any_fired,
    evaluate,
    metrics_findings,
    parse_metrics,
    scrape_metrics,
    table_findings,
)
from ciolake.events.samples import sample_event, schema_by_name
from ciolake.web import create_app
from tests.support import TEST_KEY, WEBHOOK_PATH, body_of, make_settings, signed_headers

NOW = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC
DAY = 86_400.0
MINUTE = 60.0


class FakeClock:
    """A settable clock for the receiver, so deliveries can be received in the past."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def land(data_dir: Path, deliveries: list[tuple[float, bytes]]) -> str:
    """Post each body through the real app at its time; return the tables location."""
    clock = FakeClock(NOW)
    settings = make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(TEST_KEY,), flush_interval_s=0.05
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        for at, body in sorted(deliveries):
            clock.now = at
            headers = signed_headers(body, timestamp=int(at))
            assert client.post(WEBHOOK_PATH, content=body, headers=headers).status_code == 200
    return settings.tables_location


def event(schema: str, at: float, rng: random.Random) -> tuple[float, bytes]:
    """A delivery of one sample event of ``schema`` received at ``at``."""
    return at, body_of(sample_event(schema_by_name(schema), rng=rng, timestamp=int(at)))


def by_check(findings: list[Finding], check: str, subject: str = "") -> Finding:
    (found,) = [f for f in findings if f.check == check and f.subject == subject]
    return found


@pytest.fixture
def rng() -> random.Random:
    return random.Random(11)


def test_no_tables_yet_fires_no_events(tmp_path: Path) -> None:
    findings = table_findings(str(tmp_path / "tables"), Thresholds(), now=NOW)
    no_events = by_check(findings, NO_EVENTS)
    assert no_events.status is Status.FIRED
    assert "no delivery" in no_events.detail
    assert by_check(findings, QUARANTINE_SHARE).status is Status.OK
    assert all(f.status is Status.OK for f in findings if f.check == VOLUME_DROP)


def test_no_events_and_quarantine_share(tmp_path: Path, rng: random.Random) -> None:
    # 20 minutes ago: 8 good deliveries and 2 that are not JSON; 2 hours ago: 10 bad ones.
    recent = NOW - 20 * MINUTE
    deliveries = [event("email_delivered", recent + i, rng) for i in range(8)]
    deliveries += [(recent + 10 + i, b"not json at all") for i in range(2)]
    deliveries += [(NOW - 2 * 3600 + i, b"{broken") for i in range(10)]
    tables = land(tmp_path, deliveries)

    findings = table_findings(tables, Thresholds(), now=NOW)
    no_events = by_check(findings, NO_EVENTS)
    assert no_events.status is Status.FIRED
    assert no_events.value == pytest.approx(20 - 11 / 60, abs=0.01)
    share = by_check(findings, QUARANTINE_SHARE)
    assert share.status is Status.FIRED
    assert share.value == pytest.approx(20.0)
    assert "2 of 10" in share.detail

    lenient = Thresholds(no_events_minutes=30, quarantine_percent=25)
    findings = table_findings(tables, lenient, now=NOW)
    assert by_check(findings, NO_EVENTS).status is Status.OK
    assert by_check(findings, QUARANTINE_SHARE).status is Status.OK
    # Over three hours, the two-hour-old bad deliveries count too: 12 of 20.
    wide = Thresholds(quarantine_percent=25, quarantine_window_minutes=180)
    assert by_check(table_findings(tables, wide, now=NOW), QUARANTINE_SHARE).value == 60.0


def test_volume_drop_against_the_same_hour_of_previous_days(
    tmp_path: Path, rng: random.Random
) -> None:
    deliveries = []
    for day in range(1, 8):
        start = NOW - day * DAY - 50 * MINUTE
        deliveries += [event("email_delivered", start + i * 60, rng) for i in range(30)]
        deliveries += [event("sms_delivered", start + i * 60, rng) for i in range(25)]
        # Outside the compared hour: must not count.
        deliveries += [event("email_opened", start - 3 * 3600 + i, rng) for i in range(40)]
    deliveries += [event("email_delivered", NOW - 30 * MINUTE + i, rng) for i in range(6)]
    deliveries += [event("sms_delivered", NOW - 30 * MINUTE + i, rng) for i in range(24)]
    deliveries += [event("push_delivered", NOW - 30 * MINUTE, rng)]
    tables = land(tmp_path, deliveries)

    findings = table_findings(tables, Thresholds(), now=NOW)
    email = by_check(findings, VOLUME_DROP, "email_events")
    assert email.status is Status.FIRED
    assert email.value == pytest.approx(80.0)  # 6 against a median of 30
    assert "6 in the last 60 min; median 30" in email.detail
    sms = by_check(findings, VOLUME_DROP, "sms_events")
    assert sms.status is Status.OK
    assert sms.value == pytest.approx(4.0)
    push = by_check(findings, VOLUME_DROP, "push_events")
    assert push.status is Status.OK
    assert push.value is None  # no baseline: not judged

    assert (
        by_check(
            table_findings(tables, Thresholds(volume_drop_percent=85), now=NOW),
            VOLUME_DROP,
            "email_events",
        ).status
        is Status.OK
    )
    # With a baseline of 3 days only, the median is still 30; with min baseline 31, not judged.
    strict = Thresholds(volume_baseline_days=3, volume_min_baseline=31)
    assert (
        by_check(table_findings(tables, strict, now=NOW), VOLUME_DROP, "email_events").value is None
    )


METRICS_TEXT = """\
# HELP ciolake_requests_received_total Webhook requests received.
# TYPE ciolake_requests_received_total counter
ciolake_requests_received_total {received}
ciolake_requests_received_created {created}
# HELP ciolake_requests_rejected_total Webhook requests answered non-2xx, by status and reason.
# TYPE ciolake_requests_rejected_total counter
ciolake_requests_rejected_total{{reason="no_matching_key",status="401"}} {bad_key}
ciolake_requests_rejected_total{{reason="missing_signature",status="401"}} {missing}
ciolake_requests_rejected_total{{reason="body_too_large",status="413"}} 500.0
# HELP ciolake_freshness_seconds Age of the oldest journaled delivery not yet committed.
# TYPE ciolake_freshness_seconds gauge
ciolake_freshness_seconds {freshness}
"""


def metrics_text(
    *, bad_key: float, missing: float = 0, freshness: float = 0.5, created: float = NOW - 600
) -> str:
    return METRICS_TEXT.format(
        received=1000, created=created, bad_key=bad_key, missing=missing, freshness=freshness
    )


def test_signature_failures_per_minute_from_two_scrapes() -> None:
    first = parse_metrics(metrics_text(bad_key=10, missing=2), at=100.0)
    second = parse_metrics(metrics_text(bad_key=14, missing=4), at=130.0)
    reading = MetricsReading("http://x/metrics", (first, second))
    findings = metrics_findings(reading, Thresholds(), now=NOW)
    failures = by_check(findings, SIGNATURE_FAILURES)
    assert failures.value == pytest.approx(12.0)  # 6 in 30 s; the 413s do not count
    assert failures.status is Status.FIRED
    assert by_check(findings, METRICS_REACHABLE).status is Status.OK
    calm = Thresholds(signature_failures_per_minute=12.5)
    assert by_check(metrics_findings(reading, calm, now=NOW), SIGNATURE_FAILURES).status is (
        Status.OK
    )


def test_signature_failures_after_a_restart_count_from_zero() -> None:
    first = parse_metrics(metrics_text(bad_key=50), at=0.0)
    second = parse_metrics(metrics_text(bad_key=1), at=60.0)
    findings = metrics_findings(MetricsReading("u", (first, second)), Thresholds(), now=NOW)
    assert by_check(findings, SIGNATURE_FAILURES).value == pytest.approx(1.0)


def test_signature_failures_from_one_scrape_average_since_start() -> None:
    scrape = parse_metrics(metrics_text(bad_key=30, created=NOW - 600), at=0.0)
    findings = metrics_findings(MetricsReading("u", (scrape,)), Thresholds(), now=NOW)
    failures = by_check(findings, SIGNATURE_FAILURES)
    assert failures.value == pytest.approx(3.0)  # 30 in 10 minutes
    assert failures.status is Status.OK
    assert "since the process started" in failures.detail


def test_freshness_fires_above_its_threshold() -> None:
    stale = parse_metrics(metrics_text(bad_key=0, freshness=75.0), at=0.0)
    findings = metrics_findings(MetricsReading("u", (stale,)), Thresholds(), now=NOW)
    assert by_check(findings, FRESHNESS).status is Status.FIRED
    assert by_check(findings, FRESHNESS).value == 75.0
    lenient = metrics_findings(
        MetricsReading("u", (stale,)), Thresholds(freshness_seconds=90), now=NOW
    )
    assert by_check(lenient, FRESHNESS).status is Status.OK
    assert not any_fired(lenient)


def test_unreachable_metrics_are_reported_not_raised() -> None:
    def refuse(url: str) -> str:
        raise httpx.ConnectError("Connection refused")

    sleeps: list[float] = []
    reading = scrape_metrics(
        "http://127.0.0.1:9/metrics",
        sample_seconds=5,
        get=refuse,
        sleep=sleeps.append,
        clock=lambda: 0.0,
    )
    assert reading.error is not None
    assert "Connection refused" in reading.error
    assert sleeps == []
    findings = metrics_findings(reading, Thresholds(), now=NOW)
    assert by_check(findings, METRICS_REACHABLE).status is Status.FIRED
    assert by_check(findings, SIGNATURE_FAILURES).status is Status.UNKNOWN
    assert by_check(findings, FRESHNESS).status is Status.UNKNOWN


def test_not_prometheus_text_is_reported() -> None:
    reading = scrape_metrics(
        "u", sample_seconds=0, get=lambda url: "<html>{{", sleep=lambda s: None, clock=lambda: 0.0
    )
    assert reading.error is not None
    assert reading.error.startswith("not Prometheus text format")


def test_two_scrapes_are_timed_by_the_clock() -> None:
    texts = iter([metrics_text(bad_key=0), metrics_text(bad_key=20)])
    times = iter([10.0, 20.0])
    sleeps: list[float] = []
    reading = scrape_metrics(
        "u",
        sample_seconds=10,
        get=lambda url: next(texts),
        sleep=sleeps.append,
        clock=lambda: next(times),
    )
    assert sleeps == [10]
    findings = metrics_findings(reading, Thresholds(), now=NOW)
    assert by_check(findings, SIGNATURE_FAILURES).value == pytest.approx(120.0)


def test_evaluate_without_metrics_skips_those_checks(tmp_path: Path, rng: random.Random) -> None:
    tables = land(tmp_path, [event("email_delivered", NOW - 60, rng)])
    findings = evaluate(tables, Thresholds(), now=NOW, metrics=None)
    assert {f.check for f in findings} == {NO_EVENTS, QUARANTINE_SHARE, VOLUME_DROP}
    assert not any_fired(findings)


def test_one_scrape_without_a_process_start_is_unknown() -> None:
    text = metrics_text(bad_key=30).replace("ciolake_requests_received_created", "other_created")
    findings = metrics_findings(
        MetricsReading("u", (parse_metrics(text, at=0.0),)), Thresholds(), now=NOW
    )
    failures = by_check(findings, SIGNATURE_FAILURES)
    assert failures.status is Status.UNKNOWN
    assert "--sample-seconds" in failures.detail


def test_a_table_that_cannot_be_read_fires(tmp_path: Path) -> None:
    log = tmp_path / "tables" / "raw_events" / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("this is not a Delta log\n")
    findings = table_findings(str(tmp_path / "tables"), Thresholds(), now=NOW)
    no_events = by_check(findings, NO_EVENTS)
    assert no_events.status is Status.FIRED
    assert no_events.detail.startswith("cannot read the tables")
