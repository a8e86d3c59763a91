"""Optional bearer-key protection of the /v1 routes (RNNLM_API_KEY).

Declared as a router dependency through HTTPBearer (only when a key is set), so the
OpenAPI schema carries the scheme and Swagger UI's "Authorize" button sends the key.
/health, /ready and /metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="the service's RNNLM_API_KEY, when it sets one")


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    key = request.app.state.settings.api_key
    given = credentials.credentials.encode() if credentials else b""
    # Constant time: the comparison must not reveal how much of the key was right.
    if not hmac.compare_digest(given, key.get_secret_value().encode()):
        raise Unauthorized(
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
