"""OpenAI-compatible completions, so the `openai` SDK and evaluation harnesses work as is.

`echo` with `logprobs` and `max_tokens: 0` scores a prompt without generating: the way
harnesses measure perplexity. Those prompt log-probabilities come from `score_many`, the
same code as `/v1/perplexity`; generated tokens' come from the decoder's own logits.

The same route is served under one model's prefix, `/models/{id}/v1/completions`: lm-eval's
remote tokenizer strips `/v1/completions` from its base_url, so that base URL makes it
tokenize with `/models/{id}/tokenize`, the model's own tokenizer (app/routes/tokenize.py).
"""

from __future__ import annotations

import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends

from app import sse, streams
from app.completions import CompletionFormat, changed_stops, read_prompts
from app.deps import ServedModel, ServicesDep, body_of, language_model_at, language_model_of
from app.schemas.completions import CompletionRequest, CompletionResponse
from app.schemas.sampling import MAX_SEED

router = APIRouter(prefix="/v1/completions", tags=["openai"])
scoped_router = APIRouter(tags=["openai"])
CompletionBody = Annotated[CompletionRequest, Depends(body_of(CompletionRequest))]
CompletionModel = Annotated[ServedModel, Depends(language_model_of(CompletionRequest))]


@router.post("", response_model=CompletionResponse, responses=sse.STREAMING_RESPONSES)
async def create_completion(
    body: CompletionBody,
    lm: CompletionModel,
    services: ServicesDep,
) -> object:
    """Complete each prompt `n` times (OpenAI's legacy completions API).

    A prompt is a text or the model's token ids (one list, or a list of lists). Texts and
    stop strings are normalized with the bundle's rule (`tokenizer` in /v1/models; the
    book's: non-letters to spaces, lower case) and the echoed text is the normalized
    prompt, as the model read it; `prompt_cleanup` and `stop_cleanup` list what the rule
    changed, and `strict_cleanup` refuses it instead. Token ids are read as they are, the
    same as the text they stand for. Each prompt is its own request to the model's scheduler; choice
    `p * n + i` is choice i of prompt p. With `best_of`, best_of completions per prompt are
    sampled (seeds seed to seed + best_of - 1) and the n with the highest total
    log-probability come back, best first. Log-probabilities are the model's own (before
    every control). With `stream`, `text_completion` chunks arrive as tokens do, then
    `data: [DONE]`.
    """
    size = sum(len(p) for p in body.prompts())
    prompts = await services.work(lambda: read_prompts(lm.name, lm.tokenizer, body), size)
    stop_cleanup = changed_stops(lm.tokenizer, body)
    scores = None
    if body.echo and body.logprobs is not None:  # all prompts side by side, in one job
        texts = [(e.ids, 1) for e in prompts]
        scores = await services.score_many(
            lm, texts, return_logprobs=True, top_logprobs=body.logprobs
        )
    # Sizes in list entries: echoed prompt logprobs, then generated tokens and logprobs.
    per_token = 1 + (body.logprobs or 0)
    echoed = sum(len(e.ids) for e in prompts) * per_token if scores else 0
    out = await services.work(
        lambda: CompletionFormat(lm.name, lm.tokenizer, body, prompts, scores, stop_cleanup),
        echoed,
    )
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED)
    stop = lm.stop_strings(body.stop_list(), apply_rule=True)
    params = body.to_params(seed, lm.tokenizer, stop)
    precision = services.precision(body.precision)
    requests = lm.scheduler_for(precision).submit_all(
        [e.ids for e in prompts], params, stream=body.stream
    )
    out = CompletionFormat(lm.name, lm.tokenizer, body, prompts, scores, stop_cleanup)
    timeout = services.settings.request_timeout_s
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return sse.response(out.chunks(streams.merged(requests, timeout), usage))
    completions = await streams.collect(requests, timeout)
    generated = sum(c.tokens for cs in completions for c in cs)  # best_of's candidates too
    if body.candidates > body.n:
        completions = [best(candidates, body.n) for candidates in completions]
    size = echoed * body.n + generated * per_token
    return await services.answer(lambda: out.response(completions, generated), size)


def best(candidates: list[streams.Completion], n: int) -> list[streams.Completion]:
    """The n completions of highest total log-probability (OpenAI's best_of), best first;
    equal totals keep their sampling order."""

    def total(i: int) -> float:
        logprob = candidates[i].logprob
        return -math.inf if logprob is None else logprob

    ranked = sorted(range(len(candidates)), key=lambda i: (-total(i), i))
    return [candidates[i] for i in ranked[:n]]


@scoped_router.post(
    "/models/{model_id}/v1/completions",
    response_model=CompletionResponse,
    responses=sse.STREAMING_RESPONSES,
)
async def create_model_completion(
    body: CompletionBody,
    lm: Annotated[ServedModel, Depends(language_model_at(CompletionRequest))],
    services: ServicesDep,
) -> object:
    """/v1/completions of the model in the path: the base URL for one model's evaluation."""
    return await create_completion(body, lm, services)
