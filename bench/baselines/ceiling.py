"""The ceiling: a bare Starlette endpoint on uvicorn that reads the body and answers 200.

No verification, no journal, no table: what the HTTP stack alone costs.
Served with ``uvicorn bench.baselines.ceiling:app``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_ACCEPTED_BODY = b'{"status":"accepted"}'


async def receive_webhook(request: Request) -> Response:
    """Read the whole body (as ciolake does) and answer 200."""
    await request.body()
    return Response(_ACCEPTED_BODY, media_type="application/json")


async def health(request: Request) -> Response:
    """Liveness, for the harness's start-up wait."""
    return JSONResponse({"status": "healthy"})


app = Starlette(
    routes=[
        Route("/webhooks/customerio", receive_webhook, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
)
