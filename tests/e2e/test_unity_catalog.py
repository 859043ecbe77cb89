"""`ciolake serve --tables-uri uc://catalog.schema`: tables in Unity Catalog, written with the
credentials it vends.

The fake workspace (OAuth, Unity Catalog's tables and credential vending) vends keys of the S3
test server's IAM (moto checking every request's credentials and policy): each table's keys
reach only its own prefix and are deleted once expired. The server is given a bogus key of its
own, so every row that lands was written with vended keys, and rows posted after the first
keys were deleted prove the receiver and the deriver (``ciolake derive``) renewed them;
`ciolake tables` then reads them the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES
from tests.fakes.databricks import FakeWorkspace, catalog_table, fake_workspace
from tests.fakes.iam_vending import IamVending
from tests.support import (
    S3Server,
    post_all,
    running_server,
    s3_env,
    s3_keys,
    s3_server,
    s3_table_rows,
    sample_bodies,
    wait_for,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SCHEMA = "main.ciolake"
TABLES_URI = f"uc://{SCHEMA}"
PREFIX = "uc"
# Short enough that a run of a few seconds outlives several keys of each table, long enough
# that a quarter of it (the margin of a renewal) outlasts the delays of a busy machine.
LIFETIME_S = 6.0


@pytest.fixture
def catalog() -> Iterator[tuple[S3Server, FakeWorkspace, IamVending]]:
    with s3_server(iam=True) as s3, fake_workspace() as workspace:
        vending = IamVending(s3, lifetime_s=LIFETIME_S)
        for name in ALL_SPECS:
            table = catalog_table(f"{SCHEMA}.{name}", f"s3://{s3.bucket}/{PREFIX}/{name}")
            workspace.catalog_tables[table["full_name"]] = table
            vending.add_table(table["table_id"], f"{PREFIX}/{name}")
        workspace.vend = vending
        try:
            yield s3, workspace, vending
        finally:
            vending.close()


def server_env(s3: S3Server, workspace: FakeWorkspace) -> dict[str, str]:
    return {
        # A key the store does not know: only vended credentials can write.
        **s3_env(s3.endpoint, "AKIANOTVENDED", "not-vended"),
        "DATABRICKS_HOST": workspace.url,
        "DATABRICKS_CLIENT_ID": workspace.client_id,
        "DATABRICKS_CLIENT_SECRET": workspace.client_secret,
    }


def table_id(workspace: FakeWorkspace, name: str) -> str:
    return str(workspace.catalog_tables[f"{SCHEMA}.{name}"]["table_id"])


def test_a_receiver_and_a_deriver_write_through_vended_credentials_and_renew_them(
    tmp_path: Path, catalog: tuple[S3Server, FakeWorkspace, IamVending]
) -> None:
    s3, workspace, vending = catalog
    bodies = sample_bodies(120, seed=41, timestamp=int(time.time()))
    raw_id = table_id(workspace, "raw_events")
    env = server_env(s3, workspace)
    receiver = ("--tables-uri", TABLES_URI, "--role", "receiver", "--receiver-id", "1")
    deriver = None
    try:
        with running_server(tmp_path / "data", env=env, args=receiver) as server:
            post_all(server.url, bodies[:40])
            wait_until_committed(server, timeout=60)
            # The deriver starts once raw_events exists.
            deriver = start_deriver(tmp_path / "deriver", env)
            first = next(k for k in vending.issued if k.table_id == raw_id)
            # Past the first key's expiry: the store has deleted it.
            wait_for(lambda: first.key_id in vending.revoked, 30, "the first key to expire")
            post_all(server.url, bodies[40:80])
            wait_until_committed(server, timeout=60)
            time.sleep(LIFETIME_S)
            post_all(server.url, bodies[80:])
            wait_until_committed(server, timeout=60)
            assert "commit failed" not in server.log()
        base = f"s3://{s3.bucket}/{PREFIX}"

        def derived() -> int:
            tables = (*CHANNEL_TABLES, "quarantine")
            if not all(s3_keys(s3, f"{PREFIX}/{name}/_delta_log/") for name in tables):
                return -1  # the deriver has not created them all yet
            return sum(len(s3_table_rows(s3, f"{base}/{name}", "event_id")) for name in tables)

        wait_for(lambda: derived() == len(bodies), 60, "the deriver to derive every event")
    finally:
        if deriver is not None:
            deriver.send_signal(signal.SIGTERM)
            assert deriver.wait(timeout=60) == 0
    derive_log = (tmp_path / "derive.log").read_text()
    assert "failed" not in derive_log, derive_log

    raw = s3_table_rows(s3, f"{base}/raw_events", "body")
    assert sorted(row["body"].encode() for row in raw) == sorted(bodies)
    assert derived() == len(bodies), "and not one more"

    raw_keys = [k for k in vending.issued if k.table_id == raw_id]
    assert len(raw_keys) >= 3, "renewed at least twice over the run"
    email_id = table_id(workspace, "email_events")
    assert sum(k.table_id == email_id for k in vending.issued) >= 2, "by the deriver too"
    expired = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=first.key_id,
        aws_secret_access_key=first.secret,
        region_name="us-east-1",
    )
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        expired.put_object(Bucket=s3.bucket, Key=f"{PREFIX}/raw_events/x", Body=b"x")
    # A key of raw_events, valid (vended now), reaches raw_events' prefix only.
    fresh = vending(raw_id)["aws_temp_credentials"]
    scoped = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=fresh["access_key_id"],
        aws_secret_access_key=fresh["secret_access_key"],
        region_name="us-east-1",
    )
    scoped.put_object(Bucket=s3.bucket, Key=f"{PREFIX}/raw_events/x", Body=b"x")
    with pytest.raises(ClientError, match="AccessDenied"):
        scoped.put_object(Bucket=s3.bucket, Key=f"{PREFIX}/email_events/x", Body=b"x")

    # Another command of another process resolves them as well, and reads what landed.
    command_env = {**_plain_env(), **env}
    listed = _ciolake(["tables", "--tables-uri", TABLES_URI, "--json"], command_env)
    assert listed.returncode == 0, listed.stderr
    summaries = {s["name"]: s for s in json.loads(listed.stdout)}
    assert summaries["raw_events"]["uri"] == f"{base}/raw_events"
    assert summaries["raw_events"]["rows"] == len(bodies)
    assert sum(summaries[name]["rows"] for name in (*CHANNEL_TABLES, "quarantine")) == len(bodies)


def start_deriver(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True)
    with (data_dir.parent / "derive.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ciolake", "derive", "--data-dir", str(data_dir)],
            env={
                **_plain_env(),
                **env,
                "CIOLAKE_TABLES_URI": TABLES_URI,
                "CIOLAKE_FLUSH_INTERVAL_S": "0.2",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CIOLAKE_", "AWS_"))}


def _ciolake(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ciolake", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
