"""``ciolake reconcile`` against the fake App API over a history with known gaps: it finds
exactly those, by count and by delivery, and says so in its exit status and its summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ciolake.checks.rules import parse_metrics
from ciolake.settings import Settings
from tests.customerio.fake_app_api import TEST_API_KEY, FakeAppApi
from tests.mistakes.conftest import CliResult, RunCiolake, assert_one_line_error
from tests.reconcile import scenario
from tests.reconcile.conftest import Command
from tests.reconcile.scenario import expected_differences, land


def as_differences(report: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    found = {}
    for row in report["counts"]:
        if row["difference"]:
            message = f"{row['message_kind']} {row['message_id']}"
            found[(message, row["metric"], row["day"])] = row["difference"]
    return found


def test_reconcile_finds_exactly_the_lost_deliveries_of_every_message(
    reconcile: Command,
    history: scenario.History,
    make_settings: Callable[..., Settings],
) -> None:
    land(make_settings(), history)
    result = reconcile("--format", "json")
    assert result.code == 1, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["messages"]) == [
        f"broadcast {scenario.BROADCAST}",
        f"campaign {scenario.CAMPAIGN}",
    ]
    expected = expected_differences(history)
    assert as_differences(report) == expected
    assert report["over_tolerance"] == len(expected)
    # Every series the webhook can count was compared on every day; the others were not.
    compared = {row["metric"] for row in report["counts"]}
    assert {"sent", "delivered", "opened", "human_opened", "clicked"} <= compared
    assert not compared & {"created", "2xx", "prefetch_opened"}


def test_deliveries_lists_each_lost_event_by_delivery_and_nothing_else(
    reconcile: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    land(make_settings(), history)
    result = reconcile("--campaign", str(scenario.CAMPAIGN), "--deliveries", "--format", "json")
    assert result.code == 1, result.stderr
    gaps = json.loads(result.stdout)["deliveries"]
    assert {g["gap"] for g in gaps} == {"missing"}
    found = {(g["delivery_id"], g["metric"]) for g in gaps}
    lost = {(i, m) for i, m in history.lost_pairs() if i.startswith("e")}
    assert found == lost


def reconcile_finding(run_ciolake: RunCiolake, settings: Settings) -> dict[str, Any]:
    checked = run_ciolake("check", "--no-metrics", "--json", "--data-dir", settings.data_dir)
    findings = json.loads(checked.stdout)["findings"]
    matching: list[dict[str, Any]] = [f for f in findings if f["check"] == "reconcile"]
    assert len(matching) == 1, findings
    return matching[0]


def test_a_tolerance_wide_enough_passes_and_the_summary_says_so(
    run_ciolake: RunCiolake,
    reconcile: Command,
    history: scenario.History,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    land(settings, history)
    widest = max(-d for d in expected_differences(history).values())
    assert reconcile("--tolerance", str(widest - 1)).code == 1
    summary = parse_metrics(settings.reconcile_summary_path.read_text(), at=0.0)
    assert (summary.total("ciolake_reconcile_over_tolerance") or 0) > 0
    assert reconcile_finding(run_ciolake, settings)["status"] == "fired"
    passed = reconcile("--tolerance", str(widest))
    assert passed.code == 0, passed.stderr
    assert "0 over the tolerance" in passed.stdout
    summary = parse_metrics(settings.reconcile_summary_path.read_text(), at=0.0)
    assert summary.total("ciolake_reconcile_over_tolerance") == 0
    assert reconcile_finding(run_ciolake, settings)["status"] == "ok"
    assert summary.total("ciolake_reconcile_counts_compared") == len(
        json.loads(reconcile("--tolerance", str(widest), "--format", "json").stdout)["counts"]
    )


def test_csv_has_one_row_per_count(
    reconcile: Command, history: scenario.History, make_settings: Callable[..., Settings]
) -> None:
    land(make_settings(), history)
    as_json = json.loads(reconcile("--format", "json").stdout)["counts"]
    lines = reconcile("--format", "csv").stdout.splitlines()
    assert lines[0].split(",")[:4] == ["message_kind", "message_id", "action_id", "metric"]
    assert len(lines) == 1 + len(as_json)


def test_an_action_without_one_campaign_is_refused_before_any_request(
    reconcile: Command, fake: FakeAppApi
) -> None:
    result = reconcile("--action", "3")
    assert result.code == 2
    assert "--action" in result.stderr
    assert fake.requests == []


def test_an_unknown_time_zone_is_refused(reconcile: Command, fake: FakeAppApi) -> None:
    result = reconcile("--tz", "Mars/Olympus", "--campaign", "1")
    assert result.code == 2
    assert "Mars/Olympus" in result.stderr
    assert fake.requests == []


def run_with_key(run_ciolake: RunCiolake, fake: FakeAppApi, data_dir: Path, key: str) -> CliResult:
    api = ["--base-url", fake.base_url, "--allow-http"]
    return run_ciolake(
        "reconcile",
        *("--campaign", "1", *api, "--data-dir", str(data_dir)),
        env={"CIOLAKE_CIO_APP_API_KEY": key},
    )


def test_a_wrong_api_key_is_one_line(
    run_ciolake: RunCiolake,
    fake: FakeAppApi,
    history: scenario.History,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    land(settings, history)
    result = run_with_key(run_ciolake, fake, settings.data_dir, "wrong")
    assert_one_line_error(result, 1, "App API key")


def test_no_tables_is_one_line_before_any_request(
    run_ciolake: RunCiolake, fake: FakeAppApi, tmp_path: Path
) -> None:
    result = run_with_key(run_ciolake, fake, tmp_path / "nowhere", TEST_API_KEY)
    assert_one_line_error(result, 2, "no data directory", "--data-dir")
    assert fake.requests == []
