"""A fake of Customer.io's App API (reporting webhooks, and the metrics and deliveries of
``fake_reporting``), served over a real loopback socket.

It answers like the API described in customerio-facts.md and the App API spec: Bearer auth (401
with an ``errors`` body), 400 for a bad body, 404 for an unknown id, ``DELETE`` answering 200 with
an empty body, and 429 with ``Retry-After`` beyond 10 requests per second. Tests can queue 5xx
answers or any other raw answer, read the requests it received, and drive its clock.
"""

from __future__ import annotations

import collections
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.customerio.fake_reporting import FakeReporting

WEBHOOKS_PATH = "/v1/reporting_webhooks"
TEST_API_KEY = "test-app-api-key-5ecret"

# The ``events`` enum of createWebhook in Customer.io's App API spec (journeys-app.json), copied
# rather than imported from ciolake so that the catalog is checked against it, not against itself.
APP_API_EVENT_ENUM: frozenset[str] = frozenset(
    [
        "customer_subscribed",
        "customer_unsubscribed",
        "customer_subscription_preferences_changed",
        "email_drafted",
        "email_attempted",
        "email_sent",
        "email_delivered",
        "email_opened",
        "email_clicked",
        "email_converted",
        "email_bounced",
        "email_dropped",
        "email_deferred",
        "email_spammed",
        "email_failed",
        "email_unsubscribed",
        "email_undeliverable",
        "in_app_drafted",
        "in_app_attempted",
        "in_app_sent",
        "in_app_opened",
        "in_app_clicked",
        "in_app_converted",
        "in_app_failed",
        "in_app_undeliverable",
        "push_drafted",
        "push_attempted",
        "push_sent",
        "push_delivered",
        "push_opened",
        "push_clicked",
        "push_converted",
        "push_bounced",
        "push_dropped",
        "push_failed",
        "push_undeliverable",
        "slack_drafted",
        "slack_attempted",
        "slack_sent",
        "slack_clicked",
        "slack_converted",
        "slack_failed",
        "sms_drafted",
        "sms_attempted",
        "sms_sent",
        "sms_delivered",
        "sms_clicked",
        "sms_converted",
        "sms_bounced",
        "sms_dropped",
        "sms_failed",
        "sms_undeliverable",
        "sms_replied",
        "whatsapp_drafted",
        "whatsapp_attempted",
        "whatsapp_sent",
        "whatsapp_delivered",
        "whatsapp_opened",
        "whatsapp_clicked",
        "whatsapp_converted",
        "whatsapp_bounced",
        "whatsapp_dropped",
        "whatsapp_failed",
        "whatsapp_undeliverable",
        "whatsapp_replied",
        "webhook_drafted",
        "webhook_attempted",
        "webhook_sent",
        "webhook_clicked",
        "webhook_converted",
        "webhook_failed",
        "webhook_undeliverable",
    ]
)
_BOOLEAN_FIELDS = ("disabled", "full_resolution", "with_content")


class FakeClock:
    """A clock that only moves when slept on; shared by a client and the fake, tests are instant.

    Attributes:
        sleeps: every duration passed to ``sleep``, in order.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the current fake time in seconds."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move the clock forward by it."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, and the status it answered."""

    method: str
    path: str
    body: bytes
    authorization: str | None
    status: int

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_answer(status: int, payload: object, **headers: str) -> _Answer:
    return _Answer(status, json.dumps(payload).encode(), headers)


def _error_answer(status: int, *details: str, **headers: str) -> _Answer:
    errors = [{"detail": detail, "status": str(status)} for detail in details]
    return _json_answer(status, {"errors": errors}, **headers)


class FakeAppApi:
    """The fake server: in-memory webhooks, a request log, injectable failures.

    Args:
        api_key: the only App API key it accepts.
        rate_limit_per_s: requests allowed in any one-second window; None for no limit.
        retry_after_s: the ``Retry-After`` it sends with a 429.
        clock: the time the rate limit is measured on (``time.monotonic`` if None).
        wall_clock: unix seconds "now", for the metrics that end today.
    """

    def __init__(
        self,
        *,
        api_key: str = TEST_API_KEY,
        rate_limit_per_s: int | None = 10,
        retry_after_s: int = 1,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.rate_limit_per_s = rate_limit_per_s
        self.retry_after_s = retry_after_s
        self._clock = time.monotonic if clock is None else clock
        self._lock = threading.Lock()
        self._webhooks: dict[int, dict[str, Any]] = {}
        self._next_id = 1
        self._requests: list[RecordedRequest] = []
        self._recent: collections.deque[float] = collections.deque()
        self._queued: collections.deque[_Answer] = collections.deque()
        self.reporting = FakeReporting(wall_clock=wall_clock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Life cycle --------------------------------------------------------------------------------

    def start(self) -> FakeAppApi:
        """Listen on a free loopback port and serve in a background thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # Test controls ------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` authenticated requests with ``status`` (a 5xx)."""
        answer = _error_answer(status, "internal server error (reference fake)")
        with self._lock:
            self._queued.extend([answer] * count)

    def answer_next(self, body: bytes, status: int = 200, count: int = 1) -> None:
        """Answer the next ``count`` authenticated requests with this raw body and status."""
        with self._lock:
            self._queued.extend([_Answer(status, body)] * count)

    def seed(self, **webhook: Any) -> dict[str, Any]:
        """Store a webhook without a request (defaults filled in) and return it with its id."""
        with self._lock:
            return self._store(None, webhook)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request received so far."""
        return [(r.method, r.path) for r in self.requests]

    def clear_requests(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._requests.clear()

    @property
    def webhooks(self) -> dict[int, dict[str, Any]]:
        """A copy of the stored webhooks by id."""
        with self._lock:
            return {key: dict(value) for key, value in self._webhooks.items()}

    # Serving ------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes, authorization: str | None) -> _Answer:
        """Answer one request and record it."""
        with self._lock:
            answer = self._answer(method, path, body, authorization)
            self._requests.append(RecordedRequest(method, path, body, authorization, answer.status))
            return answer

    def _answer(self, method: str, path: str, body: bytes, authorization: str | None) -> _Answer:
        if self._over_rate_limit():
            return _error_answer(
                429,
                f"rate limited to {self.rate_limit_per_s} requests per 1s (reference fake)",
                **{"Retry-After": str(self.retry_after_s)},
            )
        if authorization != f"Bearer {self.api_key}":
            return _error_answer(401, "unauthorized: invalid or missing App API key")
        if self._queued:
            return self._queued.popleft()
        if self.reporting.handles(urlsplit(path).path.rstrip("/")):
            status, payload = self.reporting.answer(method, path)
            return _json_answer(status, payload)
        return self._route(method, urlsplit(path).path.rstrip("/"), body)

    def _over_rate_limit(self) -> bool:
        if self.rate_limit_per_s is None:
            return False
        now = self._clock()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit_per_s:
            return True
        self._recent.append(now)
        return False

    def _route(self, method: str, path: str, body: bytes) -> _Answer:
        if path == WEBHOOKS_PATH:
            if method == "GET":
                return _json_answer(200, {"reporting_webhooks": list(self._webhooks.values())})
            if method == "POST":
                return self._create(body)
            return _error_answer(405, "method not allowed")
        prefix = WEBHOOKS_PATH + "/"
        if not path.startswith(prefix) or not path[len(prefix) :].isdigit():
            return _error_answer(404, "not found")
        webhook_id = int(path[len(prefix) :])
        if webhook_id not in self._webhooks:
            return _error_answer(404, f"webhook {webhook_id} not found")
        if method == "GET":
            return _json_answer(200, self._webhooks[webhook_id])
        if method == "PUT":
            return self._replace(webhook_id, body)
        if method == "DELETE":
            del self._webhooks[webhook_id]
            return _Answer(200)
        return _error_answer(405, "method not allowed")

    def _create(self, body: bytes) -> _Answer:
        fields, problems = _parse_webhook(body)
        if problems:
            return _error_answer(400, *problems)
        return _json_answer(200, self._store(None, fields))

    def _replace(self, webhook_id: int, body: bytes) -> _Answer:
        fields, problems = _parse_webhook(body)
        if problems:
            return _error_answer(400, *problems)
        return _json_answer(200, self._store(webhook_id, fields))

    def _store(self, webhook_id: int | None, fields: dict[str, Any]) -> dict[str, Any]:
        if webhook_id is None:
            webhook_id = self._next_id
            self._next_id += 1
        # PUT is a full replace: a field left out goes back to its default.
        stored = {
            "id": webhook_id,
            "type": "webhook",
            "name": fields["name"],
            "endpoint": fields["endpoint"],
            "events": list(fields["events"]),
            **{name: bool(fields.get(name, False)) for name in _BOOLEAN_FIELDS},
        }
        self._webhooks[webhook_id] = stored
        return dict(stored)


def _parse_webhook(body: bytes) -> tuple[dict[str, Any], list[str]]:
    try:
        fields = json.loads(body)
    except ValueError:
        return {}, ["the request body is not valid JSON"]
    if not isinstance(fields, dict):
        return {}, ["the request body must be a JSON object"]
    return fields, _problems(fields)


def _problems(fields: dict[str, Any]) -> list[str]:
    problems = []
    for name in ("name", "endpoint"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            problems.append(f"{name} is required")
    endpoint = fields.get("endpoint")
    if (
        isinstance(endpoint, str)
        and endpoint
        and urlsplit(endpoint).scheme not in ("http", "https")
    ):
        problems.append("endpoint must be a URL")
    events = fields.get("events")
    if not isinstance(events, list) or not events:
        problems.append("events is required and must not be empty")
    else:
        unknown = [e for e in events if e not in APP_API_EVENT_ENUM]
        if unknown:
            problems.append(f"events contains unknown event types: {', '.join(map(str, unknown))}")
    problems.extend(
        f"{name} must be a boolean"
        for name in _BOOLEAN_FIELDS
        if name in fields and not isinstance(fields[name], bool)
    )
    return problems


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAppApi


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY each answer waits for
    # the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.fake.handle(
            self.command, self.path, body, self.headers.get("Authorization")
        )
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""
