"""A request's deltas as the routes consume them: one request's in order, several
requests' interleaved, or collected into whole completions.

Each reader runs under the request's time limit (measured from its submission) and
raises `Timeout` past it; however a reader ends before every sequence has finished (a
timeout, a client that leaves, an error), it cancels the work it was reading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from app.errors import Timeout
from app.scheduler import Request
from models.generate import Delta, FinishReason, TokenLogprob


async def deltas(request: Request, timeout: float) -> AsyncIterator[list[Delta]]:
    """Yield a request's deltas as steps produce them, until every sequence has finished."""
    deadline = request.submitted + timeout
    unfinished = len(request.params)
    try:
        while unfinished:
            left = deadline - time.perf_counter()
            try:
                step = await asyncio.wait_for(request.queue.get(), timeout=max(left, 0.0))
            except TimeoutError:
                raise Timeout(
                    f"generation ran past the {timeout:g} s request limit", code="timeout"
                ) from None
            unfinished -= sum(1 for d in step if d.finish_reason is not None)
            yield step
    finally:
        if unfinished:
            request.cancel()


async def merged(
    requests: Sequence[Request], timeout: float
) -> AsyncIterator[tuple[int, list[Delta]]]:
    """Several requests' deltas, interleaved as steps produce them: (request position, deltas).

    An error in any of them (a Timeout) ends the whole stream; leaving early, or an error,
    cancels every request still decoding.
    """
    queue: asyncio.Queue[tuple[int, list[Delta] | None] | Exception] = asyncio.Queue()

    async def pump(i: int, request: Request) -> None:
        try:
            async for step in deltas(request, timeout):
                queue.put_nowait((i, step))
            queue.put_nowait((i, None))
        except Exception as exc:  # handed to the consumer, which raises it
            queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            i, step = item
            if step is None:
                running -= 1
            else:
                yield i, step
    finally:
        for task in tasks:
            task.cancel()


@dataclass
class Completion:
    """One sequence's whole output, assembled from its deltas."""

    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprob: float | None = None  # the total, when the decoder reports one (models.generate)

    def add(self, delta: Delta) -> None:
        self.text += delta.text
        self.tokens = max(self.tokens, delta.tokens)
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.logprobs += delta.logprobs
        if delta.logprob is not None:
            self.logprob = delta.logprob


async def collect(requests: Sequence[Request], timeout: float) -> list[list[Completion]]:
    """Wait for every sequence of every request: completions[request][choice]."""
    out = [[Completion() for _ in r.params] for r in requests]
    async for i, step in merged(requests, timeout):
        for d in step:
            out[i][d.index].add(d)
    return out
