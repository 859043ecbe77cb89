"""After a crash between the table commits and the dedup index, recovery writes nothing twice.

The crash the 10-minute soak found: the tables held a batch, the dedup watermark did not, and
the recovered deliveries were committed in smaller batches than the one that had landed. The
first of them ended below the tables' transaction version; committing it lowered that version,
and the next batch wrote the rest of the landed batch again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ciolake.commit.committer import Committer, CommitterConfig
from ciolake.commit.dedup import DedupIndex
from ciolake.journal.records import JournalRecord
from ciolake.lake.tables import CHANNEL_TABLES, RAW_EVENTS
from ciolake.lake.writer import DeltaWriter, app_id
from ciolake.metrics import Metrics
from tests.support import sample_bodies, table_rows

NOW = 1_790_000_000


def records(count: int, *, stream: int) -> list[JournalRecord]:
    bodies = sample_bodies(count, seed=11 + stream, timestamp=NOW)
    return [
        JournalRecord(i + 1, NOW * 1_000_000, NOW, 0, body, stream) for i, body in enumerate(bodies)
    ]


def run_committer(
    data_dir: Path, recovered: list[JournalRecord], *, batch_max_events: int, record_ids: bool
) -> dict[str, dict[int, int]]:
    """One life of the server's committer: recover, commit everything, stop."""
    writer = DeltaWriter(str(data_dir / "tables"))
    writer.ensure_tables()
    versions = writer.committed_versions([0, 1])
    dedup = DedupIndex(data_dir / "state" / "dedup.sqlite3", window_days=8, cache_mib=4)
    if not record_ids:
        # The crash: the tables take the batch, the dedup index never hears of it.
        dedup.record = lambda *_args, **_kwargs: None  # type: ignore[method-assign]
    config = CommitterConfig(
        flush_interval_s=60.0,
        batch_max_events=batch_max_events,
        batch_max_bytes=10**9,
        timestamp_tolerance_s=300,
    )
    committer = Committer(
        config,
        writer=writer,
        dedup=dedup,
        retire=lambda _stream, _lsn: None,
        metrics=Metrics(),
        clock=lambda: NOW + 1.0,
    )
    committer.start(recovered, versions)
    assert committer.stop(deadline_s=60)
    dedup.close()
    writer.close()
    return versions


@pytest.fixture(autouse=True)
def _restore_arrow_pool() -> object:
    previous = pa.default_memory_pool()
    yield None
    pa.set_memory_pool(previous)


def recover_after_crash(data_dir: Path, *, landed: int) -> list[JournalRecord]:
    """Stream 1's first ``landed`` deliveries reach the tables, but not the dedup index, before
    a crash; the next start recovers stream 0's 10 and all of stream 1's, in small batches."""
    first, second = records(10, stream=0), records(landed + 10, stream=1)
    run_committer(data_dir, second[:landed], batch_max_events=5_000, record_ids=False)
    recovered = first + second
    # Batches of 3: one of them holds stream 0's last delivery and stream 1's first two.
    run_committer(data_dir, recovered, batch_max_events=3, record_ids=True)
    return recovered


def test_recovered_deliveries_split_over_small_batches_are_written_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    recovered = recover_after_crash(data_dir, landed=40)

    raw = table_rows(data_dir, RAW_EVENTS, "journal_stream, journal_lsn")
    assert Counter((r["journal_stream"], r["journal_lsn"]) for r in raw) == Counter(
        (r.stream, r.lsn) for r in recovered
    )
    channel_ids = Counter(
        row["event_id"]
        for table in CHANNEL_TABLES
        for row in table_rows(data_dir, table, "event_id")
    )
    assert max(channel_ids.values()) == 1
    assert len(channel_ids) == len(recovered)
    raw_table = DeltaTable(str(data_dir / "tables" / RAW_EVENTS))
    assert raw_table.transaction_version(app_id(1)) == 50
    assert raw_table.transaction_version(app_id(0)) == 10


def test_a_table_transaction_version_never_goes_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    recover_after_crash(data_dir, landed=20)

    raw_table = DeltaTable(str(data_dir / "tables" / RAW_EVENTS))
    seen: list[int] = []
    for version in range(1, raw_table.version() + 1):
        log = data_dir / "tables" / RAW_EVENTS / "_delta_log" / f"{version:020d}.json"
        actions = [json.loads(line) for line in log.read_text().splitlines() if line]
        seen += [
            a["txn"]["version"]
            for a in actions
            if "txn" in a and a["txn"]["appId"] == "ciolake-journal-1"
        ]
    assert seen == sorted(seen)
    assert seen[-1] == 30
