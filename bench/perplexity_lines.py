"""A 10,000-line file scored per line by one upload vs. 10,000 separate /v1/perplexity calls.

The lines are the book's, in a seeded shuffle (blank lines dropped). Both ways go through
a live server on the committed default model; the benchmark checks that every line's
perplexity is the same both ways (relative 1e-5: batched passes sum in another order).

    python -m bench.perplexity_lines --lines 10000
"""

from __future__ import annotations

import argparse
import json
import random
import time

import httpx

from bench._util import book_path, machine, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--model", default="char-lstm")
    args = parser.parse_args()
    book = [line for line in book_path().read_text(encoding="utf-8").splitlines() if len(line) > 1]
    rng = random.Random(0)
    lines = [rng.choice(book) for _ in range(args.lines)]
    document = ("\n".join(lines) + "\n").encode()
    # A 10,000-line request is long work on 2 cores: past the default 120 s limit there.
    with (
        serve({"RNNLM_REQUEST_TIMEOUT_S": "1800"}) as server,
        httpx.Client(base_url=server.url, timeout=1800) as client,
    ):
        started = time.perf_counter()
        upload = client.post(
            "/v1/perplexity",
            files={"file": ("lines.txt", document, "text/plain")},
            data={"per_line": "true", "model": args.model},
        )
        upload.raise_for_status()
        batched_s = time.perf_counter() - started
        started = time.perf_counter()
        single = []
        for line in lines:
            r = client.post("/v1/perplexity", json={"text": line, "model": args.model})
            r.raise_for_status()
            single.append(r.json()["perplexity"])
        single_s = time.perf_counter() - started
    per_line = [r["perplexity"] for r in upload.json()["results"]]
    worst = max(
        abs(a - b) / b for a, b in zip(per_line, single, strict=True) if a is not None and b
    )
    print(
        json.dumps(
            {
                "bench": "perplexity_lines",
                "machine": machine(),
                "model": args.model,
                "lines": len(lines),
                "bytes": len(document),
                "per_line_upload_s": batched_s,
                "separate_calls_s": single_s,
                "speedup": single_s / batched_s,
                "max_relative_difference": worst,
                "same_numbers": worst < 1e-5,
            }
        )
    )


if __name__ == "__main__":
    main()
