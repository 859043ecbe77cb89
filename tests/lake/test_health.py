"""check_tables: a table whose log is gone or damaged is refused, never created over."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from ciolake.errors import StoreUnavailableError, TableUnreadableError
from ciolake.events.decode import decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.changes import TableChanges
from ciolake.lake.health import REBUILD, RESTORE, check_tables, existing_tables
from ciolake.lake.location import parse_location
from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES
from ciolake.lake.writer import TABLE_PROPERTIES, DeltaWriter
from ciolake.settings import Settings
from tests.support import (
    channel_rows,
    delete_log,
    email_batch,
    free_port,
    make_bodies,
    make_settings,
    receive,
    s3_env,
    s3_server,
    table_rows,
    truncate_last_commit,
)

Damage = Callable[[Path], None]


def landed(tmp_path: Path, count: int = 120) -> Settings:
    """A data directory whose tables the receiver (and its writer) filled."""
    settings = make_settings(tmp_path)
    receive(settings, [(body, i % 10 == 0) for i, body in enumerate(make_bodies(count, seed=7))])
    return settings


def tables_of(settings: Settings) -> Path:
    return settings.data_dir / "tables"


def empty_log(table: Path) -> None:
    delete_log(table)
    (table / "_delta_log").mkdir()


def corrupt_checkpoint(table: Path) -> None:
    DeltaTable(str(table)).create_checkpoint()
    (checkpoint,) = (table / "_delta_log").glob("*.checkpoint.parquet")
    checkpoint.write_bytes(checkpoint.read_bytes()[:64])


DAMAGES: dict[str, Damage] = {
    "log deleted": delete_log,
    "log emptied": empty_log,
    "last commit truncated": truncate_last_commit,
    "checkpoint unreadable": corrupt_checkpoint,
}


def test_a_location_without_tables_is_fine(tmp_path: Path) -> None:
    check_tables(str(tmp_path / "not-yet" / "tables"))
    (tmp_path / "tables").mkdir()
    check_tables(str(tmp_path / "tables"))
    assert existing_tables(str(tmp_path / "tables")) == []


def test_tables_the_writer_filled_pass(tmp_path: Path) -> None:
    settings = landed(tmp_path)
    check_tables(str(tables_of(settings)))
    assert existing_tables(str(tables_of(settings))) == list(ALL_SPECS)


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("table", ["email_events", "raw_events", "quarantine"])
def test_a_damaged_table_is_named_with_its_way_out(tmp_path: Path, damage: str, table: str) -> None:
    settings = landed(tmp_path)
    DAMAGES[damage](tables_of(settings) / table)
    with pytest.raises(TableUnreadableError) as raised:
        check_tables(str(tables_of(settings)))
    assert raised.value.table == table
    message = str(raised.value)
    assert "\n" not in message
    assert f"table {table} at {tables_of(settings) / table}" in message
    assert (REBUILD if table in CHANNEL_TABLES else RESTORE) in message


def test_a_torn_last_commit_is_found_where_a_checkpoint_would_have_followed(
    tmp_path: Path,
) -> None:
    # Every tenth version has a checkpoint; a torn commit never has one, and once the
    # checkpoint is gone the torn file is what readers meet (CI met the other case).
    table = tmp_path / "tables" / "email_events"
    for day in range(10):
        write_deltalake(
            str(table),
            email_batch(40, seed=day),
            mode="append",
            partition_by=["event_date"],
            configuration=TABLE_PROPERTIES,
        )
    assert list((table / "_delta_log").glob("00000000000000000009.checkpoint*.parquet"))
    truncate_last_commit(table)
    with pytest.raises(TableUnreadableError, match="table email_events at"):
        check_tables(str(tmp_path / "tables"))


def test_an_empty_table_directory_is_created_not_refused(tmp_path: Path) -> None:
    root = tmp_path / "tables"
    (root / "email_events" / "event_date=2026-01-01").mkdir(parents=True)
    writer = DeltaWriter(str(root))
    try:
        writer.ensure_tables()
    finally:
        writer.close()
    assert existing_tables(str(root)) == list(ALL_SPECS)
    assert table_rows(tmp_path, "email_events") == []


def test_ensure_tables_never_creates_a_table_over_orphaned_files(tmp_path: Path) -> None:
    settings = landed(tmp_path)
    before = channel_rows(settings)
    email = tables_of(settings) / "email_events"
    assert any(e["table"] == "email_events" for e in before.values())
    # The log is lost (moved aside here, so that it can come back).
    (email / "_delta_log").rename(tmp_path / "email-log")
    writer = DeltaWriter(str(tables_of(settings)))
    try:
        with pytest.raises(TableUnreadableError, match=r"email_events.*ciolake replay"):
            writer.ensure_tables()
    finally:
        writer.close()
    assert not (email / "_delta_log").exists()
    # No other table was created or touched either: every table is checked before any write.
    (tmp_path / "email-log").rename(email / "_delta_log")
    assert channel_rows(settings) == before


def test_a_file_where_a_table_should_be_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "tables"
    root.mkdir()
    (root / "sms_events").write_text("not a table")
    with pytest.raises(TableUnreadableError, match=r"sms_events.*is a file"):
        check_tables(str(root))


def test_an_unreachable_store_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreUnavailableError) as raised:
        check_tables("s3://bucket/tables")
    message = str(raised.value)
    assert "\n" not in message
    assert f"http://127.0.0.1:{port}" in message
    assert "Connection refused" in message


def test_a_store_refusing_the_credentials_is_out_of_reach_not_a_damaged_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials the store stops taking (vended ones that expired) fail the next look at an
    open table's log: the store is out of reach, which passes, not a damaged table that
    needs an operator."""
    with s3_server(iam=True) as s3:
        iam = boto3.client("iam", endpoint_url=s3.endpoint, **s3.boto_credentials)
        iam.create_user(UserName="writer")
        iam.put_user_policy(
            UserName="writer",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="writer")["AccessKey"]
        env = s3_env(s3.endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        uri = f"s3://{s3.bucket}/tables"
        writer = DeltaWriter(uri, names=("raw_events",))
        writer.ensure_tables()
        writer.committed_versions([0])
        writer.append_all({"raw_events": raw_rows(make_bodies(5, seed=4))}, versions={0: 5})
        writer.close()
        changes = TableChanges(parse_location(uri), "raw_events")
        assert changes.latest_version() == 1
        iam.delete_access_key(UserName="writer", AccessKeyId=key["AccessKeyId"])
        with pytest.raises(StoreUnavailableError, match="cannot reach the table store"):
            changes.added_rows(first=1, last=1)
        with pytest.raises(StoreUnavailableError, match="cannot reach the table store"):
            changes.latest_version()


def raw_rows(bodies: list[bytes]) -> pa.Table:
    return rows.raw_table(
        [
            (JournalRecord(lsn, 1_790_000_000_000_000, 1_790_000_000, 0, body), decode_event(body))
            for lsn, body in enumerate(bodies, start=1)
        ]
    )
