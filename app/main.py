"""The application factory: `uvicorn --factory app.main:create_app` (`python -m app` runs it
with the server's limits, app/server.py).

`create_app(settings)` wires settings, exception handlers, middleware, routers, and
Swagger UI and ReDoc served from the app's own assets (fastapi-offline: no CDN). The
lifespan loads the bundles in the background (so /health answers at once and /ready says
503 until they are on the device), starts one generation scheduler per language model,
and on shutdown refuses new work and lets in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import torch
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from app import errors
from app.auth import RequireKey, bearer
from app.corpora import CorpusCounts
from app.deps import ServedModel, Services
from app.forecasts import Forecasts
from app.jobs import JobRunner, in_fresh_thread
from app.metrics import Metrics
from app.middleware import RequestBody, RequestLog
from app.registry import Registry
from app.routes import (
    compare,
    completions,
    corpora,
    forecast,
    generate,
    health,
    metrics,
    models,
    ngrams,
    perplexity,
    playground,
    tokenize,
)
from app.scheduler import Scheduler
from app.settings import Settings, get_settings
from models.device import resolve_device
from models.precision import Variants, precisions_on
from models.rnn import LanguageModel
from models.text import Tokenizer

log = logging.getLogger("app")

DESCRIPTION = """Character- and word-level recurrent language models from *Dive into Deep
Learning* chapters 8-9, served: generation (greedy and sampled, streamed or not),
perplexity, n-gram statistics with Zipf plots, and the noisy-sine forecasting experiment;
OpenAI-compatible completions (`/v1/completions`, for the `openai` SDK and evaluation
harnesses), tokenization, and Prometheus metrics at `/metrics`.
Every field below documents its range; errors come as `{"error": {...}}`."""


async def _load(services: Services) -> None:
    registry = services.registry
    await in_fresh_thread(registry.load_all)
    settings = services.settings
    max_batch, max_queue = settings.batch_limits(services.device)
    for name, bundle in registry.language_models().items():
        assert isinstance(bundle.model, LanguageModel) and bundle.tokenizer is not None

        def make_scheduler(
            model: LanguageModel, name: str = name, tokenizer: Tokenizer = bundle.tokenizer
        ) -> Scheduler:
            return Scheduler(
                name=name,
                model=model,
                tokenizer=tokenizer,
                max_batch=max_batch,
                max_queue=max_queue,
                on_first_token=services.metrics.time_to_first_token.labels(name).observe,
                prefill_slice_s=settings.prefill_slice_s,
            )

        lm = ServedModel(
            name,
            bundle,
            bundle.model,
            bundle.tokenizer,
            Variants(bundle.model),
            settings.precision,
            make_scheduler,
        )
        lm.scheduler_for(settings.precision)  # the server's precision decodes from the start
        services.language_models[name] = lm
    services.forecasts.bundles = registry.ready("forecaster")
    services.default_lm = registry.default_lm(settings.default_model)
    services.loaded.set()
    log.info(
        "ready: %d bundles on %s, default LM %s",
        len(registry.ready()),
        services.device,
        services.default_lm,
    )


def _loading_ended(services: Services, task: asyncio.Task[None]) -> None:
    """A loading task that failed as a whole is logged and shown by /ready (never silent)."""
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    log.error("loading the bundles failed; nothing will be served", exc_info=exc)
    services.load_error = f"{type(exc).__name__}: {exc}"


def _drain_on_signals(services: Services) -> None:
    """On SIGTERM/SIGINT refuse new work with 503 at once, then let uvicorn's own handler
    run its graceful shutdown (in-flight requests finish, then this lifespan exits)."""
    if threading.current_thread() is not threading.main_thread():
        return  # under a test client: no process signals to take over
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(num: int, frame: FrameType | None, previous: object = previous) -> None:
            services.draining = True
            log.info("signal %d: draining, new requests get 503", num)
            if callable(previous):
                previous(num, frame)

        signal.signal(signum, handler)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    if settings.precision not in precisions_on(device):
        offered = ", ".join(precisions_on(device))
        raise ValueError(
            f"RNNLM_PRECISION={settings.precision} is not available on {device.type} ({offered})"
        )
    jobs = JobRunner(settings.max_concurrent_scoring)
    services = Services(
        settings=settings,
        device=device,
        registry=Registry(settings.checkpoint_dir, device),
        jobs=jobs,
        corpora=CorpusCounts(settings),
        metrics=app.state.metrics,
        forecasts=Forecasts({}, jobs),
    )
    app.state.services = services
    _drain_on_signals(services)
    loading = asyncio.create_task(_load(services))
    loading.add_done_callback(functools.partial(_loading_ended, services))
    try:
        yield
    finally:
        services.draining = True
        loading.cancel()
        for scheduler in services.schedulers.values():
            await scheduler.stop()


def package_version() -> str:
    """The installed version; a source checkout run without `pip install` still starts."""
    try:
        return importlib.metadata.version("rnnlm")
    except importlib.metadata.PackageNotFoundError:
        return "0+source"


def _playground(app: FastAPI) -> None:
    """The browser playground at `/` and its assets (app/static), outside the schema."""
    static = str(playground.STATIC)
    app.mount("/static/playground", StaticFiles(directory=static), name="playground-static")
    app.include_router(playground.router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = FastAPIOffline(
        title="rnnlm",
        version=package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/static/docs",
    )
    app.state.settings = settings
    app.state.metrics = Metrics(lambda: getattr(app.state, "services", None))
    errors.register(app)
    for module in (health, metrics):
        app.include_router(module.router)
    # The API, and vLLM's tokenizer routes at the root and one model's own base URLs (for
    # lm-eval): guarded by the key when there is one (only then is the scheme documented).
    api = (models, generate, completions, tokenize, perplexity, compare, ngrams, corpora, forecast)
    guarded = [
        *(module.router for module in api),
        tokenize.server_router,
        completions.scoped_router,
    ]
    guard = [Depends(bearer)] if settings.api_key is not None else []
    for router in guarded:
        app.include_router(router, dependencies=guard)
    _playground(app)
    app.add_middleware(
        RequestBody, max_bytes=settings.max_body_bytes, read_timeout=settings.body_timeout_s
    )
    if settings.api_key is not None:  # outside RequestBody: no body is read before the 401
        routes = [route for router in guarded for route in router.routes]
        app.add_middleware(RequireKey, key=settings.api_key.get_secret_value(), routes=routes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(RequestLog, metrics=app.state.metrics)
    return app
