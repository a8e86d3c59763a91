"""n-gram frequency tables and the Zipf plot (d2l §9.2.5)."""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar, cast

from fastapi import APIRouter, Query, Request
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
    NgramOptions,
    NgramPlotRequest,
    NgramPlotUpload,
    NgramRequest,
    NgramResponse,
    NgramTableOut,
    Order,
    ZipfOut,
    check_orders,
)
from app.uploads import is_upload, read_json, read_upload, request_body, upload_text
from models.ngrams import MAX_N, NgramCounter, zipf_fit

router = APIRouter(prefix="/v1/ngrams", tags=["n-grams"])
J = TypeVar("J", bound=NgramRequest)
_SOURCES = {"text": "the posted text", "file": "the uploaded file"}


async def _parse(
    request: Request, json_model: type[J], upload_model: type[NgramOptions]
) -> tuple[J, str]:
    """The request as `json_model` from JSON or an upload, and what it counts (a name)."""
    if not is_upload(request):
        body = await read_json(request, json_model)
        return body, body.corpus or "text"
    form, data = await read_upload(request, upload_model)
    text = upload_text(data, form.level)
    fields = {**form.model_dump(), "corpus": None, "text": text}
    return cast(J, json_model.model_construct(**fields)), "file"


async def _counter(services: Services, body: NgramRequest) -> NgramCounter:
    if body.corpus is not None:
        return await services.jobs.run(services.corpora.counts, body.corpus, body.level)
    assert body.text is not None
    return await services.jobs.run(count_text, body.text, body.level, max(body.n))


@router.post(
    "",
    response_model=NgramResponse,
    responses=responses(400, 401, 404, 413, 422, 503),
    openapi_extra=request_body(NgramRequest, NgramOptions),
)
async def count_ngrams(request: Request, services: ServicesDep) -> NgramResponse:
    """Frequency tables for each requested n over a named corpus, posted text, or an
    uploaded plain-text file (`multipart/form-data`: `file`, and the other fields as form
    fields; `n` repeated or comma-separated).

    Ordered by count, ties by first occurrence (as `collections.Counter.most_common`).
    """
    body, source = await _parse(request, NgramRequest, NgramOptions)
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
        source=source,
        level=body.level,
        tokens=counter.tokens,
        tables=tables,
        zipf=ZipfOut(exponent=fit.exponent, intercept=fit.intercept, r2=fit.r2) if fit else None,
    )


async def _plot(services: Services, body: NgramPlotRequest, source: str) -> Response:
    counter = await _counter(services, body)
    curves = [(f"{n}-gram" if n > 1 else "unigram", counter.counts(n)) for n in body.n]
    if not any(len(counts) for _, counts in curves):
        raise InvalidInput(
            f"the text has no {body.level} n-grams of order {min(body.n)} or more to plot",
            param="text",
            code="nothing_to_plot",
        )
    title = f"{body.level} n-grams of {_SOURCES.get(source, source)}"
    image = await services.jobs.run(zipf_plot, curves, title, body.format, body.width, body.height)
    return Response(image, media_type=MEDIA_TYPES[body.format])


class PlotQuery(PlotOptions):
    model_config = ConfigDict(extra="forbid")

    corpus: str = Field("timemachine", pattern=CORPUS_NAME, description="a named corpus")
    level: Literal["word", "char"] = "word"
    n: list[Order] = Field(
        [1, 2, 3], min_length=1, max_length=MAX_N, description=f"orders, each 1..{MAX_N}"
    )

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
    return await _plot(services, body, body.corpus or "text")


@router.post(
    "/plot",
    response_class=Response,
    responses={**IMAGE_RESPONSES, **responses(400, 401, 404, 413, 422, 503)},
    openapi_extra=request_body(NgramPlotRequest, NgramPlotUpload),
)
async def plot_ngrams_of_text(request: Request, services: ServicesDep) -> Response:
    """The same figure for posted text, an uploaded file (as for POST /v1/ngrams) or a
    named corpus, PNG or SVG."""
    body, source = await _parse(request, NgramPlotRequest, NgramPlotUpload)
    return await _plot(services, body, source)
