"""Interpolated Kneser-Ney n-gram language model: the smoothed baseline an RNN must beat.

Chen & Goodman (1998): absolute discounting of the highest order, continuation counts
(how many distinct tokens precede an n-gram) for the lower orders, interpolated down to a
uniform distribution, so every token has a non-zero probability. `modified=True` uses
three discounts (for counts 1, 2 and 3+) instead of one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

Gram = tuple[int, ...]


class KneserNey:
    def __init__(
        self, ids: Sequence[int], order: int, vocab_size: int, modified: bool = False
    ) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order, self.vocab_size, self.modified = order, vocab_size, modified
        ids = list(ids)
        highest: Counter[Gram] = Counter(
            tuple(ids[i : i + order]) for i in range(len(ids) - order + 1)
        )
        # counts[n]: raw counts for the top order, continuation counts below it.
        self.counts: list[Counter[Gram]] = [Counter() for _ in range(order + 1)]
        self.counts[order] = highest
        for n in range(order, 1, -1):
            for gram in self.counts[n]:
                self.counts[n - 1][gram[1:]] += 1
        self.discounts = [self._discounts(self.counts[n]) for n in range(order + 1)]
        # Per context: total count, and how many distinct followers had count 1, 2, 3+.
        self.context_total: list[dict[Gram, int]] = [defaultdict(int) for _ in range(order + 1)]
        self.context_kinds: list[dict[Gram, list[int]]] = [{} for _ in range(order + 1)]
        for n in range(1, order + 1):
            for gram, c in self.counts[n].items():
                ctx = gram[:-1]
                self.context_total[n][ctx] += c
                kinds = self.context_kinds[n].setdefault(ctx, [0, 0, 0])
                kinds[min(c, 3) - 1] += 1

    def _discounts(self, counts: Counter[Gram]) -> tuple[float, float, float]:
        n = Counter(c for c in counts.values() if c <= 4)
        n1, n2, n3, n4 = (n.get(i, 0) for i in (1, 2, 3, 4))
        if n1 == 0 or n2 == 0:
            return (0.5, 0.5, 0.5)
        Y = n1 / (n1 + 2 * n2)
        if not self.modified:
            return (Y, Y, Y)
        d = (1 - 2 * Y * n2 / n1, 2 - 3 * Y * n3 / n2, 3 - 4 * Y * n4 / n3 if n3 else 0.0)
        # Sparse low orders can give non-positive estimates; plain KN's Y is always in (0, 1).
        return (d[0], d[1], d[2]) if min(d) > 0 else (Y, Y, Y)

    def prob(self, context: Gram, token: int) -> float:
        """P(token | the last order-1 tokens of context)."""
        p = 1.0 / self.vocab_size
        context = context[len(context) - (self.order - 1) :] if self.order > 1 else ()
        for n in range(1, self.order + 1):
            if len(context) < n - 1:
                break
            ctx = context[len(context) - (n - 1) :] if n > 1 else ()
            total = self.context_total[n].get(ctx, 0)
            if total == 0:
                continue  # unseen context: keep the lower-order estimate
            c = self.counts[n].get((*ctx, token), 0)
            d = self.discounts[n]
            discount = d[min(c, 3) - 1] if c else 0.0
            kinds = self.context_kinds[n][ctx]
            gamma = (d[0] * kinds[0] + d[1] * kinds[1] + d[2] * kinds[2]) / total
            p = max(c - discount, 0.0) / total + gamma * p
        return p

    def perplexity(self, ids: Sequence[int]) -> float:
        """Perplexity of ids[1:], each token given the ones before it (as models.score does)."""
        ids = list(ids)
        nll = 0.0
        for i in range(1, len(ids)):
            nll -= math.log(self.prob(tuple(ids[max(0, i - self.order + 1) : i]), ids[i]))
        return math.exp(nll / max(1, len(ids) - 1))
