"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against
`ciolake dashboard` serving a simulated history on a loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciolake.dashboard.app import PANELS
from ciolake.simulate import simulator as simulate
from tests.support import free_port, make_settings

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
CHART_PANELS = [p.name for p in PANELS if p.kind == "chart"]


@dataclass
class Dashboard:
    base: str
    data_dir: Path


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    config = simulate.SimulationConfig(start=date(2026, 9, 1), days=14, deliveries=40, seed=9)
    settings = make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(), flush_interval_s=0.05
    )
    simulate.run(config, settings)
    port = free_port()
    log = (data_dir.parent / "dashboard.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ciolake", "dashboard", "--port", str(port), "--data-dir", data_dir],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "CIOLAKE_HOST": "127.0.0.1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{base}/dashboard/static/dashboard.js", process)
        yield Dashboard(base, data_dir)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "ciolake dashboard exited early"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("ciolake dashboard did not answer")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `make test-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shown(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.ciolakeDashboard")
    return state


def wait_loaded(page: Any, generation: int) -> dict[str, Any]:
    page.wait_for_function(
        f"window.ciolakeDashboard && window.ciolakeDashboard.loaded"
        f" && window.ciolakeDashboard.generation >= {generation}",
        timeout=30_000,
    )
    return shown(page)


def svg_text(page: Any, panel: str) -> str:
    text: str = page.locator(f'[data-panel="{panel}"] svg').first.text_content() or ""
    return text


def test_dashboard_renders_every_chart_and_filters(dashboard: Dashboard, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))

    page.goto(f"{dashboard.base}/dashboard")
    state = wait_loaded(page, 1)
    assert problems == []
    assert state["errors"] == []
    # Everything the page loaded came from the dashboard itself: it works offline.
    assert requests
    assert all(url.startswith(dashboard.base) for url in requests), requests

    for panel in PANELS:
        panel_state = state["panels"][panel.name]
        assert panel_state["error"] is None, panel.name
        assert panel_state["rows"] > 0, panel.name
        assert panel_state["marks"] > 0, panel.name
    for name in CHART_PANELS:
        assert page.locator(f'[data-panel="{name}"] svg.marks').count() == 1, name
        # The rows drawn are the rows the JSON endpoint serves.
        rows = httpx.get(f"{dashboard.base}/dashboard/data/{name}").json()["rows"]
        assert len(rows) == state["panels"][name]["rows"], name
    assert (
        page.locator('[data-panel="cohorts"] tbody tr').count()
        == state["panels"]["cohorts"]["rows"]
    )
    assert page.locator('[data-panel="summary"] .tile').count() == 7
    assert "email" in svg_text(page, "events_per_day")
    assert "Opened by a person" in svg_text(page, "funnel")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Choosing a channel redraws the page for it, without a reload.
    page.select_option('select[name="channel"]', "sms")
    state = wait_loaded(page, 2)
    assert state["errors"] == []
    assert "channel=sms" in page.url
    events = svg_text(page, "events_per_day")
    assert "delivered" in events
    assert "email" not in events
    funnel = svg_text(page, "funnel")
    assert "Delivered" in funnel
    assert "Opened" not in funnel
    assert state["panels"]["failures"]["rows"] == 1

    # A one-day range shows the pipeline per hour.
    page.fill('input[name="since"]', "2026-09-05")
    page.fill('input[name="until"]', "2026-09-05")
    page.click('form#filters button[type="submit"]')
    state = wait_loaded(page, 3)
    assert "since=2026-09-05" in page.url
    assert state["panels"]["throughput"]["rows"] > 3 * 12
    assert ":00" in svg_text(page, "throughput")
    assert problems == []
    assert state["errors"] == []
    page.screenshot(path=str(ARTIFACTS / "dashboard-sms-one-day.png"), full_page=True)
    context.close()
