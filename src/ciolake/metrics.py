"""Prometheus metrics, one registry per running service (no process-wide globals).

With several worker processes, prometheus_client's multiprocess mode aggregates every
process's samples (files under ``PROMETHEUS_MULTIPROC_DIR``) at scrape time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess_metrics(directory: Path) -> None:
    """Start multiprocess mode in this process and in processes it spawns from now on.

    The directory is emptied: samples of a previous run's processes must not be added in.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client picks its value store at import; this process imported it already.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_enabled() -> bool:
    """True in a process started with multiprocess metrics."""
    return bool(os.environ.get(MULTIPROC_ENV))


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every metric ciolake exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_enabled()
        r = self.registry
        self.received = Counter(
            "ciolake_requests_received",
            "Webhook requests answered: deliveries journaled plus requests rejected.",
            registry=r,
        )
        self.journaled = Counter(
            "ciolake_deliveries_journaled", "Authentic deliveries durably journaled.", registry=r
        )
        self.rejected = Counter(
            "ciolake_requests_rejected",
            "Webhook requests answered non-2xx, by status and reason.",
            ["status", "reason"],
            registry=r,
        )
        self.accepted = Counter(
            "ciolake_events_accepted", "Events committed to a channel table.", ["table"], registry=r
        )
        self.duplicates = Counter(
            "ciolake_events_duplicate", "Deliveries of an event_id already stored.", registry=r
        )
        self.quarantined = Counter(
            "ciolake_events_quarantined", "Deliveries put in quarantine.", ["reason"], registry=r
        )
        self.spec_violations = Counter(
            "ciolake_events_with_spec_violations",
            "Events stored with at least one spec violation.",
            registry=r,
        )
        self.commits = Counter(
            "ciolake_delta_commits", "Delta commits written.", ["table"], registry=r
        )
        self.commit_failures = Counter(
            "ciolake_delta_commit_failures",
            "Batches whose commit failed and was retried.",
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "ciolake_journal_fsync_seconds",
            "Journal write+fsync time per group commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "ciolake_delta_commit_seconds",
            "Time to commit one batch to one table.",
            ["table"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "ciolake_batch_seconds",
            "Time to decode, deduplicate and commit one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Set by the one process that commits; every worker sets its own journal health.
        self.backlog_events = Gauge(
            "ciolake_backlog_events",
            "Deliveries journaled but not yet committed.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.freshness_seconds = Gauge(
            "ciolake_freshness_seconds",
            "Age of the oldest journaled delivery not yet committed (0 when none).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.journal_healthy = Gauge(
            "ciolake_journal_healthy",
            "1 when the last journal write succeeded (the lowest over workers).",
            registry=r,
            multiprocess_mode="livemin",
        )

    def count_journaled(self, deliveries: int) -> None:
        """Count one group commit's deliveries: once per flush, not per request, because a
        multiprocess counter update takes a lock and a ``getpid`` call."""
        self.received.inc(deliveries)
        self.journaled.inc(deliveries)

    def count_rejected(self, status: int, reason: str) -> None:
        """Count one request answered ``status`` for ``reason``."""
        self.received.inc()
        self.rejected.labels(status=str(status), reason=reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every sample, all processes included."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
