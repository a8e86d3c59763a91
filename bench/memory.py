"""Memory after many of the largest requests: does the service give it back?

Starts the service on the committed bundles, sends one of the largest allowed requests of
each kind (the warm-up: imports, matplotlib's caches, the allocator's arenas), notes the
resident memory (RSS), then sends `--count` more of each kind, each distinct, up to
`--parallel` at once, and notes it again. Reports both and their ratio per kind and
overall (issue 12: within 10% of the warmed-up start, or a documented fixed cache size).
The requests are those of bench/noisy_neighbour.py (`worst`); the request time limit is
`--timeout` seconds, so the slowest kinds are cut there (504) as they would be in service.

    python -m bench.memory [--count 20] [--parallel 4] [--kinds ...] [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench._util import machine, serve
from bench.noisy_neighbour import KINDS, worst


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def send(client: httpx.Client, kind: str, i: int) -> int:
    method, path, body = worst(kind, i)
    content = json.dumps(body).encode()
    with client.stream(
        method, path, content=content, headers={"content-type": "application/json"}
    ) as r:
        for _ in r.iter_bytes():
            pass
        return r.status_code


def main(kinds: list[str], count: int, parallel: int, timeout: float) -> None:
    env = {"RNNLM_REQUEST_TIMEOUT_S": str(timeout)}
    limits = httpx.Limits(max_connections=parallel + 2)
    with (
        serve(env) as server,
        httpx.Client(base_url=server.url, timeout=600, limits=limits) as client,
    ):
        pid = server.process.pid
        head = {"machine": machine(), "load_average": os.getloadavg()}
        print(json.dumps(head | {"start_mb": round(rss_mb(pid))}), flush=True)
        for kind in kinds:
            send(client, kind, 0)
        warm = rss_mb(pid)
        print(json.dumps({"warmed_up_mb": round(warm)}), flush=True)
        for kind in kinds:
            before = rss_mb(pid)
            started = time.perf_counter()
            with ThreadPoolExecutor(parallel) as pool:
                sent = pool.map(send, [client] * count, [kind] * count, range(1, count + 1))
                statuses = sorted(set(sent))
            after = rss_mb(pid)
            row = {"kind": kind, "count": count, "statuses": statuses}
            row |= {"before_mb": round(before), "after_mb": round(after)}
            row |= {
                "ratio": round(after / before, 3),
                "seconds": round(time.perf_counter() - started),
            }
            print(json.dumps(row), flush=True)
        end = rss_mb(pid)
        summary = {"warmed_up_mb": round(warm), "end_mb": round(end), "ratio": round(end / warm, 3)}
        print(json.dumps(summary | {"ok": end <= 1.1 * warm}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4, help="requests at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="RNNLM_REQUEST_TIMEOUT_S")
    args = parser.parse_args()
    main(args.kinds.split(","), args.count, args.parallel, args.timeout)
