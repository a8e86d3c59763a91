"""Prefix-based generation (d2l §9.5's `predict`, served): JSON or server-sent events."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app import sse, streams
from app.deps import ServedModel, ServicesDep, body_of, language_model_of
from app.errors import InvalidInput
from app.schemas import Usage
from app.schemas.generate import Choice, GenerateRequest, GenerateResponse, Timing, logprobs_json
from app.schemas.sampling import MAX_SEED

router = APIRouter(prefix="/v1/generate", tags=["generation"])
GenerateBody = Annotated[GenerateRequest, Depends(body_of(GenerateRequest))]
GenerateModel = Annotated[ServedModel, Depends(language_model_of(GenerateRequest))]


@router.post("", response_model=GenerateResponse, responses=sse.STREAMING_RESPONSES)
async def create_generation(
    body: GenerateBody,
    lm: GenerateModel,
    services: ServicesDep,
) -> object:
    """Continue `prefix` with the model: greedy at temperature 0, sampled otherwise, or
    beam search with `num_beams`.

    The prefix is normalized with the bundle's rule (`tokenizer` in /v1/models). The
    controls apply in the order models/generate.py documents: logit_bias, penalties and
    no_repeat_ngram_size over the penalty window, then temperature, top_k, top_p, min_p,
    typical_p. With `logprobs`, each generated token comes with its log-probability and the
    likeliest tokens at its place (the model's own distribution). With `stream`, each event
    carries new text (and its tokens' logprobs); the last event of each choice has its
    `finish_reason`, and a final event the usage, before `data: [DONE]`.
    """
    encoded = lm.tokenizer.encode(body.prefix)
    if not encoded.ids:
        raise InvalidInput(
            "prefix has no tokens after cleanup", param="prefix", code="empty_prefix"
        )
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED)
    params = body.to_params(seed, lm.tokenizer, lm.stop_strings(body.stop, apply_rule=False))
    started = time.perf_counter()
    precision = services.precision(body.precision)
    request = lm.scheduler_for(precision).submit(encoded.ids, params, stream=body.stream)
    timeout = services.settings.request_timeout_s
    summary: dict[str, Any] = {
        "id": f"gen-{uuid.uuid4().hex[:20]}",
        "model": lm.name,
        "prefix": encoded.cleaned,
        "seed": seed,
        "precision": precision,
    }

    if body.stream:

        async def events() -> AsyncIterator[bytes]:
            yield sse.event({**summary, "unknown_tokens": encoded.unknown})
            completion_tokens = [0] * body.n
            async for deltas in streams.deltas(request, timeout):
                for d in deltas:
                    completion_tokens[d.index] = d.tokens
                    event: dict[str, Any] = {
                        "index": d.index,
                        "text": d.text,
                        "tokens": d.tokens,
                        "finish_reason": d.finish_reason,
                    }
                    if body.logprobs is not None:
                        event["logprobs"] = logprobs_json(d.logprobs, lm.tokenizer)
                        if d.logprob is not None:
                            event["logprob"] = d.logprob
                    yield sse.event(event)
            usage = Usage.of(len(encoded.ids), sum(completion_tokens))
            yield sse.event({"usage": usage.model_dump()})

        return sse.response(events())

    [completions] = await streams.collect([request], timeout)
    done = time.perf_counter()
    queue_s = (request.started or done) - request.submitted
    response = GenerateResponse(
        **summary,
        unknown_tokens=encoded.unknown,
        choices=[
            Choice(
                index=i,
                text=c.text,
                tokens=c.tokens,
                finish_reason=c.finish_reason or "length",
                logprob=c.logprob,
            )
            for i, c in enumerate(completions)
        ],
        usage=Usage.of(len(encoded.ids), sum(c.tokens for c in completions)),
        timing=Timing(queue_ms=queue_s * 1e3, total_ms=(done - started) * 1e3),
    )
    if body.logprobs is None:
        return response
    # The per-token lists join the body as plain JSON (their schema: `TokenLogprobs`).
    content = response.model_dump(mode="json")
    for choice, c in zip(content["choices"], completions, strict=True):
        choice["logprobs"] = logprobs_json(c.logprobs, lm.tokenizer)
    return JSONResponse(content)
