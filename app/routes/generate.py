"""Prefix-based generation (d2l §9.5's `predict`, served): JSON or server-sent events."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.deps import Services, ServicesDep
from app.errors import InvalidInput, NotFound, responses
from app.scheduler import collect, stream_deltas
from app.schemas import Usage
from app.schemas.generate import MAX_SEED, Choice, GenerateRequest, GenerateResponse, Timing
from models.bundle import Bundle

router = APIRouter(prefix="/v1/generate", tags=["generation"])

LM_KINDS = ("char-lm", "word-lm")


def language_model(services: Services, name: str | None) -> tuple[str, Bundle]:
    """The named LM, or the default one; 404 listing the available LMs otherwise."""
    name = name or services.default_lm
    if name is None:
        raise NotFound("no language model is loaded", param="model", code="model_not_found")
    return name, services.registry.get(name, LM_KINDS)


def sse(data: object) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


STREAMING_RESPONSES = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
    **responses(400, 401, 404, 413, 422, 503, 504),
}


@router.post("", response_model=GenerateResponse, responses=STREAMING_RESPONSES)
async def create_generation(body: GenerateRequest, services: ServicesDep) -> object:
    """Continue `prefix` with the model: greedy at temperature 0, sampled otherwise.

    The prefix is cleaned with the bundle's rule (non-letters to spaces, lower case). With
    `stream`, each event carries new text; the last event of each choice has its
    `finish_reason`, and a final event the usage, before `data: [DONE]`.
    """
    name, bundle = language_model(services, body.model)
    assert bundle.tokenizer is not None
    encoded = bundle.tokenizer.encode(body.prefix)
    if not encoded.ids:
        raise InvalidInput(
            "prefix has no tokens after cleanup", param="prefix", code="empty_prefix"
        )
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED)
    started = time.perf_counter()
    request = services.scheduler(name).submit(encoded.ids, body.to_params(seed), body.stream)
    gen_id = f"gen-{uuid.uuid4().hex[:20]}"
    timeout = services.settings.request_timeout_s
    summary: dict[str, Any] = {
        "id": gen_id,
        "model": name,
        "prefix": encoded.cleaned,
        "seed": seed,
    }

    if body.stream:

        async def events() -> AsyncIterator[bytes]:
            yield sse({**summary, "unknown_tokens": encoded.unknown})
            completion_tokens = [0] * body.n
            async for deltas in stream_deltas(request, timeout):
                for d in deltas:
                    completion_tokens[d.index] = d.tokens
                    yield sse(
                        {
                            "index": d.index,
                            "text": d.text,
                            "tokens": d.tokens,
                            "finish_reason": d.finish_reason,
                        }
                    )
            usage = Usage(
                prompt_tokens=len(encoded.ids),
                completion_tokens=sum(completion_tokens),
                total_tokens=len(encoded.ids) + sum(completion_tokens),
            )
            yield sse({"usage": usage.model_dump()})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    completions = await collect(request, timeout)
    done = time.perf_counter()
    queue_s = (request.started or done) - request.submitted
    generated = sum(c.tokens for c in completions)
    return GenerateResponse(
        **summary,
        unknown_tokens=encoded.unknown,
        choices=[
            Choice(index=i, text=c.text, tokens=c.tokens, finish_reason=c.finish_reason or "length")
            for i, c in enumerate(completions)
        ],
        usage=Usage(
            prompt_tokens=len(encoded.ids),
            completion_tokens=generated,
            total_tokens=len(encoded.ids) + generated,
        ),
        timing=Timing(queue_ms=queue_s * 1e3, total_ms=(done - started) * 1e3),
    )
