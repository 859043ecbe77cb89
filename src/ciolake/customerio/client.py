"""A client for the part of Customer.io's App API that manages reporting webhooks.

After the model of svix's client: every HTTP call goes through one ``_request`` method, which
spaces requests under the API's rate limit, retries what may succeed later (429, 5xx, refused
connections) with exponential backoff for a bounded number of attempts, and turns every failure
into a typed error carrying the API's ``errors[].detail``. Every attempt is bounded by a connect
and read timeout, and a timeout is not retried, so that a silent server costs one timeout. One
class per resource (``ReportingWebhooks``) holds the paths and the bodies.

The App API key is a secret: it is held in a ``Secret`` (whose repr hides it), sent only in the
``Authorization`` header, and never put in a message, a repr or a log line.
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from ciolake.customerio.events_catalog import EVENT_NAMES, UnknownEventError
from ciolake.errors import CiolakeError, ConfigurationError, TerminalError, TransientError

API_KEY_ENV: Final = "CIOLAKE_CIO_APP_API_KEY"
REGION_BASE_URLS: Final[Mapping[str, str]] = {
    "us": "https://api.customer.io",
    "eu": "https://api-eu.customer.io",
}
RATE_LIMIT_PER_S: Final = 10.0
_WEBHOOKS_PATH: Final = "/v1/reporting_webhooks"
_IDEMPOTENT_METHODS: Final = frozenset({"GET", "PUT", "DELETE"})
_USER_AGENT: Final = "ciolake-app-api-client"

Clock = Callable[[], float]
_T = TypeVar("_T")
Sleep = Callable[[float], None]


# Errors ---------------------------------------------------------------------------------------


class AppApiError(CiolakeError):
    """Root of every error from the App API; it is either terminal or transient below.

    Attributes:
        status: the HTTP status, or None when no answer came.
        details: the ``errors[].detail`` texts of the answer (empty when it carried none).
        method: the HTTP method of the request.
        path: the request path (ids only, never credentials).
    """

    def __init__(
        self, summary: str, *, method: str, path: str, status: int | None, details: tuple[str, ...]
    ) -> None:
        self.status = status
        self.details = details
        self.method = method
        self.path = path
        status_text = f" ({status})" if status is not None else ""
        detail_text = f": {'; '.join(details)}" if details else ""
        super().__init__(f"{method} {path}: {summary}{status_text}{detail_text}")


class AppApiRequestError(AppApiError, TerminalError):
    """The API refused the request; sending it again would fail the same way."""


class AuthenticationError(AppApiRequestError):
    """The App API key is wrong, revoked, or lacks the scope (401, 403)."""


class BadRequestError(AppApiRequestError):
    """The API rejected the body (400, 422)."""


class NotFoundError(AppApiRequestError):
    """No such webhook (404)."""


class UnexpectedResponseError(AppApiRequestError):
    """Any other refusal, or an answer this client cannot read."""


class AppApiUnavailableError(AppApiError, TransientError):
    """The API could not be reached or answered, still, after every attempt."""


class RateLimitedError(AppApiUnavailableError):
    """Still rate limited (429) after every attempt.

    Attributes:
        retry_after_s: the last ``Retry-After`` the API sent, in seconds, if any.
    """

    def __init__(self, summary: str, *, retry_after_s: float | None, **kwargs: Any) -> None:
        super().__init__(summary, **kwargs)
        self.retry_after_s = retry_after_s


class ServerError(AppApiUnavailableError):
    """The API answered 5xx on every attempt."""


class ApiConnectionError(AppApiUnavailableError):
    """The API could not be reached (DNS, refused connection, timeout, TLS)."""


class ApiTimeoutError(ApiConnectionError):
    """The API did not connect or answer within the timeout.

    Attributes:
        timeout_s: the connect and read timeout that ran out, in seconds.
    """

    def __init__(self, summary: str, *, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(summary, **kwargs)
        self.timeout_s = timeout_s


class MissingApiKeyError(ConfigurationError):
    """No App API key is configured."""


class InsecureBaseUrlError(ConfigurationError):
    """The base URL would send the API key in clear text to another machine."""


# The resource -----------------------------------------------------------------------------------


class ReportingWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """A reporting webhook as the App API describes it.

    ``id`` and ``type`` (``webhook`` or ``js``) are read-only: set by Customer.io, never sent.
    ``full_resolution`` false means only unique opens and clicks are sent.
    """

    name: str
    endpoint: str
    events: tuple[str, ...]
    disabled: bool = False
    full_resolution: bool = False
    with_content: bool = False
    id: int | None = None
    type: str | None = None


WRITABLE_FIELDS: Final = (
    "name",
    "endpoint",
    "events",
    "disabled",
    "full_resolution",
    "with_content",
)


class _WebhookList(msgspec.Struct):
    # Required: an answer without it is not the App API's (a proxy, a wrong --base-url), and
    # reading it as "no webhooks" would hide that.
    reporting_webhooks: builtins.list[ReportingWebhook]


class _ErrorItem(msgspec.Struct):
    detail: str | None = None
    status: str | None = None


class _ErrorBody(msgspec.Struct):
    errors: builtins.list[_ErrorItem] = msgspec.field(default_factory=list)


class Secret:
    """A string that does not show itself in reprs, tracebacks or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; only for the place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


class RateLimiter:
    """Spaces calls evenly so that no window of one second holds more than ``per_second``.

    Even spacing, unlike a bucket that allows bursts, also holds under a sliding-window limit.
    """

    def __init__(self, per_second: float, *, clock: Clock, sleep: Sleep) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next_at: float | None = None

    def wait(self) -> None:
        """Block until the next call may start."""
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            self._sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self._interval


class AppApiClient:
    """A synchronous App API client for one workspace region.

    Args:
        api_key: the App API key (a bearer token).
        region: ``us`` or ``eu``; picks the base URL.
        base_url: overrides the region's base URL (a proxy, a test server).
        allow_http: allow a plain-http ``base_url`` on a non-loopback host.
        max_attempts: attempts per call, first one included, for retryable failures.
        backoff_base_s: the first backoff; it doubles with each attempt.
        backoff_max_s: the longest backoff, and the longest ``Retry-After`` honoured; a longer
            one (a daily quota) fails at once with ``RateLimitedError``.
        rate_per_s: requests per second this client allows itself.
        timeout_s: connect and read timeout of each attempt.
        clock: monotonic seconds (``time.monotonic`` if None).
        sleep: blocks for the given seconds (``time.sleep`` if None).
        transport: an httpx transport, for tests or proxies.

    Raises:
        ConfigurationError: unknown region, empty key, or an unusable base URL.
    """

    def __init__(
        self,
        api_key: str,
        *,
        region: str = "us",
        base_url: str | None = None,
        allow_http: bool = False,
        max_attempts: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rate_per_s: float = RATE_LIMIT_PER_S,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key.strip():
            raise MissingApiKeyError(f"the App API key is empty; set {API_KEY_ENV}")
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self._key = Secret(api_key.strip())
        self.base_url = resolve_base_url(region, base_url, allow_http=allow_http)
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep: Sleep = time.sleep if sleep is None else sleep
        self._limiter = RateLimiter(
            rate_per_s, clock=time.monotonic if clock is None else clock, sleep=self._sleep
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )
        self.reporting_webhooks = ReportingWebhooks(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> AppApiClient:
        """Build a client with the key from ``CIOLAKE_CIO_APP_API_KEY``.

        Args:
            environ: the environment to read (``os.environ`` if None).
            **kwargs: the other constructor arguments.

        Raises:
            MissingApiKeyError: the variable is unset or blank.
        """
        env = os.environ if environ is None else environ
        if not env.get(API_KEY_ENV, "").strip():
            raise MissingApiKeyError(
                f"{API_KEY_ENV} is not set: create an App API key in Customer.io "
                "(account settings, API Credentials, App API Keys) and export it"
            )
        return cls(env[API_KEY_ENV], **kwargs)

    def __repr__(self) -> str:
        return f"AppApiClient(base_url={self.base_url!r})"

    def __enter__(self) -> AppApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str | int] | None = None,
    ) -> bytes:
        """Send one API call, retrying what may pass later; return the body of the 2xx answer.

        POST is retried only when the API cannot have acted on it (429, no connection), so that
        a retry never creates a second webhook.
        """
        content = None if body is None else msgspec.json.encode(body)
        retry_server_errors = method in _IDEMPOTENT_METHODS
        attempt = 1
        while True:
            self._limiter.wait()
            try:
                response = self._send(method, path, content, params)
            except httpx.TransportError as exc:
                failure: AppApiError = self._connection_error(method, path, exc)
                delay: float | None = None
                # A timeout has already waited as long as allowed: waiting again would multiply
                # what a silent server costs the user.
                if not isinstance(exc, httpx.TimeoutException) and (
                    retry_server_errors or isinstance(exc, httpx.ConnectError)
                ):
                    delay = self._backoff(attempt)
            else:
                if response.is_success:
                    return response.content
                failure = _error_from(method, path, response)
                delay = self._retry_delay(failure, attempt, retry_server_errors)
            if delay is None or attempt >= self._max_attempts:
                raise failure
            self._sleep(delay)
            attempt += 1

    def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, str | int] | None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        return self._http.request(
            method, path, content=content, headers=headers, params=dict(params or {})
        )

    def _connection_error(self, method: str, path: str, exc: httpx.TransportError) -> AppApiError:
        # The exception text names the failure (refused, timed out), never the headers.
        where = _display_url(self.base_url)
        context: dict[str, Any] = {"method": method, "path": path, "status": None, "details": ()}
        if isinstance(exc, httpx.TimeoutException):
            return ApiTimeoutError(
                f"no answer from the App API at {where} within {self._timeout_s:g}s",
                timeout_s=self._timeout_s,
                **context,
            )
        reason = str(exc) or type(exc).__name__
        return ApiConnectionError(f"could not reach the App API at {where} ({reason})", **context)

    def _retry_delay(self, failure: AppApiError, attempt: int, idempotent: bool) -> float | None:
        if isinstance(failure, RateLimitedError):
            if failure.retry_after_s is None:
                return self._backoff(attempt)
            if failure.retry_after_s > self._backoff_max_s:
                return None
            return failure.retry_after_s
        if isinstance(failure, ServerError) and idempotent:
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        return float(min(self._backoff_base_s * 2 ** (attempt - 1), self._backoff_max_s))


class ReportingWebhooks:
    """The reporting-webhook resource: ``/v1/reporting_webhooks``."""

    def __init__(self, client: AppApiClient) -> None:
        self._client = client

    def list(self) -> builtins.list[ReportingWebhook]:
        """Return every reporting webhook of the workspace."""
        raw = self._client._request("GET", _WEBHOOKS_PATH)
        return self._decode(raw, _WebhookList, "GET", _WEBHOOKS_PATH).reporting_webhooks

    def get(self, webhook_id: int) -> ReportingWebhook:
        """Return one webhook.

        Raises:
            NotFoundError: no webhook has this id.
        """
        path = _item_path(webhook_id)
        return self._decode(self._client._request("GET", path), ReportingWebhook, "GET", path)

    def create(self, webhook: ReportingWebhook) -> ReportingWebhook:
        """Create a webhook and return it as stored, with its ``id``.

        Raises:
            UnknownEventError: ``events`` names an event the API does not know (nothing is sent).
            BadRequestError: the API rejected the body.
        """
        body = writable_body(webhook)
        raw = self._client._request("POST", _WEBHOOKS_PATH, body=body)
        return self._decode(raw, ReportingWebhook, "POST", _WEBHOOKS_PATH)

    def update(self, webhook_id: int, webhook: ReportingWebhook) -> ReportingWebhook:
        """Replace every writable field of a webhook (PUT) and return it as stored.

        Raises:
            UnknownEventError: ``events`` names an event the API does not know (nothing is sent).
            NotFoundError: no webhook has this id.
            BadRequestError: the API rejected the body.
        """
        path = _item_path(webhook_id)
        raw = self._client._request("PUT", path, body=writable_body(webhook))
        return self._decode(raw, ReportingWebhook, "PUT", path)

    def delete(self, webhook_id: int) -> None:
        """Delete a webhook.

        Raises:
            NotFoundError: no webhook has this id.
        """
        self._client._request("DELETE", _item_path(webhook_id))

    def _decode(self, raw: bytes, kind: type[_T], method: str, path: str) -> _T:
        return decode_answer(self._client, raw, kind, method=method, path=path)


def decode_answer(
    client: AppApiClient, raw: bytes, kind: type[_T], *, method: str, path: str
) -> _T:
    """An answer's body as ``kind``.

    Raises:
        UnexpectedResponseError: the body is not what the App API answers.
    """
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        where = _display_url(client.base_url)
        raise UnexpectedResponseError(
            f"the App API at {where} answered something unexpected ({exc})",
            method=method,
            path=path,
            status=None,
            details=(),
        ) from None


def resolve_base_url(region: str, base_url: str | None, *, allow_http: bool = False) -> str:
    """The App API base URL: the override if given, else the region's.

    Raises:
        ConfigurationError: unknown region, or a base URL that is not http(s).
        InsecureBaseUrlError: plain http to a non-loopback host without ``allow_http``.
    """
    if base_url is None:
        if region not in REGION_BASE_URLS:
            known = ", ".join(REGION_BASE_URLS)
            raise ConfigurationError(f"unknown region {region!r}; expected one of: {known}")
        return REGION_BASE_URLS[region]
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"invalid base URL {base_url!r}: expected http(s)://host")
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise InsecureBaseUrlError(
            f"refusing to send the App API key over plain http to {parts.hostname}; "
            "use https or allow http explicitly"
        )
    return base_url.rstrip("/")


def writable_body(webhook: ReportingWebhook) -> dict[str, object]:
    """The JSON body for create and update: the writable fields, events checked.

    Raises:
        UnknownEventError: an event name is not in the App API's catalog.
    """
    # Groups such as "email" are a command-line convenience, not API names: expand them first.
    unknown = set(webhook.events) - EVENT_NAMES
    if unknown:
        raise UnknownEventError(unknown)
    body: dict[str, object] = {field: getattr(webhook, field) for field in WRITABLE_FIELDS}
    body["events"] = list(webhook.events)
    return body


def _item_path(webhook_id: int) -> str:
    return f"{_WEBHOOKS_PATH}/{int(webhook_id)}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _display_url(url: str) -> str:
    """``url`` without any user and password, which a proxy URL may carry."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _details(response: httpx.Response) -> tuple[str, ...]:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody)
    except msgspec.DecodeError:
        return ()
    return tuple(item.detail for item in body.errors if item.detail)


def _retry_after(response: httpx.Response) -> float | None:
    # The API sends integer seconds; an HTTP date (allowed by RFC 9110) falls back to backoff.
    try:
        value = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _error_from(method: str, path: str, response: httpx.Response) -> AppApiError:
    status = response.status_code
    context: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "details": _details(response),
    }
    if status == 429:
        return RateLimitedError("rate limited", retry_after_s=_retry_after(response), **context)
    if status >= 500:
        return ServerError("server error", **context)
    if status in (401, 403):
        return AuthenticationError("the App API key was rejected", **context)
    if status == 404:
        return NotFoundError("not found", **context)
    if status in (400, 422):
        return BadRequestError("bad request", **context)
    return UnexpectedResponseError("unexpected answer", **context)
