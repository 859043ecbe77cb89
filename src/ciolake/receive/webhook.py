"""The webhook endpoint as a bare ASGI app: verify, journal, answer.

It is the one hot path of the server, so it runs outside Starlette's middleware and router
(``CiolakeApp`` hands it POSTs to the webhook paths directly): at thousands of requests a
second per core, their per-request cost was a third of a worker's CPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from ciolake.errors import BacklogFullError, JournalUnavailableError, VerificationError
from ciolake.receive.intake import Intake
from ciolake.receive.verify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

logger = logging.getLogger("ciolake.web")

WEBHOOK_PATHS = frozenset({"/webhooks/customerio", "/webhook/customerio"})

_ACCEPTED_BODY = b'{"status":"accepted"}'
_SIGNATURE_HEADERS = frozenset({SIGNATURE_HEADER.encode(), TIMESTAMP_HEADER.encode()})
_JSON_HEADERS = [(b"content-type", b"application/json")]


class BodyTooLargeError(Exception):
    """The request body is over ``max_body_bytes``."""


class ClientDisconnectedError(Exception):
    """The connection closed before the whole body came (or the body deadline cut it)."""


class WebhookEndpoint:
    """``POST /webhooks/customerio``: every answer is listed in docs/reference.md."""

    def __init__(self, state: State) -> None:
        # The lifespan puts the intake and the clock on the app's state after start-up.
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        receiver: Intake = self._state.receiver
        settings = receiver.settings
        # A body arriving too slowly is cut off by the protocol (web/protocol.py) with a 408.
        try:
            body = await read_body(scope, receive, settings.max_body_bytes)
        except ClientDisconnectedError:
            return None
        except BodyTooLargeError:
            message = "request body is too large"
            return await _reject(receiver, scope, send, 413, "body_too_large", message=message)
        try:
            verdict = verify(
                body,
                _signature_headers(scope["headers"]),
                settings.signing_keys,
                now=self._state.clock(),
                tolerance_s=settings.timestamp_tolerance_s,
            )
        except VerificationError as exc:
            return await _reject(receiver, scope, send, 401, exc.reason, message=str(exc))
        try:
            await receiver.accept(body, verdict)
        except (BacklogFullError, JournalUnavailableError) as exc:
            reason = "backlog_full" if isinstance(exc, BacklogFullError) else "journal_unavailable"
            return await _reject(receiver, scope, send, 503, reason, message=str(exc), retry=True)
        await _answer(send, 200, _ACCEPTED_BODY, _JSON_HEADERS)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body.

    Raises:
        BodyTooLargeError: the body is (or is declared) over ``limit`` bytes.
        ClientDisconnectedError: the connection closed first.
    """
    if _declared_length(scope["headers"]) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        more = message.get("more_body", False)
    # Usually the body came whole with the headers: one chunk, nothing to join.
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _signature_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    # ASGI header names are lowercase already; latin-1 is HTTP's own header encoding.
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name in _SIGNATURE_HEADERS
    ]


async def _reject(
    receiver: Intake,
    scope: Scope,
    send: Send,
    status: int,
    reason: str,
    *,
    message: str,
    retry: bool = False,
) -> None:
    receiver.metrics.count_rejected(status, reason)
    client = scope.get("client")
    logger.warning(
        "request rejected",
        extra={
            "status": status,
            "reason": reason,
            "detail": message,
            "client": client[0] if client else None,
            "path": scope["path"],
        },
    )
    headers = list(_JSON_HEADERS)
    if retry:
        headers.append((b"retry-after", str(receiver.settings.retry_after_s).encode()))
    # A stable reason code only: exception texts and paths are for the log, not the internet.
    body = json.dumps({"error": reason}).encode()
    await _answer(send, status, body, headers)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(body)).encode())
    start: dict[str, Any] = {"type": "http.response.start", "status": status}
    start["headers"] = [*headers, length]
    await send(start)
    await send({"type": "http.response.body", "body": body})
