"""The ceiling: a bare ASGI endpoint on uvicorn that reads the body and answers 200.

No verification, no journal, no table: what the HTTP stack alone costs. It is a bare ASGI app,
like ciolake's own webhook path (``ciolake.receive.webhook``), so the two differ only in the work
ciolake does. Served with ``uvicorn bench.baselines.ceiling:app``.
"""

from __future__ import annotations

from typing import Any

_ACCEPTED = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"21")],
}
_HEALTHY = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"20")],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body (as ciolake does) and answer 200; ``GET /health`` for start-up."""
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        await send(_HEALTHY)
        await send({"type": "http.response.body", "body": b'{"status":"healthy"}'})
        return
    await send(_ACCEPTED)
    await send({"type": "http.response.body", "body": b'{"status":"accepted"}'})
