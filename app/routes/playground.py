"""The playground page at `/`: static HTML, JavaScript and CSS from app/static/.

Kept out of the OpenAPI schema (it is a page, not an API) and open without the API key,
since the page itself holds nothing: its calls to /v1 carry the key the user types in.
"""

from __future__ import annotations

import importlib.resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

STATIC = importlib.resources.files("app") / "static"


@router.get("/", response_class=HTMLResponse)
async def get_playground(request: Request) -> HTMLResponse:
    """The page, told whether the service wants a bearer key so it can offer the field."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if request.app.state.settings.api_key is not None:
        page = page.replace('<body data-auth="none">', '<body data-auth="bearer">', 1)
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
