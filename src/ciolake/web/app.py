"""The ASGI application: routes, and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from ciolake.analytics.dashboard import dashboard_routes
from ciolake.service import Intake, Receiver
from ciolake.settings import Settings
from ciolake.web import routes

IntakeFactory = Callable[[Settings, Callable[[], float]], Intake]


def _embedded(settings: Settings, clock: Callable[[], float]) -> Intake:
    return Receiver(settings, clock=clock)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    intake: IntakeFactory = _embedded,
) -> Starlette:
    """Build the receiver application.

    Args:
        settings: the service's settings; ``signing_keys`` must not be empty.
        clock: current unix time in seconds (injected for tests).
        intake: builds what accepted deliveries go to; by default journal and committer in
            this process (a worker process of ``ciolake serve`` passes its own).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        receiver = intake(settings, clock)
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
            *dashboard_routes(settings, clock=clock),
        ],
        lifespan=lifespan,
    )
