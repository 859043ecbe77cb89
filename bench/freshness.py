"""Freshness: time from a 200 until the event is readable in its Delta table.

During a fixed-rate phase a thread posts marker events (``email`` ``delivered``, the most
common kind) at a low rate and records when each 200 arrived. Another thread watches
``email_events``: every ``poll_interval_s`` it lists the table's ``_delta_log``, and whenever a
new version has appeared it queries the table with DuckDB's delta extension for the markers not
yet seen. A marker's freshness is the time from its 200 to the end of the first query that
returns it: an upper bound, late by at most the poll interval plus the query time (both
reported). Querying only on a new version keeps the reader's CPU use, on the machine it
shares with the server, to about one small query per commit. (A marker whose table got a new
version while its request was in flight may be readable before the next version: it gets a
query of its own.)
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from typing import Any

import duckdb
import httpx

from bench.mix import body_of
from bench.reader import delta_reader, scan
from bench.reqfiles import WEBHOOK_PATH
from ciolake.events.samples import sample_event, schema_by_name
from ciolake.receive.verify import sign
from ciolake.runtime.priority import lower_this_thread

MARKER_SCHEMA = "email_delivered"
MARKER_TABLE = "email_events"

POLLER_NICE = 10


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class FreshnessProbe:
    """Post markers and watch for them in the table, in two background threads."""

    def __init__(
        self,
        base_url: str,
        tables_uri: str,
        key: str,
        *,
        rate_per_s: float = 4.0,
        poll_interval_s: float = 0.05,
        seed: int = 7,
    ) -> None:
        self._url = base_url + WEBHOOK_PATH
        self._table = f"{tables_uri.rstrip('/')}/{MARKER_TABLE}"
        self._key = key
        self._rate = rate_per_s
        self._poll_interval_s = poll_interval_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._answered: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._recheck: set[str] = set()
        self._query_s: list[float] = []
        self.failed_posts = 0
        self._stop_posting = threading.Event()
        self._stop_polling = threading.Event()
        # Opened now (loading the extension takes a moment), used only by the poller thread.
        self._connection = delta_reader()
        self._connection.execute("SET threads = 1")
        self._poster = threading.Thread(target=self._post_loop, name="marker-poster", daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, name="marker-poller", daemon=True)

    @property
    def answered(self) -> int:
        with self._lock:
            return len(self._answered)

    def start(self) -> None:
        self._poster.start()
        self._poller.start()

    def stop_posting(self) -> None:
        self._stop_posting.set()
        self._poster.join(timeout=10)

    def finish(self, timeout_s: float) -> dict[str, Any]:
        """Stop posting, wait (bounded) for every marker to be seen, and summarise."""
        self.stop_posting()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._pending():
            time.sleep(0.05)
        self._stop_polling.set()
        self._poller.join(timeout=30)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            ages = [self._seen[i] - self._answered[i] for i in self._seen if i in self._answered]
            answered, queries = len(self._answered), list(self._query_s)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "markers_answered": answered,
            "markers_seen": len(ages),
            "markers_missing": answered - len(ages),
            "failed_posts": self.failed_posts,
            "p50_s": rounded(percentile(ages, 50)),
            "p99_s": rounded(percentile(ages, 99)),
            "max_s": rounded(max(ages, default=None)),
            "poll_interval_s": self._poll_interval_s,
            "poll_queries": len(queries),
            "poll_query_p50_s": rounded(percentile(queries, 50)),
        }

    def _pending(self) -> list[str]:
        with self._lock:
            return [event_id for event_id in self._answered if event_id not in self._seen]

    def _post_loop(self) -> None:
        schema = schema_by_name(MARKER_SCHEMA)
        interval = 1 / self._rate
        next_at = time.monotonic()
        with httpx.Client(timeout=10) as client:
            while not self._stop_posting.wait(max(0.0, next_at - time.monotonic())):
                next_at += interval
                now = int(time.time())
                event = sample_event(schema, rng=self._rng, timestamp=now)
                self._post(client, event["event_id"], body_of(event), now)

    def _post(self, client: httpx.Client, event_id: str, body: bytes, timestamp: int) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-CIO-Timestamp": str(timestamp),
            "X-CIO-Signature": sign(body, self._key, timestamp),
        }
        version_before = latest_version(self._table)
        try:
            response = client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError:
            self.failed_posts += 1
            return
        answered_at = time.monotonic()
        if response.status_code != 200:
            self.failed_posts += 1
            return
        with self._lock:
            self._answered[event_id] = answered_at
            # Committed while the request was in flight? Only then can the marker already be
            # readable in the current version, and the poller must look before the next one.
            if latest_version(self._table) > version_before:
                self._recheck.add(event_id)

    def _poll_loop(self) -> None:
        # The instrument must not compete with the server it measures: a DuckDB query per
        # new table version (threads=1, so it runs in this thread) took CPU from the workers
        # and raised the latency measured in the same phase.
        lower_this_thread(POLLER_NICE)
        connection = self._connection
        queried_version = -1
        try:
            while not self._stop_polling.wait(self._poll_interval_s):
                version = latest_version(self._table)
                pending = self._pending()
                if not pending:
                    continue
                if (version > queried_version or self._take_recheck()) and (
                    self._poll_once(connection, pending)
                ):
                    queried_version = version
        finally:
            connection.close()

    def _take_recheck(self) -> bool:
        with self._lock:
            wanted = bool(self._recheck)
            self._recheck.clear()
            return wanted

    def _poll_once(self, connection: duckdb.DuckDBPyConnection, pending: list[str]) -> bool:
        ids = ", ".join(f"'{event_id}'" for event_id in pending)
        started = time.monotonic()
        try:
            rows = connection.execute(
                f"SELECT event_id FROM {scan(self._table)} WHERE event_id IN ({ids})"
            ).fetchall()
        except duckdb.Error:  # e.g. the table is not there yet; the next poll retries
            return False
        finished = time.monotonic()
        with self._lock:
            self._query_s.append(finished - started)
            for (event_id,) in rows:
                self._seen.setdefault(event_id, finished)
        return True


def latest_version(table_uri: str) -> int:
    """The highest commit version in a local table's ``_delta_log`` (-1 when none)."""
    try:
        names = os.listdir(os.path.join(table_uri, "_delta_log"))
    except FileNotFoundError:
        return -1
    versions = [int(name[:20]) for name in names if name.endswith(".json") and name[:20].isdigit()]
    return max(versions, default=-1)
