"""The n-gram side of scoring: other orders and smoothings of a model's counts, the
per-token breakdown of counts behind each probability, and why a text has probability 0."""

from __future__ import annotations

import dataclasses
import math

from app.deps import ServedModel, Services
from app.errors import InvalidInput
from app.schemas.perplexity import (
    MAX_BREAKDOWN_TOKENS,
    NgramCount,
    PerplexityRequest,
    TokenBreakdown,
)
from models.ngram_lm import Breakdown, NgramLM
from models.text import Tokenizer

NGRAM_FIELDS = ("breakdown", "order", "smoothing")


async def scoring_model(
    lm: ServedModel, body: PerplexityRequest, services: Services
) -> ServedModel:
    """The model a perplexity request scores with: the served one, or for an n-gram model
    its counts at the requested order and smoothing. Checks the n-gram-only fields."""
    asked = [f for f in NGRAM_FIELDS if getattr(body, f, None) not in (None, False)]
    if not asked:
        return lm
    if not isinstance(lm.model, NgramLM):
        raise InvalidInput(
            f"{asked[0]} is for n-gram models; {lm.name!r} is a {lm.bundle.kind} model",
            param=asked[0],
            code="not_an_ngram_model",
        )
    if body.breakdown and (body.texts is not None or body.per_line):
        raise InvalidInput(
            "breakdown is for one text (not texts or per_line)", param="breakdown", code="one_text"
        )
    if body.order is not None and body.order > lm.model.config.order:
        raise InvalidInput(
            f"order must be at most {lm.model.config.order} for {lm.name!r} (its counts go "
            f"no higher), got {body.order}",
            param="order",
            code="order_too_high",
        )
    if body.order is None and body.smoothing is None:
        return lm
    variant = await services.jobs.run(lm.model.variant, body.order, body.smoothing)
    return dataclasses.replace(lm, model=variant)


async def breakdown(
    lm: ServedModel, services: Services, ids: list[int], first: int
) -> list[TokenBreakdown]:
    """The model's breakdown of ids[first:] as the response shows it, contexts as text."""
    model = lm.model
    assert isinstance(model, NgramLM)
    if len(ids) - first > MAX_BREAKDOWN_TOKENS:
        raise InvalidInput(
            f"breakdown covers at most {MAX_BREAKDOWN_TOKENS} scored tokens, the text has "
            f"{len(ids) - first}",
            param="breakdown",
            code="too_long",
        )
    b = await services.jobs.run(model.breakdown, ids, first)
    tokenizer = lm.tokenizer
    out = []
    for i, t in enumerate(range(first, len(ids))):
        counts = [
            NgramCount(
                n=n,
                context=tokenizer.decode(ids[t - n + 1 : t]),
                count=b.count[i][n - 1],
                context_count=b.context_count[i][n - 1],
                used_count=b.used_count[i][n - 1],
                used_context_count=b.used_context_count[i][n - 1],
            )
            for n in range(1, model.config.order + 1)
            if b.count[i][n - 1] >= 0
        ]
        lp = b.logprob[i]
        out.append(
            TokenBreakdown(
                token=tokenizer.tokens([ids[t]])[0],
                probability=math.exp(lp),
                logprob=lp if math.isfinite(lp) else None,
                order=b.context_order[i],
                backoff_order=b.backoff_order[i],
                counts=counts,
            )
        )
    return out


def zero_reason(model: NgramLM, tokenizer: Tokenizer, ids: list[int], t: int) -> str:
    """Why an n-gram model gives ids[t] probability 0: the counts of its context."""
    b: Breakdown = model.breakdown(ids[: t + 1], t)
    n = b.context_order[0]
    token = tokenizer.tokens([ids[t]])[0]
    context = tokenizer.decode(ids[t - n + 1 : t])
    return (
        f"{token!r} never follows {context!r} in the training text: n(context, token) = 0 "
        f"of n(context) = {b.context_count[0][n - 1]}, and {model.config.smoothing} gives an "
        "n-gram never seen probability 0 (a smoothed model would not)"
    )
