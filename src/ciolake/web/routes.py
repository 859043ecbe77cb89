"""Request handlers besides the webhook (see ``webhook.py``): health, readiness, metrics."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ciolake import __version__
from ciolake.intake import Intake

logger = logging.getLogger("ciolake.web")

_ACCEPTED_BODY = b'{"status":"accepted"}'


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
