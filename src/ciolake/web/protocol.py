"""uvicorn's httptools protocol with the limits it lacks: deadlines for the request headers and
for the body, and a cap on the headers' size, so slow (slowloris) or oversized requests cannot
hold a connection. The deadlines live here rather than in the app because a timer per request
is all they need, and an ``asyncio.timeout`` per request cost the webhook path a sixth of its CPU.
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


def guarded_protocol(
    *, header_timeout_s: float, body_timeout_s: float, max_header_bytes: int
) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass with these limits, for ``uvicorn.Config(http=...)``."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._start_header_deadline()

        def on_message_complete(self) -> None:
            self._cancel_deadline()
            super().on_message_complete()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._cancel_deadline()
            super().on_headers_complete()
            self._deadline = self.loop.call_later(body_timeout_s, self._body_too_slow)

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                logger.warning("request rejected", extra=_rejection(431, "headers_too_large"))
                self.transport.write(_431)
                self.transport.close()

        def _start_header_deadline(self) -> None:
            self._cancel_deadline()
            self._deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                logger.warning("request rejected", extra=_rejection(408, "headers_timeout"))
                self.transport.close()

        def _body_too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            logger.warning("request rejected", extra=_rejection(408, "body_timeout"))
            if not self.cycle.response_started:
                self.transport.write(_408)
            self.transport.close()

    return GuardedHttpToolsProtocol


def _rejection(status: int, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason}
