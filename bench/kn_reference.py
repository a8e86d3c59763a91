"""Kneser-Ney at order 7 against KenLM, an independent implementation, on the held-out text.

KenLM's `lmplz` estimates interpolated *modified* Kneser-Ney (three discounts per order);
our `kn` is interpolated Kneser-Ney with one discount per order, D = n1 / (n1 + 2 n2), and
`modified-kn` is the three-discount form. So the comparison is made like with like, twice:

    stock lmplz                          against our modified-kn
    lmplz with bench/kenlm_single_discount.patch (D1 = D2 = D3+ = n1 / (n1 + 2 n2),
    nothing else changed)                against our kn, the issue's "interpolated KN-7"

Both sides read the same split (the book's first 90% for training, the contiguous last 10%
held out, lines joined by a space, the book's cleanup), one character per KenLM word, the
space written `<sp>` (as our ARPA export writes it). Boundaries: the training text is one
line, so KenLM adds one `<s>` before it and one `</s>` after it (our counts have neither);
the held-out text is one line scored with `query -n` (no `<s>`/`</s>`), and its first
token, which ours reads only as context, is dropped from KenLM's sum. Both perplexities
are over the same 17,342 tokens. KenLM's discounts for unigrams cannot be estimated from
28 symbols (no unigram has continuation count 2), so `--discount_fallback 0.5` gives them
0.5, as ours does in that case.

Ours is measured twice: the counts of the training split scored in-process
(`models.score.score_ids`, what `python -m training kn` reports), and through the live
service (`/v1/perplexity` with `"order": 7` and the smoothing, served by a copy of
`checkpoints/char-kn10`). KenLM's side is scored twice too: by KenLM's own `query`, and by
the independent `arpa` package reading KenLM's ARPA file (which the test
tests/models/test_kenlm_reference.py repeats from the committed ARPA files).

    bash bench/kenlm_build.sh KENLM_SOURCE_DIR /tmp/kenlm-bins      # once
    python -m bench.kn_reference --kenlm /tmp/kenlm-bins/stock \\
        --single-lmplz /tmp/kenlm-bins/single/lmplz [--write-artifacts]

Prints one JSON line per comparison. `--write-artifacts` (re)writes KenLM's two ARPA
files, gzipped, and their provenance under bench/results/kenlm/.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import arpa
import httpx

from bench._util import ROOT, book_path, machine
from models.arpa import escape
from models.ngram_lm import NgramConfig, NgramLM, Smoothing, count_ngrams
from models.score import score_ids
from scripts.live_server import live_server
from training.config import DataConfig
from training.data import Tokens, load_tokens

ORDER = 7
FALLBACK = "0.5"  # our discount where the count-of-counts give none (models.ngram_lm)
ARTIFACTS = ROOT / "bench" / "results" / "kenlm"
SERVED = "char-kn10"  # the committed n-gram bundle; its counts at order 7 are ours
# Our smoothing -> the KenLM build that estimates the same model, and its ARPA file.
REFERENCES: dict[str, tuple[str, str]] = {
    "modified-kn": ("stock lmplz", "kenlm-o7-modified-kn.arpa.gz"),
    "kn": ("lmplz + kenlm_single_discount.patch", "kenlm-o7-single-discount.arpa.gz"),
}
_WORD = re.compile(r"^(\S+)=(\d+) (\d+) (\S+)$")  # query -v word: word=id length log10


def held_out_tokens(book: Path) -> Tokens:
    """The split every committed char model uses: the book's cleanup, lines joined by a space."""
    return load_tokens(DataConfig(data_dir=book.parent, allow_download=False))


def words(tokens: Tokens, ids: Sequence[int]) -> list[str]:
    """Token ids as ARPA words: each character one word, the space `<sp>`."""
    return [escape(t) for t in tokens.tokenizer.vocab.decode(list(ids))]


def arpa_log10(model: arpa.models.base.ARPAModel, text: list[str], order: int) -> list[float]:
    """log10 P of every token but the first, from the `order - 1` tokens before it, as
    `models.score` scores a text (the first token is context only)."""
    return [model.log_p(tuple(text[max(0, t - order + 1) : t + 1])) for t in range(1, len(text))]


def perplexity(log10s: Sequence[float]) -> float:
    return float(10 ** (-sum(log10s) / len(log10s)))


@dataclass
class Estimate:
    arpa_text: str
    discounts: list[list[float]]  # per order: D1, D2, D3+ as lmplz printed them
    command: list[str]


def estimate(lmplz: Path, train: list[str], tmp: Path) -> Estimate:
    """Run lmplz on the training words as one line; its ARPA text and discounts."""
    command = [str(lmplz), "-o", str(ORDER), "-S", "256M", "-T", str(tmp) + "/"]
    command += ["--discount_fallback", FALLBACK]
    done = subprocess.run(
        command, input=" ".join(train) + "\n", capture_output=True, text=True, check=True
    )
    discounts = [
        [float(d) for d in m.groups()]
        for m in re.finditer(r"^\d+ \d+ D1=(\S+) D2=(\S+) D3\+=(\S+)$", done.stderr, re.M)
    ]
    return Estimate(done.stdout, discounts, command)


def query_log10(query: Path, arpa_file: Path, held_out: list[str]) -> list[float]:
    """KenLM's own scores of the held-out words (one line, no <s>/</s>), first token dropped."""
    done = subprocess.run(
        [str(query), "-n", "-v", "word", str(arpa_file)],
        input=" ".join(held_out) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    first = done.stdout.split("\n", 1)[0]
    scores = [float(m[4]) for item in first.split("\t") if (m := _WORD.match(item.strip()))]
    if len(scores) != len(held_out):
        raise RuntimeError(f"query scored {len(scores)} words of {len(held_out)}")
    return scores[1:]


def ours_in_process(
    tokens: Tokens, smoothing: Smoothing
) -> tuple[float, list[float], list[list[float]]]:
    V = len(tokens.tokenizer.vocab)
    model = NgramLM(NgramConfig(V, ORDER, smoothing), count_ngrams(tokens.train_ids, ORDER, V))
    score = score_ids(model, tokens.val_ids, return_logprobs=True)
    log10s = [lp / math.log(10) for lp in score.token_logprobs or []]
    return score.perplexity, log10s, [list(d) for d in model.discounts]


def ours_served(text: str, smoothings: Sequence[str]) -> dict[str, float]:
    """/v1/perplexity of a server holding only a copy of the committed char-kn10."""
    with tempfile.TemporaryDirectory() as root:
        shutil.copytree(ROOT / "checkpoints" / SERVED, Path(root) / SERVED)
        with live_server(Path(root)) as server, httpx.Client(timeout=600) as client:
            out = {}
            for smoothing in smoothings:
                body = {"model": SERVED, "text": text, "order": ORDER, "smoothing": smoothing}
                r = client.post(f"{server.url}/v1/perplexity", json=body)
                r.raise_for_status()
                out[smoothing] = r.json()["perplexity"]
            return out


def write_gzip(path: Path, text: str) -> None:
    """gzip with no name or time in its header: the same ARPA gives the same bytes."""
    with path.open("wb") as f, gzip.GzipFile("", "wb", 9, f, mtime=0) as z:
        z.write(text.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kenlm", type=Path, required=True, help="folder of stock lmplz, query")
    parser.add_argument("--single-lmplz", type=Path, help="lmplz built with the patch")
    parser.add_argument("--kenlm-version", default="4cb443e60b7bf2c0ddf3c745378f76cb59e254e5")
    parser.add_argument("--write-artifacts", action="store_true")
    args = parser.parse_args()
    print(json.dumps({"machine": machine(), "kenlm": args.kenlm_version}))
    tokens = held_out_tokens(book_path())
    train, held_out = (
        words(tokens, tokens.train_ids.tolist()),
        words(tokens, tokens.val_ids.tolist()),
    )
    builds = {"modified-kn": args.kenlm / "lmplz", "kn": args.single_lmplz}
    smoothings = [s for s, lmplz in builds.items() if lmplz is not None]
    served = ours_served(tokens.tokenizer.decode(tokens.val_ids.tolist()), smoothings)
    results: dict[str, dict[str, object]] = {}
    provenance = {"kenlm_commit": args.kenlm_version, "order": ORDER, "results": results}
    with tempfile.TemporaryDirectory() as tmp:
        for smoothing in smoothings:
            lmplz = builds[smoothing]
            assert lmplz is not None
            build, name = REFERENCES[smoothing]
            est = estimate(lmplz, train, Path(tmp))
            arpa_file = Path(tmp) / f"{smoothing}.arpa"
            arpa_file.write_text(est.arpa_text)
            theirs = query_log10(args.kenlm / "query", arpa_file, held_out)
            reader = arpa_log10(arpa.loadf(str(arpa_file))[0], held_out, ORDER)
            ppl, ours, our_discounts = ours_in_process(tokens, smoothing)  # type: ignore[arg-type]
            diffs = [abs(a - b) for a, b in zip(theirs, ours, strict=True)]
            line = {
                "ours": smoothing,
                "kenlm": build,
                "tokens_scored": len(theirs),
                "kenlm_ppl_query": perplexity(theirs),
                "kenlm_ppl_arpa_reader": perplexity(reader),
                "ours_ppl_in_process": ppl,
                "ours_ppl_served": served[smoothing],
                "relative_difference": served[smoothing] / perplexity(theirs) - 1,
                "token_log10_abs_diff_mean": sum(diffs) / len(diffs),
                "token_log10_abs_diff_max": max(diffs),
                "reader_vs_query_max": max(abs(a - b) for a, b in zip(reader, theirs, strict=True)),
                "kenlm_discounts": est.discounts,
                "our_discounts": our_discounts,
            }
            print(json.dumps(line))
            if args.write_artifacts:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                write_gzip(ARTIFACTS / name, est.arpa_text)
                results[name] = {
                    "ours": smoothing,
                    "built_with": build,
                    "command": " ".join(["lmplz", *est.command[1:]]).replace(tmp, "$TMP")
                    + " < train.txt",
                    "arpa_sha256": hashlib.sha256(est.arpa_text.encode()).hexdigest(),
                    "corpus_sha1": tokens.corpus_sha1,
                    "kenlm_ppl": perplexity(theirs),
                    "ours_ppl": served[smoothing],
                }
    if args.write_artifacts:
        (ARTIFACTS / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")


if __name__ == "__main__":
    main()
