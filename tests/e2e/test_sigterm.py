"""SIGTERM under load: every event answered 200 is committed before the process exits 0."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import body_of, signed_headers, start_server, table_rows

pytestmark = pytest.mark.e2e


def test_sigterm_under_load_commits_every_answered_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(9)
    keys = schema_keys()
    now = int(time.time())
    events = [
        sample_event(schema_by_name(keys[i % len(keys)][0]), rng=rng, timestamp=now)
        for i in range(4000)
    ]
    # A long flush interval: at SIGTERM, most answered events are still only in the journal.
    server = start_server(
        data_dir, env={"CIOLAKE_FLUSH_INTERVAL_S": "30", "CIOLAKE_BATCH_MAX_EVENTS": "100000"}
    )
    answered: set[str] = set()
    lock = threading.Lock()

    def client(part: list[dict[str, object]]) -> None:
        with httpx.Client(timeout=5) as http:
            for event in part:
                body = body_of(event)
                try:
                    status = http.post(
                        server.url, content=body, headers=signed_headers(body)
                    ).status_code
                except httpx.HTTPError:
                    continue
                if status == 200:
                    with lock:
                        answered.add(str(event["event_id"]))

    threads = [threading.Thread(target=client, args=(events[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(answered) < 1500 and time.monotonic() < deadline:
        time.sleep(0.01)
    stopping = time.monotonic()
    exit_code = server.stop(timeout=30)
    took = time.monotonic() - stopping
    for thread in threads:
        thread.join()
    assert exit_code == 0
    assert took < 15
    assert len(answered) >= 1500
    assert '"drained": true' in server.log()
    stored = [r["event_id"] for t in CHANNEL_TABLES for r in table_rows(data_dir, t, "event_id")]
    assert len(stored) == len(set(stored))
    missing = answered - set(stored)
    assert not missing, f"{len(missing)} answered events were not committed"
