"""Concurrent generation through HTTP: continuous batching against one-at-a-time.

64 clients each ask for 200 tokens (sampled, distinct seeds) at once; the baseline sends
the same 64 requests one after another. Reports aggregate tokens/s of both, their ratio,
and the p50/p99 latency of the concurrent requests against one request alone. Then the
same 64 concurrent requests with the generation controls on (repetition, presence and
frequency penalties over a window, and `logprobs` 5): their aggregate tokens/s against
the plain concurrent figure of the same run.

    python -m bench.concurrency [--clients 64] [--tokens 200] [--model M] [--precision P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from bench._util import machine, serve

# Every per-row control that costs work each step, on at once (beam search: bench.generation).
CONTROLS = {
    "repetition_penalty": 1.2,
    "presence_penalty": 0.3,
    "frequency_penalty": 0.2,
    "penalty_window": 64,
    "logprobs": 5,
}


def body(i: int, tokens: int, controls: bool = False) -> dict[str, object]:
    plain = {"prefix": "the time traveller ", "max_new_tokens": tokens, "seed": i, "top_k": 10}
    return {**plain, **CONTROLS} if controls else plain


async def one(
    client: httpx.AsyncClient, i: int, tokens: int, controls: bool = False
) -> tuple[float, str]:
    started = time.perf_counter()
    r = await client.post("/v1/generate", json=body(i, tokens, controls))
    r.raise_for_status()
    return time.perf_counter() - started, r.json()["choices"][0]["text"]


async def measure(url: str, clients: int, tokens: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        await one(c, 0, tokens)  # warm-up
        alone = min([(await one(c, 0, tokens))[0] for _ in range(3)])
        started = time.perf_counter()
        sequential = [await one(c, i, tokens) for i in range(clients)]
        sequential_s = time.perf_counter() - started
        started = time.perf_counter()
        concurrent = await asyncio.gather(*(one(c, i, tokens) for i in range(clients)))
        concurrent_s = time.perf_counter() - started
    # With the controls on, bracketed by plain runs (the machine's speed drifts), each on
    # fresh connections (a pooled one may be closing as its keep-alive ends).
    timings = {}
    for phase, controls in (("controls", True), ("plain_again", False)):
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
            started = time.perf_counter()
            await asyncio.gather(*(one(c, i, tokens, controls) for i in range(clients)))
            timings[phase] = time.perf_counter() - started
    plain_s = (concurrent_s + timings["plain_again"]) / 2
    latencies = sorted(t for t, _ in concurrent)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    same = [a[1] for a in sequential] == [b[1] for b in concurrent]
    total = clients * tokens
    return {
        "clients": clients,
        "tokens_each": tokens,
        "same_texts_alone_and_batched": same,
        "sequential_tokens_per_s": total / sequential_s,
        "concurrent_tokens_per_s": total / concurrent_s,
        "throughput_ratio": sequential_s / concurrent_s,
        "one_request_alone_s": alone,
        "concurrent_p50_s": statistics.median(latencies),
        "concurrent_p99_s": p99,
        "p99_over_alone": p99 / alone,
        "controls": CONTROLS,
        "controls_concurrent_tokens_per_s": total / timings["controls"],
        "plain_again_tokens_per_s": total / timings["plain_again"],
        "controls_over_plain": plain_s / timings["controls"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent requests")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per request")
    parser.add_argument("--model", default=None, help="RNNLM_DEFAULT_MODEL for the server")
    parser.add_argument(
        "--precision", default=None, help="RNNLM_PRECISION for the server: fp32, bf16, int8"
    )
    args = parser.parse_args()
    print(json.dumps({"machine": machine(), "model": args.model, "precision": args.precision}))
    env = {"RNNLM_DEFAULT_MODEL": args.model} if args.model else {}
    if args.precision:
        env["RNNLM_PRECISION"] = args.precision
    with serve(env) as server:
        print(json.dumps(asyncio.run(measure(server.url, args.clients, args.tokens))))


if __name__ == "__main__":
    main()
