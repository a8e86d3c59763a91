"""n-gram frequency tables and the Zipf plot (d2l §9.2.5)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import ConfigDict, Field, field_validator

from app.corpora import count_text
from app.deps import Services, ServicesDep
from app.errors import InvalidInput, responses
from app.plots import IMAGE_RESPONSES, MEDIA_TYPES, zipf_plot
from app.schemas import PlotOptions
from app.schemas.ngrams import (
    CORPUS_NAME,
    NgramEntryOut,
    NgramPlotRequest,
    NgramRequest,
    NgramResponse,
    NgramTableOut,
    Order,
    ZipfOut,
    check_orders,
)
from models.ngrams import MAX_N, NgramCounter, zipf_fit

router = APIRouter(prefix="/v1/ngrams", tags=["n-grams"])


async def _counter(services: Services, body: NgramRequest) -> NgramCounter:
    if body.corpus is not None:
        return await services.jobs.run(services.corpora.counts, body.corpus, body.level)
    assert body.text is not None
    return await services.jobs.run(count_text, body.text, body.level, max(body.n))


@router.post("", response_model=NgramResponse, responses=responses(400, 401, 404, 413, 422, 503))
async def count_ngrams(body: NgramRequest, services: ServicesDep) -> NgramResponse:
    """Frequency tables for each requested n over a named corpus or posted text.

    Ordered by count, ties by first occurrence (as `collections.Counter.most_common`).
    """
    counter = await _counter(services, body)
    tables = []
    for n in body.n:
        table = counter.table(n, body.top_k, body.min_count)
        tables.append(
            NgramTableOut(
                n=n,
                total=table.total,
                unique=table.unique,
                entries=[
                    NgramEntryOut(
                        tokens=list(e.tokens), count=e.count, frequency=e.count / table.total
                    )
                    for e in table.entries
                ],
            )
        )
    unigrams = counter.counts(1)
    fit = zipf_fit(unigrams[unigrams >= body.min_count])
    return NgramResponse(
        source=body.corpus or "text",
        level=body.level,
        tokens=counter.tokens,
        tables=tables,
        zipf=ZipfOut(exponent=fit.exponent, intercept=fit.intercept, r2=fit.r2) if fit else None,
    )


async def _plot(services: Services, body: NgramPlotRequest) -> Response:
    counter = await _counter(services, body)
    curves = [(f"{n}-gram" if n > 1 else "unigram", counter.counts(n).tolist()) for n in body.n]
    if not any(counts for _, counts in curves):
        raise InvalidInput(
            f"the text has no {body.level} n-grams of order {min(body.n)} or more to plot",
            param="text",
            code="nothing_to_plot",
        )
    title = f"{body.level} n-grams of {body.corpus or 'the posted text'}"
    image = await services.jobs.run(zipf_plot, curves, title, body.format, body.width, body.height)
    return Response(image, media_type=MEDIA_TYPES[body.format])


class PlotQuery(PlotOptions):
    model_config = ConfigDict(extra="forbid")

    corpus: str = Field("timemachine", pattern=CORPUS_NAME, description="a named corpus")
    level: Literal["word", "char"] = "word"
    n: list[Order] = Field([1, 2, 3], description=f"orders, each 1..{MAX_N}")

    @field_validator("n")
    @classmethod
    def _orders(cls, n: list[int]) -> list[int]:
        return check_orders(n)


@router.get(
    "/plot", response_class=Response, responses={**IMAGE_RESPONSES, **responses(401, 404, 422, 503)}
)
async def plot_ngrams(query: Annotated[PlotQuery, Query()], services: ServicesDep) -> Response:
    """The book's log-log plot of frequency against rank, one curve per n, for a corpus."""
    body = NgramPlotRequest.model_validate(query.model_dump(), strict=False)
    return await _plot(services, body)


@router.post(
    "/plot",
    response_class=Response,
    responses={**IMAGE_RESPONSES, **responses(400, 401, 404, 413, 422, 503)},
)
async def plot_ngrams_of_text(body: NgramPlotRequest, services: ServicesDep) -> Response:
    """The same figure for posted text (or a named corpus), PNG or SVG."""
    return await _plot(services, body)
