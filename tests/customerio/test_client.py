"""The App API client, over a real loopback socket against the fake App API."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ciolake.customerio.client import (
    API_KEY_ENV,
    ApiConnectionError,
    ApiTimeoutError,
    AppApiClient,
    AppApiError,
    AuthenticationError,
    BadRequestError,
    InsecureBaseUrlError,
    MissingApiKeyError,
    NotFoundError,
    RateLimitedError,
    ReportingWebhook,
    Secret,
    ServerError,
    UnexpectedResponseError,
    resolve_base_url,
)
from ciolake.customerio.events_catalog import EVENT_NAMES, UnknownEventError
from ciolake.errors import ConfigurationError, TerminalError, TransientError
from tests.customerio.conftest import MakeFake
from tests.customerio.fake_app_api import TEST_API_KEY, FakeAppApi, FakeClock

PATH = "/v1/reporting_webhooks"


def _webhook(**overrides: object) -> ReportingWebhook:
    fields: dict[str, object] = {
        "name": "ciolake",
        "endpoint": "https://lake.example.com/webhooks/customerio",
        "events": ("email_opened", "email_clicked"),
    }
    fields.update(overrides)
    return ReportingWebhook(**fields)  # type: ignore[arg-type]


def _client(fake: FakeAppApi, clock: FakeClock, **kwargs: object) -> AppApiClient:
    return AppApiClient(
        str(kwargs.pop("api_key", TEST_API_KEY)),
        base_url=fake.base_url,
        clock=clock.now,
        sleep=clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )


# CRUD --------------------------------------------------------------------------------------------


def test_create_returns_the_stored_webhook_and_sends_only_writable_fields(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    created = client.reporting_webhooks.create(_webhook(full_resolution=True, id=99, type="js"))

    assert created.id == 1
    assert created.type == "webhook"
    assert created.full_resolution is True
    assert set(created.events) == {"email_opened", "email_clicked"}
    (request,) = app_api.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert request.json() == {
        "name": "ciolake",
        "endpoint": "https://lake.example.com/webhooks/customerio",
        "events": ["email_opened", "email_clicked"],
        "disabled": False,
        "full_resolution": True,
        "with_content": False,
    }
    assert request.authorization == f"Bearer {TEST_API_KEY}"


def test_list_and_get(client: AppApiClient, app_api: FakeAppApi) -> None:
    first = app_api.seed(name="a", endpoint="https://a.example/x", events=["sms_sent"])
    app_api.seed(name="b", endpoint="https://b.example/x", events=["push_opened"], disabled=True)

    listed = client.reporting_webhooks.list()
    fetched = client.reporting_webhooks.get(first["id"])

    assert [(w.name, w.disabled) for w in listed] == [("a", False), ("b", True)]
    assert fetched == listed[0]
    assert fetched.events == ("sms_sent",)
    assert app_api.calls() == [("GET", PATH), ("GET", f"{PATH}/{first['id']}")]


def test_list_of_an_empty_workspace(client: AppApiClient) -> None:
    assert client.reporting_webhooks.list() == []


@pytest.mark.parametrize("body", [b"{}", b'{"webhooks": []}', b"<html>proxy</html>"])
def test_a_list_answer_of_another_shape_is_unexpected_not_empty(
    client: AppApiClient, app_api: FakeAppApi, body: bytes
) -> None:
    app_api.answer_next(body)

    with pytest.raises(UnexpectedResponseError) as caught:
        client.reporting_webhooks.list()

    assert f"the App API at {app_api.base_url} answered something unexpected" in str(caught.value)


def test_update_is_a_full_replace(client: AppApiClient, app_api: FakeAppApi) -> None:
    seeded = app_api.seed(
        name="a", endpoint="https://a.example/x", events=["sms_sent"], with_content=True
    )

    updated = client.reporting_webhooks.update(
        seeded["id"], _webhook(name="renamed", events=("sms_sent", "sms_replied"))
    )

    assert updated.name == "renamed"
    assert updated.with_content is False
    assert app_api.webhooks[seeded["id"]]["events"] == ["sms_sent", "sms_replied"]
    (request,) = app_api.requests
    assert (request.method, request.path) == ("PUT", f"{PATH}/{seeded['id']}")
    assert set(request.json()) == {
        "name",
        "endpoint",
        "events",
        "disabled",
        "full_resolution",
        "with_content",
    }


def test_delete_then_get_is_not_found_with_the_api_detail(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    seeded = app_api.seed(name="a", endpoint="https://a.example/x", events=["sms_sent"])

    client.reporting_webhooks.delete(seeded["id"])
    assert app_api.webhooks == {}
    with pytest.raises(NotFoundError) as caught:
        client.reporting_webhooks.get(seeded["id"])

    error = caught.value
    assert isinstance(error, TerminalError)
    assert error.status == 404
    assert error.details == (f"webhook {seeded['id']} not found",)
    assert f"webhook {seeded['id']} not found" in str(error)
    assert [r.status for r in app_api.requests] == [200, 404]


def test_delete_unknown_id_is_not_found(client: AppApiClient) -> None:
    with pytest.raises(NotFoundError):
        client.reporting_webhooks.delete(12345)


# Errors ------------------------------------------------------------------------------------------


def test_bad_body_is_a_bad_request_carrying_the_detail(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.reporting_webhooks.create(_webhook(endpoint="ftp://files.example/x", name=""))

    assert caught.value.status == 400
    assert caught.value.details == ("name is required", "endpoint must be a URL")
    assert "name is required; endpoint must be a URL" in str(caught.value)
    assert app_api.webhooks == {}


def test_unknown_events_are_refused_before_any_request(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    with pytest.raises(UnknownEventError) as caught:
        client.reporting_webhooks.create(_webhook(events=("email_opened", "email_openned")))
    with pytest.raises(UnknownEventError):
        client.reporting_webhooks.update(1, _webhook(events=("email",)))  # a group, not a name

    assert caught.value.unknown == ("email_openned",)
    assert app_api.requests == []


def test_every_catalog_name_is_accepted_by_the_api(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    created = client.reporting_webhooks.create(_webhook(events=tuple(sorted(EVENT_NAMES))))

    assert set(created.events) == EVENT_NAMES
    assert [r.status for r in app_api.requests] == [200]


def test_wrong_key_is_an_authentication_error_without_the_key(
    app_api: FakeAppApi, fake_clock: FakeClock
) -> None:
    wrong_key = "wrong-key-SENTINEL-7f3a"
    with _client(app_api, fake_clock, api_key=wrong_key) as api:
        with pytest.raises(AuthenticationError) as caught:
            api.reporting_webhooks.list()
        client_repr = repr(api)

    error = caught.value
    assert isinstance(error, TerminalError)
    assert error.status == 401
    assert error.details == ("unauthorized: invalid or missing App API key",)
    assert len(app_api.requests) == 1  # a 401 is not retried
    for text in (str(error), repr(error), client_repr, repr(error.args)):
        assert wrong_key not in text
    assert app_api.requests[0].authorization == f"Bearer {wrong_key}"


def test_key_is_hidden_from_repr_and_str() -> None:
    secret = Secret("sk-SENTINEL")
    with AppApiClient("sk-SENTINEL", base_url="http://127.0.0.1:9") as api:
        texts = [repr(api), str(api), repr(vars(api)), repr(secret), str(secret), f"{secret}"]

    assert all("sk-SENTINEL" not in text for text in texts)
    assert secret.reveal() == "sk-SENTINEL"


# Retries and rate limits -------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(
    make_fake_app_api: MakeFake, fake_clock: FakeClock
) -> None:
    fake = make_fake_app_api(rate_limit_per_s=2, retry_after_s=3, clock=fake_clock.now)
    # A client allowing itself far more than the API, to meet the API's limit.
    with _client(fake, fake_clock, rate_per_s=1000.0) as api:
        for _ in range(3):
            api.reporting_webhooks.list()

    assert [r.status for r in fake.requests] == [200, 200, 429, 200]
    assert 3.0 in fake_clock.sleeps
    assert sum(fake_clock.sleeps) >= 3.0


def test_429_without_end_raises_rate_limited_after_bounded_attempts(
    make_fake_app_api: MakeFake, fake_clock: FakeClock
) -> None:
    fake = make_fake_app_api(rate_limit_per_s=0, retry_after_s=1, clock=fake_clock.now)
    with (
        _client(fake, fake_clock, max_attempts=3) as api,
        pytest.raises(RateLimitedError) as caught,
    ):
        api.reporting_webhooks.list()

    error = caught.value
    assert isinstance(error, TransientError)
    assert not isinstance(error, TerminalError)
    assert error.retry_after_s == 1.0
    assert error.details == ("rate limited to 0 requests per 1s (reference fake)",)
    assert len(fake.requests) == 3
    assert [s for s in fake_clock.sleeps if s >= 1.0] == [1.0, 1.0]


def test_retry_after_beyond_the_longest_wait_fails_at_once(
    make_fake_app_api: MakeFake, fake_clock: FakeClock
) -> None:
    fake = make_fake_app_api(rate_limit_per_s=0, retry_after_s=3600, clock=fake_clock.now)
    with _client(fake, fake_clock) as api, pytest.raises(RateLimitedError) as caught:
        api.reporting_webhooks.list()

    assert caught.value.retry_after_s == 3600.0
    assert len(fake.requests) == 1
    assert fake_clock.sleeps == []


def test_client_spaces_requests_under_ten_per_second(
    client: AppApiClient, app_api: FakeAppApi, fake_clock: FakeClock
) -> None:
    start = fake_clock.now()
    for _ in range(25):
        client.reporting_webhooks.list()

    assert [r.status for r in app_api.requests] == [200] * 25
    assert fake_clock.now() - start == pytest.approx(2.4)
    assert all(s == pytest.approx(0.1) for s in fake_clock.sleeps)


def test_5xx_is_retried_with_exponential_backoff(
    client: AppApiClient, app_api: FakeAppApi, fake_clock: FakeClock
) -> None:
    seeded = app_api.seed(name="a", endpoint="https://a.example/x", events=["sms_sent"])
    app_api.fail_next(3, status=503)

    fetched = client.reporting_webhooks.get(seeded["id"])

    assert fetched.name == "a"
    assert [r.status for r in app_api.requests] == [503, 503, 503, 200]
    backoffs = [s for s in fake_clock.sleeps if s >= 0.5]
    assert backoffs == [0.5, 1.0, 2.0]


def test_5xx_every_time_raises_a_transient_server_error(
    client: AppApiClient, app_api: FakeAppApi
) -> None:
    app_api.fail_next(10, status=502)

    with pytest.raises(ServerError) as caught:
        client.reporting_webhooks.list()

    assert isinstance(caught.value, TransientError)
    assert caught.value.status == 502
    assert caught.value.details == ("internal server error (reference fake)",)
    assert len(app_api.requests) == 4


def test_post_is_not_retried_on_5xx(client: AppApiClient, app_api: FakeAppApi) -> None:
    # The API may have created the webhook before failing: a retry could create a second one.
    app_api.fail_next(1, status=500)

    with pytest.raises(ServerError):
        client.reporting_webhooks.create(_webhook())

    assert app_api.calls() == [("POST", PATH)]


def test_post_is_retried_on_429(make_fake_app_api: MakeFake, fake_clock: FakeClock) -> None:
    fake = make_fake_app_api(rate_limit_per_s=1, clock=fake_clock.now)
    with _client(fake, fake_clock, rate_per_s=1000.0) as api:
        api.reporting_webhooks.list()
        created = api.reporting_webhooks.create(_webhook())

    assert created.id == 1
    assert [(r.method, r.status) for r in fake.requests] == [
        ("GET", 200),
        ("POST", 429),
        ("POST", 200),
    ]
    assert len(fake.webhooks) == 1


def test_unreachable_api_is_a_transient_connection_error(
    make_fake_app_api: MakeFake, fake_clock: FakeClock
) -> None:
    fake = make_fake_app_api()
    closed_url = fake.base_url
    fake.stop()

    with (
        AppApiClient(
            "k", base_url=closed_url, clock=fake_clock.now, sleep=fake_clock.sleep, max_attempts=2
        ) as api,
        pytest.raises(ApiConnectionError) as caught,
    ):
        api.reporting_webhooks.list()

    assert isinstance(caught.value, TransientError)
    assert caught.value.status is None
    assert [s for s in fake_clock.sleeps if s >= 0.5] == [0.5]


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL whose socket accepts connections (in its backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_silent_api_costs_one_timeout_not_one_per_attempt(
    silent_url: str, fake_clock: FakeClock
) -> None:
    started = time.monotonic()
    with (
        AppApiClient("k", base_url=silent_url, timeout_s=0.3, sleep=fake_clock.sleep) as api,
        pytest.raises(ApiTimeoutError) as caught,
    ):
        api.reporting_webhooks.list()

    assert time.monotonic() - started < 3.0
    assert isinstance(caught.value, ApiConnectionError)
    assert caught.value.timeout_s == 0.3
    assert f"no answer from the App API at {silent_url} within 0.3s" in str(caught.value)
    assert fake_clock.sleeps == []  # no backoff: not retried


def test_messages_never_show_a_password_of_the_base_url(fake_clock: FakeClock) -> None:
    with (
        AppApiClient(
            "k",
            base_url="http://user:pa55word-SENTINEL@127.0.0.1:9",
            sleep=fake_clock.sleep,
            max_attempts=1,
        ) as api,
        pytest.raises(ApiConnectionError) as caught,
    ):
        api.reporting_webhooks.list()

    assert "at http://127.0.0.1:9 (" in str(caught.value)
    assert "pa55word-SENTINEL" not in str(caught.value)


# Configuration -----------------------------------------------------------------------------------


def test_regions_choose_the_base_url() -> None:
    with AppApiClient("k") as us, AppApiClient("k", region="eu") as eu:
        assert us.base_url == "https://api.customer.io"
        assert eu.base_url == "https://api-eu.customer.io"
    assert resolve_base_url("eu", "https://proxy.example/") == "https://proxy.example"
    with pytest.raises(ConfigurationError, match="unknown region 'au'"):
        resolve_base_url("au", None)


def test_plain_http_base_url_only_for_loopback_unless_allowed() -> None:
    assert resolve_base_url("us", "http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert resolve_base_url("us", "http://localhost:8000") == "http://localhost:8000"
    with pytest.raises(InsecureBaseUrlError):
        resolve_base_url("us", "http://proxy.example")
    assert resolve_base_url("us", "http://proxy.example", allow_http=True) == "http://proxy.example"
    with pytest.raises(ConfigurationError, match="invalid base URL"):
        resolve_base_url("us", "api.customer.io")


def test_requests_go_to_the_override_whatever_the_region(
    app_api: FakeAppApi, fake_clock: FakeClock
) -> None:
    with AppApiClient(
        TEST_API_KEY, region="eu", base_url=app_api.base_url, sleep=fake_clock.sleep
    ) as api:
        api.reporting_webhooks.list()

    assert api.base_url == app_api.base_url
    assert app_api.calls() == [("GET", PATH)]


def test_from_env_reads_the_key(app_api: FakeAppApi) -> None:
    with AppApiClient.from_env(
        {API_KEY_ENV: f" {TEST_API_KEY}\n"}, base_url=app_api.base_url
    ) as api:
        api.reporting_webhooks.list()

    assert app_api.requests[0].authorization == f"Bearer {TEST_API_KEY}"
    assert app_api.requests[0].status == 200


@pytest.mark.parametrize("environ", [{}, {API_KEY_ENV: "  "}])
def test_from_env_without_a_key_names_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(MissingApiKeyError, match=API_KEY_ENV):
        AppApiClient.from_env(environ)


def test_error_tree() -> None:
    assert issubclass(AuthenticationError, AppApiError)
    assert issubclass(AuthenticationError, TerminalError)
    assert issubclass(RateLimitedError, TransientError)
    assert not issubclass(RateLimitedError, TerminalError)
    assert issubclass(MissingApiKeyError, ConfigurationError)
