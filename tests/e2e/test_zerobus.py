"""`ciolake serve --sink zerobus`: raw events to a Unity Catalog managed table through Zerobus.

The fake workspace issues the service principal's token; the fake Zerobus server speaks the
SDK's gRPC protocol on a loopback port and can hold its acknowledgements, refuse or break
streams, and restart. What is answered 200 stays in the journal until Zerobus acknowledges
it: a server killed while acknowledgements are held sends those deliveries again after its
restart (at least once), and a refused stream keeps them until Zerobus accepts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.fakes.databricks import FakeWorkspace, fake_workspace
from tests.fakes.zerobus import FakeZerobus, ZerobusServer
from tests.support import (
    ServerProcess,
    metric_value,
    post_all,
    running_server,
    sample_bodies,
    start_server,
    wait_for,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TABLE = "main.ciolake.raw_events_zerobus"


@pytest.fixture
def zerobus() -> Iterator[tuple[FakeWorkspace, ZerobusServer]]:
    with fake_workspace() as workspace:
        server = ZerobusServer(FakeZerobus(token=workspace.access_token, tables={TABLE}))
        try:
            yield workspace, server
        finally:
            server.stop()


def sink_env(workspace: FakeWorkspace, fake: FakeZerobus) -> dict[str, str]:
    return {
        "CIOLAKE_SINK": "zerobus",
        "CIOLAKE_ZEROBUS_ENDPOINT": fake.endpoint,
        "CIOLAKE_ZEROBUS_TABLE": TABLE,
        "CIOLAKE_ZEROBUS_STREAMS": "2",
        # A batch waits this long for its acknowledgement before it counts as failed.
        "CIOLAKE_STORE_TIMEOUT_S": "2",
        "DATABRICKS_HOST": workspace.url,
        "DATABRICKS_CLIENT_ID": workspace.client_id,
        "DATABRICKS_CLIENT_SECRET": workspace.client_secret,
    }


def backlog(server: ServerProcess) -> float:
    return metric_value(httpx.get(f"{server.admin_base}/metrics").text, "ciolake_backlog_events")


def landed(fake: FakeZerobus) -> list[bytes]:
    return [row["body"].encode() for row in fake.rows(TABLE)]


def ready_reason(server: ServerProcess) -> str:
    return str(httpx.get(f"{server.admin_base}/ready", timeout=5).json().get("reason", ""))


def test_deliveries_leave_the_journal_only_once_zerobus_holds_them(
    tmp_path: Path, zerobus: tuple[FakeWorkspace, ZerobusServer]
) -> None:
    workspace, server = zerobus
    fake = server.fake
    bodies = sample_bodies(60, seed=61, timestamp=int(time.time()))
    env = sink_env(workspace, fake)
    data_dir = tmp_path / "data"
    receiving = start_server(data_dir, env=env)
    try:
        post_all(receiving.url, bodies[:30])
        wait_until_committed(receiving)
        assert sorted(landed(fake)) == sorted(bodies[:30])
        first = fake.rows(TABLE)[0]
        assert set(first) >= {"received_at", "received_date", "event_id", "body", "journal_lsn"}
        assert abs(first["received_at"] / 1e6 - time.time()) < 600, "microseconds"
        assert first["received_date"] == int(first["received_at"] // 86_400_000_000), "days"

        fake.hold_acks.set()
        post_all(receiving.url, bodies[30:])
        wait_for(lambda: "Zerobus at" in ready_reason(receiving), 60, "/ready to say why")
        assert backlog(receiving) == 30, "kept in the journal while unacknowledged"
        receiving.kill()
    finally:
        if receiving.process.poll() is None:
            receiving.kill()
    assert sorted(landed(fake)) == sorted(bodies[:30]), "nothing held was acknowledged"

    fake.hold_acks.clear()
    with running_server(data_dir, env=env) as restarted:
        wait_until_committed(restarted, timeout=60)
    assert set(landed(fake)) == set(bodies), "every delivery answered 200, at least once"
    assert sorted(set(landed(fake))) == sorted(bodies)


def test_a_refused_or_broken_stream_keeps_deliveries_until_zerobus_takes_them(
    tmp_path: Path, zerobus: tuple[FakeWorkspace, ZerobusServer]
) -> None:
    workspace, server = zerobus
    fake = server.fake
    bodies = sample_bodies(120, seed=62, timestamp=int(time.time()))
    with running_server(tmp_path / "data", env=sink_env(workspace, fake)) as receiving:
        post_all(receiving.url, bodies[:30])
        wait_until_committed(receiving)

        # The service restarts: the streams break, and the next batch opens new ones.
        server.restart()
        post_all(receiving.url, bodies[30:60])
        wait_until_committed(receiving, timeout=60)

        # A stream breaks part way through a batch, and the next one opened is refused for
        # now (retriable): the SDK recovers, or ciolake opens new streams at the next try.
        fake.break_after = 5
        fake.fail_next = [grpc.StatusCode.UNAVAILABLE]
        post_all(receiving.url, bodies[60:90])
        wait_until_committed(receiving, timeout=60)
        assert fake.break_after is None, "the stream broke"
        assert not fake.fail_next, "a stream was refused"

        # Zerobus refuses new streams for good (a privilege revoked) until it is granted.
        fake.fail_next = [grpc.StatusCode.PERMISSION_DENIED] * 1000
        server.restart()
        post_all(receiving.url, bodies[90:])
        wait_for(
            lambda: "refused (non-retriable)" in ready_reason(receiving), 60, "/ready to say why"
        )
        assert backlog(receiving) == 30
        fake.fail_next = []
        wait_until_committed(receiving, timeout=60)
    assert set(landed(fake)) == set(bodies)
