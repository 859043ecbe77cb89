"""Exactly once across restarts: the dedup index and the tables survive SIGTERM and a new process.

Also: events whose own timestamps lie days apart are deduplicated and partitioned by their UTC
event date, and an authentic delivery signed outside the timestamp tolerance is kept in
`raw_events` and `quarantine` only.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciolake.events import target_table
from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import (
    ServerProcess,
    body_of,
    metric_value,
    signed_headers,
    start_server,
    table_rows,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DAY = 86_400


def make_events(count: int, *, seed: int, timestamps: Sequence[int]) -> list[dict[str, Any]]:
    """``count`` unique events cycling through every schema and through ``timestamps``."""
    rng = random.Random(seed)
    keys = schema_keys()
    events = [
        sample_event(
            schema_by_name(keys[index % len(keys)][0]),
            rng=rng,
            timestamp=timestamps[index % len(timestamps)],
        )
        for index in range(count)
    ]
    assert len({event["event_id"] for event in events}) == count
    return events


def table_of(event: dict[str, Any]) -> str:
    return target_table(
        event["object_type"], event["metric"], has_delivery_id="delivery_id" in event["data"]
    )


def post_all(server: ServerProcess, events: Sequence[dict[str, Any]], *, signed_at: int) -> None:
    """Post each event signed at ``signed_at``; every answer must be 200."""
    with httpx.Client(timeout=10) as client:
        for event in events:
            body = body_of(event)
            headers = signed_headers(body, timestamp=signed_at)
            response = client.post(server.url, content=body, headers=headers)
            assert response.status_code == 200, response.text


def metrics_after_commit(server: ServerProcess) -> str:
    wait_until_committed(server)
    return httpx.get(f"{server.admin_base}/metrics", timeout=5).text


def stop(server: ServerProcess) -> None:
    code = server.stop()
    assert code == 0, f"serve exited with {code} after SIGTERM"


def channel_rows(data_dir: Path, columns: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of every channel table, keyed by event id, each with its table added."""
    found: dict[str, list[dict[str, Any]]] = {}
    for table in CHANNEL_TABLES:
        for row in table_rows(data_dir, table, f"event_id, {columns}"):
            found.setdefault(row["event_id"], []).append({**row, "table": table})
    return found


def accepted_total(metrics: str) -> float:
    return sum(
        metric_value(metrics, "ciolake_events_accepted_total", f'table="{table}"')
        for table in CHANNEL_TABLES
    )


def partition_dates(data_dir: Path, table: str) -> set[str]:
    """The ``event_date`` partition values of the files a table's log adds."""
    dates = set()
    for log in sorted((data_dir / "tables" / table / "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                values = action["add"]["partitionValues"]
                assert set(values) == {"event_date"}, values
                dates.add(values["event_date"])
    return dates


def test_duplicates_across_a_restart_are_stored_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    now = int(time.time())
    events = make_events(69, seed=31, timestamps=[now - 60])
    ids = {event["event_id"] for event in events}

    first = start_server(data_dir)
    try:
        post_all(first, events, signed_at=now - 30)
        metrics = metrics_after_commit(first)
    finally:
        stop(first)
    assert metric_value(metrics, "ciolake_events_duplicate_total") == 0
    assert accepted_total(metrics) == len(events)

    second = start_server(data_dir)
    try:
        # The same bodies with fresh signatures, as Customer.io's retries would send them.
        post_all(second, events, signed_at=now)
        metrics = metrics_after_commit(second)
    finally:
        stop(second)
    assert metric_value(metrics, "ciolake_events_duplicate_total") == len(events)
    assert accepted_total(metrics) == 0

    stored = channel_rows(data_dir, "payload")
    assert set(stored) == ids
    for event in events:
        rows = stored[event["event_id"]]
        assert [row["table"] for row in rows] == [table_of(event)]
        assert json.loads(rows[0]["payload"]) == event
    raw = table_rows(data_dir, "raw_events", "event_id, x_cio_timestamp")
    assert len(raw) == 2 * len(events)
    assert Counter(row["event_id"] for row in raw) == Counter({i: 2 for i in ids})
    signed = {(row["event_id"], row["x_cio_timestamp"]) for row in raw}
    assert signed == {(i, ts) for i in ids for ts in (now - 30, now)}
    assert table_rows(data_dir, "quarantine", "event_id") == []


def test_duplicates_days_apart_in_event_time_are_stored_once_by_event_date(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    now = int(time.time())
    # All within the dedup window (8 days); each lands on the UTC day its timestamp falls on.
    timestamps = [now - 6 * DAY, now - 3 * DAY, now]
    events = make_events(3 * 23, seed=32, timestamps=timestamps)

    first = start_server(data_dir)
    try:
        post_all(first, events, signed_at=int(time.time()))
        wait_until_committed(first)
    finally:
        stop(first)
    second = start_server(data_dir)
    try:
        post_all(second, events, signed_at=int(time.time()))
        metrics = metrics_after_commit(second)
    finally:
        stop(second)
    assert metric_value(metrics, "ciolake_events_duplicate_total") == len(events)

    stored = channel_rows(data_dir, "timestamp, event_time, event_date")
    assert set(stored) == {event["event_id"] for event in events}
    expected_dates: dict[str, set[str]] = {}
    for event in events:
        rows = stored[event["event_id"]]
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["table"] == table_of(event)
        event_time = dt.datetime.fromtimestamp(event["timestamp"], tz=dt.UTC)
        assert row["timestamp"] == event["timestamp"]
        assert row["event_time"] == event_time
        assert row["event_date"] == event_time.date()
        expected_dates.setdefault(row["table"], set()).add(event_time.date().isoformat())
    assert len(set.union(*expected_dates.values())) == 3
    for table, dates in expected_dates.items():
        assert partition_dates(data_dir, table) == dates, table
    raw = Counter(row["event_id"] for row in table_rows(data_dir, "raw_events", "event_id"))
    assert raw == Counter({event["event_id"]: 2 for event in events})


def test_stale_signature_timestamp_is_kept_aside_in_quarantine(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    now = int(time.time())
    stale_past, stale_future, fresh = make_events(3, seed=33, timestamps=[now - 60])
    signed_at = {
        stale_past["event_id"]: now - 3600,  # an hour old: outside the 300 s tolerance
        stale_future["event_id"]: now + 3600,
        fresh["event_id"]: now - 200,  # inside the tolerance
    }
    by_id = {e["event_id"]: e for e in (stale_past, stale_future, fresh)}

    server = start_server(data_dir)
    try:
        with httpx.Client(timeout=10) as client:
            for event_id, event in by_id.items():
                body = body_of(event)
                headers = signed_headers(body, timestamp=signed_at[event_id])
                response = client.post(server.url, content=body, headers=headers)
                assert response.status_code == 200, response.text
        metrics = metrics_after_commit(server)
    finally:
        stop(server)
    stale_ids = {stale_past["event_id"], stale_future["event_id"]}
    reason = 'reason="stale_timestamp"'
    assert metric_value(metrics, "ciolake_events_quarantined_total", reason) == 2

    raw = table_rows(data_dir, "raw_events", "event_id, x_cio_timestamp, body")
    assert {(r["event_id"], r["x_cio_timestamp"]) for r in raw} == set(signed_at.items())
    assert all(r["body"] == body_of(by_id[r["event_id"]]).decode() for r in raw)
    quarantine = table_rows(data_dir, "quarantine", "event_id, reason, object_type, metric, body")
    assert {r["event_id"] for r in quarantine} == stale_ids
    assert len(quarantine) == 2
    for row in quarantine:
        event = by_id[row["event_id"]]
        assert row["reason"] == "stale_timestamp"
        assert (row["object_type"], row["metric"]) == (event["object_type"], event["metric"])
        assert row["body"] == body_of(event).decode()
    stored = channel_rows(data_dir, "metric")
    assert set(stored) == {fresh["event_id"]}
    assert [row["table"] for row in stored[fresh["event_id"]]] == [table_of(fresh)]

    # A stale delivery does not count as stored: Customer.io's fresh retry lands, once.
    server = start_server(data_dir)
    try:
        post_all(server, [stale_past, stale_future, fresh], signed_at=int(time.time()))
        metrics = metrics_after_commit(server)
    finally:
        stop(server)
    assert metric_value(metrics, "ciolake_events_duplicate_total") == 1
    stored = channel_rows(data_dir, "metric")
    assert set(stored) == set(by_id)
    for event_id, rows in stored.items():
        assert [row["table"] for row in rows] == [table_of(by_id[event_id])]
    assert len(table_rows(data_dir, "quarantine", "event_id")) == 2
