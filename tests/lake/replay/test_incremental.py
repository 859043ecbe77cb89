"""Replay in chunks: lost rows come back once, changed rows are rewritten, the rest is untouched.

Tables are read back with DuckDB (delta-kernel), not with the delta-rs code replay writes with.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from ciolake.events.decode import Typed, decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.files import RemovedFile, write_files
from ciolake.lake.replay import reads as replay_reads
from ciolake.lake.replay import replayer as replay
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.lake.storage import LocalStorage
from ciolake.lake.tables import CHANNEL_SPECS, CHANNEL_TABLES
from ciolake.lake.transactions import CommitConflictError, commit_files
from ciolake.settings import Settings
from tests.support import (
    NOW,
    channel_rows,
    delta_reader,
    email_events,
    make_settings,
    receive_at,
    received_and_compacted,
    sample_bodies,
)

DAY = 86_400
COLUMNS = "event_id, received_at, journal_stream, journal_lsn, payload, subject, spec_violations"


def test_deleted_rows_come_back_exactly_once_and_nothing_else_changes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(400, seed=11, timestamp=NOW)
    receive_at(settings, bodies + bodies[:50], at=NOW + 5)
    before = channel_rows(settings)
    email_events(settings).delete("metric = 'opened' OR metric = 'delivered'")
    lost = len(before) - len(channel_rows(settings))
    assert lost > 10

    result = Replayer(settings, chunk_rows=97).run(ReplayRange(), include_quarantine=False)

    assert channel_rows(settings) == before
    assert sum(result.added.values()) == lost
    assert sum(result.rewritten.values()) == 0
    assert result.chunks == 5  # 450 deliveries in chunks of 97
    again = Replayer(settings, chunk_rows=97).run(ReplayRange(), include_quarantine=False)
    assert sum(again.added.values()) == sum(again.rewritten.values()) == 0
    assert channel_rows(settings) == before


@pytest.mark.parametrize(
    "updates",
    [
        {"subject": "'changed by hand'"},  # a typed column, as a decoder fix would change it
        {"spec_violations": "make_array('wrong_type:data.subject')"},  # a list column
        {"received_at": "received_at + INTERVAL '1 hour'"},  # a row from a later delivery
    ],
    ids=["text", "list", "later-delivery"],
)
def test_rows_that_differ_from_todays_derivation_are_rewritten(
    tmp_path: Path, updates: dict[str, str]
) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(300, seed=12, timestamp=NOW), at=NOW + 5)
    before = channel_rows(settings)
    email_events(settings).update(updates=updates, predicate="metric = 'clicked'")
    altered = {k for k, v in channel_rows(settings).items() if v != before[k]}
    assert altered, "the update changed nothing"

    result = Replayer(settings, chunk_rows=64).run(ReplayRange(), include_quarantine=False)

    assert channel_rows(settings) == before
    assert result.rewritten["email_events"] == sum(result.rewritten.values()) == len(altered)
    assert sum(result.added.values()) == 0
    again = Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert sum(again.rewritten.values()) == sum(again.added.values()) == 0


def test_compacted_tables_of_many_row_groups_replay_like_small_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Raw rows are read a few pages at a time: here, every file in several reads.
    monkeypatch.setattr(replay_reads, "RAW_BATCH_ROWS", 16)
    settings, raw_file = received_and_compacted(tmp_path, monkeypatch, seed=14)
    assert pq.ParquetFile(raw_file).metadata.num_row_groups == -(-300 // 16)
    before = channel_rows(settings)
    email_events(settings).update(
        updates={"subject": "'changed by hand'"}, predicate="metric = 'clicked'"
    )
    email_events(settings).delete("metric = 'opened'")
    emails = [v for v in before.values() if v["table"] == "email_events"]
    clicked = sum(v["metric"] == "clicked" for v in emails)
    opened = sum(v["metric"] == "opened" for v in emails)
    assert clicked
    assert opened

    result = Replayer(settings, chunk_rows=64).run(ReplayRange(), include_quarantine=False)

    assert channel_rows(settings) == before
    assert sum(result.rewritten.values()) == result.rewritten["email_events"] == clicked
    assert sum(result.added.values()) == result.added["email_events"] == opened
    assert result.deliveries == 300


def compacted_in_row_groups_of_16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, set[str]]:
    """``received_and_compacted``, with every file taken for big by replay (read a row group
    at a time); and the ids of replay's last chunk."""
    monkeypatch.setattr(replay_reads, "READ_GROUP_BYTES", 1)
    settings, raw_file = received_and_compacted(tmp_path, monkeypatch, seed=15)
    # Replay reads the one compacted raw file in its order: the ids of its last chunk of 64.
    in_order = pq.read_table(raw_file, columns=["event_id"]).column("event_id").to_pylist()
    return settings, set(in_order[256:]) - set(in_order[:256])


def decoder_flagging_clicks(monkeypatch: pytest.MonkeyPatch, among: set[str]) -> None:
    """Today's decoder adds a spec violation to the clicks ``among`` these event ids: a
    derivation that changed. (Only late events: until a chunk rewrites its rows, a compacted
    file keeps its row groups, and the chunks before read them by position.)"""

    def decode(body: bytes) -> Any:
        decoded = decode_event(body)
        if (
            isinstance(decoded, Typed)
            and decoded.event.metric == "clicked"
            and decoded.event.event_id in among
        ):
            decoded.spec_violations = [*decoded.spec_violations, "changed_by:test"]
        return decoded

    monkeypatch.setattr(replay, "decode_event", decode)


def late_clicks_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, dict[str, dict[str, Any]], set[str]]:
    """Compacted tables whose late clicks today's decoder derives otherwise; the settings, the
    rows before replay, and the ids of those clicks."""
    settings, late = compacted_in_row_groups_of_16(tmp_path, monkeypatch)
    before = channel_rows(settings)
    clicks = {k for k, v in before.items() if v["metric"] == "clicked" and k in late}
    decoder_flagging_clicks(monkeypatch, late)
    return settings, before, clicks


def test_a_changed_row_in_a_big_file_is_found_reading_only_its_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, before, clicks = late_clicks_changed(tmp_path, monkeypatch)
    assert len({before[k]["table"] for k in clicks}) > 1
    reads: list[tuple[int, int]] = []
    read_rows = replay_reads._file_rows

    def spy(files: Any, index: int, reader: Any, **kwargs: Any) -> pa.Table:
        groups = kwargs["row_groups"]
        total = reader.metadata.num_row_groups
        reads.append((total if groups is None else len(groups), total))
        return read_rows(files, index, reader, **kwargs)

    monkeypatch.setattr(replay_reads, "_file_rows", spy)

    result = Replayer(settings, chunk_rows=64).run(ReplayRange(), include_quarantine=False)

    after = channel_rows(settings)
    assert {k for k in after if after[k] != before[k]} == clicks
    assert all(after[k]["spec_violations"][-1] == "changed_by:test" for k in clicks)
    assert sum(result.rewritten.values()) == len(clicks)
    assert any(read < total for read, total in reads), "every read took the whole file"


def test_rows_not_where_the_keys_said_are_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, before, clicks = late_clicks_changed(tmp_path, monkeypatch)
    # Every position taken for the first row group: most rows are elsewhere.
    monkeypatch.setattr(replay_reads, "_row_group_of", lambda _ends, _position: 0)

    result = Replayer(settings, chunk_rows=64).run(ReplayRange(), include_quarantine=False)

    after = channel_rows(settings)
    assert {k for k in after if after[k] != before[k]} == clicks
    assert sum(result.rewritten.values()) == len(clicks)


def test_a_row_from_the_same_delivery_is_not_compared_on_its_payload(tmp_path: Path) -> None:
    # The payload is the delivery's body itself, identical for the same journal record, and
    # most of a row's bytes: replay does not read it back (a differing payload is left alone).
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(200, seed=13, timestamp=NOW), at=NOW + 5)
    email_events(settings).update(
        updates={"payload": "'{}'", "subject": "'changed by hand'"}, predicate="metric = 'opened'"
    )
    email_events(settings).update(updates={"payload": "'{}'"}, predicate="metric = 'clicked'")
    after_update = channel_rows(settings)
    emails = {k: v for k, v in after_update.items() if v["table"] == "email_events"}
    opened = {k for k, v in emails.items() if v["metric"] == "opened"}
    clicked = {k for k, v in emails.items() if v["metric"] == "clicked"}
    assert opened
    assert clicked

    result = Replayer(settings, chunk_rows=64).run(ReplayRange(), include_quarantine=False)

    now = channel_rows(settings)
    assert result.rewritten["email_events"] == len(opened)
    assert all(now[k]["payload"] != "{}" and now[k]["subject"] != "changed by hand" for k in opened)
    assert all(now[k]["payload"] == "{}" for k in clicked)


def test_a_chunk_reads_only_the_partitions_it_touches(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    # Day one's events, received that day; then day three's, received on day three.
    receive_at(settings, sample_bodies(120, seed=13, timestamp=NOW), at=NOW + 5)
    later = NOW + 2 * DAY
    receive_at(settings, sample_bodies(120, seed=14, timestamp=later), at=later + 5)
    before = channel_rows(settings)
    day_one = time.strftime("%Y-%m-%d", time.gmtime(NOW))
    # Make day one's channel files unreadable: any read of that partition now fails.
    broken = list((settings.data_dir / "tables").glob(f"*_events/event_date={day_one}/*.parquet"))
    assert broken
    for path in broken:
        path.write_bytes(b"not parquet")
    third = time.gmtime(later)

    result = Replayer(settings).run(ReplayRange(since=_date(third)), include_quarantine=False)

    assert result.deliveries == 120
    assert sum(result.unchanged.values()) == 120
    with pytest.raises((OSError, pa.ArrowException)):
        Replayer(settings).run(ReplayRange(), include_quarantine=False)
    day_three = {k for k, v in before.items() if v["event_date"] == _date(third)}
    assert len(day_three) == 120


def test_chunks_hold_at_most_chunk_rows(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    receive_at(settings, sample_bodies(500, seed=15, timestamp=NOW), at=NOW + 5)
    sizes: list[int] = []
    Replayer(settings, chunk_rows=120).run(
        ReplayRange(), include_quarantine=False, progress=sizes.append
    )
    assert sizes == [120, 120, 120, 120, 20]


def test_chunks_are_bounded_by_bytes_too(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(300, seed=16, timestamp=NOW)
    receive_at(settings, bodies, at=NOW + 5)
    sizes: list[int] = []
    budget = sum(len(b) for b in bodies) // 4
    Replayer(settings, chunk_bytes=budget).run(
        ReplayRange(), include_quarantine=False, progress=sizes.append
    )
    assert sum(sizes) == 300
    assert len(sizes) >= 4


def test_the_earliest_delivery_of_an_event_wins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bodies = sample_bodies(50, seed=17, timestamp=NOW)
    receive_at(settings, bodies, at=NOW + 5)
    receive_at(settings, bodies[:20], at=NOW + 60)  # retries: raw only
    before = channel_rows(settings)
    # Lose every channel row: replay must pick the first delivery of each event again.
    for table in CHANNEL_TABLES:
        DeltaTable(str(settings.data_dir / "tables" / table)).delete()
    Replayer(settings, chunk_rows=16).run(ReplayRange(), include_quarantine=False)
    assert channel_rows(settings) == before


def test_channel_table_of_builds_the_rows_channel_table_does() -> None:
    rng = random.Random(18)
    items: dict[str, list[rows.TypedItem]] = {}
    for lsn, body in enumerate(sample_bodies(300, seed=18, timestamp=NOW), start=1):
        typed = decode_event(body)
        assert isinstance(typed, Typed)
        at = (NOW + rng.randrange(100)) * 1_000_000 + rng.randrange(1_000_000)
        record = JournalRecord(lsn, at, NOW, 0, body, 3)
        items.setdefault(typed.table, []).append((record, typed))
    assert set(items) == set(CHANNEL_TABLES)
    for table, table_items in items.items():
        records = [r for r, _t in table_items]
        built = rows.channel_table_of(
            table,
            [t for _r, t in table_items],
            received_at=pa.array([r.received_at_us for r in records], pa.int64()),
            journal_stream=pa.array([r.stream for r in records], pa.int64()),
            journal_lsn=pa.array([r.lsn for r in records], pa.int64()),
            payload=pa.array([r.body.decode() for r in records], pa.string()),
        )
        assert built.equals(rows.channel_table(table, table_items))


def test_a_rewrite_conflicts_with_a_compaction_of_the_same_files(tmp_path: Path) -> None:
    root = tmp_path / "email_events"
    spec = CHANNEL_SPECS["email_events"]
    DeltaTable.create(str(root), spec.schema, partition_by=["event_date"])
    items = [
        (JournalRecord(i, NOW * 1_000_000, NOW, 0, b, 0), decode_event(b))
        for i, b in enumerate(sample_bodies(400, seed=19, timestamp=NOW), start=1)
    ]
    email = [(r, t) for r, t in items if isinstance(t, Typed) and t.table == "email_events"]
    storage = LocalStorage(root)
    table = DeltaTable(str(root))
    for part in (email[:10], email[10:20]):
        data = write_files(
            storage, rows.channel_table("email_events", part), partition_by="event_date"
        )
        commit_files(table, storage=storage, spec=spec, adds=data)
    read_version = table.version()
    first = pa.table(table.get_add_actions(flatten=True)).column("path")[0].as_py()
    DeltaTable(str(root)).optimize.compact()  # removes both files, adds one
    removed = RemovedFile(first, 1, {"event_date": time.strftime("%Y-%m-%d", time.gmtime(NOW))})
    with pytest.raises(CommitConflictError):
        commit_files(table, storage=storage, spec=spec, adds=[], removes=[removed])
    assert DeltaTable(str(root)).version() == read_version + 1
    count = delta_reader().execute(f"SELECT count(*) FROM delta_scan('{root}')").fetchone()
    assert count == (20,)


def _date(moment: time.struct_time) -> dt.date:
    return dt.date(moment.tm_year, moment.tm_mon, moment.tm_mday)
