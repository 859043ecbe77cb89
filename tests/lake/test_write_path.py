"""One Delta write path: pyarrow writes the files, delta-rs commits them, wherever the table is.

The committer's appends and replay's rewrites go through the same ``commit_files`` on a local
disk and on an object store (moto's S3 server on loopback here), and a table another engine
upgraded with a writer feature delta-rs cannot honour is refused, naming the table and the
property, with nothing lost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from deltalake import DeltaTable

from ciolake.errors import TableWriteError
from ciolake.lake.location import parse_location
from ciolake.lake.replay.replayer import Replayer, ReplayRange
from ciolake.lake.tables import RAW_EVENTS
from ciolake.lake.writer import DeltaWriter, app_id, ensure_tables
from ciolake.settings import Settings
from tests.support import (
    NOW,
    S3Server,
    email_batch,
    make_settings,
    post_all,
    receive_at,
    running_server,
    s3_client,
    s3_table_rows,
    sample_bodies,
    table_rows,
    wait_for,
    wait_until_committed,
)

# What Spark writes when a table property turns a writer feature on (ALTER TABLE ... SET
# TBLPROPERTIES): a protocol naming the feature, and the property in the metadata.
FEATURES = {
    "inCommitTimestamp": "delta.enableInCommitTimestamps",
    "rowTracking": "delta.enableRowTracking",
}


def set_protocol(table: Path, *, writer_features: list[str], configuration: dict[str, str]) -> None:
    """Commit a protocol and metadata change to ``table`` as another engine would."""
    version = DeltaTable(str(table)).version()
    first = (table / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
    metadata = next(json.loads(line) for line in first if '"metaData"' in line)
    metadata["metaData"]["configuration"] = configuration
    protocol: dict[str, Any] = (
        {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": [], "writerFeatures": []}
        if writer_features
        else {"minReaderVersion": 1, "minWriterVersion": 2}
    )
    if writer_features:
        protocol["writerFeatures"] = writer_features
    info = {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "SET TBLPROPERTIES"}}
    if "inCommitTimestamp" in writer_features:
        info["commitInfo"]["inCommitTimestamp"] = info["commitInfo"]["timestamp"]
    lines = [info, {"protocol": protocol}, metadata]
    commit = table / "_delta_log" / f"{version + 1:020d}.json"
    commit.write_text("".join(json.dumps(line) + "\n" for line in lines))


def upgrade(table: Path, feature: str) -> None:
    set_protocol(table, writer_features=[feature], configuration={FEATURES[feature]: "true"})


def downgrade(table: Path) -> None:
    """The table after ``ALTER TABLE ... DROP FEATURE`` on the engine that upgraded it."""
    set_protocol(table, writer_features=[], configuration={})


def parquet_files(table: Path) -> set[str]:
    return {
        str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts
    }


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_a_table_asking_for_an_unsupported_writer_feature_is_refused_by_name(
    tmp_path: Path, feature: str
) -> None:
    tables = tmp_path / "tables"
    ensure_tables(parse_location(str(tables)))
    upgrade(tables / "email_events", feature)
    writer = DeltaWriter(str(tables))
    writer.ensure_tables()
    try:
        with pytest.raises(TableWriteError) as raised:
            writer.append_all({"email_events": email_batch(40, seed=3)}, versions={0: 7})
    finally:
        writer.close()
    text = str(raised.value)
    assert f"table email_events at {tables}/email_events" in text
    assert f"table feature(s) {feature}" in text
    assert f"turn off {FEATURES[feature]}" in text
    assert f"DROP FEATURE {feature}" in text
    assert parquet_files(tables / "email_events") == set(), "no file of a failed commit is left"
    assert DeltaTable(str(tables / "email_events")).transaction_version(app_id(0)) is None


def admin_reason(server: Any) -> str:
    answer = httpx.get(f"{server.admin_base}/ready", timeout=5).json()
    return str(answer.get("reason", ""))


def test_an_upgraded_table_holds_events_in_the_journal_until_the_feature_is_dropped(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    tables = data_dir / "tables"
    ensure_tables(parse_location(str(tables)))
    upgrade(tables / "email_events", "inCommitTimestamp")
    bodies = sample_bodies(60, seed=8, timestamp=int(time.time()))
    emails = {json.loads(b)["event_id"] for b in bodies if json.loads(b)["object_type"] == "email"}
    assert emails
    with running_server(data_dir) as server:
        post_all(server.url, bodies)
        wait_for(lambda: "delta.enableInCommitTimestamps" in admin_reason(server), 30, "refusal")
        reason = admin_reason(server)
        assert "email_events" in reason
        assert "DROP FEATURE inCommitTimestamp" in reason
        assert table_rows(data_dir, "email_events", "event_id") == []
        downgrade(tables / "email_events")
        wait_for(lambda: httpx.get(f"{server.admin_base}/ready").status_code == 200, 60, "ready")
        wait_until_committed(server)
    stored = [r["event_id"] for r in table_rows(data_dir, "email_events", "event_id")]
    assert sorted(stored) == sorted(emails), "every email event once, after the downgrade"
    raw = [r["body"].encode() for r in table_rows(data_dir, RAW_EVENTS, "body")]
    assert sorted(raw) == sorted(bodies)


# --- the same path on an object store ------------------------------------------------------


def s3_channel_rows(server: S3Server, settings: Settings) -> dict[str, dict[str, Any]]:
    rows = s3_table_rows(
        server, f"{settings.tables_location}/email_events", "event_id, subject, received_at"
    )
    found = {r["event_id"]: r for r in rows}
    assert len(found) == len(rows), "an event is stored twice"
    return found


def test_replay_on_object_storage_adds_and_rewrites_through_the_same_commit(
    tmp_path: Path, s3: S3Server
) -> None:
    settings = make_settings(tmp_path, tables_uri=f"s3://{s3.bucket}/tables")
    receive_at(settings, sample_bodies(200, seed=21, timestamp=NOW), at=NOW + 5)
    before = s3_channel_rows(s3, settings)
    assert before
    email = DeltaTable(f"{settings.tables_location}/email_events")
    email.update(updates={"subject": "'changed by hand'"}, predicate="metric = 'clicked'")
    email.delete("metric = 'opened'")
    assert s3_channel_rows(s3, settings) != before

    result = Replayer(settings, chunk_rows=64).run(ReplayRange(), include_quarantine=False)

    assert s3_channel_rows(s3, settings) == before
    assert result.rewritten["email_events"] > 0
    assert result.added["email_events"] > 0
    history = DeltaTable(f"{settings.tables_location}/email_events").history(1)
    assert history[0]["operation"] == "WRITE", "replay committed through create_write_transaction"
    again = Replayer(settings).run(ReplayRange(), include_quarantine=False)
    assert sum(again.rewritten.values()) == sum(again.added.values()) == 0


def test_a_commit_on_an_object_store_never_overwrites_another_writer_s_version(
    s3: S3Server,
) -> None:
    # delta-rs writes each log entry with a conditional PUT (If-None-Match: *): when another
    # writer took the version first, the PUT is refused and the commit retried as the next.
    uri = f"s3://{s3.bucket}/tables"
    writer = DeltaWriter(uri)
    writer.ensure_tables()
    writer.committed_versions([0])
    writer.append_all({"email_events": email_batch(40, seed=1)}, versions={0: 1})
    taken = DeltaTable(f"{uri}/email_events").version() + 1
    foreign = {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "OTHER"}}
    key = f"tables/email_events/_delta_log/{taken:020d}.json"
    s3_client(s3).put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(foreign).encode())

    writer.append_all({"email_events": email_batch(40, seed=2)}, versions={0: 2})
    writer.close()

    body = s3_client(s3).get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert json.loads(body) == foreign, "the other writer's commit was overwritten"
    table = DeltaTable(f"{uri}/email_events")
    assert table.version() == taken + 1
    assert table.transaction_version(app_id(0)) == 2
    stored = s3_table_rows(s3, f"{uri}/email_events", "event_id")
    expected = [
        i for seed in (1, 2) for i in email_batch(40, seed=seed).column("event_id").to_pylist()
    ]
    assert sorted(r["event_id"] for r in stored) == sorted(expected)
