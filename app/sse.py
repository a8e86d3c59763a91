"""Server-sent events as the streaming routes send them: `data: <json>` events, an error
event when something fails once the stream has begun, and `data: [DONE]` at the end of
every stream, failed or not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from app.errors import APIError, responses

DONE = b"data: [DONE]\n\n"

# OpenAPI: a streaming route answers JSON, or events when the request asks to stream.
STREAMING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
    **responses(400, 401, 404, 413, 422, 503, 504),
}


def event(data: object) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def error_event(exc: APIError) -> bytes:
    """The error body as an event (the openai SDK raises it as an APIError)."""
    return b"data: " + exc.response().body + b"\n\n"


async def _ended(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for data in events:
            yield data
    except APIError as exc:  # a timeout: the status line has gone, the error goes as an event
        yield error_event(exc)
    yield DONE


def response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """`events` as an SSE response, ended by [DONE] (after an error event if it fails)."""
    return StreamingResponse(_ended(events), media_type="text/event-stream")
