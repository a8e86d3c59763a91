"""ARPA export: an n-gram model as the backoff text format KenLM and SRILM read.

Every smoothing here is interpolated, P(w | h) = alpha(h, w) + gamma(h) P(w | h'), and an
interpolated model has an exact backoff form: each n-gram seen in training is written with
its full probability P(w | h), and each context with gamma(h) as its backoff weight; a
reader's P(w | h) = P(h w) when listed, else bow(h) * P(w | h') gives back this model's
value for every token and context. MLE has no such form (a seen context gives an unseen
token probability 0, a backoff weight of 0, and a reader backs off anyway), so it is
refused.

Tokens are written as the vocabulary spells them, except that a whitespace token cannot
appear in a format whose fields are separated by whitespace: the space becomes `<sp>` and
any other whitespace character `<U+XXXX>` (its code point). `<unk>` is the vocabulary's
own. The models read a stream with no sentence boundaries, so `<s>` and `</s>` are listed
only because readers require them, with log10 probability -99 (never predicted): query a
reader token by token with the preceding context (KenLM: bos=False, eos=False), not
sentence by sentence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.ngram_lm import Floats, NgramLM
from models.text import Vocab

SENTENCE_MARKERS = ("<s>", "</s>")
LOG_ZERO = -99.0  # ARPA's conventional log10 of "never"


class ArpaError(ValueError):
    """A model that cannot be written as ARPA; the message says why."""


def escape(token: str) -> str:
    if token == " ":
        return "<sp>"
    return "".join(f"<U+{ord(c):04X}>" if c.isspace() else c for c in token)


def arpa_tokens(vocab: Vocab) -> list[str]:
    """The vocabulary as ARPA words; refuses one that escaping would make ambiguous."""
    words = [escape(t) for t in vocab.idx_to_token]
    clash = sorted({w for w in words if words.count(w) > 1 or w in SENTENCE_MARKERS})
    if clash:
        raise ArpaError(f"the vocabulary's tokens {clash} cannot be told apart once escaped")
    return words


def check_exportable(model: NgramLM) -> None:
    if model.config.smoothing == "mle":
        raise ArpaError(
            "an MLE model gives unseen n-grams probability 0, and ARPA's backoff form "
            "cannot write that: readers would back off to a non-zero probability; use "
            "laplace, kn or modified-kn"
        )


def _log10(values: Floats) -> Floats:
    with np.errstate(divide="ignore"):
        logs: Floats = np.maximum(np.log10(values), LOG_ZERO)
    return logs


def arpa_lines(model: NgramLM, vocab: Vocab) -> Iterator[str]:
    """The ARPA text, line by line (each with its newline)."""
    check_exportable(model)
    words = np.array(arpa_tokens(vocab), dtype=object)
    V, K = model.config.vocab_size, model.config.order
    sizes = [V + len(SENTENCE_MARKERS), *model.config.sizes[1:]]
    yield "\\data\\\n"
    for n, size in enumerate(sizes, 1):
        yield f"ngram {n}={size}\n"
    for n in range(1, K + 1):
        yield f"\n\\{n}-grams:\n"
        if n == 1:
            yield f"{LOG_ZERO:.7f}\t<s>\t0.0000000\n" if K > 1 else f"{LOG_ZERO:.7f}\t<s>\n"
            yield f"{LOG_ZERO:.7f}\t</s>\n"
        codes, probs, weights = model.entries(n)
        names = words[codes // V ** (n - 1) % V]
        for j in range(1, n):
            names = names + " " + words[codes // V ** (n - 1 - j) % V]
        logp = _log10(probs)
        if weights is None:
            for p, name in zip(logp.tolist(), names.tolist(), strict=True):
                yield f"{p:.7f}\t{name}\n"
        else:
            for p, name, b in zip(
                logp.tolist(), names.tolist(), _log10(weights).tolist(), strict=True
            ):
                yield f"{p:.7f}\t{name}\t{b:.7f}\n"
    yield "\n\\end\\\n"


def arpa_chunks(model: NgramLM, vocab: Vocab, lines: int = 8192) -> Iterator[str]:
    """The ARPA text in blocks of `lines` lines (fewer, larger writes for a stream)."""
    block: list[str] = []
    for line in arpa_lines(model, vocab):
        block.append(line)
        if len(block) == lines:
            yield "".join(block)
            block = []
    yield "".join(block)


def write_arpa(model: NgramLM, vocab: Vocab, path: Path) -> None:
    """Write the ARPA file (checked before anything is written)."""
    check_exportable(model)
    arpa_tokens(vocab)
    with Path(path).open("w", encoding="utf-8") as f:
        f.writelines(arpa_chunks(model, vocab))
