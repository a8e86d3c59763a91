"""Big corpora: raw text file -> token file -> first training step, peak RSS and MB/s.

The corpus is made here: the book's lines in seeded shuffles, repeated to `--megabytes`.
Each measurement runs in a fresh child process (its own peak RSS, nothing cached):

- `stream`: `training.data.prepare_tokens` (one streaming pass; the token file), then
  the model, the first minibatch read from the file, one optimizer step;
- `in_memory` (baseline, on `--baseline-megabytes`): the whole-text path,
  `training.data.load_tokens` (text, token list and id tensor all in memory).

    python -m bench.tokens --megabytes 1024 --level char
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._util import book_path, machine

CHILD = """
import json, resource, sys, time
from pathlib import Path
import torch
from training.config import DataConfig
started = time.perf_counter()
mode, corpus, normalize, level, out = sys.argv[1:6]
data = DataConfig(corpus=corpus, normalize=normalize, level=level, allow_download=False)
if mode == "in_memory":
    from training.data import load_tokens
    tokens = load_tokens(data)
    n = len(tokens.train_ids) + len(tokens.val_ids)
    result = {"tokenize_s": time.perf_counter() - started, "tokens": n}
else:
    from models.rnn import LMConfig, build_model
    from models.score import token_nll
    from training.batches import random_batches
    from training.data import prepare_tokens
    tokens = prepare_tokens(data, Path(out))
    built = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(LMConfig("gru", len(tokens.tokenizer.vocab), 256))
    optimizer = torch.optim.Adam(model.parameters())
    X, Y = next(random_batches(tokens.train(), 32, 35, torch.Generator().manual_seed(0)))
    loss = token_nll(model(X)[0], Y).mean()
    loss.backward()
    optimizer.step()
    result = {
        "tokenize_s": built - started,
        "first_step_s": time.perf_counter() - started,
        "tokens": tokens.n_tokens,
        "vocab": len(tokens.tokenizer.vocab),
        "loss": float(loss),
    }
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def make_corpus(path: Path, megabytes: int, seed: int = 0, curly: bool = False) -> int:
    """The book's lines in seeded shuffles up to `megabytes`; `curly` turns its straight
    quotes into typographic ones, so every chunk holds non-ASCII text (the char level's
    general path instead of its ASCII one)."""
    text = book_path().read_text(encoding="utf-8")
    if curly:
        text = text.replace("'", "\u2019").replace('"', "\u201c")
    lines = text.splitlines()
    rng = random.Random(seed)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < megabytes << 20:
            rng.shuffle(lines)
            written += f.write("\n".join(lines) + "\n")
    return path.stat().st_size


def child(mode: str, corpus: Path, normalize: str, level: str, out: Path) -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(corpus), normalize, level, str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--baseline-megabytes", type=int, default=64)
    parser.add_argument("--normalize", default="none", choices=("book", "none"))
    parser.add_argument("--level", default="char", choices=("char", "word", "byte"))
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (big)")
    parser.add_argument(
        "--curly-quotes", action="store_true", help="typographic quotes: non-ASCII chunks"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        for mode, megabytes in (("in_memory", args.baseline_megabytes), ("stream", args.megabytes)):
            if megabytes <= 0:
                continue
            corpus = root / f"corpus-{megabytes}.txt"
            size = make_corpus(corpus, megabytes, curly=args.curly_quotes)
            result = child(mode, corpus, args.normalize, args.level, root / f"lm-{mode}")
            print(
                json.dumps(
                    {
                        "bench": "tokens",
                        "mode": mode,
                        "normalize": args.normalize,
                        "level": args.level,
                        "curly_quotes": args.curly_quotes,
                        "bytes": size,
                        "mb_per_s": size / 2**20 / result["tokenize_s"],
                        "machine": machine(),
                        **result,
                    }
                ),
                flush=True,
            )
            corpus.unlink()


if __name__ == "__main__":
    main()
