"""Decoding precision: speed, quality and seed-exactness of fp32, bf16 and int8 weights.

For each bundle, in one run on one device:

- one greedy stream of --tokens characters from `time traveller `: the book's `predict`
  loop on the fp32 module (bench/generation.py's baseline) against rnnlm's decoder in each
  precision; chars/s and the ratio to the book;
- the held-out perplexity in each precision (the book's last 10%, the validation split the
  committed bundles were selected on, scored as `/v1/perplexity` scores it) and its
  relative difference from fp32;
- seed-exactness: a sampled request alone against the same request inside batches of
  other sequences (--batches sizes), in each precision.

It needs only torch and the repository (no HTTP stack), so it runs on a bare GPU machine
(bench/gpu.sh).

    python -m bench.precision [--bundles checkpoints/char-lstm] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.baseline import PREFIX, book_predict
from models.bundle import Bundle, BundleError, components_of, load_in_order
from models.generate import SamplingParams, generate
from models.precision import PRECISIONS, Precision, precisions_on, with_precision
from models.rnn import LanguageModel
from models.score import score_ids
from models.text import Tokenizer
from scripts.book import find_book
from training.config import DataConfig
from training.data import load_tokens

ROOT = Path(__file__).resolve().parents[1]


def describe_machine() -> str:
    """CPU count and model, GPU, torch and Python versions (no HTTP stack needed)."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()} CPUs ({cpu}){gpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    )


def fastest(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """The fastest of `repeat` timed runs after one untimed one, in seconds (the device's
    queue drained before each clock reading)."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def load_lm(path: Path, device: torch.device) -> Bundle:
    """A bundle with the bundles it is built on (a mixture's components, its siblings)."""
    paths = [path.parent / name for name in components_of(path)] + [path]
    loaded = dict(load_in_order(paths, device))
    bundle = loaded[path]
    if isinstance(bundle, BundleError):
        raise bundle
    return bundle


def held_out_text(data_dir: Path | None) -> str:
    """The book's validation split as text (what bench.quality posts to the service)."""
    tokens = load_tokens(DataConfig(data_dir=data_dir, allow_download=False))
    return tokens.tokenizer.decode(tokens.val_ids.tolist())


def seed_exact(
    model: LanguageModel, tokenizer: Tokenizer, batches: list[int], tokens: int
) -> dict[str, bool]:
    """Whether a seeded request gives the same text alone and placed in the middle of
    batches of each size (the others sampled with their own seeds and controls)."""
    ids = tokenizer.encode(PREFIX).ids
    mine = SamplingParams(temperature=0.9, top_k=20, seed=1234, max_new_tokens=tokens)
    alone = generate(model, ids, [mine], tokenizer.detokenizer)[0].text
    out = {}
    for size in batches:
        others = [
            SamplingParams(temperature=1.0, top_p=0.9, seed=s, max_new_tokens=tokens)
            for s in range(size - 1)
        ]
        middle = len(others) // 2
        params = [*others[:middle], mine, *others[middle:]]
        texts = generate(model, ids, params, tokenizer.detokenizer)
        out[str(size)] = texts[middle].text == alone
    return out


def measure(
    path: Path,
    device: torch.device,
    precisions: list[Precision],
    tokens: int,
    held_out: str | None,
    batches: list[int],
    repeat: int,
) -> list[dict[str, object]]:
    bundle = load_lm(path, device)
    tokenizer = bundle.tokenizer
    assert tokenizer is not None and isinstance(bundle.model, LanguageModel)
    ids = tokenizer.encode(PREFIX).ids
    greedy = [SamplingParams(temperature=0, max_new_tokens=tokens)]
    with torch.no_grad():
        book_s = fastest(lambda: book_predict(bundle.model, ids, tokens), repeat, device)
    held_ids = tokenizer.encode(held_out).ids if held_out is not None else None
    lines: list[dict[str, object]] = []
    reference: dict[str, object] = {}
    for precision in precisions:
        model = with_precision(bundle.model, precision)

        def ours(model: LanguageModel = model) -> str:
            return generate(model, ids, greedy, tokenizer.detokenizer)[0].text

        text = ours()
        ours_s = fastest(ours, repeat, device)
        line: dict[str, object] = {
            "model": path.name,
            "device": device.type,
            "precision": precision,
            "tokens": tokens,
            "book_fp32_chars_per_s": tokens / book_s,
            "rnnlm_chars_per_s": tokens / ours_s,
            "speedup_vs_book": book_s / ours_s,
        }
        if precision == "fp32":
            reference["text"] = text
        elif "text" in reference:
            same = sum(a == b for a, b in zip(text, str(reference["text"]), strict=False))
            line["greedy_chars_equal_to_fp32"] = same / max(1, len(text))
        if held_ids is not None:
            started = time.perf_counter()
            ppl = score_ids(model, held_ids).perplexity
            line["held_out_ppl"] = ppl
            line["held_out_tokens"] = len(held_ids) - 1
            line["score_seconds"] = time.perf_counter() - started
            if precision == "fp32":
                reference["ppl"] = ppl
            elif "ppl" in reference:
                line["ppl_relative_to_fp32"] = ppl / float(reference["ppl"]) - 1  # type: ignore[arg-type]
        if batches:
            line["seed_exact_alone_vs_batch"] = seed_exact(model, tokenizer, batches, 40)
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bundles", nargs="+", type=Path, default=[ROOT / "checkpoints" / "char-lstm"]
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        help="default: every precision the device offers",
    )
    parser.add_argument("--tokens", type=int, default=500, help="characters per greedy stream")
    parser.add_argument("--batches", type=int, nargs="*", default=[2, 17, 64])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the fastest counts)")
    parser.add_argument("--no-held-out", action="store_true", help="skip the perplexities")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 50 tokens, 1 timed run, small batches"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.quick:
        args.tokens, args.repeat, args.batches = 50, 1, [2, 5]
    precisions = args.precisions or list(precisions_on(device))
    held_out = None if args.no_held_out else held_out_text(find_book().parent)
    print(json.dumps({"machine": describe_machine()}), flush=True)
    for path in args.bundles:
        for line in measure(
            path, device, precisions, args.tokens, held_out, args.batches, args.repeat
        ):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
