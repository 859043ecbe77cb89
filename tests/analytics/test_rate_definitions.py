"""The documented definitions, on hand-made and random deliveries (Arrow tables, no Delta).

Random event sets include what the simulator never produces (opens without a delivered event,
clicks without opens, deliveries without a sent event): no rate may exceed 1 whatever arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciolake.analytics import funnels
from ciolake.analytics.duck import Lake, connect
from ciolake.lake.tables import ALL_SPECS

DAY0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
_FLAGS = st.sampled_from([None, False, True])


@pytest.fixture(scope="module")
def lake() -> Iterator[Lake]:
    connection = connect()
    for name, spec in ALL_SPECS.items():
        connection.register(name, spec.schema.empty_table())
    connection.create_analytics_views()
    yield connection
    connection.close()


def event(
    delivery_id: str, metric: str, seconds: int, channel: str = "email", **fields: Any
) -> dict[str, Any]:
    timestamp = DAY0 + seconds
    return {
        "event_id": f"{delivery_id}-{metric}-{seconds}-{len(fields)}",
        "object_type": channel,
        "metric": metric,
        "timestamp": timestamp,
        "event_time": timestamp * 1_000_000,
        "event_date": timestamp // 86_400,
        "received_at": (timestamp + 1) * 1_000_000,
        "delivery_id": delivery_id,
        "customer_id": f"person-{delivery_id}",
        "origin": "campaign",
        "campaign_id": 1,
        "action_id": 2,
        **fields,
    }


def put(lake: Lake, channel: str, events: list[dict[str, Any]]) -> None:
    table = f"{channel}_events"
    lake.register(table, pa.Table.from_pylist(events, schema=ALL_SPECS[table].schema))


def funnel(lake: Lake, channel: str = "email") -> dict[str, dict[str, Any]]:
    return {
        r["delivery_id"]: r for r in lake.query(f"SELECT * FROM {channel}_delivery_funnel").dicts()
    }


def test_machine_flags_decide_human_opens_and_clicks_and_nulls_count_as_human(lake: Lake) -> None:
    put(
        lake,
        "email",
        [
            event("no-flags", "opened", 10),
            event("false-flags", "opened", 10, proxied=False, prefetched=False, synthetic=False),
            event("proxied", "opened", 10, proxied=True),
            event("prefetched", "opened", 10, proxied=False, prefetched=True),
            event("synthetic", "opened", 10, synthetic=True),
            event("machine-then-human", "opened", 10, prefetched=True),
            event("machine-then-human", "opened", 500),
            event("click-null", "clicked", 10),
            event("click-machine", "clicked", 10, machine=True),
            event("click-human", "clicked", 10, machine=False),
        ],
    )
    rows = funnel(lake)
    humans = {k for k, r in rows.items() if r["human_opened"]}
    assert humans == {"no-flags", "false-flags", "machine-then-human"}
    assert rows["machine-then-human"]["human_opened_at"] == datetime.fromtimestamp(DAY0 + 500, UTC)
    assert rows["machine-then-human"]["opened_at"] == datetime.fromtimestamp(DAY0 + 10, UTC)
    assert {k for k, r in rows.items() if r["human_clicked"]} == {"click-null", "click-human"}
    assert all(rows[k]["clicked"] for k in ("click-null", "click-machine", "click-human"))


def test_later_outcomes_imply_delivery_and_sending(lake: Lake) -> None:
    put(
        lake,
        "email",
        [
            event("opened-only", "opened", 100),
            event("bounced-only", "bounced", 100),
            event("dropped-only", "dropped", 100),
            event("sent-only", "sent", 100),
        ],
    )
    rows = funnel(lake)
    assert (rows["opened-only"]["sent"], rows["opened-only"]["delivered"]) == (True, True)
    assert rows["opened-only"]["delivered_at"] is None
    assert (rows["bounced-only"]["sent"], rows["bounced-only"]["delivered"]) == (True, False)
    assert (rows["dropped-only"]["sent"], rows["dropped-only"]["delivered"]) == (False, False)
    assert (rows["sent-only"]["sent"], rows["sent-only"]["delivered"]) == (True, False)
    rates = {
        r["rate"]: (r["numerator"], r["denominator"])
        for r in lake.query("SELECT * FROM cohort_rates WHERE channel = 'email'").dicts()
    }
    assert rates["delivery_rate"] == (1, 3)
    assert rates["open_rate"] == (1, 1)
    assert rates["bounce_rate"] == (1, 3)


def test_cohort_is_the_send_time_else_the_earliest_event(lake: Lake) -> None:
    late_evening = 23 * 3600 + 59 * 60
    put(
        lake,
        "email",
        [
            event("sent-late", "sent", late_evening),
            event("sent-late", "delivered", late_evening + 120),
            event("sent-late", "opened", late_evening + 86_400),
            # The open was fetched by a proxy before the delivered webhook; no sent webhook.
            event("no-sent", "delivered", 4000),
            event("no-sent", "opened", 3990, proxied=True),
        ],
    )
    rows = funnel(lake)
    assert rows["sent-late"]["cohort_date"] == date(2026, 3, 2)
    assert rows["sent-late"]["cohort_from_first_event"] is False
    assert rows["no-sent"]["cohort_time"] == datetime.fromtimestamp(DAY0 + 3990, UTC)
    assert rows["no-sent"]["cohort_from_first_event"] is True
    by_day = {
        r["event_date"]: r for r in lake.query("SELECT * FROM email_engagement_metrics").dicts()
    }
    # By event date, the Monday send's Tuesday open counts on Tuesday, against no delivery.
    assert by_day[date(2026, 3, 3)]["opened"] == 1
    assert by_day[date(2026, 3, 3)]["delivered"] == 1  # the 23:59 send delivered at 00:01


_EMAIL_METRICS = funnels.channel_metrics("email")


@st.composite
def email_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    for index in range(draw(st.integers(1, 6))):
        for metric in draw(st.lists(st.sampled_from(_EMAIL_METRICS), min_size=1, max_size=6)):
            seconds = draw(st.integers(0, 3 * 86_400))
            flags: dict[str, Any] = {}
            if metric == "opened":
                flags = {"proxied": draw(_FLAGS), "prefetched": draw(_FLAGS)}
            elif metric == "clicked":
                flags = {"machine": draw(_FLAGS)}
            events.append(event(f"d{index}", metric, seconds, **flags))
    return events


@settings(max_examples=30, deadline=None)
@given(events=email_events())
def test_no_rate_exceeds_one_whatever_events_arrive(
    lake: Lake, events: list[dict[str, Any]]
) -> None:
    put(lake, "email", events)
    for row in lake.query("SELECT * FROM cohort_rates WHERE channel = 'email'").dicts():
        assert 0 <= row["numerator"] <= row["denominator"], row
        if row["denominator"] == 0:
            assert row["value"] is None
        else:
            assert 0.0 <= row["value"] <= 1.0
    for delivery_id, row in funnel(lake).items():
        times = [e["timestamp"] for e in events if e["delivery_id"] == delivery_id]
        sends = [
            e["timestamp"]
            for e in events
            if e["delivery_id"] == delivery_id and e["metric"] == "sent"
        ]
        expected = min(sends) if sends else min(times)
        assert row["cohort_time"] == datetime.fromtimestamp(expected, UTC)
        assert not row["opened"] or row["delivered"]
        assert not row["delivered"] or row["sent"]
        assert not row["human_opened"] or row["opened"]
