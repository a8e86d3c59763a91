"""The noisy-sine experiment (d2l §8.1): predictions, errors and the book's figures."""

from __future__ import annotations

import math
from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import ServicesDep
from app.errors import responses
from app.plots import IMAGE_RESPONSES, MEDIA_TYPES, forecast_plot
from app.schemas.forecast import (
    ForecastPlotRequest,
    ForecastRequest,
    ForecastResponse,
    PredictionsOut,
    SeriesOut,
)
from models.forecast import ForecastResult, Predictions

router = APIRouter(prefix="/v1/forecast", tags=["forecasting"])


async def _run(body: ForecastRequest, services: ServicesDep) -> tuple[str, ForecastResult]:
    limit = services.settings.request_timeout_s
    return await services.forecasts.run(body.to_config(), tuple(body.k_steps), limit)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _out(p: Predictions) -> PredictionsOut:
    return PredictionsOut(time=p.time, values=[_finite(v) for v in p.values], mse=_finite(p.mse))


@router.post("", response_model=ForecastResponse, responses=responses(400, 401, 413, 422, 503))
async def create_forecast(body: ForecastRequest, services: ServicesDep) -> ForecastResponse:
    """The series, 1-step, multi-step and k-step predictions with their MSE.

    The book's parameters use the committed forecaster; any others fit a fresh MLP inside
    the request (bounded by the caps on T, epochs and sizes). Results are cached.
    """
    name, result = await _run(body, services)
    predictions = [result.one_step, result.multi_step, *result.k_step.values()]
    return ForecastResponse(
        model=name,
        config=asdict(body.to_config()),
        series=SeriesOut(time=result.time, x=result.x),
        one_step=_out(result.one_step),
        multi_step=_out(result.multi_step),
        k_step={str(k): _out(p) for k, p in result.k_step.items()},
        diverged=not all(math.isfinite(x) for p in predictions for x in (p.mse, *p.values)),
    )


@router.post(
    "/plot",
    response_class=Response,
    responses={**IMAGE_RESPONSES, **responses(400, 401, 413, 422, 503)},
)
async def plot_forecast(body: ForecastPlotRequest, services: ServicesDep) -> Response:
    """The book's figures: data, 1-step, multi-step, k-step, or all four."""
    _, result = await _run(body, services)
    image = await services.jobs.run(
        forecast_plot, result, body.figure, body.format, body.width, body.height
    )
    return Response(image, media_type=MEDIA_TYPES[body.format])
