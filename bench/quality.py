"""Held-out perplexity of every served language model, measured through the live service.

The held-out text is the book's contiguous last 10% (the validation split every committed
LM was selected or fit on) under each model's own tokenizer rule (the book's cleanup, or
the raw text), posted whole to `/v1/perplexity` of a server started on the committed
bundles. Prints one JSON line per model (perplexity per token and bits per byte of the
held-out text, comparable across rules), then the default model's figure against the
issue's target (10% below interpolated Kneser-Ney at order 7).

    python -m bench.quality
"""

from __future__ import annotations

import json
import math
from functools import cache

import httpx

from bench._util import book_path, machine, serve
from training.config import DataConfig
from training.data import load_tokens

TARGET = 3.42  # 10% below interpolated KN-7 (3.799)


def main() -> None:
    print(json.dumps({"machine": machine()}))

    @cache
    def held_out(normalize: str, level: str, line_join: str) -> str:
        rule = {"normalize": normalize, "level": level, "line_join": line_join}
        data = DataConfig(data_dir=book_path().parent, allow_download=False, **rule)
        tokens = load_tokens(data)
        return tokens.tokenizer.decode(tokens.val_ids.tolist())

    with serve() as server, httpx.Client(base_url=server.url, timeout=600) as c:
        default = c.get("/ready").json()["default_model"]
        cards = [m for m in c.get("/v1/models").json()["data"] if m["kind"] != "forecaster"]
        results = {}
        for card in cards:
            rule = card["tokenizer"]
            text = held_out(rule["normalize"], rule["level"], rule["line_join"])
            r = c.post("/v1/perplexity", json={"model": card["id"], "text": text})
            r.raise_for_status()
            out = r.json()
            results[card["id"]] = out["perplexity"]
            bits = out["cross_entropy"] * out["tokens_scored"] / math.log(2)
            line = {
                "model": card["id"],
                "kind": card["kind"],
                "normalize": rule["normalize"],
                "held_out_ppl": out["perplexity"],
                "bits_per_byte": bits / len(text.encode()),
                "tokens_scored": out["tokens_scored"],
            }
            print(json.dumps(line))
    ppl = results.get(default)
    summary = {"default_model": default, "held_out_ppl": ppl, "target": TARGET}
    print(json.dumps(summary | {"met": ppl is not None and ppl <= TARGET}))


if __name__ == "__main__":
    main()
