"""Request handlers besides the webhook (see ``webhook.py``): health, readiness, metrics.

``public_ready`` is the public listener's: a status code and one word, since reasons (error
texts, paths) are for the operator, who reads them from the admin listener's ``ready``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ciolake import __version__
from ciolake.receive.intake import Intake


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


async def public_ready(request: Request) -> Response:
    """Readiness for the internet: 200 or 503 and one word, no reasons."""
    receiver: Intake = request.app.state.receiver
    is_ready, _reason = receiver.readiness()
    if is_ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    receiver: Intake = request.app.state.receiver
    return Response(receiver.metrics.render(), media_type=CONTENT_TYPE_LATEST)
