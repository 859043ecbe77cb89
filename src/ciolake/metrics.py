"""Prometheus metrics, one registry per running service (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every metric ciolake exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "ciolake_requests_received", "Webhook requests received.", registry=r
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
        self.backlog_events = Gauge(
            "ciolake_backlog_events", "Deliveries journaled but not yet committed.", registry=r
        )
        self.freshness_seconds = Gauge(
            "ciolake_freshness_seconds",
            "Age of the oldest journaled delivery not yet committed (0 when none).",
            registry=r,
        )
        self.journal_healthy = Gauge(
            "ciolake_journal_healthy", "1 when the last journal write succeeded.", registry=r
        )
