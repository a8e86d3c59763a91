"""Held-out perplexity of the default LM, a Kneser-Ney baseline, and their linear mixture.

Same split as training (the last 10% of the book's char tokens). The mixture weight is
chosen on the first half of the held-out tokens and reported on the second half, so the
figure is not fitted to the text it is measured on. This is an experiment for the README's
quality section; the service serves the RNN alone.

    python -m bench.mixture [--bundle checkpoints/char-lstm] [--order 7] [--modified]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from bench._util import DATA_DIR, ROOT
from models.bundle import load_bundle
from models.kneser_ney import KneserNey
from models.rnn import LanguageModel
from models.score import score_ids
from training.config import DataConfig
from training.data import load_tokens


def perplexity(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "checkpoints" / "char-lstm")
    parser.add_argument("--order", type=int, default=7)
    parser.add_argument("--modified", action="store_true")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    assert isinstance(bundle.model, LanguageModel)
    training = bundle.config["training"]
    data = DataConfig(
        corpus=training["corpus"],
        data_dir=DATA_DIR,
        line_join=training["line_join"],
        val_frac=training["val_frac"],
    )
    tokens = load_tokens(data)
    val = tokens.val_ids.tolist()
    rnn = score_ids(bundle.model, val, return_logprobs=True).token_logprobs
    assert rnn is not None
    kn_model = KneserNey(
        tokens.train_ids.tolist(), args.order, len(tokens.tokenizer.vocab), args.modified
    )
    kn = [
        math.log(kn_model.prob(tuple(val[max(0, i - args.order + 1) : i]), val[i]))
        for i in range(1, len(val))
    ]
    half = len(kn) // 2

    def mixed(lam: float, lo: int, hi: int) -> list[float]:
        return [
            math.log(lam * math.exp(a) + (1 - lam) * math.exp(b))
            for a, b in zip(rnn[lo:hi], kn[lo:hi], strict=True)
        ]

    grid = [i / 20 for i in range(1, 20)]
    lam = min(grid, key=lambda w: -sum(mixed(w, 0, half)))
    print(
        json.dumps(
            {
                "bundle": args.bundle.name,
                "kn": f"{'modified' if args.modified else 'interpolated'} order {args.order}",
                "val_tokens_scored": len(kn),
                "rnn_ppl": perplexity(rnn),
                "kn_ppl": perplexity(kn),
                "mixture_weight_on_rnn": lam,
                "second_half": {
                    "rnn_ppl": perplexity(rnn[half:]),
                    "kn_ppl": perplexity(kn[half:]),
                    "mixture_ppl": perplexity(mixed(lam, half, len(kn))),
                },
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
