"""Tables on object storage that go away: the server keeps answering from its journal.

An S3-compatible server (moto, on loopback) behind a proxy that can stall, as a hung endpoint
does: it accepts connections and never answers. While it stalls, deliveries are answered 200
(journaled), `/ready` says why commits fail, a restart still serves, and once the store
answers again everything lands exactly once. A data directory without state refuses to start
without its tables, in one line, within the request timeouts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import (
    TEST_KEY,
    ServerProcess,
    StallingProxy,
    free_port,
    post_all,
    s3_env,
    s3_server,
    s3_table_rows,
    sample_bodies,
    start_server,
    wait_for,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TABLES_URI = "s3://lake/tables"
# Object store requests give up after this (the default is 15 s): each stalled phase below
# waits for it.
STORE_TIMEOUT = {"CIOLAKE_STORE_TIMEOUT_S": "4"}


def admin_ready(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.admin_base}/ready", timeout=5)


def test_the_server_answers_from_its_journal_while_the_store_is_away(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bodies = sample_bodies(90, seed=23, timestamp=int(time.time()))
    with s3_server() as s3:
        proxy = StallingProxy(s3.endpoint)
        env = {**s3_env(proxy.endpoint), **STORE_TIMEOUT}
        args = ("--tables-uri", TABLES_URI)
        server = start_server(data_dir, env=env, args=args)
        try:
            post_all(server.url, bodies[:30])
            wait_until_committed(server)

            proxy.stall()
            post_all(server.url, bodies[30:60])
            wait_for(
                lambda: "commits failing" in admin_ready(server).json()["reason"],
                120,
                "/ready to say why",
            )
            assert httpx.get(f"{server.base}/ready").json() == {"status": "unavailable"}
            stopped = time.monotonic()
            assert server.stop(timeout=60) == 0
            assert time.monotonic() - stopped < 45

            # A restart while the store still stalls: it serves from the journal at once.
            server = start_server(data_dir, env=env, args=args, ready_timeout=60)
            assert "tables out of reach at start" in server.log()
            post_all(server.url, bodies[60:])

            proxy.resume()
            wait_for(lambda: admin_ready(server).status_code == 200, 120, "ready again")
            wait_until_committed(server, timeout=120)
        finally:
            server.stop(timeout=60)
            proxy.close()
        raw = s3_table_rows(s3, f"{TABLES_URI}/raw_events", "body")
        assert sorted(row["body"].encode() for row in raw) == sorted(bodies)


def test_a_new_data_dir_with_its_store_away_refuses_in_one_line(tmp_path: Path) -> None:
    with s3_server() as s3:
        proxy = StallingProxy(s3.endpoint)
        proxy.stall()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
        env.update(s3_env(proxy.endpoint), CIOLAKE_SIGNING_KEYS=TEST_KEY, **STORE_TIMEOUT)
        command = [sys.executable, "-m", "ciolake", "serve", "--port", str(free_port())]
        command += ["--admin-port", str(free_port()), "--tables-uri", TABLES_URI]
        started = time.monotonic()
        result = subprocess.run(
            [*command, "--data-dir", str(tmp_path / "data")],
            env=env,
            capture_output=True,
            timeout=240,
            check=False,
        )
        seconds = time.monotonic() - started
        proxy.close()
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "needs its tables once to start" in errors[0]
    assert "Traceback" not in stderr
    assert seconds < 120
