"""Continuous batching for one language model: the engine.

One asyncio task per model loops: admit waiting requests, run one batched step for every
active sequence on the model's own decode thread, and put each request's new text on its
queue. Sequences join and leave between steps. The waiting line is bounded: past it
`submit` raises `QueueFull`. Each scheduler owns its thread, so a model's step never
waits for another model's step (torch releases the GIL inside its operations: two models
decode on two cores at once).

Admission work is bounded per step, so that no prompt, however long, stalls the streams
already running on this model. An admitted
prefix is encoded in passes of at most PREFILL_CHUNK tokens for at most PREFILL_GROUP
requests, carrying its recurrent state between passes; each step runs such passes for at
most `prefill_slice_s` (at least one), then decodes. A prefix joins the batch with its
last (at most PREFILL_CHUNK) tokens, so a short one is encoded in one pass as before.
Chunk boundaries depend only on the prefix length, never on timing or batching.

The engine knows nothing of HTTP or of its consumers: app/streams.py reads a request's
deltas for the routes (streamed, merged, collected, under a time limit) and app/errors.py
maps `QueueFull` to a 503.

Where to extend it:
- how a row picks its next token: `SamplingParams` and `DecodeBatch` (models/generate.py),
  vectorised over the batch; the engine passes each row's params through untouched, and
  the `Decoder` there turns steps into each sequence's deltas (beam search included);
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

from models.generate import Decoder, Delta, Join, SamplingParams, join_states, rows_needed
from models.rnn import LanguageModel, State
from models.text import Tokenizer

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's batch and waiting line have no room for the request's sequences."""

    def __init__(self, model: str, active: int, waiting: int) -> None:
        super().__init__(f"model {model!r} is at capacity ({active} decoding, {waiting} waiting)")
        self.model, self.active, self.waiting = model, active, waiting


@dataclass(eq=False)  # identity semantics: requests key the per-step output
class Request:
    """One submitted prefix and its sequences, one per `params` entry.

    A streamed request hears every step's deltas; any other hears once per sequence, when
    it finishes, with the whole text: a waiting client costs no work per token. A sequence
    asked for no tokens (`max_new_tokens == 0`) is answered at submit and never decoded;
    `live` lists the others. `rows`: the batch rows its sequences take (a beam search
    takes num_beams whatever its n).
    """

    prefix_ids: list[int]
    params: list[SamplingParams]
    stream: bool = True
    queue: asyncio.Queue[list[Delta]] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    on_cancel: Callable[[Request], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.live = [i for i, p in enumerate(self.params) if p.max_new_tokens > 0]
        self.rows = rows_needed(self.params)

    def cancel(self) -> None:
        """Stop decoding (client gone, timeout): a waiting request gives its places back
        at once, a decoding one leaves the batch at the next step."""
        if not self.cancelled:
            self.cancelled = True
            if self.on_cancel is not None:
                self.on_cancel(self)


@dataclass(eq=False)
class _Prefill:
    """An admitted request whose prefix is being encoded: its first `done` tokens are in
    `state`; it joins the batch with the tokens from `end` on (at most PREFILL_CHUNK)."""

    request: Request
    end: int
    state: State | None = None
    done: int = 0

    @property
    def key(self) -> tuple[int, bool]:
        """Requests with equal keys join in one pass."""
        return len(self.request.prefix_ids) - self.end, self.state is None

    def join(self) -> Join[Request]:
        r = self.request
        encoded = None if self.state is None else (self.end, self.state)
        return Join(r, r.prefix_ids, r.params, r.stream, encoded)


class Scheduler:
    PREFILL_CHUNK = 8  # tokens of one prefix per encoding pass
    # Prefixes per encoding pass: with 4, 64 requests of a 19-token prompt joined over 44
    # extra steps and cost about 12% of the 64-client throughput (docs/benchmarks.md).
    PREFILL_GROUP = 16

    def __init__(
        self,
        *,
        name: str,
        model: LanguageModel,
        tokenizer: Tokenizer,
        max_batch: int,
        max_queue: int,
        on_first_token: Callable[[float], None] | None = None,
        prefill_slice_s: float = 0.002,
    ) -> None:
        """`max_batch` sequences decode at once and up to `max_queue` more wait.

        The decoding steps run on a thread of the scheduler's own (app/jobs.py says how
        the service sizes each thread's torch workers), ended by `stop`.
        `on_first_token(seconds)` hears each request's time from submit to first token.
        `prefill_slice_s`: how long a step may spend encoding admitted prefixes (it runs
        at least one pass when there is any to run).
        """
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.on_first_token = on_first_token
        self.prefill_slice_s = prefill_slice_s
        # Admitted, not decoding yet: encoding in passes, then ready to join the batch.
        self.prefilling: deque[_Prefill] = deque()
        self.ready: deque[_Prefill] = deque()
        self.reserved = 0  # batch rows the admitted requests will take
        self.decoder: Decoder[Request] = Decoder(model, tokenizer.detokenizer, tokenizer.banned_ids)
        self.waiting: deque[Request] = deque()
        self.waiting_rows = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"decode-{name}")
        self._task: asyncio.Task[None] | None = None
        self.steps = 0
        self.tokens_generated = 0

    @property
    def active(self) -> int:
        return len(self.decoder)

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
        for request, _ in self.decoder.sequences():
            request.cancel()
        for prefill in (*self.prefilling, *self.ready):
            prefill.request.cancel()
        self._executor.shutdown(wait=True)

    def submit(
        self, prefix_ids: list[int], params: Sequence[SamplingParams], *, stream: bool = True
    ) -> Request:
        """Queue a request of len(params) sequences sharing one prefix; QueueFull if full."""
        request = Request(list(prefix_ids), list(params), stream, on_cancel=self._withdraw)
        room = self.max_queue + max(0, self.max_batch - self.active - self.reserved)
        if self.waiting_rows + request.rows > room:
            raise QueueFull(self.name, self.active, self.waiting_rows)
        live = set(request.live)
        for i in range(len(params)):
            if i not in live:
                request.queue.put_nowait([Delta(i, "", 0, "length")])
        if live:
            self.waiting.append(request)
            self.waiting_rows += request.rows
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

    def _withdraw(self, request: Request) -> None:
        """A cancelled request leaves the waiting line (event loop thread, like `_admit`)."""
        if request in self.waiting:
            self.waiting.remove(request)
            self.waiting_rows -= request.rows

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.decoder and not self.waiting and not self.reserved:
                self._wake.clear()
                await self._wake.wait()
            admitted = self._admit()
            try:
                out, joined = await loop.run_in_executor(self._executor, self._step, admitted)
            except Exception:  # a failed step must not kill the scheduler for good
                log.exception("decoding step failed on %s; dropping its sequences", self.name)
                self._fail_all()
                continue
            for request, deltas in out.items():
                request.queue.put_nowait(deltas)
            if self.on_first_token is not None:
                now = time.perf_counter()
                for request in joined:
                    self.on_first_token(now - request.submitted)

    def _fail_all(self) -> None:
        """After a failed step: every admitted sequence ends with finish_reason "error"."""
        for request, index in self.decoder.sequences():
            request.queue.put_nowait([Delta(index, "", 0, "error")])
        for prefill in (*self.prefilling, *self.ready):
            request = prefill.request
            request.queue.put_nowait([Delta(i, "", 0, "error") for i in request.live])
        self.decoder.clear()
        self.prefilling.clear()
        self.ready.clear()
        self.reserved = 0

    def _admit(self) -> list[Request]:
        """Requests that take their places in the batch now (their rows are reserved)."""
        admitted = []
        room = self.max_batch - self.active - self.reserved
        while self.waiting and room > 0:
            request = self.waiting[0]
            if request.rows > room and (self.decoder or self.reserved):
                break  # wait for room rather than split a request across steps
            self.waiting.popleft()
            self.waiting_rows -= request.rows
            if request.cancelled:
                continue
            request.started = time.perf_counter()
            admitted.append(request)
            room -= request.rows
            self.reserved += request.rows
        return admitted

    def _encode(self, admitted: list[Request], deadline: float) -> list[Request]:
        """Encoding passes (prefix chunks, or joins) until `deadline`, at least one; returns
        the requests that joined the batch."""
        chunk = self.PREFILL_CHUNK
        for request in admitted:
            end = (len(request.prefix_ids) - 1) // chunk * chunk  # whole chunks before the tail
            if end:
                state = self.model.begin_state(1, self.decoder.batch.device)
                self.prefilling.append(_Prefill(request, end, state))
            else:
                self.ready.append(_Prefill(request, 0))
        joined: list[Request] = []
        first = True
        while first or time.perf_counter() < deadline:
            self._drop_cancelled()
            if self.ready:
                joined += self._join()
            elif self.prefilling:
                self._prefill_pass()
            else:
                break
            first = False
        return joined

    def _drop_cancelled(self) -> None:
        for line in (self.prefilling, self.ready):
            for prefill in [p for p in line if p.request.cancelled]:
                line.remove(prefill)
                self.reserved -= prefill.request.rows

    @torch.inference_mode()
    def _prefill_pass(self) -> None:
        """The next PREFILL_CHUNK tokens of the first PREFILL_GROUP prefixes, in one pass."""
        group = list(self.prefilling)[: self.PREFILL_GROUP]
        chunk = [p.request.prefix_ids[p.done : p.done + self.PREFILL_CHUNK] for p in group]
        X = torch.tensor(chunk, device=self.decoder.batch.device)  # (G, PREFILL_CHUNK)
        _, state = self.model(X, join_states([p.state for p in group]))
        for j, prefill in enumerate(group):
            prefill.state = tuple(s[:, j : j + 1] for s in state)
            prefill.done += self.PREFILL_CHUNK
            if prefill.done == prefill.end:
                self.prefilling.remove(prefill)
                self.ready.append(prefill)

    def _join(self) -> list[Request]:
        """The ready requests whose tails can share one pass join the batch."""
        group = [p for p in self.ready if p.key == self.ready[0].key]
        for prefill in group:
            self.ready.remove(prefill)
            self.reserved -= prefill.request.rows
        self.decoder.add_all([p.join() for p in group])
        return [p.request for p in group]

    def _step(self, admitted: list[Request]) -> tuple[dict[Request, list[Delta]], list[Request]]:
        """One step (on this model's decode thread): encode within the slice, then one
        decoding step for every row (sample, emit, drop finished and cancelled rows,
        advance). Returns the deltas and the requests that joined (their first token is in
        this step).

        Sequences asked for no tokens were answered at submit: the decoder's own answer
        for them is dropped here.
        """
        joined = self._encode(admitted, time.perf_counter() + self.prefill_slice_s)
        if not self.decoder:
            return {}, joined
        rows = len(self.decoder)
        out: dict[Request, list[Delta]] = {}
        for request, delta in self.decoder.step(cancelled=_cancelled):
            out.setdefault(request, []).append(delta)
        self.steps += 1
        self.tokens_generated += rows
        return out, joined


def _cancelled(request: Request) -> bool:
    return request.cancelled
