"""The engine and its readers: logprobs in deltas, several prompts at once, time limits."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from app import streams
from app.errors import Timeout
from app.scheduler import QueueFull, Scheduler
from models.generate import SamplingParams, generate
from models.text import Tokenizer
from tests.conftest import tiny_lm


def run(coro):
    return asyncio.run(coro)


def engine(model, tokenizer: Tokenizer, **kw) -> Scheduler:
    return Scheduler(
        name="m", model=model, tokenizer=tokenizer, **{"max_batch": 8, "max_queue": 8, **kw}
    )


def test_several_prompts_decode_together_like_alone(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32)
    prefixes = [char_tokenizer.encode(p).ids for p in ("the ", "time ", "machine ")]
    params = [SamplingParams(seed=s, max_new_tokens=12 + 3 * s, logprobs=1) for s in range(2)]
    waits: list[float] = []

    async def main():
        scheduler = engine(model, char_tokenizer, on_first_token=waits.append)
        scheduler.start()
        try:
            requests = scheduler.submit_all(prefixes, params, stream=True)
            return await streams.collect(requests, timeout=60), scheduler.tokens_generated
        finally:
            await scheduler.stop()

    out, generated = run(main())
    assert len(waits) == 3 and all(w >= 0 for w in waits)  # one first token per request
    assert generated == 3 * (12 + 15)
    for prefix, completions in zip(prefixes, out, strict=True):
        alone = generate(model, prefix, params, char_tokenizer.detokenizer)
        assert [c.text for c in completions] == [t.text for t in alone]
        for c, p in zip(completions, params, strict=True):
            assert len(c.logprobs) == c.tokens == p.max_new_tokens
            assert "".join(char_tokenizer.piece(t.token) for t in c.logprobs) == c.text
            assert all(len(t.top) == 1 and t.logprob <= 0 for t in c.logprobs)


def test_submit_all_is_all_or_nothing(char_tokenizer: Tokenizer) -> None:
    scheduler = engine(tiny_lm("gru"), char_tokenizer, max_batch=2, max_queue=1)
    prefixes = [[1, 2]] * 3
    with pytest.raises(QueueFull):
        scheduler.submit_all(prefixes, [SamplingParams(), SamplingParams()], stream=True)
    assert all(r.cancelled for r in scheduler.waiting)  # what got in is withdrawn


def test_merged_stream_times_out_and_cancels_every_request(char_tokenizer: Tokenizer) -> None:
    async def main():
        scheduler = engine(tiny_lm("gru"), char_tokenizer)  # never started
        requests = scheduler.submit_all([[1], [2]], [SamplingParams()], stream=True)
        with pytest.raises(Timeout):
            async for _ in streams.merged(requests, timeout=0.05):
                pass
        await asyncio.sleep(0)  # let the cancelled pumps unwind
        return requests

    assert all(r.cancelled for r in run(main()))


@pytest.mark.parametrize("stream", [True, False])
def test_only_streamed_requests_hear_every_step(char_tokenizer: Tokenizer, stream: bool) -> None:
    """A plain request is woken once per finished sequence, with the same text."""
    model = tiny_lm("gru", num_hiddens=32)
    prefix = char_tokenizer.encode("the ").ids
    params = [SamplingParams(seed=s, max_new_tokens=5 + 10 * s) for s in range(2)]

    async def main():
        scheduler = engine(model, char_tokenizer)
        scheduler.start()
        try:
            request = scheduler.submit(prefix, params, stream=stream)
            wakeups, texts, unfinished = 0, ["", ""], len(params)
            while unfinished:
                deltas = await asyncio.wait_for(request.queue.get(), 30)
                wakeups += 1
                unfinished -= sum(d.finish_reason is not None for d in deltas)
                for d in deltas:
                    texts[d.index] += d.text
            return wakeups, texts
        finally:
            await scheduler.stop()

    wakeups, texts = run(main())
    assert texts == [t.text for t in generate(model, prefix, params, char_tokenizer.detokenizer)]
    assert wakeups == (15 if stream else 2)


def test_a_cancelled_request_frees_its_queue_places_at_once(char_tokenizer: Tokenizer) -> None:
    """Issue 12, item 8: hung-up clients' queued sequences must not refuse new requests."""

    async def main():
        scheduler = engine(tiny_lm("gru"), char_tokenizer, max_batch=1, max_queue=2)
        first = scheduler.submit([1], [SamplingParams()], stream=False)
        second = scheduler.submit([1], [SamplingParams()] * 2, stream=False)
        with pytest.raises(QueueFull):
            scheduler.submit([1], [SamplingParams()], stream=False)
        first.cancel()
        second.cancel()
        assert scheduler.queued == 0
        scheduler.submit([1], [SamplingParams()] * 3, stream=False)  # room again, at once
        return scheduler.queued

    assert run(main()) == 3


def test_long_prefixes_are_encoded_a_bounded_pass_per_step(char_tokenizer: Tokenizer) -> None:
    """Issue 12, item 3: admission work is bounded per step. While 16 long prefixes of
    distinct lengths join, a running stream still gets a token every step, and no step
    encodes more than one pass of at most `prefill_chunk` tokens (slice 0: one pass)."""
    model = tiny_lm("gru", num_hiddens=32)
    passes: list[tuple[int, int, int]] = []  # (step, rows, tokens) of each forward call
    real_forward = model.forward
    long = [[1 + (i + j) % 20 for j in range(300 + 7 * i)] for i in range(16)]

    async def main():
        scheduler = engine(model, char_tokenizer, max_batch=64, prefill_slice_s=0.0)

        def counting(X, state=None):
            passes.append((scheduler.steps, *X.shape))
            return real_forward(X, state)

        model.forward = counting
        scheduler.start()
        try:
            running = scheduler.submit([1, 2], [SamplingParams(temperature=0, max_new_tokens=400)])
            await running.queue.get()
            first_step = scheduler.steps
            waiting = scheduler.submit_all(long, [SamplingParams(max_new_tokens=2)], stream=False)
            done = streams.collect(waiting, timeout=120)
            tokens = 0
            async for _ in streams.deltas(running, timeout=120):
                tokens += 1
                if tokens == 10:
                    finished = await done
            return first_step, tokens, finished
        finally:
            await scheduler.stop()

    first_step, tokens, finished = run(main())
    during = [(rows, t) for step, rows, t in passes if step >= first_step]
    assert all(t <= Scheduler.PREFILL_CHUNK for _, t in during)
    per_step = Counter(step for step, _, _ in passes if step >= first_step)
    assert max(per_step.values()) == 1  # one pass a step with no time slice
    assert tokens == 399 and all(c.finish_reason == "length" for cs in finished for c in cs)
