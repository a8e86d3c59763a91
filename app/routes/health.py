"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import Services

router = APIRouter(tags=["health"])


@router.get("/health")
async def get_health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={503: {"description": "Still loading, failed to load, or shutting down"}},
)
async def get_ready(request: Request) -> JSONResponse:
    """Readiness: 200 once the bundles are loaded (listing each one's state), 503 before,
    or with the reason when loading failed as a whole."""
    services: Services = request.app.state.services
    entries = list(services.registry.entries.values())  # the loader may be adding to it
    bundles = []
    for e in entries:
        info: dict[str, object] = {
            "name": e.name,
            "state": e.state,
            "kind": e.bundle.kind if e.bundle else None,
            "reason": e.reason,
        }
        scheduler = services.schedulers.get(e.name)
        if scheduler is not None:  # live load of a language model
            info |= {"active_sequences": scheduler.active, "queued_sequences": scheduler.queued}
        bundles.append(info)
    if services.draining:
        status, code = "shutting down", 503
    elif services.load_error is not None:
        status, code = "failed", 503
    elif not services.loaded.is_set():
        status, code = "loading", 503
    else:
        status = "ready" if all(e.state == "ready" for e in entries) else "degraded"
        code = 200
    body = {
        "status": status,
        "device": str(services.device),
        "default_model": services.default_lm,
        "reason": services.load_error,
        "bundles": bundles,
    }
    return JSONResponse(body, status_code=code)
