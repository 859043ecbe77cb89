"""Replay plans each chunk without the commit lock: what is committed meanwhile is accounted for.

Tables are read back with DuckDB (delta-kernel), not with the delta-rs code replay writes with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ciolake.events.decode import Typed, decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.files import write_files
from ciolake.lake.replay import replayer as replay
from ciolake.lake.replay.keys import KeyCache
from ciolake.lake.replay.plan import Plan, plan_chunk
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.lake.storage import LocalStorage
from ciolake.lake.table_files import TableFiles
from ciolake.lake.tables import CHANNEL_SPECS
from ciolake.lake.transactions import commit_files
from tests.support import (
    NOW,
    channel_rows,
    email_events,
    make_settings,
    receive_at,
    sample_bodies,
)


def email_bodies(count: int, seed: int) -> list[bytes]:
    """``count`` sample bodies that type into ``email_events``."""
    found: list[bytes] = []
    for body in sample_bodies(count * 4, seed=seed, timestamp=NOW):
        typed = decode_event(body)
        if isinstance(typed, Typed) and typed.table == "email_events" and len(found) < count:
            found.append(body)
    return found


def commit_email_row(table: Path, body: bytes, *, received_s: int, lsn: int) -> None:
    """Commit ``body``'s email row as another writer would (its own delivery and file)."""
    typed = decode_event(body)
    assert isinstance(typed, Typed)
    record = JournalRecord(lsn, received_s * 1_000_000, received_s, 0, body, 9)
    storage = LocalStorage(table)
    data = write_files(
        storage, rows.channel_table("email_events", [(record, typed)]), partition_by="event_date"
    )
    spec = CHANNEL_SPECS["email_events"]
    commit_files(DeltaTable(str(table)), storage=storage, spec=spec, adds=data)


def after_first_email_plan(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run ``action`` once, right after replay first plans ``email_events``."""
    done: list[bool] = []

    def plan_then_act(files: TableFiles, derived: pa.Table, cache: KeyCache) -> Plan:
        plan = plan_chunk(files, derived, cache)
        if files.name == "email_events" and not done:
            done.append(True)
            action()
        return plan

    monkeypatch.setattr(replay, "plan_chunk", plan_then_act)


def test_a_row_of_the_chunk_committed_after_planning_is_not_written_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(300, seed=31, timestamp=NOW)
    receive_at(settings, bodies, at=NOW + 5)
    before = channel_rows(settings)
    email_events(settings).delete("metric = 'opened'")
    lost = sorted(set(before) - set(channel_rows(settings)))
    assert lost
    body = next(b for b in bodies if json.loads(b)["event_id"] == lost[0])
    table = settings.data_dir / "tables" / "email_events"
    # Another writer stores a later delivery of a lost event while replay plans to add it.
    after_first_email_plan(
        monkeypatch, lambda: commit_email_row(table, body, received_s=NOW + 60, lsn=10**6)
    )

    result = Replayer(settings).run(ReplayRange(), include_quarantine=False)

    assert channel_rows(settings) == before  # once, and from its first delivery
    assert result.planned_again == 1
    assert result.added["email_events"] == len(lost) - 1
    assert result.rewritten["email_events"] == 1


def test_a_commit_of_other_events_after_planning_keeps_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(300, seed=32, timestamp=NOW), at=NOW + 5)
    email_events(settings).delete("metric = 'opened'")
    before = channel_rows(settings)
    (other,) = email_bodies(1, seed=33)
    table = settings.data_dir / "tables" / "email_events"
    after_first_email_plan(
        monkeypatch, lambda: commit_email_row(table, other, received_s=NOW + 60, lsn=10**6)
    )

    result = Replayer(settings).run(ReplayRange(), include_quarantine=False)

    assert result.planned_again == 0
    after = channel_rows(settings)
    assert json.loads(other)["event_id"] in after
    assert len(after) == len(before) + result.added["email_events"] + 1
    assert result.added["email_events"] > 0
