"""Noisy neighbour: does the worst allowed request of each kind cost anyone but its sender?

While the largest request each route allows runs (one at a time, then 8 at once), a probe
client (a process of its own) times a 50-token greedy generation on another model and
polls /health every 50 ms. Reports, per kind, the probe's time against its time on the
idle server (median of the probes, and the worst) and the slowest /health answer.
Targets (issue 12): the probe within 3x, /health within 100 ms. The noise is abandoned
after the probes (its clients disconnect), which the service must also absorb.

    python -m bench.noisy_neighbour [--kinds generate,perplexity] [--probes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import string
import threading
import time
from multiprocessing import Queue
from typing import Any

import httpx

from bench._util import machine, serve

PROBE_MODEL = "char-rnn-scratch"  # the noise goes to the default model, char-lstm
PROBE = {"model": PROBE_MODEL, "prefix": "the time traveller ", "max_new_tokens": 50}
PROBE |= {"temperature": 0}


def text(chars: int, seed: int) -> str:
    """Distinct words, so each request is its own work (no cache, no shared prefix)."""
    rng = random.Random(seed)
    words = []
    size = 0
    while size < chars:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 9)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def worst(kind: str, i: int) -> tuple[str, str, Any]:
    """(method, path, body) of the largest request of `kind` the schemas allow; `i` makes
    the i-th copy distinct."""
    if kind == "generate":
        return "POST", "/v1/generate", {"prefix": text(4000, i), "max_new_tokens": 2000, "n": 16}
    if kind == "generate-stream":
        body = {"prefix": text(4000, i), "max_new_tokens": 2000, "n": 16, "stream": True}
        return "POST", "/v1/generate", body
    if kind == "completions":  # prompts of distinct lengths; echo + logprobs score them all
        prompts = [text(32_768 - 97 * p, 100 * i + p) for p in range(8)]
        body = {"prompt": prompts, "max_tokens": 2000, "n": 8, "echo": True, "logprobs": 5}
        return "POST", "/v1/completions", body
    if kind == "perplexity":
        return "POST", "/v1/perplexity", {"text": text(200_000, i), "return_tokens": True}
    if kind == "tokenize":
        return "POST", "/v1/tokenize", {"text": text(200_000, i)}
    if kind == "detokenize-invalid":
        return "POST", "/v1/detokenize", {"ids": [3] + ["x"] * 199_999}
    if kind in ("ngrams", "ngrams-plot"):
        body = {"text": text(2 * 1024 * 1024 - 16, i), "level": "char", "n": [1, 2, 3, 4, 5, 6]}
        if kind == "ngrams":
            return "POST", "/v1/ngrams", body | {"top_k": 1000}
        return "POST", "/v1/ngrams/plot", body | {"format": "svg"}
    if kind in ("forecast", "forecast-plot"):
        body = {"T": 4000, "num_train": 3000, "epochs": 20, "batch_size": 1, "num_hiddens": 64}
        body |= {"seed": i, "k_steps": [1, 2, 4, 8, 16, 32, 64, 256]}
        path = "/v1/forecast" if kind == "forecast" else "/v1/forecast/plot"
        return "POST", path, body
    raise ValueError(kind)


KINDS = (
    "generate",
    "generate-stream",
    "completions",
    "perplexity",
    "tokenize",
    "detokenize-invalid",
    "ngrams",
    "ngrams-plot",
    "forecast",
    "forecast-plot",
)


def measure(url: str, probes: int, out: Queue) -> None:  # type: ignore[type-arg]
    """In a process of its own (the noise's client work must not delay it): `probes`
    probe generations one after another, /health every 50 ms meanwhile on a connection
    of its own; puts (probe seconds, /health seconds)."""
    stop = threading.Event()
    health_s: list[float] = []

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                health_s.append(time.perf_counter() - started)
                stop.wait(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    times = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(probes):
            started = time.perf_counter()
            client.post("/v1/generate", json=PROBE).raise_for_status()
            times.append(time.perf_counter() - started)
    stop.set()
    poller.join()
    out.put((times, health_s))


def measured(url: str, probes: int) -> tuple[list[float], list[float]]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=measure, args=(url, probes, out))
    process.start()
    times, health_s = out.get()
    process.join()
    return times, health_s


async def noise(
    client: httpx.AsyncClient, request: tuple[str, str, bytes], statuses: list[int]
) -> None:
    method, path, content = request
    headers = {"content-type": "application/json"}
    async with client.stream(method, path, content=content, headers=headers) as r:
        statuses.append(r.status_code)
        async for _ in r.aiter_bytes():
            pass


async def under(url: str, kind: str, copies: int, probes: int, idle: float) -> dict[str, Any]:
    requests = []
    for i in range(copies):  # built before the clock starts
        method, path, body = worst(kind, i)
        requests.append((method, path, json.dumps(body).encode()))
    limits = httpx.Limits(max_connections=copies + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as noisy:
        statuses: list[int] = []
        tasks = [asyncio.create_task(noise(noisy, r, statuses)) for r in requests]
        await asyncio.sleep(1.0)  # the bodies are in and the work has begun
        times, health_s = await asyncio.to_thread(measured, url, probes)
        finished = sum(t.done() for t in tasks)
        for task in tasks:
            task.cancel()  # the noisy clients leave
        await asyncio.gather(*tasks, return_exceptions=True)
    ratio = statistics.median(times) / idle
    return {
        "kind": kind,
        "copies": copies,
        "probe_median_s": round(statistics.median(times), 3),
        "probe_ratio": round(ratio, 2),
        "probe_worst_ratio": round(max(times) / idle, 2),
        "health_max_ms": round(max(health_s) * 1e3, 1),
        "noise_statuses": sorted(set(statuses)),
        "noise_finished_during_probes": finished,
        "ok": max(times) / idle <= 3 and max(health_s) <= 0.1,
        "load_average_1min": os.getloadavg()[0],
    }


async def settle(url: str) -> None:
    """Wait until the abandoned noise has left the server (no sequence decoding)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(600):
            ready = (await client.get("/ready")).json()
            busy = sum(b.get("active_sequences", 0) for b in ready["bundles"])
            if not busy:
                return
            await asyncio.sleep(0.1)


async def main(kinds: list[str], probes: int, copies: list[int]) -> None:
    with serve() as server:
        url = server.url
        idle_times, _ = await asyncio.to_thread(measured, url, 8)
        idle = statistics.median(idle_times[1:])  # the first warms up
        head = {"machine": machine(), "load_average": os.getloadavg()}
        print(json.dumps(head | {"idle_probe_s": round(idle, 4)}), flush=True)
        for kind in kinds:
            for n in copies:
                print(json.dumps(await under(url, kind, n, probes, idle)), flush=True)
                await settle(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--copies", default="1,8", help="noise requests at once, each run")
    args = parser.parse_args()
    copies = [int(c) for c in args.copies.split(",")]
    asyncio.run(main(args.kinds.split(","), args.probes, copies))
