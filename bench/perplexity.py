"""Perplexity of the whole book (170k chars) through /v1/perplexity, against a
char-by-char scoring loop (one forward call per token, state carried, as the book's
`predict` warms up) on the same model.

    python -m bench.perplexity [--model char-lstm] [--baseline-chars 20000]

The baseline's rate is measured on the first --baseline-chars characters (the whole book
takes minutes that way) and its time for the book extrapolated; both are printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import httpx
import torch

from bench._util import ROOT, book_path, machine, serve
from models.bundle import load_bundle
from models.rnn import LanguageModel
from models.score import score_ids


def char_by_char_nll(model: LanguageModel, ids: list[int]) -> float:
    state = model.begin_state(1)
    nll = 0.0
    with torch.no_grad():
        for prev, target in itertools.pairwise(ids):
            logits, state = model(torch.tensor([[prev]]), state)
            nll -= float(torch.log_softmax(logits[0, 0], dim=-1)[target])
    return nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="char-lstm", help="bundle in checkpoints/")
    parser.add_argument("--baseline-chars", type=int, default=20000, help="baseline sample size")
    parser.add_argument("--chars", type=int, default=0, help="score the first N chars (0: all)")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    text = book_path().read_text()
    text = text[: args.chars] if args.chars else text
    bundle = load_bundle(ROOT / "checkpoints" / args.model)
    assert bundle.tokenizer is not None and isinstance(bundle.model, LanguageModel)
    ids = bundle.tokenizer.encode(text).ids
    server = serve({"RNNLM_DEFAULT_MODEL": args.model})
    with server as live, httpx.Client(base_url=live.url, timeout=600) as c:
        c.post("/v1/perplexity", json={"text": text[:2000]}).raise_for_status()  # warm-up
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            r = c.post("/v1/perplexity", json={"text": text})
            timings.append(time.perf_counter() - started)
            r.raise_for_status()
    served = r.json()
    exact = score_ids(bundle.model, ids, segment_len=10**9)  # one sequential pass, exact
    sample = ids[: args.baseline_chars]
    started = time.perf_counter()
    char_by_char_nll(bundle.model, sample)
    baseline_rate = (len(sample) - 1) / (time.perf_counter() - started)
    book_s = (len(ids) - 1) / baseline_rate
    print(
        json.dumps(
            {
                "model": args.model,
                "tokens_scored": served["tokens_scored"],
                "served_perplexity": served["perplexity"],
                "sequential_perplexity": exact.perplexity,
                "relative_difference": served["perplexity"] / exact.perplexity - 1,
                "http_seconds_best_of_3": min(timings),
                "char_by_char_tokens_per_s": baseline_rate,
                "char_by_char_book_seconds_extrapolated": book_s,
                "speedup": book_s / min(timings),
            }
        )
    )


if __name__ == "__main__":
    main()
