"""The dashboard's page, JSON endpoints and assets, over a simulated history with known truth."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import altair as alt
import httpx
import pytest
from starlette.testclient import TestClient

from ciolake.analytics.funnels import CHANNELS as FUNNEL_CHANNELS
from ciolake.analytics.funnels import channel_metrics
from ciolake.dashboard.app import ASSETS, CHANNELS, PANELS, STATIC_DIR, dashboard_app
from ciolake.events.samples import sample_event, schema_by_name
from ciolake.settings import Settings
from ciolake.simulate import simulator as simulate
from tests import support
from tests.support import (
    body_of,
    running_server,
    signed_headers,
    table_rows,
    wait_until_committed,
)

START = date(2026, 9, 1)
DAYS = 8
NOW = datetime(2026, 9, 30, 12, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, simulate.History]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    config = simulate.SimulationConfig(start=START, days=DAYS, deliveries=30, seed=5)
    settings = support.make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(), flush_interval_s=0.05
    )
    truth = simulate.run(config, settings)
    return data_dir, truth


@pytest.fixture(scope="module")
def client(history: tuple[Path, simulate.History]) -> Iterator[TestClient]:
    settings = support.make_settings(
        history[0].parent, data_dir=history[0], signing_keys=(), flush_interval_s=1.0
    )
    app = dashboard_app(settings, clock=lambda: NOW)
    with TestClient(app) as test_client:
        yield test_client


def data(client: TestClient, panel: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(f"/dashboard/data/{panel}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def page_config(html: str) -> dict[str, Any]:
    match = re.search(r'<script id="dashboard-config" type="application/json">(.*?)</script>', html)
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_page_defaults_to_the_last_30_days_with_data(
    client: TestClient, history: tuple[Path, simulate.History]
) -> None:
    response = client.get("/dashboard")
    assert response.status_code == 200
    last = max(
        row["d"]
        for row in table_rows(history[0], "email_events", "max(event_date) AS d")
        + table_rows(history[0], "push_events", "max(event_date) AS d")
    )
    config = page_config(response.text)
    assert config["filters"] == {
        "since": (last - timedelta(days=29)).isoformat(),
        "until": last.isoformat(),
        "channel": "",
    }
    assert f'value="{last.isoformat()}"' in response.text
    for asset in ASSETS.values():
        assert f'src="/dashboard/static/{asset}"' in response.text
    charts = [p.name for p in PANELS if p.kind == "chart"]
    assert set(charts) <= set(config["specs"])
    for name in charts:
        assert config["specs"][name]["$schema"] == alt.SCHEMA_URL
        assert config["specs"][name]["data"] == {"name": "rows"}
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"


def test_every_panel_has_rows(client: TestClient) -> None:
    for panel in PANELS:
        rows = data(client, panel.name)
        assert rows, panel.name


def test_events_per_day_counts_every_event_once(
    client: TestClient, history: tuple[Path, simulate.History]
) -> None:
    since, until = START.isoformat(), (START + timedelta(days=DAYS + 3)).isoformat()
    rows = data(client, "events_per_day", since=since, until=until)
    assert {r["series"] for r in rows} == {*CHANNELS, "customer"}
    truth = len(history[1].events())
    assert sum(r["events"] for r in rows) == truth
    email = sum(r["events"] for r in rows if r["series"] == "email")
    assert email == len(table_rows(history[0], "email_events", "event_id"))


def test_funnel_matches_the_simulated_truth(
    client: TestClient, history: tuple[Path, simulate.History]
) -> None:
    since, until = START.isoformat(), (START + timedelta(days=DAYS)).isoformat()
    email = [d for d in history[1].deliveries if d.channel == "email"]
    rows = {r["stage"]: r for r in data(client, "funnel", since=since, until=until)}
    assert rows["Sent"]["deliveries"] == sum("sent" in d.outcomes for d in email)
    assert rows["Delivered"]["deliveries"] == sum("delivered" in d.outcomes for d in email)
    assert rows["Opened by a person"]["deliveries"] == sum(
        "human_opened" in d.outcomes for d in email
    )
    assert rows["Sent"]["share"] == 1.0
    assert [r["step"] for r in rows.values()] == sorted(r["step"] for r in rows.values())


def test_a_channel_filter_changes_what_is_shown(client: TestClient) -> None:
    rows = data(client, "events_per_day", channel="sms")
    assert {r["variant"] for r in rows} == {"metric"}
    assert {r["series"] for r in rows} <= set(channel_metrics("sms"))
    stages = [r["stage"] for r in data(client, "funnel", channel="sms")]
    assert stages[:2] == ["Sent", "Delivered"]
    assert "Opened" not in stages
    engagement = data(client, "engagement", channel="sms")
    assert {r["audience"] for r in engagement} == {"All"}
    failures = data(client, "failures", channel="sms")
    assert {r["channel"] for r in failures} == {"sms"}
    assert data(client, "engagement", channel="slack") == []


def test_a_short_range_is_shown_per_hour(client: TestClient) -> None:
    day = (START + timedelta(days=2)).isoformat()
    hourly = data(client, "throughput", since=day, until=day)
    assert {r["grain"] for r in hourly} == {"hour"}
    assert len({r["period"] for r in hourly}) > 12
    daily = data(client, "throughput")
    assert {r["grain"] for r in daily} == {"day"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "since must be a date"),
        ("channel=carrier_pigeon", "unknown channel"),
        ("since=2026-09-05&until=2026-09-01", "since must not be after until"),
    ],
)
def test_bad_filters_are_answered_400(client: TestClient, query: str, message: str) -> None:
    response = client.get(f"/dashboard/data/funnel?{query}")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.get(f"/dashboard?{query}").status_code == 400


def test_unknown_panel_is_404(client: TestClient) -> None:
    response = client.get("/dashboard/data/nothing")
    assert response.status_code == 404


def test_assets_are_served_locally_at_altairs_versions(client: TestClient) -> None:
    for name in (*ASSETS.values(), "dashboard.js", "dashboard.css"):
        response = client.get(f"/dashboard/static/{name}")
        assert response.status_code == 200, name
        assert len(response.content) > 1000
    vega_lite = (STATIC_DIR / ASSETS["vega_lite_js"]).read_text()
    assert f'"{alt.SCHEMA_VERSION.lstrip("v")}"' in vega_lite[:2000]
    assert ASSETS["vega_lite_js"] == f"vega-lite@{alt.SCHEMA_VERSION.lstrip('v')}.min.js"
    assert ASSETS["vega_js"].startswith("vega@6.")
    assert ASSETS["vega_embed_js"].startswith("vega-embed@7.")
    for package in ("vega", "vega-lite", "vega-embed"):
        assert "Redistribution and use" in (STATIC_DIR / f"LICENSE.{package}").read_text()


def test_channel_filter_offers_every_funnel_channel() -> None:
    assert {c.name for c in FUNNEL_CHANNELS} == set(CHANNELS)


def test_missing_tables_are_a_503_not_a_crash(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(data_dir=tmp_path, signing_keys=(), flush_interval_s=1.0)
    app = dashboard_app(settings, clock=lambda: NOW)
    with TestClient(app) as empty:
        page = empty.get("/dashboard")
        assert page.status_code == 200
        assert page_config(page.text)["filters"]["until"] == "2026-09-30"
        response = empty.get("/dashboard/data/events_per_day")
        assert response.status_code == 503
        assert "no ciolake tables" in response.json()["error"]


def test_serve_serves_the_dashboard(tmp_path: Path) -> None:
    rng = random.Random(2)
    now = int(time.time())
    with running_server(tmp_path / "data") as server, httpx.Client(timeout=30) as http:
        for name in ("email_sent", "email_delivered", "sms_sent"):
            body = body_of(sample_event(schema_by_name(name), rng=rng, timestamp=now))
            assert (
                http.post(server.url, content=body, headers=signed_headers(body)).status_code == 200
            )
        wait_until_committed(server)
        assert "vega-embed" in http.get(f"{server.admin_base}/dashboard").text
        rows = http.get(f"{server.admin_base}/dashboard/data/events_per_day").json()["rows"]
        assert {r["series"]: r["events"] for r in rows} == {"email": 2, "sms": 1}
