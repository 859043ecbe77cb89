"""Request handlers. The webhook path does three things: verify, journal, answer."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ciolake import __version__
from ciolake.errors import BacklogFullError, JournalUnavailableError, VerificationError
from ciolake.service import Intake
from ciolake.verify import verify

logger = logging.getLogger("ciolake.web")

_ACCEPTED_BODY = b'{"status":"accepted"}'


async def receive_webhook(request: Request) -> Response:
    """Answer one Customer.io delivery (see INTERFACE.md for every answer)."""
    receiver: Intake = request.app.state.receiver
    settings = receiver.settings
    receiver.metrics.received.inc()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            body = await _read_body(request, settings.max_body_bytes)
    except TimeoutError:
        return _reject(receiver, request, 408, "body_timeout", "request body arrived too slowly")
    if body is None:
        return _reject(receiver, request, 413, "body_too_large", "request body is too large")
    try:
        verdict = verify(
            body,
            request.headers.items(),
            settings.signing_keys,
            now=request.app.state.clock(),
            tolerance_s=settings.timestamp_tolerance_s,
        )
    except VerificationError as exc:
        return _reject(receiver, request, 401, exc.reason, str(exc))
    try:
        await receiver.accept(body, verdict)
    except BacklogFullError as exc:
        return _reject(receiver, request, 503, "backlog_full", str(exc), retry=True)
    except JournalUnavailableError as exc:
        return _reject(receiver, request, 503, "journal_unavailable", str(exc), retry=True)
    return Response(_ACCEPTED_BODY, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _reject(
    receiver: Intake,
    request: Request,
    status: int,
    reason: str,
    message: str,
    *,
    retry: bool = False,
) -> Response:
    receiver.metrics.rejected.labels(status=str(status), reason=reason).inc()
    logger.warning(
        "request rejected",
        extra={
            "status": status,
            "reason": reason,
            "detail": message,
            "client": request.client.host if request.client else None,
            "path": request.url.path,
        },
    )
    headers = {"Retry-After": str(receiver.settings.retry_after_s)} if retry else None
    return JSONResponse({"error": reason, "detail": message}, status_code=status, headers=headers)


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "healthy", "version": __version__})


async def ready(request: Request) -> Response:
    """Readiness: 200 when deliveries can be accepted and stored, 503 otherwise."""
    receiver: Intake = request.app.state.receiver
    is_ready, reason = receiver.readiness()
    backlog, _size = receiver.backlog()
    payload = {
        "status": "ready" if is_ready else "unavailable",
        "reason": reason,
        "backlog": backlog,
    }
    return JSONResponse(payload, status_code=200 if is_ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    receiver: Intake = request.app.state.receiver
    return Response(receiver.metrics.render(), media_type=CONTENT_TYPE_LATEST)
