"""Optional bearer-key protection of the /v1 routes (RNNLM_API_KEY).

`RequireKey`, an ASGI middleware, enforces it on the API's routes: a request without the
key is answered 401 before its body is read or parsed. The `bearer` scheme is also
declared on those routers (only when a key is set), so the OpenAPI schema documents it and
Swagger UI's "Authorize" button sends the key. /health, /ready, /metrics, the docs and the
playground page stay open for probes, scrapers and browsers.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi.security import HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="the service's RNNLM_API_KEY, when it sets one")


def _given_key(scope: Scope) -> bytes:
    """The bearer token as the client sent its bytes (UTF-8 keys included)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


class RequireKey:
    def __init__(self, app: ASGIApp, key: str, routes: Sequence[BaseRoute]) -> None:
        """`routes`: those that need the key (whatever the method at their paths)."""
        self.app = app
        self.key = key.encode()
        self.routes = routes

    def _guarded(self, scope: Scope) -> bool:
        return scope["type"] == "http" and any(
            route.matches(scope)[0] != Match.NONE for route in self.routes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Constant time: the comparison must not reveal how much of the key was right.
        if self._guarded(scope) and not hmac.compare_digest(_given_key(scope), self.key):
            error = Unauthorized(
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
