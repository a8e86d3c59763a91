"""One text's per-token surprisal under several models: where they disagree."""

from __future__ import annotations

import math

from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import ServedModel, Services, ServicesDep
from app.errors import InvalidInput, responses
from app.plots import IMAGE_RESPONSES, MEDIA_TYPES, surprisal_plot
from app.schemas.compare import (
    ComparePlotRequest,
    CompareRequest,
    CompareResponse,
    ModelSurprisal,
)

router = APIRouter(prefix="/v1/compare", tags=["scoring"])


def _models(services: Services, body: CompareRequest) -> list[ServedModel]:
    if len(set(body.models)) != len(body.models):
        raise InvalidInput("models must be distinct", param="models", code="duplicate_models")
    lms = [services.language_model(name) for name in body.models]
    first = lms[0]
    for lm in lms[1:]:
        if lm.tokenizer.rule != first.tokenizer.rule:
            raise InvalidInput(
                f"{lm.name!r} and {first.name!r} tokenize text differently "
                f"({lm.tokenizer.rule.describe()} vs {first.tokenizer.rule.describe()}): "
                "their tokens cannot be lined up",
                param="models",
                code="different_tokenizers",
            )
    return lms


async def compare(services: Services, body: CompareRequest) -> CompareResponse:
    lms = _models(services, body)
    first = lms[0].tokenizer.encode(body.text)
    if len(first.ids) < 2:
        raise InvalidInput(
            "text must hold at least two tokens (the first is not scored)",
            param="text",
            code="too_short",
        )
    rows = []
    for lm in lms:
        ids = lm.tokenizer.encode(body.text).ids
        score = await services.score(lm, ids, 1, return_logprobs=True)
        bits = [
            -lp / math.log(2) if math.isfinite(lp) else None for lp in score.token_logprobs or []
        ]
        finite = math.isfinite(score.nll)
        rows.append(
            ModelSurprisal(
                model=lm.name, surprisal=bits, perplexity=score.perplexity if finite else None
            )
        )
    tokens = lms[0].tokenizer.pieces(first.cleaned)[1:]
    return CompareResponse(tokens=tokens, models=rows)


@router.post(
    "", response_model=CompareResponse, responses=responses(400, 401, 404, 413, 422, 503, 504)
)
async def compare_models(body: CompareRequest, services: ServicesDep) -> CompareResponse:
    """Each model's surprisal (bits) for every token of `text`, lined up token by token.

    The models must tokenize text the same way (the same rule: one token list for all).
    The playground colours the text by these numbers; `/v1/compare/plot` draws them.
    """
    return await compare(services, body)


@router.post(
    "/plot",
    response_class=Response,
    responses={**IMAGE_RESPONSES, **responses(400, 401, 404, 413, 422, 503, 504)},
)
async def plot_comparison(body: ComparePlotRequest, services: ServicesDep) -> Response:
    """The comparison as a strip plot: one row per model, one cell per token, coloured by
    surprisal (darker: more surprised; black: probability 0), PNG or SVG."""
    result = await compare(services, body)
    image = await services.jobs.run(
        surprisal_plot,
        result.tokens,
        [(m.model, m.surprisal) for m in result.models],
        body.format,
        body.width,
        body.height,
    )
    return Response(image, media_type=MEDIA_TYPES[body.format])
