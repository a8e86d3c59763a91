"""Replicas behind a proxy: mixed traffic while one replica is stopped and restarted.

Workers send the soak's mixed requests (generate plain and streamed, perplexity, n-grams,
forecasts) through the proxy for the whole run. After `--before` seconds the `--stop`
command stops one replica (SIGTERM, drain, exit); `--down` seconds later the `--start`
command starts it again and waits until it is healthy; traffic goes on for `--after`
seconds. Every answer is compared with the same request's answer alone, taken through the
proxy before the run (seeded sampling is deterministic, scoring and counting are pure).

Each request is counted in the phase in which it *started*. Exit status 1 on any wrong
answer, and on any failure (non-200 or transport error) of a request started after the
stop, which is the promise: a stopped replica costs no request that could go elsewhere.

    python -m bench.failover --url http://127.0.0.1:8080 \
        --stop 'docker compose stop api-2' --start 'docker compose up -d --wait api-2'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.soak import answer, requests

PHASES = ("before the stop", "stopping", "stopped", "restarting", "after the restart")


@dataclass
class Outcome:
    started: float
    seconds: float
    kind: str
    status: int  # 0: transport error
    right: bool
    detail: str = ""  # what a failed request got back


async def run_command(command: str) -> None:
    process = await asyncio.create_subprocess_shell(command)
    if await process.wait() != 0:
        raise SystemExit(f"command failed: {command}")


async def failover(args: argparse.Namespace) -> dict[str, Any]:
    pool = requests(random.Random(0))
    limits = httpx.Limits(max_connections=args.workers + 2)
    # Longer than the service's own time limit (RNNLM_REQUEST_TIMEOUT_S, 120 s): a request
    # fails only by the answer it gets, never by the client giving up first.
    async with httpx.AsyncClient(base_url=args.url, timeout=150, limits=limits) as client:
        expected = [await answer(client, *item) for item in pool]  # each alone, first
        assert all(status == 200 for status, _ in expected), expected
        outcomes: list[Outcome] = []
        done = asyncio.Event()

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while not done.is_set():
                i = rng.randrange(len(pool))
                started = time.monotonic()
                try:
                    status, got = await answer(client, *pool[i])
                except httpx.TransportError as exc:
                    status, got = 0, repr(exc)
                right = status != 200 or got == expected[i][1]
                detail = "" if status == 200 else str(got)[:300]
                seconds = time.monotonic() - started
                outcomes.append(Outcome(started, seconds, pool[i][0], status, right, detail))

        marks: dict[str, float] = {}

        async def script() -> None:
            await asyncio.sleep(args.before)
            marks["stop"] = time.monotonic()
            await run_command(args.stop)
            marks["stopped"] = time.monotonic()
            await asyncio.sleep(args.down)
            marks["start"] = time.monotonic()
            await run_command(args.start)
            marks["started"] = time.monotonic()
            await asyncio.sleep(args.after)
            done.set()

        await asyncio.gather(script(), *(worker(s) for s in range(args.workers)))

    def phase(o: Outcome) -> str:  # the phase in which the request started
        bounds = [marks["stop"], marks["stopped"], marks["start"], marks["started"]]
        return PHASES[sum(o.started >= b for b in bounds)]

    report: dict[str, Any] = {"phases": {}}
    for name in PHASES:
        group = [o for o in outcomes if phase(o) == name]
        latencies = sorted(o.seconds for o in group)
        report["phases"][name] = {
            "requests": len(group),
            "failed": sum(o.status != 200 for o in group),
            "wrong": sum(not o.right for o in group),
            "statuses": dict(sorted(_tally(o.status for o in group).items())),
            "latency_s_median": round(statistics.median(latencies), 3) if group else None,
            "latency_s_max": round(latencies[-1], 3) if group else None,
        }
    after_stop = [o for o in outcomes if o.started >= marks["stop"]]
    before_stop = [o for o in outcomes if o.started < marks["stop"]]
    report |= {
        "seconds": {
            "stop_command": round(marks["stopped"] - marks["stop"], 1),
            "start_command_until_healthy": round(marks["started"] - marks["start"], 1),
            "total": round(max(o.started + o.seconds for o in outcomes) - min(marks.values()), 1),
        },
        "kinds": _tally(o.kind for o in outcomes),
        "requests": len(outcomes),
        "requests_alone_first": len(expected),
        "started_after_stop": len(after_stop),
        "failed_after_stop": sum(o.status != 200 for o in after_stop),
        "failed_before_stop": sum(o.status != 200 for o in before_stop),
        "wrong_answers": sum(not o.right for o in outcomes),
        "failures": [
            {"phase": phase(o), "kind": o.kind, "status": o.status, "got": o.detail}
            for o in outcomes
            if o.status != 200
        ][:10],
    }
    return report


def _tally(items: Any) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the proxy's address")
    parser.add_argument("--stop", required=True, help="shell command stopping one replica")
    parser.add_argument("--start", required=True, help="shell command restarting it, healthy")
    parser.add_argument("--workers", type=int, default=8, help="concurrent clients")
    parser.add_argument("--before", type=float, default=8, help="seconds before the stop")
    parser.add_argument("--down", type=float, default=10, help="seconds stopped")
    parser.add_argument("--after", type=float, default=10, help="seconds after the restart")
    args = parser.parse_args()
    report = asyncio.run(failover(args))
    for name, p in report["phases"].items():
        print(
            f"    {name:18} {p['requests']:4} requests, {p['failed']} failed, {p['wrong']} wrong,"
            f" statuses {p['statuses']}, latency median {p['latency_s_median']} s,"
            f" max {p['latency_s_max']} s"
        )
    print(json.dumps(report))
    return 1 if report["wrong_answers"] or report["failed_after_stop"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
