"""The admin listener's door: a bearer token, or basic auth (any user name) for browsers.

A pure ASGI wrapper, so that it guards the dashboard's own app as well as the server's admin
routes. The token is compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

_CHALLENGE = b'Basic realm="ciolake admin", charset="UTF-8"'
_UNAUTHORIZED_BODY = b'{"error":"unauthorized"}'


class AdminAuth:
    """Let a request through only if it carries the admin token."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._authorized(scope):
            await self._app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", _CHALLENGE),
                    (b"content-length", str(len(_UNAUTHORIZED_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED_BODY})

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return token_matches(value, self._token)
        return False


def token_matches(authorization: bytes, token: bytes) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` (bearer or basic password)."""
    scheme, _space, credentials = authorization.strip().partition(b" ")
    scheme = scheme.lower()
    if scheme == b"bearer":
        return hmac.compare_digest(credentials.strip(), token)
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        _user, _colon, password = decoded.partition(b":")
        return hmac.compare_digest(password, token)
    return False


def guarded(app: ASGIApp, token: str | None) -> ASGIApp:
    """``app`` behind the admin token when one is configured."""
    return app if token is None else AdminAuth(app, token=token)
