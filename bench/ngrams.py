"""n-gram counting: rnnlm's vectorised counter against `collections.Counter`.

1. Word 1-, 2- and 3-gram tables (top 1000) of a 2 MB text, tokenisation included on both
   sides: the baseline is the book's way (regex cleanup, split, Counter over joined
   strings); the tables must be identical, order included. Timed in-process, and posted
   to `POST /v1/ngrams` of a live server (HTTP, JSON parsing and validation, the response).
2. `--large MB`: char and word counting (n = 1..3) of a file of that size streamed from
   disk, in a subprocess each so peak memory (max RSS) is the counter's own; the Counter
   baseline runs too unless --skip-counter.

    python -m bench.ngrams [--large 100]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench._util import best_of, book_path, machine, serve
from models.ngrams import NgramCounter, count_file
from models.text import clean


def book_way(raw: str) -> list[list[tuple[str, int]]]:
    words = re.sub("[^A-Za-z]+", " ", raw).lower().split()
    grams = [words, itertools.pairwise(words), zip(words, words[1:], words[2:], strict=False)]
    tables = []
    for n, seq in enumerate(grams, 1):
        counter = collections.Counter(seq if n == 1 else (" ".join(g) for g in seq))
        tables.append(counter.most_common(1000))
    return tables


def ours(raw: str) -> list[list[tuple[str, int]]]:
    counter = NgramCounter("word", 3)
    counter.update(clean(raw).strip())
    return [
        [(" ".join(e.tokens), e.count) for e in counter.table(n, 1000).entries] for n in (1, 2, 3)
    ]


def posted(client: httpx.Client, body: bytes) -> list[list[tuple[str, int]]]:
    r = client.post("/v1/ngrams", content=body, headers={"Content-Type": "application/json"})
    r.raise_for_status()
    return [
        [(" ".join(e["tokens"]), e["count"]) for e in table["entries"]]
        for table in r.json()["tables"]
    ]


def two_megabytes() -> str:
    book = book_path().read_text()
    return (book * (2_000_000 // len(book) + 1))[:2_000_000]


def child(path: str, level: str, method: str) -> None:
    """Runs in a subprocess: count, then report time and peak memory as JSON."""
    started = time.perf_counter()
    if method == "rnnlm":
        counter = count_file(Path(path), level, 3)  # type: ignore[arg-type]
        tokens = counter.tokens
        for n in (1, 2, 3):
            counter.table(n, 1000)
    else:
        tokens = 0
        tables: list[collections.Counter[str]] = [collections.Counter() for _ in range(3)]
        tail: list[str] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                toks = re.sub("[^A-Za-z]+", " ", line).lower()
                seq = tail + (toks.split() if level == "word" else list(toks))
                for n in (1, 2, 3):
                    start = max(0, len(tail) - n + 1)
                    tables[n - 1].update(
                        " ".join(seq[i : i + n]) for i in range(start, len(seq) - n + 1)
                    )
                tokens += len(seq) - len(tail)
                tail = seq[-2:]
        for t in tables:
            t.most_common(1000)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "tokens": tokens}))


def large(megabytes: int, skip_counter: bool) -> None:
    book = book_path().read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
        written = 0
        while written < megabytes * 1_000_000:
            f.write(book)
            written += len(book)
        path = f.name
    for level in ("char", "word"):
        for method in ("rnnlm",) if skip_counter else ("rnnlm", "counter"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.ngrams", "--child", path, level, method],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout)
            result |= {"file_mb": written / 1e6, "level": level, "method": method}
            result["mb_per_s"] = result["file_mb"] / result["seconds"]
            print(json.dumps(result))
    Path(path).unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", type=int, default=0, help="also stream a file of this many MB")
    parser.add_argument("--skip-counter", action="store_true", help="no Counter run on --large")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(json.dumps({"machine": machine()}))
    raw = two_megabytes()
    expected = book_way(raw)
    # Encoded once: the client's own JSON encoding is not the service's time.
    body = json.dumps({"text": raw, "level": "word", "n": [1, 2, 3], "top_k": 1000}).encode()
    with serve() as server, httpx.Client(base_url=server.url, timeout=60) as client:
        same = ours(raw) == expected and posted(client, body) == expected
        counter_s, ours_s = best_of(lambda: book_way(raw)), best_of(lambda: ours(raw))
        http_s = best_of(lambda: posted(client, body))
    print(
        json.dumps(
            {
                "text_bytes": len(raw),
                "identical_tables": same,
                "counter_s": counter_s,
                "rnnlm_s": ours_s,
                "speedup": counter_s / ours_s,
                "http_s": http_s,
                "http_speedup": counter_s / http_s,
            }
        )
    )
    if args.large:
        large(args.large, args.skip_counter)


if __name__ == "__main__":
    main()
