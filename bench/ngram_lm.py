"""n-gram LM costs on the book: counting, loading a bundle, scoring the whole book.

Counts the training split at each order into a bundle in a temporary directory, then
times `load_bundle` (hash check, counts, lookup tables) and `score_ids` over the whole
book (173,427 tokens), each the best of 3. Prints one JSON line per order and the load
average of the machine while it ran (these machines are shared).

    python -m bench.ngram_lm [--orders 8 10]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench._util import best_of, book_path, machine
from models.bundle import load_bundle, save_bundle
from models.score import score_ids
from training.config import DataConfig
from training.data import load_tokens
from training.ngram import NgramSettings, count_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[8, 10])
    parser.add_argument("--smoothing", default="kn")
    args = parser.parse_args()
    print(json.dumps({"machine": machine(), "load_average": os.getloadavg()}))
    book_file = book_path()
    tokens = load_tokens(DataConfig(data_dir=book_file.parent, allow_download=False))
    book = tokens.tokenizer.encode(book_file.read_text()).ids
    for order in args.orders:
        started = time.perf_counter()
        model = count_model(tokens, NgramSettings(order, args.smoothing))
        count_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"kn{order}"
            save_bundle(path, model, tokens.tokenizer)
            load_s = best_of(lambda: load_bundle(path))  # noqa: B023
            size = sum(f.stat().st_size for f in path.iterdir())
        score_s = best_of(lambda: score_ids(model, book))  # noqa: B023
        line = {"order": order, "smoothing": args.smoothing, "ngrams": sum(model.config.sizes)}
        line |= {"bundle_bytes": size, "count_s": count_s, "load_s": load_s}
        print(json.dumps(line | {"score_book_s": score_s, "book_tokens": len(book) - 1}))
    print(json.dumps({"load_average_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
