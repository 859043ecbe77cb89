"""The metrics and deliveries resources against the fake App API: parameters, day alignment,
pages and windows, and the 45-day reach of the day counts that end today."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

from ciolake.customerio.client import AppApiClient
from ciolake.customerio.reporting import (
    EASTERN,
    MAX_DAY_STEPS,
    MessageMetrics,
    MessageRef,
    Messages,
    day_bounds,
)
from tests.customerio.fake_app_api import FakeAppApi

UTC_ZONE = "UTC"


def at(day: dt.date, hour: int, zone: dt.tzinfo = EASTERN) -> int:
    return int(dt.datetime.combine(day, dt.time(hour), tzinfo=zone).timestamp())


def query_of(fake: FakeAppApi, index: int = -1) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(fake.requests[index].path).query).items()}


def test_campaign_days_are_asked_in_the_chosen_zone_and_aligned_from_the_first(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    first = dt.date(2026, 3, 1)
    # 23:00 UTC on the 1st is the 1st in UTC and in New York; 03:00 UTC on the
    # 3rd is the 2nd in New York.
    app_api.reporting.deliveries += [
        {"id": "a", "created": at(first, 23, dt.UTC), "campaign_id": 5, "metrics": {"sent": 1}},
        {
            "id": "b",
            "created": at(first + dt.timedelta(days=2), 3, dt.UTC),
            "campaign_id": 5,
            "metrics": {"sent": 1, "opened": 2},
        },
        {"id": "c", "created": at(first, 12, dt.UTC), "campaign_id": 6, "metrics": {"sent": 1}},
    ]
    metrics = MessageMetrics(client, today_eastern=dt.date(2026, 3, 10))
    last = first + dt.timedelta(days=2)
    utc = metrics.daily(MessageRef("campaign", 5), first=first, last=last, zone=UTC_ZONE)
    assert utc.counts["sent"] == {first: 1, first + dt.timedelta(days=1): 0, last: 1}
    assert query_of(app_api) == {
        "version": "2",
        "res": "days",
        "tz": "UTC",
        "start": str(day_bounds(first, dt.UTC)[0]),
        "end": str(day_bounds(last, dt.UTC)[1]),
    }
    eastern = metrics.daily(MessageRef("campaign", 5), first=first, last=last, zone=EASTERN.key)
    assert eastern.counts["sent"] == {first: 1, first + dt.timedelta(days=1): 1, last: 0}
    assert eastern.counts["opened"][first + dt.timedelta(days=1)] == 1


def test_an_action_has_its_own_path(client: AppApiClient, app_api: FakeAppApi) -> None:
    app_api.reporting.deliveries += [
        {
            "id": "a",
            "created": at(dt.date(2026, 3, 1), 12),
            "campaign_id": 5,
            "action_id": 9,
            "metrics": {"sent": 1},
        },
        {
            "id": "b",
            "created": at(dt.date(2026, 3, 1), 12),
            "campaign_id": 5,
            "action_id": 8,
            "metrics": {"sent": 1},
        },
    ]
    metrics = MessageMetrics(client, today_eastern=dt.date(2026, 3, 10))
    day = dt.date(2026, 3, 1)
    series = metrics.daily(MessageRef("campaign", 5, 9), first=day, last=day, zone=EASTERN.key)
    assert series.counts["sent"] == {day: 1}
    assert urlsplit(app_api.requests[-1].path).path == "/v1/campaigns/5/actions/9/metrics"


def test_broadcast_days_end_today_and_reach_back_45_days_at_most(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    today = dt.datetime.now(EASTERN).date()
    old = today - dt.timedelta(days=60)
    recent = today - dt.timedelta(days=3)
    app_api.reporting.deliveries += [
        {"id": d.isoformat(), "created": at(d, 12), "broadcast_id": 4, "metrics": {"sent": 1}}
        for d in (old, recent)
    ]
    metrics = MessageMetrics(client, today_eastern=today)
    series = metrics.daily(MessageRef("broadcast", 4), first=old, last=today, zone="UTC")
    assert query_of(app_api) == {"period": "days", "steps": str(MAX_DAY_STEPS)}
    assert series.zone == EASTERN.key
    assert series.counts["sent"][recent] == 1
    assert min(series.counts["sent"]) == today - dt.timedelta(days=MAX_DAY_STEPS - 1)
    assert old not in series.counts["sent"]
    narrow = metrics.daily(MessageRef("broadcast", 4), first=recent, last=recent, zone="UTC")
    assert query_of(app_api)["steps"] == "4"
    assert narrow.counts["sent"] == {recent: 1}


def test_deliveries_come_page_after_page_in_windows_of_six_months(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    start = at(dt.date(2025, 1, 1), 0)
    app_api.reporting.deliveries += [
        {"id": f"d{i}", "created": start + i * 86_400 * 10, "campaign_id": 3, "metrics": {}}
        for i in range(40)  # 400 days
    ] + [{"id": "other", "created": start, "campaign_id": 2, "metrics": {}}]
    end = start + 400 * 86_400
    found = list(
        Messages(client).created_between(
            MessageRef("campaign", 3), start=start, end=end, page_limit=7
        )
    )
    assert sorted(d.id for d in found) == sorted(f"d{i}" for i in range(40))
    windows = {
        (q["start_ts"], q["end_ts"])
        for q in map(lambda i: query_of(app_api, i), range(len(app_api.requests)))
    }
    assert len(windows) == 3  # 400 days in windows of 182
    assert all(
        q["campaign_id"] == "3"
        for q in (query_of(app_api, i) for i in range(len(app_api.requests)))
    )
    assert all(r.status == 200 for r in app_api.requests)


def test_broadcast_deliveries_are_picked_out_of_every_message(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    start = at(dt.date(2026, 3, 1), 0)
    app_api.reporting.deliveries += [
        {"id": "b", "created": start + 10, "broadcast_id": 4, "metrics": {}},
        {"id": "c", "created": start + 20, "campaign_id": 4, "metrics": {}},
        {"id": "t", "created": start + 30, "transactional_message_id": 4, "metrics": {}},
    ]
    messages = Messages(client)
    broadcast = list(
        messages.created_between(MessageRef("broadcast", 4), start=start, end=start + 99)
    )
    assert [d.id for d in broadcast] == ["b"]
    every = list(messages.created_between(None, start=start, end=start + 99))
    assert {str(d.message()) for d in every} == {"broadcast 4", "campaign 4", "transactional 4"}
