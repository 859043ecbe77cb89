"""Replay: re-deriving channel tables from raw_events, idempotently, quarantine included."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import msgspec
from deltalake import DeltaTable

from ciolake.lake.replay.replayer import Replayer, ReplayRange
from tests.support import NOW, channel_rows, make_bodies, make_settings, receive, table_rows


def test_replay_of_intact_tables_changes_nothing_and_can_run_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(300, seed=1)
    receive(settings, [(b, False) for b in bodies + bodies[:40]])
    before = channel_rows(settings, "event_id, received_at, payload, journal_lsn")
    replayer = Replayer(settings, chunk_rows=128)
    assert replayer.count(ReplayRange()) == 340
    seen: list[int] = []
    first = replayer.run(ReplayRange(), include_quarantine=False, progress=seen.append)
    assert sum(seen) == 340
    assert first.deliveries == 340
    assert sum(first.upserted.values()) >= 300
    assert channel_rows(settings, "event_id, received_at, payload, journal_lsn") == before
    replayer.run(ReplayRange(), include_quarantine=False)
    assert channel_rows(settings, "event_id, received_at, payload, journal_lsn") == before


def test_replay_restores_lost_rows_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(200, seed=2)
    receive(settings, [(b, False) for b in bodies])
    before = channel_rows(settings, "event_id, received_at, payload, journal_lsn")
    email = DeltaTable(str(settings.data_dir / "tables" / "email_events"))
    email.delete("metric = 'opened' OR metric = 'clicked'")
    assert len(channel_rows(settings, "event_id, received_at, payload, journal_lsn")) < len(before)
    Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert channel_rows(settings, "event_id, received_at, payload, journal_lsn") == before


def test_quarantined_deliveries_move_only_when_asked_and_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(60, seed=3)
    receive(settings, [(b, i % 3 == 0) for i, b in enumerate(bodies)])
    assert len(table_rows(settings.data_dir, "quarantine", "reason")) == 20
    assert len(channel_rows(settings, "event_id, received_at, payload, journal_lsn")) == 40
    # An upgrade raised the tolerance: the stale deliveries now type.
    relaxed = msgspec.structs.replace(settings, timestamp_tolerance_s=7200)
    kept = Replayer(relaxed).run(ReplayRange(), include_quarantine=False)
    assert kept.left_in_quarantine == 20
    assert len(channel_rows(settings, "event_id, received_at, payload, journal_lsn")) == 40
    moved = Replayer(relaxed).run(ReplayRange(), include_quarantine=True)
    assert moved.moved_from_quarantine == 20
    assert table_rows(settings.data_dir, "quarantine", "reason") == []
    stored = channel_rows(settings, "event_id, received_at, payload, journal_lsn")
    assert set(stored) == {json.loads(b)["event_id"] for b in bodies}
    again = Replayer(relaxed).run(ReplayRange(), include_quarantine=True)
    assert again.moved_from_quarantine == 0
    assert channel_rows(settings, "event_id, received_at, payload, journal_lsn") == stored


def test_the_range_limits_what_is_replayed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    receive(settings, [(b, False) for b in make_bodies(50, seed=4)])
    received = dt.datetime.fromtimestamp(NOW + 5, dt.UTC).date()
    replayer = Replayer(settings)
    assert replayer.count(ReplayRange(since=received, until=received)) == 50
    assert replayer.count(ReplayRange(since=received + dt.timedelta(days=1))) == 0
    assert replayer.count(ReplayRange(until=received - dt.timedelta(days=1))) == 0
    result = replayer.run(
        ReplayRange(since=received + dt.timedelta(days=1)), include_quarantine=True
    )
    assert result.deliveries == 0


def test_replayed_ids_are_known_to_the_committer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(30, seed=5)
    receive(settings, [(b, True) for b in bodies])
    relaxed = msgspec.structs.replace(settings, timestamp_tolerance_s=7200)
    Replayer(relaxed).run(ReplayRange(), include_quarantine=True)
    # Customer.io retries the same events: the committer must see them as duplicates.
    receive(settings, [(b, False) for b in bodies])
    assert len(channel_rows(settings, "event_id, received_at, payload, journal_lsn")) == 30


def test_replay_rebuilds_a_channel_table_that_was_lost(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = make_bodies(200, seed=6)
    receive(settings, [(b, False) for b in bodies + bodies[:30]])
    before = channel_rows(settings, "event_id, received_at, payload, journal_lsn")
    lost = settings.data_dir / "tables" / "email_events"
    assert any(row["table"] == "email_events" for row in before.values())
    # Its log was damaged, and the table moved aside, as the error told the operator to.
    lost.rename(tmp_path / "email_events.damaged")
    result = Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert result.added["email_events"] == sum(
        r["table"] == "email_events" for r in before.values()
    )
    assert channel_rows(settings, "event_id, received_at, payload, journal_lsn") == before
    again = Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert sum(again.added.values()) == 0
    assert channel_rows(settings, "event_id, received_at, payload, journal_lsn") == before
