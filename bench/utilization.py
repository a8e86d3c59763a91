"""What says a replica is full: its CPU use, or its decoding queue? (docs/scale.md)

Starts the service on the committed bundles, then for each number of clients runs that
many closed-loop clients, each generating `--tokens` tokens again and again for
`--seconds`. Reports the tokens/s served, the server's CPU use in cores (from
/proc/PID/stat, all threads), the mean batch size and queue depth of the default model
(sampled from /metrics every 0.1 s), and the median request latency.

    python -m bench.utilization [--clients 1 4 16 64 128] [--seconds 8] [--tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import httpx

from bench._util import machine, serve

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def gauge(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


async def level(url: str, pid: int, clients: int, seconds: float, tokens: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        done = asyncio.Event()
        latencies: list[float] = []
        samples: list[tuple[float, float]] = []

        async def client(i: int) -> None:
            n = 0
            while not done.is_set():
                body = {"prefix": "the time traveller ", "max_new_tokens": tokens}
                started = time.perf_counter()
                r = await c.post("/v1/generate", json=body | {"seed": i * 10_000 + n})
                r.raise_for_status()
                latencies.append(time.perf_counter() - started)
                n += 1

        async def sampler() -> None:
            while not done.is_set():
                text = (await c.get("/metrics")).text
                samples.append(
                    (
                        gauge(text, "rnnlm_scheduler_batch_size{"),
                        gauge(text, "rnnlm_scheduler_queue_depth{"),
                    )
                )
                await asyncio.sleep(0.1)

        async def timer() -> None:
            await asyncio.sleep(seconds)
            done.set()

        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(timer(), sampler(), *(client(i) for i in range(clients)))
        cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - t0
    return {
        "clients": clients,
        "tokens_per_s": round(len(latencies) * tokens / wall),
        "server_cpu_cores": round(cpu / wall, 2),
        "mean_batch_size": round(statistics.mean(s[0] for s in samples), 1),
        "mean_queued_sequences": round(statistics.mean(s[1] for s in samples), 1),
        "latency_s_median": round(statistics.median(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64, 128])
    parser.add_argument("--seconds", type=float, default=8, help="per number of clients")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per request")
    args = parser.parse_args()
    print(json.dumps({"machine": machine(), "cpus_available": len(os.sched_getaffinity(0))}))
    with serve() as server:
        for clients in args.clients:
            result = asyncio.run(
                level(server.url, server.process.pid, clients, args.seconds, args.tokens)
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
