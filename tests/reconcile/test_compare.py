"""Comparing counts and deliveries: tolerance, the days human metrics are reliable from, gaps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ciolake.checks.rules import Status, reconcile_findings
from ciolake.customerio.reporting import DailySeries, Delivery, MessageRef
from ciolake.reconcile.compare import (
    RELIABLE_FROM,
    Tolerance,
    compare_counts,
    delivery_gaps,
)
from ciolake.reconcile.lake_counts import LakeDelivery
from ciolake.reconcile.run import Reconciliation, Window
from ciolake.reconcile.summary import write_summary

CAMPAIGN = MessageRef("campaign", 1)
DAY = dt.date(2026, 5, 4)


@pytest.mark.parametrize(
    ("tolerance", "customerio", "difference", "allowed"),
    [
        (Tolerance(), 10, 0, True),
        (Tolerance(), 10, -1, False),
        (Tolerance(absolute=2), 10, -2, True),
        (Tolerance(absolute=2), 10, 3, False),
        (Tolerance(percent=10), 100, -10, True),
        (Tolerance(percent=10), 100, -11, False),
        (Tolerance(absolute=5, percent=1), 100, -5, True),  # either bound accepts
        (Tolerance(percent=50), 0, 1, False),
    ],
)
def test_tolerance(tolerance: Tolerance, customerio: int, difference: int, allowed: bool) -> None:
    assert tolerance.allows(customerio, difference) is allowed


def test_counts_compare_only_what_a_webhook_can_count_and_human_metrics_once_reliable() -> None:
    before = RELIABLE_FROM["human_opened"] - dt.timedelta(days=1)
    since = RELIABLE_FROM["human_opened"]
    theirs = DailySeries(
        CAMPAIGN,
        "UTC",
        {
            "sent": {before: 5, since: 4},
            "human_opened": {before: 3, since: 2},
            "created": {before: 9, since: 9},
        },
    )
    ours = {"sent": {before: 5, since: 3}, "human_opened": {since: 2}}
    rows = compare_counts(theirs, ours, tolerance=Tolerance())
    got = {(r.metric, r.day): (r.customerio, r.ciolake, r.over_tolerance) for r in rows}
    assert got == {
        ("sent", before): (5, 5, False),
        ("sent", since): (4, 3, True),
        ("human_opened", since): (2, 2, False),
    }


def test_delivery_gaps_name_missing_and_extra_metrics() -> None:
    theirs = [
        Delivery(id="a", created=1, metrics={"sent": 10, "delivered": 11, "human_opened": 12}),
        Delivery(id="b", created=1, metrics={"sent": 10}),
    ]
    ours = {
        "a": LakeDelivery("a", DAY, frozenset({"sent"})),
        "b": LakeDelivery("b", DAY, frozenset({"sent", "clicked", "human_clicked"})),
        "x": LakeDelivery("x", DAY, frozenset({"sent"})),
        "y": LakeDelivery("y", DAY + dt.timedelta(days=1), frozenset({"sent"})),
    }
    gaps = {
        (g.delivery_id, g.metric, g.kind, g.at) for g in delivery_gaps(CAMPAIGN, DAY, theirs, ours)
    }
    assert gaps == {
        ("a", "delivered", "missing", 11),
        ("a", "human_opened", "missing", 12),
        ("b", "clicked", "extra", None),
        ("x", "sent", "extra", None),
    }


def test_check_reads_the_last_reconcile(tmp_path: Path) -> None:
    path = tmp_path / "state" / "reconcile.prom"
    assert reconcile_findings(path) == []
    window = Window(DAY, DAY, "UTC")
    theirs = DailySeries(CAMPAIGN, "UTC", {"sent": {DAY: 4}, "delivered": {DAY: 4}})
    rows = compare_counts(theirs, {"sent": {DAY: 4}, "delivered": {DAY: 1}}, tolerance=Tolerance())
    write_summary(path, Reconciliation(window, Tolerance(), [CAMPAIGN], rows), at=1_800_000_000)
    (finding,) = reconcile_findings(path)
    assert finding.status is Status.FIRED
    assert finding.value == 1
    assert "1 of 2 counts" in finding.detail
    rows = compare_counts(theirs, {"sent": {DAY: 4}, "delivered": {DAY: 4}}, tolerance=Tolerance())
    write_summary(path, Reconciliation(window, Tolerance(), [CAMPAIGN], rows), at=1_800_000_000)
    assert [f.status for f in reconcile_findings(path)] == [Status.OK]
