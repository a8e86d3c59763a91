"""Continuous batching for one language model: the engine.

One asyncio task per model loops: admit waiting requests (their prefixes are encoded as
they join), run one batched step for every active sequence on the decode thread, and put
each request's new text on its queue. Sequences join and leave between steps. The waiting
line is bounded: past it `submit` raises `QueueFull`.

The engine knows nothing of HTTP or of its consumers: app/streams.py reads a request's
deltas for the routes (streamed, merged, collected, under a time limit) and app/errors.py
maps `QueueFull` to a 503.

Where to extend it:
- how a row picks its next token: `SamplingParams` and `DecodeBatch` (models/generate.py),
  vectorised over the batch; the engine passes each row's params through untouched;
- how a row's tokens become text: the per-row detokenizer its `StopTracker` holds
  (`Tokenizer.detokenizer`: a byte model's rows never emit half a UTF-8 character).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from models.generate import (
    DecodeBatch,
    FinishReason,
    SamplingParams,
    StopTracker,
    TokenLogprob,
)
from models.rnn import LanguageModel
from models.text import Tokenizer

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's batch and waiting line have no room for the request's sequences."""

    def __init__(self, model: str, active: int, waiting: int) -> None:
        super().__init__(f"model {model!r} is at capacity ({active} decoding, {waiting} waiting)")
        self.model, self.active, self.waiting = model, active, waiting


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
    """One submitted prefix and its sequences, one per `params` entry.

    A streamed request hears every step's deltas; any other hears once per sequence, when
    it finishes, with the whole text: a waiting client costs no work per token. A sequence
    asked for no tokens (`max_new_tokens == 0`) is answered at submit and never decoded;
    `live` lists the others.
    """

    prefix_ids: list[int]
    params: list[SamplingParams]
    stream: bool = True
    queue: asyncio.Queue[list[Delta]] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None

    def __post_init__(self) -> None:
        self.live = [i for i, p in enumerate(self.params) if p.max_new_tokens > 0]

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
        *,
        name: str,
        model: LanguageModel,
        tokenizer: Tokenizer,
        max_batch: int,
        max_queue: int,
        executor: ThreadPoolExecutor | None = None,
        on_first_token: Callable[[float], None] | None = None,
    ) -> None:
        """`max_batch` sequences decode at once and up to `max_queue` more wait.

        `executor` runs the decoding steps (one thread; app/jobs.py says why the service
        shares one among all its schedulers); without one the scheduler owns a thread.
        `on_first_token(seconds)` hears each request's time from submit to first token.
        """
        self.name = name
        self.tokenizer = tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.on_first_token = on_first_token
        self.batch = DecodeBatch(model, tokenizer.banned_ids)
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
        self, prefix_ids: list[int], params: Sequence[SamplingParams], *, stream: bool = True
    ) -> Request:
        """Queue a request of len(params) sequences sharing one prefix; QueueFull if full."""
        request = Request(list(prefix_ids), list(params), stream)
        room = self.max_queue + max(0, self.max_batch - len(self.rows))
        if self.waiting_rows + len(request.live) > room:
            raise QueueFull(self.name, len(self.rows), self.waiting_rows)
        live = set(request.live)
        for i in range(len(params)):
            if i not in live:
                request.queue.put_nowait([Delta(i, "", 0, "length")])
        if live:
            self.waiting.append(request)
            self.waiting_rows += len(live)
            self._wake.set()
        return request

    def submit_all(
        self, prefixes: Sequence[list[int]], params: Sequence[SamplingParams], *, stream: bool
    ) -> list[Request]:
        """One request per prefix, each with `params`: all queued, or none (QueueFull)."""
        requests: list[Request] = []
        try:
            for prefix_ids in prefixes:
                requests.append(self.submit(prefix_ids, params, stream=stream))
        except QueueFull:
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
            if len(request.live) > room and self.rows:
                break  # wait for room rather than split a request across steps
            self.waiting.popleft()
            self.waiting_rows -= len(request.live)
            if request.cancelled:
                continue
            request.started = time.perf_counter()
            admitted.append(request)
            room -= len(request.live)
        return admitted

    def _join(self, admitted: list[Request]) -> None:
        """Encode the admitted prefixes and give each live sequence its row."""
        for request in admitted:
            for i in request.live:
                p = request.params[i]
                tracker = StopTracker(p.stop, p.max_new_tokens, self.tokenizer.detokenizer())
                self.rows.append(_Row(request, i, tracker))
        self.batch.add_all(
            [r.prefix_ids for r in admitted],
            [[r.params[i] for i in r.live] for r in admitted],
        )

    def _step(self, admitted: list[Request]) -> dict[Request, list[Delta]]:
        """One decoding step (decode thread): join, sample, emit, drop finished, advance."""
        if admitted:
            self._join(admitted)
        if not self.rows:
            return {}
        step = self.batch.sample()
        tokens = step.tokens
        out: dict[Request, list[Delta]] = {}
        keep = []
        for r, (row, token) in enumerate(zip(self.rows, tokens.tolist(), strict=True)):
            request, tracker = row.request, row.tracker
            if request.cancelled:
                continue
            text = tracker.push(token)
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
