"""Teacher-forced scoring: cross-entropy, perplexity, bits per token (d2l §9.3.2, §9.5.4).

Training's validation and the service's `/v1/perplexity` both call this module, so there
is one definition of perplexity: exp of the mean negative log-likelihood (in nats) of the
tokens scored, each predicted from the tokens before it.

Long texts are cut into segments scored side by side as one batch. Each segment first
reads up to `burn_in` tokens of the text before it (unscored) to warm its state, then
carries that state through its own tokens. A text that fits in one window is scored with
its full context, which is exactly the sequential computation. Side by side is what makes
a long text one parallel pass instead of a step-by-step chain; the burn-in is why that
costs nothing measurable: for the default LSTM on the whole book the segmented perplexity
is within a relative 5e-10 of one sequential pass (`python -m bench.perplexity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.rnn import LanguageModel

DEFAULT_SEGMENT_LEN = 2048
DEFAULT_BURN_IN = 256
MAX_TOKENS_PER_PASS = 1 << 17  # bounds the (B, T, V) logits held at once


class Cancelled(Exception):
    """Scoring was stopped by its caller (a request past its time limit)."""


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-token negative log-likelihood in nats: logits (..., V), targets (...) -> (...)."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def logprobs_and_top(logits: Tensor, targets: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Log-probability of each target and the k likeliest tokens, from one log-softmax.

    logits (N, V), targets (N,) -> chosen (N,), top log-probabilities (N, k), top ids (N, k),
    best first. Scoring (echoed prompts) and decoding (generated tokens) both use it, so the
    two report log-probabilities on one scale.
    """
    lp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    chosen = lp.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
    top, ids = lp.topk(min(k, lp.shape[1]), dim=1)  # (N, k) each
    return chosen, top, ids


TopLogprobs = list[tuple[tuple[int, float], ...]]  # per scored token: (id, logprob), best first


@dataclass(frozen=True)
class Score:
    nll: float  # summed over the scored tokens, nats
    count: int
    token_logprobs: list[float] | None = None
    top_logprobs: TopLogprobs | None = None

    @property
    def cross_entropy(self) -> float:
        return self.nll / self.count if self.count else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.cross_entropy) if self.count else float("nan")

    @property
    def bits_per_token(self) -> float:
        return self.cross_entropy / math.log(2) if self.count else float("nan")


def segments(
    n_targets: int, first: int, segment_len: int, burn_in: int
) -> list[tuple[int, int, int]]:
    """(start, first scored, stop) over target positions; [start, first scored) is warm-up.

    Target j is token j + 1 of the text, predicted from tokens 0..j."""
    if n_targets - first <= segment_len and first <= burn_in:
        return [(0, first, n_targets)]
    return [
        (max(0, a - burn_in), a, min(n_targets, a + segment_len))
        for a in range(first, n_targets, segment_len)
    ]


@torch.inference_mode()
def score_ids(
    model: LanguageModel,
    ids: list[int] | Tensor,
    first_scored: int = 1,
    *,
    segment_len: int = DEFAULT_SEGMENT_LEN,
    burn_in: int = DEFAULT_BURN_IN,
    return_logprobs: bool = False,
    top_logprobs: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Score:
    """Score `ids[first_scored:]`, each token given the ones before it.

    Args:
        ids: token ids of context and text together.
        first_scored: index of the first token to score (>= 1: the first token of a text
            without context has nothing to be predicted from).
        top_logprobs: with return_logprobs, also the this-many likeliest tokens at each
            scored position (what OpenAI's `logprobs` reports for an echoed prompt).
        should_stop: polled between passes; when it returns True, raises `Cancelled`.
    """
    return score_many(
        model,
        [(ids, first_scored)],
        segment_len=segment_len,
        burn_in=burn_in,
        return_logprobs=return_logprobs,
        top_logprobs=top_logprobs,
        should_stop=should_stop,
    )[0]


@torch.inference_mode()
def score_many(
    model: LanguageModel,
    texts: Sequence[tuple[list[int] | Tensor, int]],
    *,
    segment_len: int = DEFAULT_SEGMENT_LEN,
    burn_in: int = DEFAULT_BURN_IN,
    return_logprobs: bool = False,
    top_logprobs: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> list[Score]:
    """`score_ids` of many texts, each `(ids, first_scored)`, scored on its own but side by
    side: the windows of all texts share batched passes (a file's 10,000 lines take a few
    dozen passes, not 10,000), so each Score equals the text's own `score_ids` up to
    floating-point summation order.
    """
    if any(first < 1 for _, first in texts):
        raise ValueError("first_scored must be >= 1")
    if top_logprobs < 0:
        raise ValueError("top_logprobs must be >= 0")
    was_training = model.training
    model.eval()
    try:
        top = top_logprobs if return_logprobs else 0
        return _score(model, texts, segment_len, burn_in, return_logprobs, top, should_stop)
    finally:
        model.train(was_training)


def _score(
    model: LanguageModel,
    texts: Sequence[tuple[list[int] | Tensor, int]],
    segment_len: int,
    burn_in: int,
    return_logprobs: bool,
    top_k: int,
    should_stop: Callable[[], bool] | None,
) -> list[Score]:
    device = next(model.parameters()).device
    seqs = [torch.as_tensor(ids, dtype=torch.long, device=device) for ids, _ in texts]
    # (text, start, first scored, stop) over target positions: target j of a text is
    # seq[j + 1], predicted from seq[: j + 1]; [start, first scored) is warm-up.
    windows = [
        (t, *w)
        for t, (seq, (_, first_scored)) in enumerate(zip(seqs, texts, strict=True))
        for w in segments(seq.numel() - 1, first_scored - 1, segment_len, burn_in)
        if seq.numel() - 1 > first_scored - 1
    ]
    windows.sort(key=lambda w: w[3] - w[1], reverse=True)  # similar widths share a pass
    totals = torch.zeros(len(texts), dtype=torch.float64, device=device)
    # Per text, (first scored position, tensor) of each window, to be put back in order.
    pieces: list[list[tuple[int, Tensor]]] = [[] for _ in texts]
    top_values: list[list[tuple[int, Tensor]]] = [[] for _ in texts]
    top_ids: list[list[tuple[int, Tensor]]] = [[] for _ in texts]
    g = 0
    while g < len(windows):
        if should_stop is not None and should_stop():
            raise Cancelled
        width = windows[g][3] - windows[g][1]
        group = windows[g : g + max(1, MAX_TOKENS_PER_PASS // width)]
        g += len(group)
        X = torch.zeros(len(group), width, dtype=torch.long, device=device)  # (B, W)
        Y = torch.zeros_like(X)
        keep = torch.zeros(len(group), width, dtype=torch.bool, device=device)
        for row, (t, start, scored, stop) in enumerate(group):
            X[row, : stop - start] = seqs[t][start:stop]
            Y[row, : stop - start] = seqs[t][start + 1 : stop + 1]
            keep[row, scored - start : stop - start] = True
        logits, _ = model(X)  # (B, W, V); right padding never reaches a kept position
        nll = token_nll(logits.float(), Y).masked_fill(~keep, 0.0)  # (B, W)
        owners = torch.tensor([w[0] for w in group], device=device)
        totals.index_add_(0, owners, nll.double().sum(1))
        if not (return_logprobs or top_k):
            continue
        for row, (t, _, scored, _) in enumerate(group):
            kept = keep[row]
            if return_logprobs:
                pieces[t].append((scored, -nll[row][kept]))
            if top_k:
                _, values, ids_k = logprobs_and_top(logits[row][kept], Y[row][kept], top_k)
                top_values[t].append((scored, values))
                top_ids[t].append((scored, ids_k))
    scores = []
    for t, (seq, (_, first_scored)) in enumerate(zip(seqs, texts, strict=True)):
        count = max(0, seq.numel() - first_scored)
        logprobs = _in_order(pieces[t]) if return_logprobs else None
        top = None
        if top_k:
            ids_rows, value_rows = _in_order(top_ids[t]), _in_order(top_values[t])
            top = [tuple(zip(i, v, strict=True)) for i, v in zip(ids_rows, value_rows, strict=True)]
        scores.append(Score(float(totals[t]), count, logprobs, top))
    return scores


def _in_order(parts: list[tuple[int, Tensor]]) -> list[Any]:
    """A text's per-window results, by position (passes visit windows by width)."""
    if not parts:
        return []
    return torch.cat([part for _, part in sorted(parts, key=lambda p: p[0])]).tolist()
