"""Bounded soak test: mixed traffic against a live server, every answer checked.

Workers send generate (plain and streamed), perplexity, n-gram and forecast requests for
`--seconds`. Each request's answer is compared with the answer the same request got when
sent alone before the soak (seeded sampling is deterministic, scoring and counting are
pure), so a lost, truncated or mixed-up response is caught. The server's memory (RSS) is
sampled throughout. Exit status 1 on any 5xx, mismatch or transport error.

    python -m bench.soak [--seconds 180] [--workers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx

from bench._util import machine, serve

WORDS = [
    "the",
    "time",
    "traveller",
    "machine",
    "sat",
    "down",
    "and",
    "looked",
    "at",
    "us",
    "with",
    "a",
    "smile",
    "in",
    "his",
    "eyes",
]


def requests(rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """A fixed pool of (kind, path, body); the soak draws from it at random."""
    pool: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(24):
        prefix = " ".join(rng.choices(WORDS, k=3)) + " "
        body = {"prefix": prefix, "max_new_tokens": rng.randint(20, 120), "seed": i, "top_k": 8}
        pool.append(("generate", "/v1/generate", body))
        pool.append(("stream", "/v1/generate", {**body, "stream": True, "seed": 1000 + i}))
    for _ in range(12):
        text = " ".join(rng.choices(WORDS, k=rng.randint(30, 400)))
        pool.append(("perplexity", "/v1/perplexity", {"text": text}))
        pool.append(("ngrams", "/v1/ngrams", {"text": text, "n": [1, 2], "top_k": 5}))
    for epochs in (1, 2, 3):
        pool.append(("forecast", "/v1/forecast", {"T": 400, "num_train": 300, "epochs": epochs}))
    pool.append(("forecast", "/v1/forecast", {}))
    return pool


async def answer(
    c: httpx.AsyncClient, kind: str, path: str, body: dict[str, Any]
) -> tuple[int, Any]:
    """(status, the comparable part of the answer)."""
    if kind == "stream":
        text, finished = "", 0
        async with c.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                return r.status_code, await r.aread()
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    text += event.get("text") or ""
                    finished += event.get("finish_reason") is not None
        return 200, (text, finished)
    r = await c.post(path, json=body)
    if r.status_code != 200:
        return r.status_code, r.text
    data = r.json()
    if kind == "generate":
        return 200, data["choices"][0]["text"]
    if kind == "perplexity":
        return 200, round(data["perplexity"], 9)
    if kind == "ngrams":
        return 200, data["tables"]
    return 200, (data["model"], round(data["one_step"]["mse"], 9))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(url: str, pid: int, seconds: float, workers: int) -> dict[str, Any]:
    pool = requests(random.Random(0))
    limits = httpx.Limits(max_connections=workers + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        expected = [await answer(c, *item) for item in pool]  # each alone, first
        assert all(status == 200 for status, _ in expected), expected
        stats: dict[str, Any] = {"requests": 0, "by_kind": {}, "statuses": {}, "mismatches": 0}
        errors: list[str] = []
        memory = [rss_mb(pid)]
        deadline = time.monotonic() + seconds

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                i = rng.randrange(len(pool))
                try:
                    status, got = await answer(c, *pool[i])
                except httpx.TransportError as exc:
                    errors.append(f"{pool[i][0]}: {exc!r}")
                    continue
                stats["requests"] += 1
                stats["by_kind"][pool[i][0]] = stats["by_kind"].get(pool[i][0], 0) + 1
                stats["statuses"][status] = stats["statuses"].get(status, 0) + 1
                if status == 200 and got != expected[i][1]:
                    stats["mismatches"] += 1
                    errors.append(f"{pool[i][0]} answer differs from its answer alone")

        async def sampler() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                memory.append(rss_mb(pid))

        started = time.monotonic()
        await asyncio.gather(sampler(), *(worker(s) for s in range(workers)))
        elapsed = time.monotonic() - started
    stats |= {
        "seconds": elapsed,
        "requests_per_s": stats["requests"] / elapsed,
        "server_errors": sum(v for k, v in stats["statuses"].items() if k >= 500),
        "transport_errors": len([e for e in errors if "differs" not in e]),
        "rss_mb_start": memory[0],
        "rss_mb_max": max(memory),
        "rss_mb_end": memory[-1],
        "rss_mb_every_30s": [round(m) for m in memory[::15]],
        "first_errors": errors[:5],
    }
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="length of the soak")
    parser.add_argument("--workers", type=int, default=16, help="concurrent clients")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    # CPU jobs may wait up to 3 x slots deep: sized so that the soak's own clients never
    # meet the overload answer (503), which has tests of its own.
    slots = max(2, -(-args.workers // 3))
    with serve({"RNNLM_MAX_CONCURRENT_SCORING": str(slots)}) as server:
        result = asyncio.run(soak(server.url, server.process.pid, args.seconds, args.workers))
    print(json.dumps(result))
    bad = result["server_errors"] or result["mismatches"] or result["transport_errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
