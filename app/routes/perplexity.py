"""Perplexity of a text under a model (d2l §9.3.2): teacher-forced, in batched segments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.deps import ServedModel, ServicesDep, language_model_of
from app.errors import InvalidInput, responses
from app.schemas.perplexity import PerplexityRequest, PerplexityResponse, TokenLogprob

router = APIRouter(prefix="/v1/perplexity", tags=["scoring"])


@router.post(
    "", response_model=PerplexityResponse, responses=responses(400, 401, 404, 413, 422, 503, 504)
)
async def score_perplexity(
    body: PerplexityRequest,
    lm: Annotated[ServedModel, Depends(language_model_of(PerplexityRequest))],
    services: ServicesDep,
) -> PerplexityResponse:
    """Score `text` token by token, each token predicted from everything before it.

    `context` (joined to the text as given: include a separating space) is read first and
    not scored; without it the text's first token has nothing to be predicted from and is
    not scored. Unknown tokens count as `<unk>`.
    """
    context, text = lm.tokenizer.encode(body.context), lm.tokenizer.encode(body.text)
    ids = context.ids + text.ids
    first = len(context.ids) if context.ids else 1
    if len(ids) <= first:
        raise InvalidInput(
            "text must hold at least one token to score (two without a context)",
            param="text",
            code="too_short",
        )
    score = await services.score(lm, ids, first, return_logprobs=body.return_tokens)
    tokens = None
    if body.return_tokens:
        vocab = lm.tokenizer.vocab
        tokens = [
            TokenLogprob(token=vocab.idx_to_token[i], logprob=lp)
            for i, lp in zip(ids[first:], score.token_logprobs or [], strict=True)
        ]
    return PerplexityResponse(
        model=lm.name,
        perplexity=score.perplexity,
        cross_entropy=score.cross_entropy,
        bits_per_token=score.bits_per_token,
        tokens_scored=score.count,
        unknown_tokens=context.unknown + text.unknown,
        tokens=tokens,
    )
