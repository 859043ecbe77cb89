"""uvicorn's httptools protocol with the limits it lacks, and one send per response.

The limits: deadlines for the request headers and for the body, and a cap on the headers'
size, so slow (slowloris) or oversized requests cannot hold a connection. The deadlines live
here rather than in the app because a deadline per request is all they need: an
``asyncio.timeout`` per request cost the webhook path a sixth of its CPU, and even a timer per
phase (three timer operations a request) showed in its profile, so each connection holds the
time its deadline falls due and one sweep per server checks them all, a tenth of the shorter
deadline apart (a deadline fires at most that late).

The send: uvicorn writes a response's head and its body with two writes, two system calls
that each push a packet through the kernel's network stack. The writes of one event-loop
step are gathered and sent together (``CoalescingTransport``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("ciolake.web")

_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: 67\r\nconnection: close\r\n\r\n"
    b'{"error":"body_timeout","detail":"request body arrived too slowly"}'
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: 31\r\nconnection: close\r\n\r\nrequest header fields too large"
)
# Sweeps per deadline: a deadline fires at most a tenth of its length late.
_SWEEPS_PER_DEADLINE = 10
_MIN_SWEEP_S = 0.01
_NO_DEADLINE = 0
_HEADERS = 1
_BODY = 2


class CoalescingTransport:
    """A connection's transport whose writes within one event-loop step leave as one.

    Writes wait in a list until the end of the step (``call_soon``), so a response's head
    and body, written one after the other, cost one system call. ``close`` sends what waits
    first. Everything else is the transport's own.
    """

    __slots__ = ("_loop", "_transport", "_waiting")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._waiting: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._waiting:
            self._loop.call_soon(self.flush)
        self._waiting.append(data)

    def flush(self) -> None:
        """Send what waits."""
        waiting = self._waiting
        if not waiting:
            return
        self._waiting = []
        if not self._transport.is_closing():
            self._transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._waiting = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(
    *, header_timeout_s: float, body_timeout_s: float, max_header_bytes: int
) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass with these limits, for ``uvicorn.Config(http=...)``."""
    sweep_s = max(_MIN_SWEEP_S, min(header_timeout_s, body_timeout_s) / _SWEEPS_PER_DEADLINE)
    open_connections: set[GuardedHttpToolsProtocol] = set()
    sweeping: list[asyncio.TimerHandle] = []

    def sweep(loop: asyncio.AbstractEventLoop) -> None:
        sweeping.clear()
        now = loop.time()
        for connection in [c for c in open_connections if 0 < c.deadline_at <= now]:
            connection.deadline_passed()
        if open_connections:
            sweeping.append(loop.call_later(sweep_s, sweep, loop))

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        # The loop time the current deadline falls due; which deadline it is.
        deadline_at = 0.0
        _awaiting = _NO_DEADLINE
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
            open_connections.add(self)
            if not sweeping:
                sweeping.append(self.loop.call_later(sweep_s, sweep, self.loop))
            self._start_deadline(_HEADERS, header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            open_connections.discard(self)
            self._awaiting, self.deadline_at = _NO_DEADLINE, 0.0
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._start_deadline(_HEADERS, header_timeout_s)

        def on_message_complete(self) -> None:
            self._awaiting, self.deadline_at = _NO_DEADLINE, 0.0
            super().on_message_complete()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._start_deadline(_BODY, body_timeout_s)
            super().on_headers_complete()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                logger.warning("request rejected", extra=_rejection(431, "headers_too_large"))
                self.transport.write(_431)
                self.transport.close()

        def _start_deadline(self, awaiting: int, seconds: float) -> None:
            self._awaiting, self.deadline_at = awaiting, self.loop.time() + seconds

        def deadline_passed(self) -> None:
            """The sweep found this connection's deadline passed: close it."""
            awaiting = self._awaiting
            self._awaiting, self.deadline_at = _NO_DEADLINE, 0.0
            if self.transport.is_closing():
                return
            if awaiting == _HEADERS:
                logger.warning("request rejected", extra=_rejection(408, "headers_timeout"))
            else:
                logger.warning("request rejected", extra=_rejection(408, "body_timeout"))
                if not self.cycle.response_started:
                    self.transport.write(_408)
            self.transport.close()

    return GuardedHttpToolsProtocol


def _rejection(status: int, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason}
