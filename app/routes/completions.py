"""OpenAI-compatible completions, so the `openai` SDK and evaluation harnesses work as is.

`echo` with `logprobs` and `max_tokens: 0` scores a prompt without generating: the way
harnesses measure perplexity. Those prompt log-probabilities come from `score_ids`, the
same code as `/v1/perplexity`; generated tokens' come from the decoder's own logits.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends

from app import sse, streams
from app.completions import CompletionFormat
from app.deps import ServedModel, ServicesDep, language_model_of
from app.errors import InvalidInput
from app.schemas.completions import CompletionRequest, CompletionResponse
from app.schemas.generate import MAX_SEED

router = APIRouter(prefix="/v1/completions", tags=["openai"])


@router.post("", response_model=CompletionResponse, responses=sse.STREAMING_RESPONSES)
async def create_completion(
    body: CompletionRequest,
    lm: Annotated[ServedModel, Depends(language_model_of(CompletionRequest))],
    services: ServicesDep,
) -> object:
    """Complete each prompt `n` times (OpenAI's legacy completions API).

    Prompts are cleaned with the bundle's rule (non-letters to spaces, lower case) and the
    echoed text is the cleaned prompt, as the model read it. Each prompt is its own request
    to the model's scheduler; choice `p * n + i` is choice i of prompt p. Log-probabilities
    are the model's own (before temperature and top_p). With `stream`, `text_completion`
    chunks arrive as tokens do, then `data: [DONE]`. Unsupported OpenAI fields are accepted
    only at their neutral values (see the schema).
    """
    prompts = [lm.tokenizer.encode(p) for p in body.prompts()]
    empty = [i for i, e in enumerate(prompts) if not e.ids]
    if empty:
        raise InvalidInput(
            f"prompt {empty[0]} has no tokens after cleanup", param="prompt", code="empty_prompt"
        )
    scores = None
    if body.echo and body.logprobs is not None:
        scores = [
            await services.score(lm, e.ids, 1, return_logprobs=True, top_logprobs=body.logprobs)
            for e in prompts
        ]
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED)
    requests = lm.scheduler.submit_all(
        [e.ids for e in prompts], body.to_params(seed), stream=body.stream
    )
    out = CompletionFormat(lm.name, lm.tokenizer, body, prompts, scores)
    timeout = services.settings.request_timeout_s
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return sse.response(out.chunks(streams.merged(requests, timeout), usage))
    return out.response(await streams.collect(requests, timeout))
