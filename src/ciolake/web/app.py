"""The ASGI application: routes, and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ciolake.analytics.dashboard import dashboard_routes
from ciolake.intake import Intake
from ciolake.settings import Settings
from ciolake.web import routes
from ciolake.web.webhook import WEBHOOK_PATHS, WebhookEndpoint

IntakeFactory = Callable[[Settings, Callable[[], float]], Intake]


class CiolakeApp(Starlette):
    """Starlette, except that webhook POSTs go straight to their endpoint (the hot path)."""

    webhook: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = scope["type"] == "http" and scope["path"] in WEBHOOK_PATHS
        if hot and scope["method"] == "POST":
            await self.webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _embedded(settings: Settings, clock: Callable[[], float]) -> Intake:
    # Imported here: worker processes pass their own intake and never load the committer.
    from ciolake.service import Receiver  # noqa: PLC0415

    return Receiver(settings, clock=clock)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    intake: IntakeFactory = _embedded,
) -> CiolakeApp:
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

    app = CiolakeApp(
        routes=[
            # Reached for other methods only, to answer them 405.
            *(Route(path, _unreachable, methods=["POST"]) for path in sorted(WEBHOOK_PATHS)),
            Route("/health", routes.health, methods=["GET"]),
            Route("/ready", routes.ready, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            *dashboard_routes(settings, clock=clock),
        ],
        lifespan=lifespan,
    )
    app.webhook = WebhookEndpoint(app.state)
    return app


async def _unreachable(request: Request) -> Response:
    raise AssertionError("CiolakeApp sends webhook POSTs to its WebhookEndpoint")
