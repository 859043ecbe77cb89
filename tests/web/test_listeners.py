"""Two listeners in one app: what the public port answers, what the admin port serves.

A TestClient request's local port is the one in its URL, as a real socket's would be, so the
same app is asked as Customer.io (any port but the admin's) and as the operator (the admin's).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from ciolake.settings import Settings
from ciolake.web import create_app
from ciolake.web.admin_auth import token_matches
from tests.support import TEST_KEY

ADMIN_PORT = 9123
PUBLIC = "http://127.0.0.1:8080"
ADMIN = f"http://127.0.0.1:{ADMIN_PORT}"
TOKEN = "s3cret-admin-token"

ClientFactory = Callable[..., AbstractContextManager[TestClient]]

ADMIN_ONLY_PATHS = [
    "/metrics",
    "/dashboard",
    "/dashboard/data/cohorts",
    "/dashboard/data/failures",
    "/dashboard/static/dashboard.js",
    "/dashboard/static/vega@6.4.0.min.js",
]


@pytest.fixture
def make_client(tmp_path: Path, make_settings: Callable[..., Settings]) -> ClientFactory:
    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        settings = make_settings(
            data_dir=tmp_path / "data",
            signing_keys=(TEST_KEY,),
            flush_interval_s=0.05,
            admin_port=ADMIN_PORT,
            **overrides,
        )
        with TestClient(create_app(settings)) as client:
            yield client

    return make


@pytest.mark.parametrize("path", [*ADMIN_ONLY_PATHS, "/", "/anything", "/webhooks"])
def test_public_port_answers_404_for_everything_but_its_three_paths(
    make_client: ClientFactory, path: str
) -> None:
    with make_client() as client:
        response = client.get(f"{PUBLIC}{path}")

    assert response.status_code == 404
    assert "campaign" not in response.text


@pytest.mark.parametrize("path", ADMIN_ONLY_PATHS)
def test_admin_port_serves_metrics_dashboard_and_its_data(
    make_client: ClientFactory, path: str
) -> None:
    with make_client() as client:
        response = client.get(f"{ADMIN}{path}")

    assert response.status_code == 200, response.text


def test_public_ready_is_a_status_code_and_one_word(make_client: ClientFactory) -> None:
    with make_client() as client:
        public = client.get(f"{PUBLIC}/ready")
        admin = client.get(f"{ADMIN}/ready")
        health = client.get(f"{PUBLIC}/health")

    assert public.status_code == 200
    assert public.json() == {"status": "ready"}
    assert admin.json()["reason"] == "ready"
    assert "backlog" in admin.json()
    assert health.json()["status"] == "healthy"


def test_webhook_is_not_served_on_the_admin_port(make_client: ClientFactory) -> None:
    with make_client() as client:
        response = client.post(f"{ADMIN}/webhooks/customerio", content=b"{}")

    assert response.status_code in {404, 405}


def test_with_a_token_the_admin_port_refuses_requests_without_it(
    make_client: ClientFactory,
) -> None:
    with make_client(admin_token=TOKEN) as client:
        bare = client.get(f"{ADMIN}/metrics")
        wrong = client.get(f"{ADMIN}/metrics", headers={"Authorization": "Bearer nope"})
        bearer = client.get(f"{ADMIN}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        public_ready = client.get(f"{PUBLIC}/ready")

    assert bare.status_code == 401
    assert bare.headers["www-authenticate"].startswith("Basic realm=")
    assert wrong.status_code == 401
    assert bearer.status_code == 200
    assert "ciolake_requests_received_total" in bearer.text
    assert public_ready.status_code == 200, "the public port needs no token"


def test_a_browser_gets_the_dashboard_through_basic_auth(make_client: ClientFactory) -> None:
    with make_client(admin_token=TOKEN) as client:
        challenge = client.get(f"{ADMIN}/dashboard")
        # A browser answers the challenge with any user name and the token as password.
        answer = "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()
        page = client.get(f"{ADMIN}/dashboard", headers={"Authorization": answer})
        wrong = "Basic " + base64.b64encode(b"operator:guess").decode()
        refused = client.get(f"{ADMIN}/dashboard", headers={"Authorization": wrong})

    assert challenge.status_code == 401
    assert "basic" in challenge.headers["www-authenticate"].lower()
    assert page.status_code == 200
    assert "vega-embed" in page.text
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Bearer s3cret-admin-token", True),
        (b"bearer s3cret-admin-token", True),
        (b"Bearer s3cret-admin-token-and-more", False),
        (b"Bearer ", False),
        (b"Basic " + base64.b64encode(b"any:s3cret-admin-token"), True),
        (b"Basic " + base64.b64encode(b":s3cret-admin-token"), True),
        (b"Basic " + base64.b64encode(b"s3cret-admin-token"), False),
        (b"Basic not-base64!!", False),
        (b"Token s3cret-admin-token", False),
    ],
)
def test_token_matches_bearer_and_basic_only(header: bytes, expected: bool) -> None:
    assert token_matches(header, TOKEN.encode()) is expected
