"""Every analytics view against a simulated history whose truth is known exactly.

The history goes through the real receiver path (signed, verified, journaled, committed to
Delta) and the views run on DuckDB over the Delta tables. Expectations come from the
simulator's per-delivery truth and from the chosen rates (tests/analytics/truth.py), never
from the SQL under test.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from ciolake.analytics import funnels
from ciolake.analytics.duck import Lake, open_lake
from ciolake.analytics.views import BASE_TABLES, spark_statements, view_names
from ciolake.settings import Settings
from ciolake.simulate.simulator import (
    Arrival,
    Arrivals,
    History,
    Rates,
    SimulationConfig,
    build_history,
    feed,
)
from tests.analytics.truth import (
    ORIGIN_KEYS,
    expected_health,
    expected_rates,
    half_up,
    interpolated,
    origin_key,
    utc,
)
from tests.support import make_settings

RATES = Rates(
    delivery=0.9,
    bounce=0.05,
    failure=0.04,
    drop=0.03,
    open=0.5,
    machine_open_share=0.4,
    click=0.2,
    machine_click_share=0.3,
    conversion=0.1,
    unsubscribe=0.05,
    spam=0.03,
    reply=0.1,
    missing_sent=0.1,
)
CONFIG = SimulationConfig(
    start=date(2026, 3, 2),
    days=3,
    deliveries=150,
    seed=11,
    rates=RATES,
    arrivals=Arrivals(duplicate=0.1, late=0.05, quarantined_per_day=4),
)
# Columns that say when a delivery reached the receiver: the only ones arrival may change.
_RECEIPT_COLUMNS = {"received_at"}
_ARRIVAL_VIEWS = {"pipeline_health"}


def land(history: History, data_dir: Path, arrivals: list[Arrival] | None = None) -> Settings:
    settings = make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(), flush_interval_s=0.2
    )
    feed(settings, history.arrivals if arrivals is None else arrivals)
    return settings


def rows(lake: Lake, view: str) -> list[dict[str, Any]]:
    return lake.query(f"SELECT * FROM {view}").dicts()


def snapshot(lake: Lake, *, skip_receipt: bool) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's rows (sorted), leaving out what depends on arrival when asked."""
    found = {}
    for view in view_names():
        if skip_receipt and view in _ARRIVAL_VIEWS:
            continue
        result = lake.query(f"SELECT * FROM {view}")
        keep = [
            i for i, c in enumerate(result.columns) if not (skip_receipt and c in _RECEIPT_COLUMNS)
        ]
        found[view] = sorted((tuple(row[i] for i in keep) for row in result.rows), key=repr)
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[History, Lake]]:
    history = build_history(CONFIG)
    settings = land(history, tmp_path_factory.mktemp("views") / "data")
    with open_lake(settings.tables_location) as lake:
        yield history, lake


def test_every_event_lands_once_and_follows_the_spec(world: tuple[History, Lake]) -> None:
    history, lake = world
    landed = [r["event_id"] for r in rows(lake, "customerio_events")]
    assert Counter(landed) == Counter(e.event_id for e in history.events())
    for table in BASE_TABLES:
        if table.endswith("_events") and table != "raw_events":
            violations = lake.query(
                f"SELECT count(*) FROM {table} WHERE len(spec_violations) > 0"
            ).rows
            assert violations == [(0,)], table


def test_funnels_match_the_truth_delivery_by_delivery(world: tuple[History, Lake]) -> None:
    history, lake = world
    for channel in funnels.CHANNELS:
        truth = {d.delivery_id: d for d in history.deliveries if d.channel == channel.name}
        funnel = {r["delivery_id"]: r for r in rows(lake, channel.funnel_view)}
        assert funnel.keys() == truth.keys(), channel.name
        flags = [f.name for f in channel.flags if f.name not in ("drafted", "attempted")]
        for delivery_id, row in funnel.items():
            d = truth[delivery_id]
            has_sent_event = any(e.metric == "sent" for e in d.events)
            assert row["cohort_date"] == d.day
            assert row["cohort_time"] == utc(d.cohort_time)
            assert row["cohort_from_first_event"] is (not has_sent_event)
            assert tuple(row[k] for k in ORIGIN_KEYS) == origin_key(d)
            assert row["events"] == len(d.events)
            for flag in flags:
                assert row[flag] is (flag in d.outcomes), (channel.name, flag, d)
            if channel.devices:
                assert row["devices"] == len(d.devices)
                assert row["devices_delivered"] == len(d.devices_delivered)
                assert row["devices_failed"] == len(d.devices_failed)


def test_missing_sent_falls_back_to_the_earliest_event(world: tuple[History, Lake]) -> None:
    history, lake = world
    silent = [d for d in history.deliveries if d.missing_sent]
    assert silent, "the simulation should lose some sent webhooks"
    funnel = {r["delivery_id"]: r for r in rows(lake, "email_delivery_funnel")}
    for d in (d for d in silent if d.channel == "email"):
        row = funnel[d.delivery_id]
        assert row["sent_at"] is None
        assert row["sent"] is True
        assert row["cohort_time"] == utc(min(e.timestamp for e in d.events))


def test_cohort_rates_reproduce_the_chosen_rates_exactly(world: tuple[History, Lake]) -> None:
    _history, lake = world
    totals: dict[tuple[str, date, str], tuple[int, int]] = {}
    for row in lake.query(
        "SELECT channel, cohort_date, rate, sum(numerator), sum(denominator) FROM cohort_rates"
        " GROUP BY ALL"
    ).rows:
        totals[(row[0], row[1], row[2])] = (int(row[3]), int(row[4]))
    n = CONFIG.deliveries
    for channel in ("email", "push", "in_app", "sms", "slack", "webhook", "whatsapp"):
        chosen = _chosen_counts(channel, n)
        for offset in range(CONFIG.days):
            day = date.fromordinal(CONFIG.start.toordinal() + offset)
            for rate, expected in chosen.items():
                assert totals[(channel, day, f"{rate}_rate")] == expected, (channel, day, rate)


def _chosen_counts(channel: str, n: int) -> dict[str, tuple[int, int]]:
    """Per day (numerator, denominator) that the chosen rates promise for one channel."""
    r = RATES
    failed = half_up(r.failure, n)
    dropped = half_up(r.drop, n) if channel in ("email", "push", "whatsapp") else 0
    sent = n - failed - dropped
    counts = {"failure": (failed, n)}
    if channel in ("slack", "webhook"):
        return {**counts, "send": (sent, n)}
    reached = sent
    if channel != "in_app":
        reached = half_up(r.delivery, sent)
        counts["delivery"] = (reached, sent)
        counts["bounce"] = (half_up(r.bounce, sent), sent)
    clicked = half_up(r.click, reached)
    counts["click"] = (clicked, reached)
    counts["conversion"] = (half_up(r.conversion, reached), reached)
    if channel != "sms":
        opened = half_up(r.open, reached)
        counts["open"] = (opened, reached)
    if channel in ("email", "in_app"):
        counts["click_to_open"] = (min(clicked, opened), opened)
    if channel in ("sms", "whatsapp"):
        counts["reply"] = (half_up(r.reply, reached), reached)
    if channel == "email":
        counts["human_open"] = (opened - half_up(r.machine_open_share, opened), reached)
        counts["human_click"] = (clicked - half_up(r.machine_click_share, clicked), reached)
        counts["unsubscribe"] = (half_up(r.unsubscribe, reached), reached)
        counts["spam_complaint"] = (half_up(r.spam, reached), reached)
    return counts


def test_cohort_rates_match_the_truth_per_cohort_and_origin(world: tuple[History, Lake]) -> None:
    history, lake = world
    expected = expected_rates(history.deliveries)
    keys = ("channel", "cohort_date", *ORIGIN_KEYS, "rate")
    found = {}
    for row in rows(lake, "cohort_rates"):
        found[tuple(row[k] for k in keys)] = (row["numerator"], row["denominator"])
        denominator = row["denominator"]
        value = None if denominator == 0 else row["numerator"] / denominator
        assert row["value"] == value
    assert found == expected
    # The wide per-channel views hold the same numbers as the long one.
    for channel in funnels.CHANNELS:
        for row in rows(lake, channel.cohort_view):
            for rate in channel.rates:
                key = (channel.name, row["cohort_date"], *(row[k] for k in ORIGIN_KEYS))
                pair = (row[f"{rate.name}_numerator"], row[f"{rate.name}_denominator"])
                assert pair == expected[(*key, f"{rate.name}_rate")]


def test_no_rate_exceeds_one(world: tuple[History, Lake]) -> None:
    _history, lake = world
    for row in rows(lake, "cohort_rates"):
        assert 0 <= row["numerator"] <= row["denominator"], row
        assert row["value"] is None or 0.0 <= row["value"] <= 1.0


def test_event_date_views_count_events_on_the_day_they_happen(world: tuple[History, Lake]) -> None:
    history, lake = world
    events: dict[tuple[str, str, date], list[str]] = defaultdict(list)
    for e in history.events():
        events[(e.object_type, e.metric, utc(e.timestamp).date())].append(e.customer_key)
    summary = {
        (r["object_type"], r["metric"], r["event_date"]): (r["event_count"], r["unique_customers"])
        for r in rows(lake, "customerio_webhook_summary")
    }
    assert summary == {k: (len(v), len(set(v))) for k, v in events.items()}

    daily: dict[date, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in history.events():
        if e.object_type == "email" and e.delivery_id is not None:
            daily[utc(e.timestamp).date()][e.metric].add(e.delivery_id)
    engagement = {r["event_date"]: r for r in rows(lake, "email_engagement_metrics")}
    assert engagement.keys() == daily.keys()
    for day, row in engagement.items():
        for metric in ("sent", "delivered", "opened", "clicked"):
            assert row[metric] == len(daily[day][metric]), (day, metric)
        assert row["open_rate"] == (row["opened"] / row["delivered"] if row["delivered"] else None)
    # Opens land on later days than their sends: by event date they are not the cohort's.
    cohort_opened = Counter(
        d.day for d in history.deliveries if d.channel == "email" and "opened" in d.outcomes
    )
    assert any(engagement[day]["opened"] != cohort_opened[day] for day in cohort_opened)


def test_failure_reasons_match_the_failure_messages(world: tuple[History, Lake]) -> None:
    history, lake = world
    expected: dict[tuple[str, date, str, str], list[str | None]] = defaultdict(list)
    for e in history.events():
        for message in e.failure_messages:
            expected[(e.object_type, utc(e.timestamp).date(), e.metric, message)].append(
                e.delivery_id
            )
    found = rows(lake, "failure_reasons")
    assert {
        (r["channel"], r["event_date"], r["metric"], r["failure_message"]): (
            r["failures"],
            r["deliveries"],
        )
        for r in found
    } == {k: (len(v), len(set(v))) for k, v in expected.items()}
    for (channel, day), ranked in _group(found, ("channel", "event_date")).items():
        ordered = sorted(ranked, key=lambda r: r["rank_in_day"])
        assert [r["rank_in_day"] for r in ordered] == list(range(1, len(ordered) + 1))
        assert [r["failures"] for r in ordered] == sorted(
            (r["failures"] for r in ordered), reverse=True
        ), (channel, day)


def _group(found: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in found:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def test_subscription_views_match_the_truth(world: tuple[History, Lake]) -> None:
    history, lake = world
    metrics = {"subscribed", "unsubscribed", "cio_subscription_preferences_changed"}
    changes = [e for e in history.events() if e.metric in metrics]
    assert any(e.delivery_id for e in changes), "message-level unsubscribes expected"
    found = {r["event_id"]: r for r in rows(lake, "subscription_changes")}
    assert found.keys() == {e.event_id for e in changes}
    for e in changes:
        row = found[e.event_id]
        assert row["level"] == ("message" if e.delivery_id else "person")
        assert row["change"] == e.metric.replace("cio_subscription_", "")
        assert row["customer_key"] == e.customer_key

    state = {r["customer_key"]: r for r in rows(lake, "customer_subscription_state")}
    assert state.keys() == {e.customer_key for e in changes}
    for key, row in state.items():
        mine = [e for e in changes if e.customer_key == key]
        statuses = [e for e in mine if e.metric != "cio_subscription_preferences_changed"]
        latest = max(statuses, key=lambda e: (e.timestamp, e.event_id), default=None)
        assert row["subscribed"] == (None if latest is None else latest.metric == "subscribed")
        assert row["changes"] == len(mine)
        preferences = [e for e in mine if e.metric == "cio_subscription_preferences_changed"]
        newest = max(preferences, key=lambda e: (e.timestamp, e.event_id), default=None)
        expected = None if newest is None else json.loads(newest.body)["data"]["content"]
        assert row["preferences"] == expected


def test_pipeline_health_matches_the_arrivals(world: tuple[History, Lake]) -> None:
    history, lake = world
    expected = expected_health(history)
    health = {r["hour"]: r for r in rows(lake, "pipeline_health")}
    assert health.keys() == expected.keys()
    reasons = ("invalid_json", "invalid_envelope", "unknown_object_type", "stale_timestamp")
    for hour, row in health.items():
        truth = expected[hour]
        assert row["deliveries_received"] == truth["received"]
        assert row["events_landed"] == truth["landed"]
        assert row["duplicates"] == truth["duplicates"]
        assert row["quarantined"] == sum(truth["reasons"].values())
        for reason in reasons:
            assert row[f"quarantined_{reason}"] == truth["reasons"][reason]
        if truth["lags"]:
            assert row["lag_p50_s"] == pytest.approx(interpolated(truth["lags"], 0.5), abs=1e-6)
            assert row["lag_p99_s"] == pytest.approx(interpolated(truth["lags"], 0.99), abs=1e-6)
            assert row["lag_max_s"] == pytest.approx(max(truth["lags"]), abs=1e-6)
        else:
            assert row["lag_p50_s"] is None
    assert sum(r["duplicates"] for r in health.values()) > 0
    assert sum(r["quarantined"] for r in health.values()) == CONFIG.days * 4


def test_replaying_every_delivery_changes_no_view(tmp_path: Path) -> None:
    config = replace(CONFIG, days=2, deliveries=60, seed=5)
    history = build_history(config)
    settings = land(history, tmp_path / "data")
    with open_lake(settings.tables_location) as lake:
        before = snapshot(lake, skip_receipt=False)
    # Customer.io delivers everything again five days later (inside its 7-day retry window),
    # after the last original delivery.
    shift = 5 * 86_400
    again = [
        replace(a, receive_time=a.receive_time + shift, x_cio_timestamp=a.x_cio_timestamp + shift)
        for a in history.arrivals
    ]
    assert again[0].receive_time > history.arrivals[-1].receive_time + 3600
    land(history, tmp_path / "data", again)
    with open_lake(settings.tables_location) as lake:
        after = snapshot(lake, skip_receipt=False)
        health = rows(lake, "pipeline_health")
    for view in before:
        if view not in _ARRIVAL_VIEWS:
            assert after[view] == before[view], view
    replay_hours = {a.receive_time // 3600 for a in again}
    replayed = [r for r in health if r["hour"].timestamp() // 3600 in replay_hours]
    assert sum(r["events_landed"] for r in replayed) == 0
    junk = sum(1 for a in again if a.kind == "quarantine")
    assert sum(r["duplicates"] for r in replayed) == len(again) - junk
    assert sum(r["quarantined"] for r in replayed) == junk


def test_arrival_order_lateness_and_retries_change_no_view(tmp_path: Path) -> None:
    config = replace(CONFIG, days=2, deliveries=60, seed=6)
    messy = build_history(
        replace(config, arrivals=Arrivals(duplicate=0.3, late=0.3, quarantined_per_day=4))
    )
    calm = build_history(
        replace(
            config,
            arrivals=Arrivals(
                duplicate=0.0, late=0.0, quarantined_per_day=0, min_lag_s=1.0, max_lag_s=1.0
            ),
        )
    )
    assert [e.body for e in messy.events()] == [e.body for e in calm.events()]
    assert _opens_received_before_delivered(messy) > 0
    assert _received_out_of_order(messy) > 0
    assert _received_out_of_order(calm) == 0
    views = []
    for name, history in (("messy", messy), ("calm", calm)):
        settings = land(history, tmp_path / name)
        with open_lake(settings.tables_location) as lake:
            views.append(snapshot(lake, skip_receipt=True))
    for view in views[0]:
        assert views[0][view] == views[1][view], view


def _received_out_of_order(history: History) -> int:
    """Events that reached the receiver after a later event of the same delivery."""
    latest: dict[str, int] = {}
    inversions = 0
    for arrival in history.arrivals:
        event = arrival.event
        if arrival.kind != "landed" or event is None or event.delivery_id is None:
            continue
        inversions += event.timestamp < latest.get(event.delivery_id, 0)
        latest[event.delivery_id] = max(latest.get(event.delivery_id, 0), event.timestamp)
    return inversions


def _opens_received_before_delivered(history: History) -> int:
    """Email deliveries whose first open reached the receiver before their delivered event."""
    first: dict[tuple[str, str], float] = {}
    for arrival in history.arrivals:
        event = arrival.event
        if event is not None and event.object_type == "email" and event.delivery_id:
            first.setdefault((event.delivery_id, event.metric), arrival.receive_time)
    return sum(
        1
        for (delivery, metric), moment in first.items()
        if metric == "opened" and moment < first.get((delivery, "delivered"), float("inf"))
    )


@pytest.mark.parametrize("qualifier", [(None, None), ("main", "customerio")])
def test_every_view_transpiles_to_spark_sql_that_parses(
    qualifier: tuple[str | None, str | None],
) -> None:
    catalog, schema = qualifier
    statements = spark_statements(catalog=catalog, schema=schema)
    names = view_names()
    assert len(statements) == len(names)
    known = set(BASE_TABLES) | set(names)
    for name, statement in zip(names, statements, strict=True):
        tree = sqlglot.parse_one(statement, read="spark")
        assert isinstance(tree, exp.Create)
        assert tree.args["kind"] == "VIEW"
        assert tree.this.name == name
        # Spark reads its own output back unchanged.
        assert sqlglot.transpile(statement, read="spark", write="spark", pretty=True) == [statement]
        lowered = statement.lower()
        for duckdb_only in ("delta_scan", "quantile_cont", "unnest(", "date_diff(", "::"):
            assert duckdb_only not in lowered, (name, duckdb_only)
        for table in tree.find_all(exp.Table):
            if table.name in known:
                assert (table.catalog or None, table.db or None) == qualifier, (name, table)


def test_spark_sql_uses_spark_functions_for_percentiles_and_arrays() -> None:
    script = " ".join(" ".join(spark_statements()).split())
    assert "PERCENTILE(lag_s, 0.5)" in script
    assert "PERCENTILE(lag_s, 0.99)" in script
    assert "LATERAL VIEW EXPLODE(e.recipients) u AS r" in script
    assert "DATEDIFF(MICROSECOND, event_time, received_at)" in script


def test_spark_can_register_the_tables_as_external_delta_tables() -> None:
    statements = spark_statements(catalog="main", schema="cio", tables_uri="s3://bucket/lake/")
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    assert len(creates) == len(BASE_TABLES)
    assert (
        "CREATE TABLE IF NOT EXISTS main.cio.email_events USING DELTA"
        " LOCATION 's3://bucket/lake/email_events'"
    ) in creates
    for statement in creates:
        sqlglot.parse_one(statement, read="spark")
