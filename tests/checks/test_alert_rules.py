"""deploy/prometheus/alerts.yml: valid rules, over metrics ciolake exports, that fire as tested."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ciolake.checks.rules import Thresholds
from ciolake.metrics import Metrics
from tests.support import promtool

RULES_DIR = Path(__file__).parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts_test.yml"


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    """Every sample name ciolake's /metrics can export (counters with ``_total``)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_every_expression_names_only_metrics_ciolake_exports() -> None:
    exported = exported_names()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used: set[str] = set()
    for rule in rules():
        used.update(re.findall(r"\bciolake[:_][a-z0-9_:]+", rule["expr"]))
    assert used, "no metric found in the rules"
    assert used - exported - recorded == set()
    # The rules cover every counter the checks read.
    assert {
        "ciolake_deliveries_journaled_total",
        "ciolake_requests_rejected_total",
        "ciolake_events_quarantined_total",
        "ciolake_events_accepted_total",
        "ciolake_freshness_seconds",
    } <= used


def test_alerts_use_the_checks_default_thresholds() -> None:
    defaults = Thresholds()
    by_name = {rule["alert"]: rule["expr"] for rule in rules() if "alert" in rule}
    assert f"[{defaults.no_events_minutes:g}m]" in by_name["CiolakeNoEvents"]
    assert f"> {defaults.quarantine_percent / 100:g}" in by_name["CiolakeQuarantineShareHigh"]
    assert (
        f"* 60 > {defaults.signature_failures_per_minute:g}" in by_name["CiolakeSignatureFailures"]
    )
    assert f"> {defaults.freshness_seconds:g}" in by_name["CiolakeFreshness"]
    volume = by_name["CiolakeChannelVolumeDrop"]
    assert f"< {1 - defaults.volume_drop_percent / 100:g} *" in volume
    assert f">= {defaults.volume_min_baseline}" in volume
    every_label = [rule for rule in rules() if "alert" in rule]
    assert all(rule["labels"]["severity"] in {"warning", "critical"} for rule in every_label)


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_promtool_unit_tests_fire_each_alert() -> None:
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}
    done = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=RULES_DIR,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
