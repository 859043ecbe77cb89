"""Compaction, checkpoints and vacuum, alone and while the committer writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake import maintenance, small_files
from ciolake.lake.maintenance import compact_all, compact_table
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.receive.verify import Verdict
from ciolake.runtime.embedded import Receiver
from ciolake.settings import Settings
from tests.support import s3_env, s3_keys, s3_server, s3_table_rows, table_rows

DAY = 86_400
START = 1_790_000_000 - 1_790_000_000 % DAY


@pytest.fixture(autouse=True)
def unmerged_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each commit's files stay as written: compaction is tested on the small files that the
    committer would otherwise merge as it goes (``lake/small_files.py``)."""
    monkeypatch.setattr(small_files, "MERGED_TIERS", 0)


def bodies_over_days(count: int, days: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    keys = schema_keys()
    return [
        json.dumps(
            sample_event(
                schema_by_name(keys[i % len(keys)][0]),
                rng=rng,
                timestamp=START + (i % days) * DAY + 60,
            )
        ).encode()
        for i in range(count)
    ]


def receive_in_small_batches(settings: Settings, bodies: list[bytes], batch: int) -> None:
    receiver = Receiver(settings, clock=lambda: START + 3 * DAY)
    receiver.open()

    async def go() -> None:
        verdict = Verdict(timestamp=START, stale=False)
        for start in range(0, len(bodies), batch):
            await asyncio.gather(
                *(receiver.accept(b, verdict) for b in bodies[start : start + batch])
            )
            while receiver.backlog()[0]:
                await asyncio.sleep(0.005)
        await receiver.close()

    asyncio.run(go())


def snapshot(data_dir: Path) -> dict[str, list[tuple[str, str]]]:
    return {
        table: sorted(
            (r["event_id"], r["payload"]) for r in table_rows(data_dir, table, "event_id, payload")
        )
        for table in CHANNEL_TABLES
    }


def files_per_partition(uri: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in DeltaTable(uri).file_uris():
        partition = next(p for p in Path(path).parts if p.startswith("event_date="))
        counts[partition] = counts.get(partition, 0) + 1
    return counts


def test_compaction_leaves_one_file_per_partition_and_the_same_rows(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=40
    )
    receive_in_small_batches(settings, bodies_over_days(480, days=3, seed=1), batch=40)
    email = str(settings.data_dir / "tables" / "email_events")
    assert max(files_per_partition(email).values()) >= 10
    before = snapshot(settings.data_dir)
    results = compact_all(settings.tables_location, tables=None, before=None, retention_hours=0)
    assert {r.table for r in results} == {"raw_events", "quarantine", *CHANNEL_TABLES}
    assert set(files_per_partition(email).values()) == {1}
    assert snapshot(settings.data_dir) == before
    assert list(
        (settings.data_dir / "tables" / "email_events" / "_delta_log").glob("*.checkpoint.parquet")
    )
    email_result = next(r for r in results if r.table == "email_events")
    assert email_result.vacuumed >= email_result.files_before - email_result.files_after
    on_disk = list((settings.data_dir / "tables" / "email_events").glob("event_date=*/*.parquet"))
    assert len(on_disk) == len(DeltaTable(email).file_uris())


def test_compacted_files_have_bounded_compressed_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    # A reader decodes a row group whole: one per partition would hold a whole day in memory.
    monkeypatch.setattr(maintenance, "ROW_GROUP_ROWS", 16)
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=40
    )
    receive_in_small_batches(settings, bodies_over_days(240, days=1, seed=3), batch=40)
    email = str(settings.data_dir / "tables" / "email_events")
    before = snapshot(settings.data_dir)
    compact_table(settings.tables_location, "email_events", before=None, retention_hours=0)
    (path,) = DeltaTable(email).file_uris()
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sum(sizes) > 16
    assert max(sizes) == 16
    codecs = {
        metadata.row_group(i).column(j).compression
        for i in range(metadata.num_row_groups)
        for j in range(metadata.num_columns)
    }
    assert codecs == {"ZSTD"}
    assert snapshot(settings.data_dir) == before


def _age_log(log: Path, days: int) -> None:
    then = time.time() - days * DAY
    for entry in log.iterdir():
        os.utime(entry, (then, then))


def test_compaction_deletes_commit_files_past_the_log_retention_and_keeps_the_rows(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=20
    )
    receive_in_small_batches(settings, bodies_over_days(200, days=2, seed=3), batch=20)
    log = settings.data_dir / "tables" / "email_events" / "_delta_log"
    compact_table(settings.tables_location, "email_events", before=None, retention_hours=168)
    checkpoint = json.loads((log / "_last_checkpoint").read_text())["version"]
    expired = {log / f"{v:020d}.json" for v in range(checkpoint)}
    assert len(expired) >= 3
    _age_log(log, days=31)  # past the default delta.logRetentionDuration of 30 days
    receive_in_small_batches(settings, bodies_over_days(60, days=2, seed=4), batch=20)
    before = snapshot(settings.data_dir)

    compact_table(settings.tables_location, "email_events", before=None, retention_hours=168)

    remaining = set(log.glob("*.json"))
    # Before the checkpoint that is itself past the retention, every commit file is deleted;
    # the checkpoint's own commit and those after it stay.
    assert remaining.isdisjoint(expired)
    assert log / f"{checkpoint:020d}.json" in remaining
    assert snapshot(settings.data_dir) == before


def test_compaction_keeps_log_files_younger_than_the_log_retention(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=20
    )
    receive_in_small_batches(settings, bodies_over_days(100, days=2, seed=5), batch=20)
    log = settings.data_dir / "tables" / "email_events" / "_delta_log"
    compact_table(settings.tables_location, "email_events", before=None, retention_hours=168)
    _age_log(log, days=29)
    commits = set(log.glob("*.json"))

    compact_table(settings.tables_location, "email_events", before=None, retention_hours=168)

    assert commits <= set(log.glob("*.json"))


def test_before_limits_compaction_to_older_partitions(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=30
    )
    receive_in_small_batches(settings, bodies_over_days(300, days=3, seed=2), batch=30)
    email = str(settings.data_dir / "tables" / "email_events")
    last_day = dt.datetime.fromtimestamp(START + 2 * DAY, dt.UTC).date()
    untouched = files_per_partition(email)[f"event_date={last_day.isoformat()}"]
    assert untouched > 1
    compact_table(settings.tables_location, "email_events", before=last_day, retention_hours=168)
    after = files_per_partition(email)
    assert after[f"event_date={last_day.isoformat()}"] == untouched
    assert all(n == 1 for p, n in after.items() if p != f"event_date={last_day.isoformat()}")


def test_compaction_while_the_committer_appends_loses_and_doubles_nothing(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=25
    )
    bodies = bodies_over_days(600, days=2, seed=3)
    receive_in_small_batches(settings, bodies[:200], batch=25)
    compactions: list[int] = []

    def compact_repeatedly() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(compactions) < 4:
            compact_all(
                settings.tables_location,
                tables=["email_events", "raw_events"],
                before=None,
                retention_hours=0,
            )
            compactions.append(1)

    worker = threading.Thread(target=compact_repeatedly)
    worker.start()
    receive_in_small_batches(settings, bodies[200:], batch=25)
    worker.join()
    assert compactions
    stored = [i for rows in snapshot(settings.data_dir).values() for i, _p in rows]
    assert sorted(stored) == sorted(json.loads(b)["event_id"] for b in bodies)
    assert len(table_rows(settings.data_dir, "raw_events", "event_id")) == 600


def test_compact_command(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        data_dir=tmp_path / "data", signing_keys=("k",), flush_interval_s=0.01, batch_max_events=50
    )
    receive_in_small_batches(settings, bodies_over_days(200, days=2, seed=4), batch=50)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ciolake",
            "compact",
            "--data-dir",
            str(settings.data_dir),
            "--table",
            "email_events",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "email_events" in done.stderr
    assert set(
        files_per_partition(str(settings.data_dir / "tables" / "email_events")).values()
    ) == {1}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "ciolake",
            "compact",
            "--data-dir",
            str(settings.data_dir),
            "--table",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown table" in bad.stderr


def test_compaction_and_vacuum_on_an_object_store(
    tmp_path: Path, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_server() as s3:
        for name, value in s3_env(s3.endpoint).items():
            monkeypatch.setenv(name, value)
        uri = f"s3://{s3.bucket}/tables"
        settings = make_settings(
            data_dir=tmp_path / "data",
            signing_keys=("k",),
            flush_interval_s=0.01,
            batch_max_events=40,
            tables_uri=uri,
        )
        receive_in_small_batches(settings, bodies_over_days(240, days=2, seed=7), batch=40)
        email = f"{uri}/email_events"
        stored = sorted(r["event_id"] for r in s3_table_rows(s3, email, "event_id"))
        files_before = len(DeltaTable(email).file_uris())
        assert max(files_per_partition(email).values()) >= 3

        result = compact_table(uri, "email_events", before=None, retention_hours=0)

        assert set(files_per_partition(email).values()) == {1}
        assert sorted(r["event_id"] for r in s3_table_rows(s3, email, "event_id")) == stored
        assert result.files_before == files_before
        assert result.vacuumed == result.files_removed == files_before
        data_files = [k for k in s3_keys(s3, "tables/email_events/") if "_delta_log" not in k]
        assert len(data_files) == len(DeltaTable(email).file_uris()), "vacuum left old files"
