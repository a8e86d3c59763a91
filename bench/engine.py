"""The generation engine in-process: tokens/s with many concurrent sequences, and the
whole book scored, without the HTTP stack.

`app.scheduler.Scheduler` (the service's engine) on one model: --rows sampled,
non-streamed requests of --tokens tokens each, all submitted at once, against one such
request alone, in the same run (tokens/s, the batch's wall time over one alone's).
With --book-chars, the book (0: all of it) scored in one `score_ids` call (what
`/v1/perplexity` runs), best of three.
It needs only torch and the repository, so it runs on a bare GPU machine (bench/gpu.sh).

    python -m bench.engine [--model checkpoints/char-lstm] [--device cpu] [--rows 64 1024]
        [--tokens 200] [--precision fp32] [--book-chars 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import torch

from app.scheduler import Request, Scheduler
from bench.precision import describe_machine, load_lm
from models.generate import SamplingParams
from models.precision import PRECISIONS, with_precision
from models.rnn import LanguageModel
from models.score import score_ids
from models.text import Tokenizer
from scripts.book import find_book

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "the time traveller "


async def finished(request: Request) -> int:
    """Wait for every sequence of a non-streamed request; its generated tokens."""
    left, tokens = len(request.params), 0
    while left:
        for delta in await request.queue.get():
            if delta.finish_reason is not None:
                left -= 1
                tokens += delta.tokens
    return tokens


async def run_batch(
    model: LanguageModel, tokenizer: Tokenizer, rows: int, tokens: int
) -> tuple[float, int]:
    """`rows` one-sequence requests submitted together: (seconds, tokens generated)."""
    scheduler = Scheduler(
        name="bench", model=model, tokenizer=tokenizer, max_batch=rows, max_queue=rows
    )
    scheduler.start()
    ids = tokenizer.encode(PREFIX).ids
    try:
        started = time.perf_counter()
        requests = [
            scheduler.submit(
                ids, [SamplingParams(seed=i, top_k=40, max_new_tokens=tokens)], stream=False
            )
            for i in range(rows)
        ]
        generated = sum(await asyncio.gather(*(finished(r) for r in requests)))
        return time.perf_counter() - started, generated
    finally:
        await scheduler.stop()


def engine(model: LanguageModel, tokenizer: Tokenizer, rows: int, tokens: int) -> dict[str, float]:
    asyncio.run(run_batch(model, tokenizer, min(rows, 8), 8))  # warm-up (allocator, kernels)
    alone_s, _ = asyncio.run(run_batch(model, tokenizer, 1, tokens))
    batch_s, generated = asyncio.run(run_batch(model, tokenizer, rows, tokens))
    return {
        "rows": rows,
        "tokens_each": tokens,
        "tokens_per_s": generated / batch_s,
        "one_alone_tokens_per_s": tokens / alone_s,
        "batch_seconds": batch_s,
        "one_alone_seconds": alone_s,
        "batch_over_alone": batch_s / alone_s,
    }


def score_book(
    model: LanguageModel, tokenizer: Tokenizer, device: torch.device, chars: int
) -> dict[str, float]:
    text = find_book().read_text()  # as bench.perplexity posts it
    ids = tokenizer.encode(text[:chars] if chars else text).ids
    score_ids(model, ids[:5000])  # warm-up
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        score = score_ids(model, ids)
        times.append(time.perf_counter() - started)
    return {"book_tokens": len(ids) - 1, "perplexity": score.perplexity, "seconds": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "char-lstm")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--rows", type=int, nargs="+", default=[64], help="concurrent sequences")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per sequence")
    parser.add_argument(
        "--book-chars", type=int, help="also score the book's first N characters (0: all)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    bundle = load_lm(args.model, device)
    assert bundle.tokenizer is not None and isinstance(bundle.model, LanguageModel)
    model = with_precision(bundle.model, args.precision)
    print(json.dumps({"machine": describe_machine()}), flush=True)
    head = {"model": args.model.name, "device": device.type, "precision": args.precision}
    for rows in args.rows:
        print(json.dumps(head | engine(model, bundle.tokenizer, rows, args.tokens)), flush=True)
    if args.book_chars is not None:
        scored = score_book(model, bundle.tokenizer, device, args.book_chars)
        print(json.dumps(head | scored), flush=True)


if __name__ == "__main__":
    main()
