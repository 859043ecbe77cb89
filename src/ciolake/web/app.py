"""The ASGI application: two listeners' routes, and the resources its lifespan owns.

The public listener (the one Customer.io reaches) serves the webhook, ``/health`` and a bare
``/ready``; everything else there is 404. The admin listener serves ``/ready`` with reasons,
``/metrics`` and the dashboard, behind ``CIOLAKE_ADMIN_TOKEN`` when one is set. Both listeners
feed the same app; a request's listener is the local port it arrived on (``scope["server"]``).
"""

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

from ciolake.dashboard.app import dashboard_routes
from ciolake.receive.intake import Intake
from ciolake.receive.webhook import WEBHOOK_PATHS, WebhookEndpoint
from ciolake.settings import Settings
from ciolake.web import routes
from ciolake.web.admin_auth import guarded

IntakeFactory = Callable[[Settings, Callable[[], float]], Intake]


class CiolakeApp:
    """Sends each request to its listener's routes; webhook POSTs straight to their endpoint."""

    def __init__(self, public: Starlette, admin: ASGIApp, *, admin_port: int) -> None:
        self.public = public
        self.admin = admin
        self.admin_port = admin_port
        self.webhook = WebhookEndpoint(public.state)

    @property
    def state(self) -> object:
        """The state the lifespan fills (the intake, the clock), shared by both listeners."""
        return self.public.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.public(scope, receive, send)
        elif _local_port(scope) == self.admin_port:
            await self.admin(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] in WEBHOOK_PATHS:
            if scope["method"] == "POST":
                await self.webhook(scope, receive, send)
            else:
                await self.public(scope, receive, send)
        else:
            await self.public(scope, receive, send)


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server else None


def _embedded(settings: Settings, clock: Callable[[], float]) -> Intake:
    # Imported here: worker processes pass their own intake and never load the committer.
    from ciolake.runtime.embedded import Receiver  # noqa: PLC0415

    return Receiver(settings, clock=clock)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    intake: IntakeFactory = _embedded,
) -> CiolakeApp:
    """Build the receiver application (both listeners).

    Args:
        settings: the service's settings; ``signing_keys`` must not be empty. A request is
            the admin listener's when it arrived on ``settings.admin_port``.
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

    public = Starlette(
        routes=[
            # Reached for other methods only, to answer them 405.
            *(Route(path, _unreachable, methods=["POST"]) for path in sorted(WEBHOOK_PATHS)),
            Route("/health", routes.health, methods=["GET"]),
            Route("/ready", routes.public_ready, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    admin = Starlette(
        routes=[
            Route("/health", routes.health, methods=["GET"]),
            Route("/ready", routes.ready, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            *dashboard_routes(settings, clock=clock),
        ]
    )
    # One state for both: the lifespan runs on the public app and fills it for the admin's too.
    admin.state = public.state
    return CiolakeApp(public, guarded(admin, settings.admin_token), admin_port=settings.admin_port)


async def _unreachable(request: Request) -> Response:
    raise AssertionError("CiolakeApp sends webhook POSTs to its WebhookEndpoint")
