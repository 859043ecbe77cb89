"""The committer in-process: batching, exactly-once, and repair after a crash mid-batch.

The tables are read back with DuckDB's delta extension, independent of our writer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from ciolake.events.decode import Typed, decode_event
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.lake.writer import DeltaWriter
from ciolake.receive.verify import Verdict
from ciolake.runtime.embedded import Receiver
from ciolake.settings import Settings
from tests.support import NOW, make_bodies, make_settings, table_rows, wait_for


async def deliver(receiver: Receiver, bodies: list[bytes]) -> None:
    verdict = Verdict(timestamp=NOW, stale=False)
    await asyncio.gather(*(receiver.accept(body, verdict) for body in bodies))


def wait_drained(receiver: Receiver, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while receiver.backlog()[0] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiver.backlog()[0] == 0


def event_ids(data_dir: Path, table: str) -> list[str]:
    return [row["event_id"] for row in table_rows(data_dir, table, "event_id")]


def all_channel_ids(data_dir: Path) -> list[str]:
    return [i for table in CHANNEL_TABLES for i in event_ids(data_dir, table)]


def commits_of(data_dir: Path, table: str) -> int:
    # Version 0 creates the table; every later log entry is one commit.
    return len(list((data_dir / "tables" / table / "_delta_log").glob("*.json"))) - 1


def run_receiver(settings: Settings, bodies: list[bytes]) -> Receiver:
    receiver = Receiver(settings, clock=lambda: NOW + 1.0)
    receiver.open()

    async def go() -> None:
        await deliver(receiver, bodies)
        wait_drained(receiver)
        await receiver.close()

    asyncio.run(go())
    return receiver


def test_ten_thousand_events_take_two_commits_per_table(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, flush_interval_s=60.0)
    bodies = make_bodies(10_000)
    receiver = Receiver(settings, clock=lambda: NOW + 1.0)
    receiver.open()

    async def go() -> None:
        await deliver(receiver, bodies)
        # The first batch is committed at once (no table was committed yet). The second fills
        # raw_events' pool (a batch's bound of rows), so it is committed at once too; the
        # channel tables' share of it waits for the flush interval, until closing commits it.
        wait_for(lambda: receiver.committer.commits == 10, 30, "the full pools' commits")
        time.sleep(0.3)
        assert receiver.committer.commits == 10
        assert receiver.backlog()[0] == 5_000
        await receiver.close()

    asyncio.run(go())
    data_dir = settings.data_dir
    raw = event_ids(data_dir, "raw_events")
    assert len(raw) == 10_000
    assert sorted(all_channel_ids(data_dir)) == sorted(set(raw))
    # batch_max_events=5000: 10,000 events are two batches, so two commits per table.
    for table in ("raw_events", *CHANNEL_TABLES):
        assert commits_of(data_dir, table) == 2, table
    assert receiver.committer.commits == 18


def test_redelivered_events_are_stored_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(300)
    run_receiver(settings, bodies + bodies[:100])
    run_receiver(settings, bodies)
    channel = all_channel_ids(settings.data_dir)
    assert len(channel) == 300
    assert len(set(channel)) == 300
    assert len(event_ids(settings.data_dir, "raw_events")) == 700


def test_crash_after_the_commits_before_the_dedup_record_is_repaired(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(400)
    receiver = Receiver(settings, clock=lambda: NOW + 1.0)
    receiver.open()
    crash = RuntimeError("simulated crash between the Delta commits and the dedup record")
    with mock.patch.object(receiver.committer._dedup, "record", side_effect=crash):
        asyncio.run(deliver(receiver, bodies))
        deadline = time.monotonic() + 10
        while receiver.metrics.commit_failures._value.get() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.committer.stop(deadline_s=5) is False
    receiver.abandon()
    # Every table already holds the batch, but the dedup index and watermark do not know it.
    assert len(all_channel_ids(settings.data_dir)) == 400
    run_receiver(settings, bodies[:50])
    channel = all_channel_ids(settings.data_dir)
    assert sorted(channel) == sorted({json.loads(b)["event_id"] for b in bodies})
    assert len(event_ids(settings.data_dir, "raw_events")) == 450


def test_a_table_whose_commit_failed_is_written_on_recovery_and_no_other(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(300)
    receiver = Receiver(settings, clock=lambda: NOW + 1.0)
    receiver.open()
    real_append = DeltaWriter._append

    def failing_email(
        self: DeltaWriter, name: str, rows: Any, versions: Mapping[int, int], *rest: Any
    ) -> float:
        if name == "email_events":
            raise OSError("simulated I/O error on email_events")
        return real_append(self, name, rows, versions, *rest)

    with mock.patch.object(DeltaWriter, "_append", failing_email):
        asyncio.run(deliver(receiver, bodies))
        deadline = time.monotonic() + 10
        # Readiness reads what the runtime publishes every 20 ms, as a worker's does.
        while receiver.readiness()[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.committer.consecutive_failures >= 3
        ready, reason = receiver.readiness()
        assert not ready
        assert "commits failing" in reason
        assert "simulated I/O error on email_events" in reason
        assert receiver.committer.stop(deadline_s=5) is False
    receiver.abandon()
    assert event_ids(settings.data_dir, "email_events") == []
    others = len(all_channel_ids(settings.data_dir))
    assert others > 0
    run_receiver(settings, [])
    channel = all_channel_ids(settings.data_dir)
    assert len(channel) == 300
    assert len(set(channel)) == 300
    assert len(event_ids(settings.data_dir, "raw_events")) == 300


@pytest.mark.parametrize("stale", [True, False])
def test_stale_deliveries_go_to_quarantine_not_the_channel(tmp_path: Path, stale: bool) -> None:
    settings = make_settings(tmp_path)
    receiver = Receiver(settings, clock=lambda: NOW + 1.0)
    receiver.open()
    body = make_bodies(1)[0]

    async def go() -> None:
        await receiver.accept(body, Verdict(timestamp=NOW - 3600, stale=stale))
        wait_drained(receiver)
        await receiver.close()

    asyncio.run(go())
    quarantine = table_rows(settings.data_dir, "quarantine", "reason, event_id, body")
    assert len(event_ids(settings.data_dir, "raw_events")) == 1
    if stale:
        assert [q["reason"] for q in quarantine] == ["stale_timestamp"]
        assert quarantine[0]["body"] == body.decode()
        assert all_channel_ids(settings.data_dir) == []
    else:
        assert quarantine == []
        assert len(all_channel_ids(settings.data_dir)) == 1


def test_slow_commits_make_batches_larger_and_fewer(tmp_path: Path) -> None:
    # As delta-rs's commits to a table of many files would: 0.4 s per batch's commits.
    settings = make_settings(tmp_path, flush_interval_s=1.0, batch_max_events=500)
    bodies = make_bodies(4_000)
    append_all = DeltaWriter.append_all
    batch_sizes: list[int] = []

    def slow_append_all(
        self: DeltaWriter, batches: Mapping[str, Any], **keywords: Any
    ) -> dict[str, float]:
        if "raw_events" in batches:  # a commit of waiting small tables alone has none
            batch_sizes.append(batches["raw_events"].num_rows)
        time.sleep(0.4)
        return append_all(self, batches, **keywords)

    with mock.patch.object(DeltaWriter, "append_all", slow_append_all):
        receiver = run_receiver(settings, bodies)
    assert len(event_ids(settings.data_dir, "raw_events")) == 4_000
    assert sorted(all_channel_ids(settings.data_dir)) == sorted(
        json.loads(b)["event_id"] for b in bodies
    )
    assert batch_sizes[0] == 500, "the first batch keeps the configured bound"
    assert max(batch_sizes) > 500, "slow commits let later batches grow"
    assert len(batch_sizes) < 4_000 // 500
    # Spaced out: the smoothed commit time (0.4 s and more) over COMMIT_SHARE.
    assert receiver.committer.batch_interval() >= 2.5


def test_a_body_no_column_can_hold_lands_and_the_rest_follow(tmp_path: Path) -> None:
    # An integer beyond 64 bits once failed every batch that held it, for ever.
    settings = make_settings(tmp_path)
    bodies = make_bodies(200)
    poison = json.loads(bodies[0])
    poison["data"]["campaign_id"] = 2**64
    bodies[0] = json.dumps(poison).encode()
    receiver = run_receiver(settings, bodies)
    assert receiver.committer.consecutive_failures == 0
    assert len(all_channel_ids(settings.data_dir)) == 200
    decoded = decode_event(bodies[0])
    assert isinstance(decoded, Typed)
    (row,) = table_rows(
        settings.data_dir,
        decoded.table,
        "campaign_id, spec_violations",
        f"WHERE event_id = '{poison['event_id']}'",
    )
    assert row["campaign_id"] is None
    assert "wrong_type:data.campaign_id" in row["spec_violations"]
