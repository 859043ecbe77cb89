"""uvicorn's httptools protocol with the limits it lacks: a deadline for the request headers
and a cap on their size, so slow (slowloris) or oversized requests cannot hold a connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("ciolake.web")

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: 31\r\nconnection: close\r\n\r\nrequest header fields too large"
)


def guarded_protocol(*, header_timeout_s: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass with these limits, for ``uvicorn.Config(http=...)``."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._start_header_timer()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                logger.warning("request rejected", extra=_rejection(431, "headers_too_large"))
                self.transport.write(_431)
                self.transport.close()

        def _start_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                logger.warning("request rejected", extra=_rejection(408, "headers_timeout"))
                self.transport.close()

    return GuardedHttpToolsProtocol


def _rejection(status: int, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason}
