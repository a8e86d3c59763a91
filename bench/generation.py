"""Single-stream greedy generation: the book's `predict` loop against rnnlm's decoder.

The baseline is d2l's `predict_ch8` style on the same module: feed one char at a time
through `forward`, build the input tensor every step, read the argmax with `int()`. It
runs twice: with torch's default settings (as the book's code would) and with oneDNN
off, which removes a per-call set-up cost torch pays for nn.LSTM on the CPU, so the
ratio shows what the decoder itself gains.

Then the cost of beam search per step: 4 beams against 4 sampled sequences batched
together, on the same model and prefix, the same number of steps.

    python -m bench.generation [--bundles checkpoints/char-lstm ...] [--tokens 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench._util import ROOT, best_of, machine
from bench.baseline import PREFIX, book_predict
from models.bundle import load_bundle
from models.generate import SamplingParams, generate
from models.rnn import LanguageModel, LMConfig, build_model
from models.text import Tokenizer, Vocab


def book_gru(device: str) -> tuple[LanguageModel, Tokenizer]:
    """The book's concise GRU (one-hot input, 256 hidden), untrained: speed needs no training."""
    tokenizer = Tokenizer(Vocab.build(list("abcdefghijklmnopqrstuvwxyz ")))
    torch.manual_seed(0)
    return build_model(LMConfig("gru", len(tokenizer.vocab), 256)).to(device).eval(), tokenizer


def run(name: str, model: LanguageModel, tokenizer: Tokenizer, tokens: int) -> dict[str, object]:
    ids = tokenizer.encode(PREFIX).ids
    params = [SamplingParams(temperature=0, max_new_tokens=tokens)]

    def ours() -> str:
        return generate(model, ids, params, tokenizer.detokenizer)[0].text

    def book() -> list[int]:
        with torch.no_grad():
            return book_predict(model, ids, tokens)

    same = "".join(tokenizer.piece(i) for i in book()) == ours()
    ours_s = best_of(ours)
    book_s = best_of(book)
    with torch.backends.mkldnn.flags(enabled=False):
        book_plain_s = best_of(book)
    return {
        "model": name,
        "arch": getattr(model.config, "arch", type(model).__name__),
        "tokens": tokens,
        "same_text": same,
        "book_chars_per_s": tokens / book_s,
        "book_no_onednn_chars_per_s": tokens / book_plain_s,
        "rnnlm_chars_per_s": tokens / ours_s,
        "speedup_vs_book": book_s / ours_s,
        "speedup_vs_book_no_onednn": book_plain_s / ours_s,
    }


def beams_against_sampling(
    name: str, model: LanguageModel, tokenizer: Tokenizer, tokens: int, beams: int = 4
) -> dict[str, object]:
    """Per step, a beam search against as many sampled rows (no stop: both run `tokens`
    steps), in CPU time of this process: on a shared machine that is the work done, where
    wall time also counts the waits for other processes. Alternated, best of 7 each."""
    ids = tokenizer.encode(PREFIX).ids
    search = [SamplingParams(temperature=0, num_beams=beams, max_new_tokens=tokens)]
    sampled = [SamplingParams(seed=i, top_k=10, max_new_tokens=tokens) for i in range(beams)]

    def cpu_seconds(params: list[SamplingParams]) -> float:
        started = time.process_time()
        generate(model, ids, params, tokenizer.detokenizer, tokenizer.banned_ids)
        return time.process_time() - started

    beam_runs, sampled_runs = [], []
    for _ in range(7):
        beam_runs.append(cpu_seconds(search))
        sampled_runs.append(cpu_seconds(sampled))
    beam_s, sampled_s = min(beam_runs), min(sampled_runs)
    return {
        "model": name,
        "beams": beams,
        "steps": tokens,
        "torch_threads": torch.get_num_threads(),
        "beam_cpu_ms_per_step": beam_s / tokens * 1e3,
        "sampled_cpu_ms_per_step": sampled_s / tokens * 1e3,
        "beam_over_sampled": beam_s / sampled_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bundles",
        nargs="+",
        type=Path,
        default=[ROOT / "checkpoints" / "char-lstm", ROOT / "checkpoints" / "char-rnn-scratch"],
        help="LM bundles to measure",
    )
    parser.add_argument("--tokens", type=int, default=500, help="characters to generate")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    for path in args.bundles:
        bundle = load_bundle(path, args.device)
        assert bundle.tokenizer is not None and isinstance(bundle.model, LanguageModel)
        print(json.dumps(run(path.name, bundle.model, bundle.tokenizer, args.tokens)))
    print(json.dumps(run("book-gru-256 (untrained)", *book_gru(args.device), args.tokens)))
    for path in args.bundles:
        bundle = load_bundle(path, args.device)
        assert bundle.tokenizer is not None and isinstance(bundle.model, LanguageModel)
        print(json.dumps(beams_against_sampling(path.name, bundle.model, bundle.tokenizer, 200)))


if __name__ == "__main__":
    main()
