"""Continuous batching for one language model (DESIGN.md, "Serving many requests").

One asyncio task per model loops: admit waiting requests (their prefixes are encoded as
they join), run one batched step for every active sequence in a worker thread, and hand
each request its new text. Sequences join and leave between steps. The waiting line is
bounded; past it `submit` raises `Overloaded` (503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from app.errors import Overloaded, Timeout
from models.generate import (
    DecodeBatch,
    FinishReason,
    SamplingParams,
    StopTracker,
    TokenLogprob,
)
from models.text import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Delta:
    """New text for one sequence of a request; `finish_reason` set on its last delta.

    `logprobs` holds the step's token when its params asked for them. It may come with
    empty text: text that could still turn into a stop string is held back, its tokens not.
    """

    index: int
    text: str
    tokens: int
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(eq=False)  # identity semantics: requests key the per-step output
class Request:
    """One submitted prefix and its sequences.

    A streamed request hears every step's deltas; any other hears once per sequence, when
    it finishes, with the whole text: a waiting client costs no work per token.
    """

    prefix_ids: list[int]
    params: list[SamplingParams]
    stream: bool = True
    queue: asyncio.Queue[list[Delta]] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    remaining: int = 0

    def cancel(self) -> None:
        """Stop decoding at the next step (client gone, timeout)."""
        self.cancelled = True


@dataclass
class _Row:
    request: Request
    index: int
    tracker: StopTracker
    logprobs: list[TokenLogprob] = field(default_factory=list)  # kept for a plain request


class Scheduler:
    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        max_batch: int,
        max_queue: int,
        on_first_token: Callable[[float], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """`on_first_token(seconds)` hears each request's time from submit to first token.

        `executor` runs the decoding steps (one thread; see app/jobs.py for why the service
        shares one among all its schedulers); without one the scheduler owns a thread.
        """
        self.name = name
        self.on_first_token = on_first_token
        self.tokenizer = tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.batch = DecodeBatch(model)  # type: ignore[arg-type]
        self.rows: list[_Row] = []
        self.waiting: deque[Request] = deque()
        self.waiting_rows = 0
        self._wake = asyncio.Event()
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"decode-{name}")
        self._task: asyncio.Task[None] | None = None
        self.steps = 0
        self.tokens_generated = 0

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def queued(self) -> int:
        return self.waiting_rows

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scheduler-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for row in self.rows:
            row.request.cancel()
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    def submit(
        self, prefix_ids: list[int], params: Sequence[SamplingParams], stream: bool = True
    ) -> Request:
        """Queue a request of len(params) sequences sharing one prefix."""
        n = len(params)
        if self.waiting_rows + n > self.max_queue + max(0, self.max_batch - len(self.rows)):
            raise Overloaded(
                f"model {self.name!r} is at capacity ({len(self.rows)} decoding, "
                f"{self.waiting_rows} waiting); retry shortly"
            )
        request = Request(list(prefix_ids), list(params), stream, remaining=n)
        for i, p in enumerate(params):
            if p.max_new_tokens == 0:  # nothing to decode: answer at once
                request.queue.put_nowait([Delta(i, "", 0, "length")])
                request.remaining -= 1
        if request.remaining:
            self.waiting.append(request)
            self.waiting_rows += request.remaining
            self._wake.set()
        return request

    def submit_all(
        self,
        prefixes: Sequence[list[int]],
        params: Sequence[SamplingParams],
        stream: bool = True,
    ) -> list[Request]:
        """One request per prefix, each with `params`: all queued, or none (503)."""
        requests: list[Request] = []
        try:
            for prefix_ids in prefixes:
                requests.append(self.submit(prefix_ids, params, stream))
        except Overloaded:
            for request in requests:
                request.cancel()
            raise
        return requests

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.rows and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            admitted = self._admit()
            try:
                out = await loop.run_in_executor(self._executor, self._step, admitted)
            except Exception:  # a failed step must not kill the scheduler for good
                log.exception("decoding step failed on %s; dropping its sequences", self.name)
                for row in self.rows:
                    row.request.queue.put_nowait([Delta(row.index, "", 0, "error")])
                self.rows = []
                self.batch.keep(torch.empty(0, dtype=torch.long, device=self.batch.device))
                continue
            for request, deltas in out.items():
                request.queue.put_nowait(deltas)
            if self.on_first_token is not None:
                now = time.perf_counter()
                for request in admitted:
                    self.on_first_token(now - request.submitted)

    def _admit(self) -> list[Request]:
        admitted = []
        room = self.max_batch - len(self.rows)
        while self.waiting and room > 0:
            request = self.waiting[0]
            live = [i for i, p in enumerate(request.params) if p.max_new_tokens > 0]
            if len(live) > room and self.rows:
                break  # wait for room rather than split a request across steps
            self.waiting.popleft()
            self.waiting_rows -= len(live)
            if request.cancelled:
                continue
            request.started = time.perf_counter()
            admitted.append(request)
            room -= len(live)
        return admitted

    def _step(self, admitted: list[Request]) -> dict[Request, list[Delta]]:
        """One decoding step (worker thread): join, sample, emit, drop finished, advance."""
        joining: list[list[SamplingParams]] = []
        for request in admitted:
            live = [i for i, p in enumerate(request.params) if p.max_new_tokens > 0]
            joining.append([request.params[i] for i in live])
            for i in live:
                p = request.params[i]
                self.rows.append(_Row(request, i, StopTracker(p.stop, p.max_new_tokens)))
        if admitted:
            self.batch.add_all([r.prefix_ids for r in admitted], joining)
        if not self.rows:
            return {}
        step = self.batch.sample()
        tokens = step.tokens
        out: dict[Request, list[Delta]] = {}
        keep = []
        piece = self.tokenizer.piece
        for r, (row, token) in enumerate(zip(self.rows, tokens.tolist(), strict=True)):
            request, tracker = row.request, row.tracker
            if request.cancelled:
                continue
            text = tracker.push(piece(token))
            finish = tracker.finish_reason
            logprobs = [step.logprobs[r]] if r in step.logprobs else []
            if request.stream:
                if text or finish or logprobs:
                    delta = Delta(row.index, text, tracker.tokens, finish, logprobs)
                    out.setdefault(request, []).append(delta)
            else:
                row.logprobs += logprobs
                if finish is not None:
                    delta = Delta(row.index, tracker.text, tracker.tokens, finish, row.logprobs)
                    out.setdefault(request, []).append(delta)
            if finish is None:
                keep.append(r)
        self.steps += 1
        self.tokens_generated += len(self.rows)
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.batch.device)
            self.batch.keep(index)
            tokens = tokens.index_select(0, index)
            self.rows = [self.rows[r] for r in keep]
        if self.rows:
            self.batch.feed(tokens)
        return out


async def stream_deltas(request: Request, timeout: float) -> AsyncIterator[list[Delta]]:
    """Yield a request's deltas as steps produce them, until every sequence has finished.

    Raises Timeout (and cancels the work) when the request runs past `timeout` seconds;
    leaving early (a client that disconnects) cancels it too.
    """
    deadline = request.submitted + timeout
    try:
        while request.remaining > 0:
            left = deadline - time.perf_counter()
            try:
                deltas = await asyncio.wait_for(request.queue.get(), timeout=max(left, 0.0))
            except TimeoutError:
                raise Timeout(
                    f"generation ran past the {timeout:g} s request limit", code="timeout"
                ) from None
            request.remaining -= sum(1 for d in deltas if d.finish_reason is not None)
            yield deltas
    finally:
        if request.remaining > 0:
            request.cancel()


async def stream_merged(
    requests: Sequence[Request], timeout: float
) -> AsyncIterator[tuple[int, list[Delta]]]:
    """Several requests' deltas, interleaved as steps produce them: (request position, deltas).

    An error in any of them (a Timeout) ends the whole stream; leaving early, or an error,
    cancels every request still decoding.
    """
    queue: asyncio.Queue[tuple[int, list[Delta] | None] | Exception] = asyncio.Queue()

    async def pump(i: int, request: Request) -> None:
        try:
            async for deltas in stream_deltas(request, timeout):
                queue.put_nowait((i, deltas))
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
            i, deltas = item
            if deltas is None:
                running -= 1
            else:
                yield i, deltas
    finally:
        for task in tasks:
            task.cancel()


@dataclass
class Completion:
    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def add(self, delta: Delta) -> None:
        self.text += delta.text
        self.tokens = max(self.tokens, delta.tokens)
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.logprobs += delta.logprobs


async def collect(request: Request, timeout: float) -> list[Completion]:
    """Wait for every sequence of a request; the completions in choice order."""
    out = [Completion() for _ in request.params]
    async for deltas in stream_deltas(request, timeout):
        for d in deltas:
            out[d.index].add(d)
    return out


async def collect_all(requests: Sequence[Request], timeout: float) -> list[list[Completion]]:
    """`collect` for several requests at once, under one shared time limit."""
    out = [[Completion() for _ in r.params] for r in requests]
    async for i, deltas in stream_merged(requests, timeout):
        for d in deltas:
            out[i][d.index].add(d)
    return out
