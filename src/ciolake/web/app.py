"""The ASGI application: routes, and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from ciolake.service import Receiver
from ciolake.settings import Settings
from ciolake.web import routes


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Starlette:
    """Build the receiver application.

    Args:
        settings: the service's settings; ``signing_keys`` must not be empty.
        clock: current unix time in seconds (injected for tests).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        receiver = Receiver(settings, clock=clock)
        await asyncio.to_thread(receiver.open)
        app.state.receiver = receiver
        app.state.clock = clock
        try:
            yield
        finally:
            await receiver.close()

    return Starlette(
        routes=[
            Route("/webhooks/customerio", routes.receive_webhook, methods=["POST"]),
            Route("/webhook/customerio", routes.receive_webhook, methods=["POST"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/ready", routes.ready, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
