"""What routes share, built once in the lifespan: `ServicesDep` for the services, and a
`LanguageModel` dependency per request body for the model the request names."""

from __future__ import annotations

import asyncio
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Annotated, Any, Protocol, TypeVar

import torch
from fastapi import Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.corpora import CorpusCounts
from app.errors import InvalidInput, NotFound, Overloaded, Timeout
from app.forecasts import Forecasts
from app.jobs import JobRunner
from app.metrics import Metrics
from app.registry import Registry
from app.scheduler import Scheduler
from app.schemas import MODEL_NAME
from app.settings import Settings
from models.bundle import Bundle
from models.precision import Precision, Variants, precisions_on
from models.rnn import LanguageModel
from models.score import Score, score_many
from models.text import Tokenizer

nfc = partial(unicodedata.normalize, "NFC")
LARGE_WORK = 10_000  # characters, tokens or list entries from which work leaves the loop
T = TypeVar("T")


@dataclass(frozen=True)
class ServedModel:
    """A language model ready to serve: its bundle, network, tokenizer and scheduler."""

    name: str
    bundle: Bundle
    model: LanguageModel
    tokenizer: Tokenizer
    variants: Variants  # the network in each precision (fp32: `model` itself)
    precision: Precision  # what a request naming none decodes with (RNNLM_PRECISION)
    make_scheduler: Callable[[LanguageModel], Scheduler] = field(repr=False)
    schedulers: dict[Precision, Scheduler] = field(default_factory=dict)

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler of the server's precision."""
        return self.scheduler_for(self.precision)

    def scheduler_for(self, precision: Precision) -> Scheduler:
        """The scheduler decoding with `precision` weights, started on first use (event
        loop thread). Each precision decodes in a batch of its own, with its own limits:
        rows of different weights cannot share a step's matrix products."""
        scheduler = self.schedulers.get(precision)
        if scheduler is None:
            scheduler = self.make_scheduler(self.variants.get(precision))
            scheduler.start()
            self.schedulers[precision] = scheduler
        return scheduler

    def stop_strings(self, stop: Sequence[str], *, apply_rule: bool) -> tuple[str, ...]:
        """Stop strings as generation matches them: after the bundle's rule (`apply_rule`,
        OpenAI's completions) or as given (after NFC); 422 naming one that the model can
        never generate, and why."""
        out = []
        for i, text in enumerate(stop):
            text = (
                self.tokenizer.rule.apply(text)
                if apply_rule
                else unicodedata.normalize("NFC", text)
            )
            reason = self.tokenizer.unproducible(text)
            if reason is not None:
                raise InvalidInput(
                    f"stop.{i}: {reason}", param=f"stop.{i}", code="stop_never_generated"
                )
            out.append(text)
        return tuple(dict.fromkeys(out))


@dataclass
class Services:
    settings: Settings
    device: torch.device
    registry: Registry
    jobs: JobRunner
    corpora: CorpusCounts
    metrics: Metrics
    forecasts: Forecasts
    language_models: dict[str, ServedModel] = field(default_factory=dict)
    default_lm: str | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None  # why loading failed as a whole (not one bundle)
    draining: bool = False

    @property
    def schedulers(self) -> dict[str, Scheduler]:
        """Every running scheduler: a model's own under its name, the other precisions
        it decodes in (once asked for) as `name@precision`."""
        out: dict[str, Scheduler] = {}
        for name, lm in self.language_models.items():
            for precision, scheduler in list(lm.schedulers.items()):
                out[name if precision == lm.precision else f"{name}@{precision}"] = scheduler
        return out

    def precision(self, asked: Precision | None) -> Precision:
        """The precision a request decodes with (None: the server's); 422 naming
        `precision` when this device has no such weights."""
        precision = asked or self.settings.precision
        offered = precisions_on(self.device)
        if precision not in offered:
            raise InvalidInput(
                f"precision {precision!r} is not available on {self.device.type} (available: "
                f"{', '.join(offered)})",
                param="precision",
                code="precision_unavailable",
            )
        return precision

    def language_model(self, name: str | None) -> ServedModel:
        """The named LM, or the default one; 404 listing the available LMs otherwise."""
        name = name or self.default_lm
        if name is None:
            raise NotFound("no language model is loaded", param="model", code="model_not_found")
        if name not in self.language_models:
            raise self.registry.not_found(name, self.language_models)
        return self.language_models[name]

    async def work(self, fn: Callable[[], T], size: int) -> T:
        """`fn()` on the event loop when `size` (characters, tokens, list entries) is
        small; from LARGE_WORK on, as a CPU job: off the event loop, which must keep
        answering everyone else, and counted against the job limits (503 when full)."""
        return fn() if size < LARGE_WORK else await self.jobs.run(fn)

    async def answer(self, build: Callable[[], BaseModel], size: int) -> Response:
        """The JSON answer `build()` makes, built and serialised as `work` of `size`."""
        body = await self.work(lambda: build().model_dump_json().encode(), size)
        return Response(body, media_type="application/json")

    async def score(self, lm: ServedModel, ids: list[int], first: int, **options: Any) -> Score:
        """`score_ids` of one text: see `score_many`."""
        return (await self.score_many(lm, [(ids, first)], **options))[0]

    async def score_many(
        self,
        lm: ServedModel,
        texts: list[tuple[list[int], int]],
        precision: Precision = "fp32",
        **options: Any,
    ) -> list[Score]:
        """`score_many` on a scoring worker within the request time limit, counted in metrics.

        Scoring is fp32 unless a request asks for another `precision`."""
        stop = threading.Event()
        precision = self.precision(precision)
        # An n-gram model read at another order (app/breakdown.py) is not among the
        # variants; it has no weights to lighten either.
        own = precision == "fp32" or lm.model is not lm.variants.model

        def run() -> list[Score]:
            model = lm.model if own else lm.variants.get(precision)
            return score_many(model, texts, should_stop=stop.is_set, **options)

        job = self.jobs.run(run)
        limit = self.settings.request_timeout_s
        try:
            scores = await asyncio.wait_for(job, timeout=limit)
        except TimeoutError:
            raise Timeout(
                f"scoring ran past the {limit:g} s request limit", code="timeout"
            ) from None
        finally:
            stop.set()  # timed out or the client left: the worker gives up at its next pass
        self.metrics.tokens_scored.labels(lm.name).inc(sum(s.count for s in scores))
        return scores


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    if services.draining:
        raise Overloaded("the service is shutting down", retry_after=5)
    if services.load_error is not None:
        raise Overloaded(f"the service failed to load its models: {services.load_error}")
    if not services.loaded.is_set():
        raise Overloaded("the service is still loading its models", retry_after=2)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


class NamesAModel(Protocol):
    """A request body that may name a language model (None: the default one)."""

    @property
    def model(self) -> str | None: ...


B = TypeVar("B", bound=NamesAModel)


@cache
def body_of(body_type: type[B]) -> Callable[..., Awaitable[B]]:
    """The JSON body as a dependency: `body: Annotated[X, Depends(body_of(X))]`.

    FastAPI keeps a dependency's value for the rest of the request, so the route and
    `language_model_of(X)` share one validation of the body.
    """

    async def dependency(body: Any) -> Any:
        return body

    dependency.__annotations__["body"] = body_type
    return dependency


@cache
def language_model_of(body_type: type[NamesAModel]) -> Callable[..., Awaitable[ServedModel]]:
    """The model a `body_type` request names, ready to serve:
    `lm: Annotated[ServedModel, Depends(language_model_of(X))]` (404 if there is none)."""

    async def dependency(body: Any, services: ServicesDep) -> ServedModel:
        return services.language_model(body.model)

    dependency.__annotations__["body"] = Annotated[body_type, Depends(body_of(body_type))]
    return dependency


ModelId = Annotated[
    str, Path(pattern=MODEL_NAME, description="the model this URL serves", examples=["char-lstm"])
]


@cache
def language_model_at(body_type: type[NamesAModel]) -> Callable[..., Awaitable[ServedModel]]:
    """`language_model_of` for routes under `/models/{model_id}/`: the path names the model,
    and a body naming another one is a 422."""

    async def dependency(model_id: ModelId, body: Any, services: ServicesDep) -> ServedModel:
        if body.model not in (None, model_id):
            raise InvalidInput(
                f"model: {body.model!r} differs from the model in the path ({model_id!r})",
                param="model",
                code="model_mismatch",
            )
        return services.language_model(model_id)

    dependency.__annotations__["body"] = Annotated[body_type, Depends(body_of(body_type))]
    return dependency
