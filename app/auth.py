"""Optional bearer-key protection of the /v1 routes (RNNLM_API_KEY).

`RequireKey`, an ASGI middleware, enforces it: a request without the key is answered 401
before its body is read or parsed. The `bearer` scheme is also declared on the /v1
routers (only when a key is set), so the OpenAPI schema documents it and Swagger UI's
"Authorize" button sends the key. /health, /ready, /metrics, the docs and the playground
page stay open for probes, scrapers and browsers.
"""

from __future__ import annotations

import hmac

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="the service's RNNLM_API_KEY, when it sets one")

GUARDED = "/v1"


def _given_key(scope: Scope) -> bytes:
    """The bearer token as the client sent its bytes (UTF-8 keys included)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


class RequireKey:
    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = path == GUARDED or path.startswith(GUARDED + "/")
        # Constant time: the comparison must not reveal how much of the key was right.
        if (
            scope["type"] == "http"
            and guarded
            and not hmac.compare_digest(_given_key(scope), self.key)
        ):
            error = Unauthorized(
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
