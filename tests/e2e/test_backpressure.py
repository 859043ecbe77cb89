"""Back-pressure end to end: a real journal write error, and the uncommitted-backlog bound.

Both must answer 503 with `Retry-After` (Customer.io retries), recover by themselves, and never
store a refused delivery: in the end every delivery answered 200 is in its table exactly once,
and `raw_events` holds exactly one row per 200 (a 503 stores nothing).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ciolake.events import target_table
from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import (
    ServerProcess,
    body_of,
    metric_value,
    signed_headers,
    start_server,
    table_rows,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

PRLIMIT = "/usr/bin/prlimit"
# Above SQLite's largest WAL (1000 pages of 4 KiB before the automatic checkpoint, ~4.1 MB): a
# smaller limit makes the committer's dedup writes fail ("disk I/O error") and it never recovers.
FILE_SIZE_LIMIT = 8 * 1024 * 1024
# Journal record framing: length and crc32, then lsn, receipt time, X-CIO-Timestamp and flags.
RECORD_OVERHEAD = 8 + 25
# The channel schemas whose events carry a `content` field, to fill the journal quickly.
CONTENT_SCHEMAS = tuple(name for name, _type, metric in schema_keys() if metric == "sent")


@dataclass(frozen=True)
class Sample:
    event_id: str
    body: bytes
    table: str


def samples(seed: int, *, content_bytes: int = 0) -> Iterator[Sample]:
    """Endless unique events, alternately big (with content) and of any schema."""
    rng = random.Random(seed)
    keys = schema_keys()
    now = int(time.time())
    index = 0
    while True:
        name = CONTENT_SCHEMAS[index % len(CONTENT_SCHEMAS)] if index % 2 == 0 else None
        schema = schema_by_name(name or keys[index % len(keys)][0])
        event = sample_event(schema, rng=rng, timestamp=now, content_bytes=content_bytes)
        table = target_table(
            event["object_type"], event["metric"], has_delivery_id="delivery_id" in event["data"]
        )
        yield Sample(event["event_id"], body_of(event), table)
        index += 1


def post(client: httpx.Client, server: ServerProcess, sample: Sample) -> httpx.Response:
    return client.post(server.url, content=sample.body, headers=signed_headers(sample.body))


def get_metrics(server: ServerProcess) -> str:
    return httpx.get(f"{server.admin_base}/metrics", timeout=5).text


def check_exactly_once(data_dir: Path, posted: dict[str, Sample], ok: Counter[str]) -> None:
    """Every event answered 200 is in its table once; raw holds one row per 200, no more."""
    found: Counter[tuple[str, str]] = Counter()
    for table in CHANNEL_TABLES:
        for row in table_rows(data_dir, table, "event_id"):
            found[(row["event_id"], table)] += 1
    assert {event_id for event_id, _table in found} <= set(posted)
    twice = [key for key, count in found.items() if count > 1]
    assert not twice, f"stored more than once: {twice[:3]}"
    expected = {(event_id, posted[event_id].table) for event_id in ok}
    assert set(found) == expected
    raw = Counter(row["event_id"] for row in table_rows(data_dir, "raw_events", "event_id"))
    assert raw == ok, "raw_events must hold exactly the deliveries answered 200"
    assert table_rows(data_dir, "quarantine", "event_id") == []


def rejection_logged(server: ServerProcess, reason: str) -> list[str]:
    """Details of the JSON log lines that record a 503 for ``reason``."""
    return [
        str(line.get("detail"))
        for line in server.log_lines()
        if line.get("status") == 503 and line.get("reason") == reason
    ]


def test_real_journal_write_error_answers_503_and_recovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(
        data_dir,
        prefix=(PRLIMIT, f"--fsize={FILE_SIZE_LIMIT}", "--"),
        env={
            "CIOLAKE_SEGMENT_MAX_BYTES": str(4 * FILE_SIZE_LIMIT),
            "CIOLAKE_BATCH_MAX_EVENTS": "200",
            "CIOLAKE_RETRY_AFTER_S": "7",
        },
    )
    posted: dict[str, Sample] = {}
    ok: Counter[str] = Counter()
    refused: list[Sample] = []
    source = samples(seed=11, content_bytes=20_000)
    try:
        with httpx.Client(timeout=10) as client:
            # One client at a time, so that the 503 and /ready right after it are deterministic.
            for sample in source:
                assert len(posted) < 2 * FILE_SIZE_LIMIT // 10_000, "the journal never failed"
                posted[sample.event_id] = sample
                response = post(client, server, sample)
                if response.status_code == 200:
                    ok[sample.event_id] += 1
                    continue
                assert response.status_code == 503, response.text
                refused.append(sample)
                break
            assert response.headers.get("Retry-After") == "7"
            assert response.json()["error"] == "journal_unavailable"
            # Read at once: the journal probes its directory 2 s after a failure, and a new
            # small file is under the file-size limit, so the probe heals it (as it should).
            assert metric_value(get_metrics(server), "ciolake_journal_healthy") == 0
            ready = httpx.get(f"{server.admin_base}/ready", timeout=5)
            assert ready.status_code == 503
            assert "journal unavailable" in ready.json()["reason"]
            assert "File too large" in ready.json()["reason"]
            failed_at = len(posted)

            # The journal starts a new segment after a failed write: later posts get 200 again.
            for _ in range(40):
                sample = next(source)
                posted[sample.event_id] = sample
                response = post(client, server, sample)
                assert response.status_code == 200, response.text
                ok[sample.event_id] += 1
            assert httpx.get(f"{server.admin_base}/ready", timeout=5).status_code == 200
            assert metric_value(get_metrics(server), "ciolake_journal_healthy") == 1
            # Customer.io retries the refused delivery; it is taken now.
            for sample in refused:
                assert post(client, server, sample).status_code == 200
                ok[sample.event_id] += 1

        wait_until_committed(server)
        metrics = get_metrics(server)
    finally:
        code = server.stop()
    assert code == 0
    # The failing record is the one that would have taken the segment over the limit.
    journaled = sum(len(s.body) + RECORD_OVERHEAD for s in list(posted.values())[: failed_at - 1])
    assert journaled <= FILE_SIZE_LIMIT < journaled + len(refused[0].body) + RECORD_OVERHEAD
    rejected = 'reason="journal_unavailable",status="503"'
    assert metric_value(metrics, "ciolake_requests_rejected_total", rejected) == len(refused)
    assert metric_value(metrics, "ciolake_delta_commit_failures_total") == 0
    details = rejection_logged(server, "journal_unavailable")
    assert len(details) == len(refused)
    assert all("File too large" in detail for detail in details)
    check_exactly_once(data_dir, posted, ok)


def test_backlog_bound_answers_503_until_the_committer_catches_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    flush_interval_s = 3.0
    server = start_server(
        data_dir,
        env={
            "CIOLAKE_MAX_BACKLOG_EVENTS": "20",
            "CIOLAKE_FLUSH_INTERVAL_S": str(flush_interval_s),
            "CIOLAKE_BATCH_MAX_EVENTS": "1000",
        },
    )
    source = samples(seed=22)
    batch = [next(source) for _ in range(60)]
    posted = {sample.event_id: sample for sample in batch}
    ok: Counter[str] = Counter()
    try:
        with httpx.Client(timeout=10) as client:
            responses = [post(client, server, sample) for sample in batch]
            first_refusal = time.monotonic()
            statuses = [response.status_code for response in responses]
            # The committer waits a whole flush interval: 20 are taken, then the bound holds.
            assert statuses[:21] == [200] * 20 + [503], statuses
            assert set(statuses) == {200, 503}
            for sample, response in zip(batch, responses, strict=True):
                if response.status_code == 200:
                    ok[sample.event_id] += 1
                else:
                    assert response.headers.get("Retry-After") == "5"
                    assert response.json()["error"] == "backlog_full"
            ready = httpx.get(f"{server.admin_base}/ready", timeout=5)
            assert ready.status_code == 503
            assert "backlog" in ready.json()["reason"]
            metrics = get_metrics(server)
            refused = statuses.count(503)
            rejected = 'reason="backlog_full",status="503"'
            assert metric_value(metrics, "ciolake_requests_rejected_total", rejected) == refused
            assert metric_value(metrics, "ciolake_backlog_events") == 20

            # Retried like Customer.io would (sooner): taken once the committer caught up.
            pending = [s for s, r in zip(batch, responses, strict=True) if r.status_code == 503]
            first_accept: float | None = None
            deadline = time.monotonic() + 4 * flush_interval_s + 10
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} never accepted"
                sample = pending[0]
                response = post(client, server, sample)
                if response.status_code == 200:
                    ok[sample.event_id] += 1
                    pending.pop(0)
                    first_accept = first_accept or time.monotonic()
                else:
                    assert response.status_code == 503
                    time.sleep(0.05)
        wait_until_committed(server)
    finally:
        code = server.stop()
    assert code == 0
    assert first_accept is not None
    assert first_accept - first_refusal < 2 * flush_interval_s
    assert len(rejection_logged(server, "backlog_full")) >= refused
    assert set(ok) == set(posted)
    check_exactly_once(data_dir, posted, ok)
