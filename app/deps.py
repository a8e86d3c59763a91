"""What routes share, built once in the lifespan and reached through `ServicesDep`."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from fastapi import Depends, Request

from app.corpora import CorpusCounts
from app.errors import Overloaded, Timeout
from app.forecasts import Forecasts
from app.jobs import JobRunner
from app.metrics import Metrics
from app.registry import Registry
from app.scheduler import Scheduler
from app.settings import Settings
from models.bundle import Bundle
from models.rnn import LanguageModel
from models.score import Score, score_ids


@dataclass
class Services:
    settings: Settings
    device: torch.device
    registry: Registry
    jobs: JobRunner
    decode: ThreadPoolExecutor  # every scheduler's decoding steps (app/jobs.py says why)
    corpora: CorpusCounts
    metrics: Metrics
    forecasts: Forecasts = field(default_factory=lambda: Forecasts({}))
    schedulers: dict[str, Scheduler] = field(default_factory=dict)
    default_lm: str | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False

    def scheduler(self, name: str) -> Scheduler:
        return self.schedulers[name]

    async def score(
        self, name: str, bundle: Bundle, ids: list[int], first: int, **options: Any
    ) -> Score:
        """`score_ids` on a scoring worker within the request time limit, counted in metrics."""
        model = bundle.model
        assert isinstance(model, LanguageModel)
        stop = threading.Event()
        job = self.jobs.run(
            lambda: score_ids(model, ids, first, should_stop=stop.is_set, **options)
        )
        limit = self.settings.request_timeout_s
        try:
            score = await asyncio.wait_for(job, timeout=limit)
        except TimeoutError:
            stop.set()  # the worker thread gives up at its next pass
            raise Timeout(
                f"scoring ran past the {limit:g} s request limit", code="timeout"
            ) from None
        self.metrics.tokens_scored.labels(name).inc(score.count)
        return score


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    if services.draining:
        raise Overloaded("the service is shutting down", retry_after=5)
    if not services.loaded.is_set():
        raise Overloaded("the service is still loading its models", retry_after=2)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
