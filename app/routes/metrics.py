"""Prometheus metrics in the text exposition format (names in docs/metrics.md).

Outside /v1 on purpose: a scraper needs no API key, should one ever guard /v1.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.metrics import Metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def get_metrics(request: Request) -> Response:
    """Request counts and latencies, tokens generated and scored, time to first token,
    scheduler queue depth and batch size, bundles by state. Answers while loading too."""
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
