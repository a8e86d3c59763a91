"""What routes share, built once in the lifespan and reached through `ServicesDep`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import torch
from fastapi import Depends, Request

from app.corpora import CorpusCounts
from app.errors import Overloaded
from app.forecasts import Forecasts
from app.jobs import JobRunner
from app.registry import Registry
from app.scheduler import Scheduler
from app.settings import Settings


@dataclass
class Services:
    settings: Settings
    device: torch.device
    registry: Registry
    jobs: JobRunner
    corpora: CorpusCounts
    forecasts: Forecasts = field(default_factory=lambda: Forecasts({}))
    schedulers: dict[str, Scheduler] = field(default_factory=dict)
    default_lm: str | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False

    def scheduler(self, name: str) -> Scheduler:
        return self.schedulers[name]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    if services.draining:
        raise Overloaded("the service is shutting down", retry_after=5)
    if not services.loaded.is_set():
        raise Overloaded("the service is still loading its models", retry_after=2)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
