"""The bare-ASGI webhook endpoint: body reading, answers through the app, metrics, 503s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from starlette.types import Message, Scope

from ciolake.errors import BacklogFullError, JournalUnavailableError, TransientError
from ciolake.metrics import Metrics
from ciolake.receive.verify import Verdict
from ciolake.receive.webhook import (
    WEBHOOK_PATHS,
    BodyTooLargeError,
    ClientDisconnectedError,
    read_body,
)
from ciolake.settings import Settings
from ciolake.web import create_app
from tests.support import TEST_KEY, metric_value, sample_bodies, signed_headers

NOW = 1_790_000_000.0
TIMESTAMP = int(NOW)
# The admin listener of these apps: a TestClient request to this port is the admin's.
ADMIN = "http://127.0.0.1:8090"

SettingsFactory = Callable[..., Settings]
ClientFactory = Callable[..., AbstractContextManager[TestClient]]


# --- read_body, driven by a hand-written ASGI receive ------------------------------------------


class ScriptedReceive:
    """An ASGI ``receive`` that hands out the given messages in order and counts its calls."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self._messages = list(messages)
        self.calls = 0

    async def __call__(self) -> Message:
        if self.calls >= len(self._messages):
            raise AssertionError("receive awaited after the last scripted message")
        message = self._messages[self.calls]
        self.calls += 1
        return message


def chunk(body: bytes, *, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def http_scope(headers: Sequence[tuple[bytes, bytes]] = ()) -> Scope:
    return {"type": "http", "method": "POST", "path": "/webhooks/customerio", "headers": headers}


def run_read_body(
    messages: Sequence[Message],
    *,
    limit: int,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[bytes, ScriptedReceive]:
    receive = ScriptedReceive(messages)
    body = asyncio.run(read_body(http_scope(headers), receive, limit))
    return body, receive


def test_read_body_joins_three_chunks_exactly() -> None:
    parts = [b'{"event_id":', b'"01J0ABC"', b',"x":1}']
    messages = [chunk(parts[0], more=True), chunk(parts[1], more=True), chunk(parts[2], more=False)]

    body, receive = run_read_body(messages, limit=1024)

    assert body == b'{"event_id":"01J0ABC","x":1}'
    assert receive.calls == 3


def test_read_body_returns_a_single_chunk_as_is() -> None:
    payload = b'{"metric":"sent"}'

    body, receive = run_read_body([chunk(payload, more=False)], limit=1024)

    assert body is payload
    assert receive.calls == 1


def test_read_body_accepts_a_body_of_exactly_the_limit() -> None:
    messages = [chunk(b"a" * 6, more=True), chunk(b"b" * 4, more=False)]
    headers = [(b"content-length", b"10")]

    body, _receive = run_read_body(messages, limit=10, headers=headers)

    assert body == b"aaaaaabbbb"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="no-content-length"),
        pytest.param([(b"content-length", b"abc")], id="non-numeric-content-length"),
        pytest.param([(b"content-length", b"4")], id="understated-content-length"),
    ],
)
def test_read_body_raises_when_chunks_exceed_the_limit(
    headers: list[tuple[bytes, bytes]],
) -> None:
    # 4 + 4 + 3 bytes under a limit of 10: the third chunk tips it over by one byte.
    messages = [chunk(b"x" * 4, more=True), chunk(b"y" * 4, more=True), chunk(b"z" * 3, more=False)]
    receive = ScriptedReceive(messages)

    with pytest.raises(BodyTooLargeError):
        asyncio.run(read_body(http_scope(headers), receive, 10))
    assert receive.calls == 3


def test_read_body_rejects_a_declared_length_over_the_limit_before_receiving() -> None:
    receive = ScriptedReceive([chunk(b"x" * 11, more=False)])
    scope = http_scope([(b"content-type", b"application/json"), (b"content-length", b"11")])

    with pytest.raises(BodyTooLargeError):
        asyncio.run(read_body(scope, receive, 10))
    assert receive.calls == 0


def test_read_body_raises_on_a_disconnect_mid_body() -> None:
    messages = [chunk(b"partial", more=True), {"type": "http.disconnect"}]
    receive = ScriptedReceive(messages)

    with pytest.raises(ClientDisconnectedError):
        asyncio.run(read_body(http_scope(), receive, 1024))
    assert receive.calls == 2


# --- the endpoint through the application --------------------------------------------------


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_client(make_settings: SettingsFactory) -> ClientFactory:
    """A TestClient over the real app with the embedded Receiver (lifespan run)."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        app = create_app(make_settings(**overrides), clock=FixedClock(NOW))
        with TestClient(app) as client:
            yield client

    return make


def post_signed(
    client: TestClient, body: bytes, *, path: str = "/webhooks/customerio", key: str = TEST_KEY
) -> Any:
    headers = signed_headers(body, key=key, timestamp=TIMESTAMP)
    return client.post(path, content=body, headers=headers)


def rejected_samples(text: str) -> dict[tuple[str, str], float]:
    """``ciolake_requests_rejected_total`` by (status, reason), whatever the label order."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ciolake_requests_rejected_total":
                found[sample.labels["status"], sample.labels["reason"]] = sample.value
    return found


def test_webhook_paths_are_the_two_spellings() -> None:
    assert frozenset({"/webhooks/customerio", "/webhook/customerio"}) == WEBHOOK_PATHS


@pytest.mark.parametrize("path", ["/webhooks/customerio", "/webhook/customerio"])
def test_signed_post_is_accepted_on_both_paths(make_client: ClientFactory, path: str) -> None:
    (body,) = sample_bodies(1, seed=1, timestamp=TIMESTAMP)
    with make_client() as client:
        response = post_signed(client, body, path=path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "accepted"}
    assert response.headers["content-length"] == str(len(response.content))


@pytest.mark.parametrize("path", ["/webhooks/customerio", "/webhook/customerio"])
def test_get_on_a_webhook_path_is_method_not_allowed(make_client: ClientFactory, path: str) -> None:
    with make_client() as client:
        response = client.get(path)

    assert response.status_code == 405


def test_wrong_signature_is_401_signature_mismatch(make_client: ClientFactory) -> None:
    (body,) = sample_bodies(1, seed=2, timestamp=TIMESTAMP)
    with make_client() as client:
        response = post_signed(client, body, key="not-the-signing-key")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "signature_mismatch"}


def test_body_over_max_body_bytes_is_413(make_client: ClientFactory) -> None:
    (body,) = sample_bodies(1, seed=3, timestamp=TIMESTAMP)
    with make_client(max_body_bytes=len(body) - 1) as client:
        response = post_signed(client, body)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "body_too_large"


def test_body_of_exactly_max_body_bytes_is_accepted(make_client: ClientFactory) -> None:
    (body,) = sample_bodies(1, seed=3, timestamp=TIMESTAMP)
    with make_client(max_body_bytes=len(body)) as client:
        response = post_signed(client, body)

    assert response.status_code == 200


def test_health_still_answers(make_client: ClientFactory) -> None:
    with make_client() as client:
        response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_metrics_count_every_accepted_and_rejected_request(make_client: ClientFactory) -> None:
    accepted = sample_bodies(5, seed=4, timestamp=TIMESTAMP)
    (oversized,) = sample_bodies(1, seed=5, timestamp=TIMESTAMP)
    max_body = max(len(body) for body in accepted)
    oversized = oversized + b" " * (max_body + 1 - len(oversized))
    rejected_by_reason = {"signature_mismatch": 3, "missing_headers": 2, "body_too_large": 1}

    with make_client(max_body_bytes=max_body) as client:
        for i, body in enumerate(accepted):
            path = sorted(WEBHOOK_PATHS)[i % 2]
            assert post_signed(client, body, path=path).status_code == 200
        for body in accepted[:3]:
            assert post_signed(client, body, key="wrong-key").status_code == 401
        for body in accepted[:2]:
            assert client.post("/webhooks/customerio", content=body).status_code == 401
        assert post_signed(client, oversized).status_code == 413
        text = client.get(f"{ADMIN}/metrics").text

    n, m = len(accepted), sum(rejected_by_reason.values())
    assert metric_value(text, "ciolake_requests_received_total") == n + m
    assert metric_value(text, "ciolake_deliveries_journaled_total") == n
    expected_status = {"signature_mismatch": 401, "missing_headers": 401, "body_too_large": 413}
    assert rejected_samples(text) == {
        (str(expected_status[reason]), reason): count
        for reason, count in rejected_by_reason.items()
    }


# --- 503 when the intake refuses -----------------------------------------------------------


class RefusingIntake:
    """An ``Intake`` whose ``accept`` always raises the given transient error."""

    def __init__(self, settings: Settings, error: TransientError) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.error = error
        self.offered: list[tuple[bytes, Verdict]] = []
        self.opened = False
        self.closed = False

    def open(self) -> None:
        self.opened = True

    async def accept(self, body: bytes, verdict: Verdict) -> None:
        self.offered.append((body, verdict))
        raise self.error

    def readiness(self) -> tuple[bool, str]:
        return False, "refusing"

    def backlog(self) -> tuple[int, int]:
        return 0, 0

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(BacklogFullError("backlog over its bound"), "backlog_full", id="backlog"),
        pytest.param(JournalUnavailableError("disk full"), "journal_unavailable", id="journal"),
    ],
)
def test_refused_delivery_is_503_with_retry_after(
    make_settings: SettingsFactory, error: TransientError, reason: str
) -> None:
    settings = make_settings(retry_after_s=17)
    built: list[RefusingIntake] = []

    def intake(s: Settings, clock: Callable[[], float]) -> RefusingIntake:
        built.append(RefusingIntake(s, error))
        return built[-1]

    (body,) = sample_bodies(1, seed=6, timestamp=TIMESTAMP)
    app = create_app(settings, clock=FixedClock(NOW), intake=intake)
    with TestClient(app) as client:
        response = post_signed(client, body)
        text = client.get(f"{ADMIN}/metrics").text

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == str(settings.retry_after_s) == "17"
    # A reason code only: the exception's text ("disk full") stays in the log.
    assert response.json() == {"error": reason}
    assert str(error) not in response.text
    (fake,) = built
    assert fake.opened
    assert fake.closed
    assert fake.offered == [(body, Verdict(timestamp=TIMESTAMP, stale=False))]
    assert rejected_samples(text) == {("503", reason): 1}
    assert metric_value(text, "ciolake_requests_received_total") == 1
    assert metric_value(text, "ciolake_deliveries_journaled_total") == 0


def test_rejections_other_than_503_carry_no_retry_after(make_client: ClientFactory) -> None:
    (body,) = sample_bodies(1, seed=7, timestamp=TIMESTAMP)
    with make_client() as client:
        response = post_signed(client, body, key="wrong-key")

    assert response.status_code == 401
    assert "retry-after" not in response.headers
