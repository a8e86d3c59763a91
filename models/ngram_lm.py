"""Count-based language models (d2l §9.3): MLE, Laplace, Kneser-Ney and modified Kneser-Ney.

The model stores the book's counts n(x), n(x, x'), ... for every order up to `order` (as
sorted integer codes and counts, the model's parameters) and derives its probabilities
from them when it is built. Every smoothing is one recursion over the orders: for a
context h seen in training (followed by some token there),

    P_n(w | h) = alpha_n(h, w) + gamma_n(h) * P_{n-1}(w | h without its first token)

down to P_0(w) = 1 / V; an unseen context has no counts of its own, so P_n(w | h) =
P_{n-1}(w | h shortened). The smoothings differ only in alpha and gamma:

    mle          alpha = n(h, w) / n(h), gamma = 0: the book's P(x' | x) = n(x, x') / n(x).
                 An n-gram never seen after a seen context has probability 0 (strict);
                 a context never seen at all is shortened until it was, as NLTK's MLE
                 generates (0 / 0 defines no distribution, and generation needs one).
    laplace      alpha = n(h, w) / (n(h) + eps), gamma = eps / (n(h) + eps): the book's
                 Laplace smoothing P(x' | x) = (n(x, x') + eps P(x')) / (n(x) + eps),
                 applied at every order (P(x) = (n(x) + eps / V) / (n + eps) at the bottom).
    kn           interpolated Kneser-Ney (Chen & Goodman 1998): one absolute discount D
                 per order, alpha = max(c - D, 0) / sum c, gamma = D * N1+(h .) / sum c,
                 where c is the raw count at the highest order and the continuation count
                 N1+(. h w) (distinct tokens seen before h w) below it.
    modified-kn  the same with three discounts, for counts 1, 2 and 3+.

So P(w | h) depends only on the longest suffix of h seen as a context: its distribution is
one row of a table, precomputed at build time when (contexts x V) is small (a char model of
the book at order 8: 179k contexts x 28) and computed per request from the sparse counts
otherwise (word models). A lookup is one `searchsorted` over all context lengths at once.
The forward pass returns log-probabilities (-inf for probability 0), so every consumer of
`LanguageModel` (scoring, decoding, log-probabilities) serves these models unchanged.

Sequences are keyed by one int64: a sequence of length m with ids s_1..s_m has the code
sum s_i V^(m-i) and the key offset(m) + code, offset(m) = 1 + V + ... + V^(m-1); so every
length has its own key range and one sorted array holds them all. That bounds the order:
V^order < 2^62 (`max_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from models.rnn import LanguageModel, State

Smoothing = Literal["mle", "laplace", "kn", "modified-kn"]
SMOOTHINGS: tuple[Smoothing, ...] = ("mle", "laplace", "kn", "modified-kn")
MAX_ORDER = 16
# The (contexts, V) probability table is precomputed while it has at most this many
# entries (128 MiB of float32); bigger models compute each row from the sparse counts.
DENSE_ENTRIES = 1 << 25
MAX_VARIANTS = 8  # other orders/smoothings of one model's counts kept built (`variant`)

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]


def max_order(vocab_size: int) -> int:
    """The highest order whose n-gram keys fit an int64 for this vocabulary (at most 16)."""
    order = 1
    while order < MAX_ORDER and vocab_size ** (order + 1) < 2**62:
        order += 1
    return order


@dataclass(frozen=True)
class NgramConfig:
    """Rebuilds an n-gram model with its counts; stored in the bundle's config.json."""

    vocab_size: int
    order: int
    smoothing: Smoothing = "kn"
    epsilon: float = 1.0  # laplace: pseudo-count given to the lower order's estimate
    sizes: tuple[int, ...] = ()  # distinct n-grams per order 1..order (the counts' shapes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(self.sizes))
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.smoothing not in SMOOTHINGS:
            raise ValueError(
                f"smoothing must be one of {', '.join(SMOOTHINGS)}, got {self.smoothing!r}"
            )
        highest = max_order(self.vocab_size)
        if not 1 <= self.order <= highest:
            raise ValueError(
                f"order must be in [1, {highest}] for a vocabulary of {self.vocab_size}, "
                f"got {self.order}"
            )
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
        if self.sizes and len(self.sizes) != self.order:
            raise ValueError(f"sizes must give one count per order, got {len(self.sizes)}")


def count_ngrams(
    ids: Sequence[int] | Ints | Tensor, order: int, vocab_size: int
) -> list[tuple[Ints, Ints]]:
    """(sorted codes, counts) of the n-grams of `ids` for n = 1..order.

    The code of n-gram (s_1, .., s_n) is sum s_i V^(n-i): its context's code is code // V
    and its last token code % V.
    """
    a = (
        torch.as_tensor(ids).numpy().astype(np.int64)
        if isinstance(ids, Tensor)
        else np.asarray(ids, dtype=np.int64)
    )
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size})")
    if a.size < 1:
        raise ValueError("need at least one token to count")
    out: list[tuple[Ints, Ints]] = []
    code = np.zeros(len(a), dtype=np.int64)
    # Counts (and every sum of them) fit int32 below 2**31 tokens: a smaller bundle.
    count_type = np.int32 if len(a) < 2**31 else np.int64
    for n in range(1, order + 1):
        m = max(0, len(a) - n + 1)
        code = code[:m] * vocab_size + a[n - 1 : n - 1 + m]
        keys, counts = np.unique(code, return_counts=True)
        out.append((keys.astype(np.int64), counts.astype(count_type)))
    return out


def _discounts(counts: Ints, modified: bool) -> tuple[float, float, float]:
    """Kneser-Ney discounts for counts 1, 2, 3+ from the count-of-counts (Chen & Goodman)."""
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == i)) for i in (1, 2, 3, 4))
    if n1 == 0 or n2 == 0:
        return (0.5, 0.5, 0.5)
    y = n1 / (n1 + 2 * n2)
    if not modified:
        return (y, y, y)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3 if n3 else 0.0)
    # Sparse low orders can give non-positive estimates; plain KN's y is always in (0, 1).
    return d if min(d) > 0 else (y, y, y)


def _offsets(vocab_size: int, order: int) -> Ints:
    """offset[m]: the first key of sequences of length m (m = 0..order)."""
    out = np.zeros(order + 1, dtype=np.int64)
    for m in range(1, order + 1):
        out[m] = out[m - 1] + vocab_size ** (m - 1)
    return out


@dataclass
class _Level:
    """One order's counts as the smoothing uses them, grouped by context."""

    codes: Ints  # (M,) sorted n-gram codes
    counts: Ints  # (M,) counts used by the smoothing (continuation counts for KN below the top)
    contexts: Ints  # (C,) sorted context codes
    starts: Ints  # (C,) index of each context's first n-gram
    totals: Ints  # (C,)
    discounts: tuple[float, float, float] = (0.0, 0.0, 0.0)
    alpha: Floats = field(default_factory=lambda: np.zeros(0))
    gamma: Floats = field(default_factory=lambda: np.zeros(0))


def _group(codes: Ints, counts: Ints, vocab_size: int) -> _Level:
    contexts, starts = np.unique(codes // vocab_size, return_index=True)
    totals = np.add.reduceat(counts, starts) if len(codes) else np.zeros(0, dtype=np.int64)
    return _Level(
        codes, counts, contexts.astype(np.int64), starts.astype(np.int64), totals.astype(np.int64)
    )


def _smooth(level: _Level, config: NgramConfig) -> None:
    """Fill alpha (per n-gram) and gamma (per context) for one order."""
    c = level.counts.astype(np.float64)
    per_ngram_total = np.repeat(level.totals, np.diff(np.append(level.starts, len(c)))).astype(
        np.float64
    )
    totals = level.totals.astype(np.float64)
    if config.smoothing == "mle":
        level.alpha = c / per_ngram_total
        level.gamma = np.zeros(len(totals))
    elif config.smoothing == "laplace":
        eps = config.epsilon
        level.alpha = c / (per_ngram_total + eps)
        level.gamma = eps / (totals + eps)
    else:
        d = _discounts(level.counts, config.smoothing == "modified-kn")
        level.discounts = d
        dvec = np.array(d)
        level.alpha = np.maximum(c - dvec[np.minimum(level.counts, 3) - 1], 0.0) / per_ngram_total
        kinds = np.minimum(level.counts, 3) - 1  # 0, 1, 2 for counts 1, 2, 3+
        mass = np.add.reduceat(dvec[kinds], level.starts) if len(c) else np.zeros(0)
        level.gamma = mass / totals


@dataclass(frozen=True)
class Breakdown:
    """How each scored token's probability came about (arrays over tokens N and orders n).

    `count[:, n-1]` is the book's n(context, token) at order n and `context_count[:, n-1]`
    its n(context), with -1 where the text has too little context for that order.
    `used_count`/`used_context_count` are the counts the smoothing uses (equal to the raw
    counts except for Kneser-Ney below the highest order: continuation counts there).
    `context_order` is the order of the estimate (1 + the longest context seen in
    training); `backoff_order` the highest order at which (context, token) itself has a
    count the smoothing uses, 0 when none (only the uniform share is left).
    """

    tokens: list[int]
    logprob: list[float]  # natural log; -inf for probability 0
    context_order: list[int]
    backoff_order: list[int]
    count: list[list[int]]
    context_count: list[list[int]]
    used_count: list[list[int]]
    used_context_count: list[list[int]]


class NgramLM(LanguageModel):
    """An n-gram model behind the recurrent models' interface (see the module docstring).

    State: the last order-1 token ids, (1, B, order-1), -1 where the text has none yet.
    The counts are frozen `nn.Parameter`s so that code asking any model for its device or
    size treats this kind like the others; everything derived from them is rebuilt by a
    load_state_dict hook, so a bundle loads like any other.
    """

    config: NgramConfig

    def __init__(self, config: NgramConfig, counts: list[tuple[Ints, Ints]] | None = None) -> None:
        super().__init__()
        placeholders = counts is None
        if counts is None:
            counts = [
                (np.zeros(s, dtype=np.int64), np.zeros(s, dtype=np.int64)) for s in config.sizes
            ]
        elif len(counts) != config.order:
            raise ValueError(f"need counts for orders 1..{config.order}, got {len(counts)}")
        else:
            config = replace(config, sizes=tuple(len(k) for k, _ in counts))
        self.config = config
        self.codes = nn.ParameterList(
            [
                nn.Parameter(torch.from_numpy(np.ascontiguousarray(k)), requires_grad=False)
                for k, _ in counts
            ]
        )
        self.counts = nn.ParameterList(
            [
                nn.Parameter(torch.from_numpy(np.ascontiguousarray(c)), requires_grad=False)
                for _, c in counts
            ]
        )
        self.register_load_state_dict_post_hook(lambda module, _keys: module.build())  # type: ignore[no-untyped-call]
        self.dense = False
        self.variants: dict[tuple[int, str], NgramLM] = {}
        if not placeholders:  # else load_state_dict's hook builds, from the loaded counts
            self.build()

    # ---- building -------------------------------------------------------------------

    def _raw(self) -> list[tuple[Ints, Ints]]:
        return [
            (k.detach().cpu().numpy(), c.detach().cpu().numpy())
            for k, c in zip(self.codes, self.counts, strict=True)
        ]

    def _levels(self) -> list[_Level]:
        """Per order, the counts the smoothing uses, grouped by context and smoothed."""
        cfg = self.config
        V, K = cfg.vocab_size, cfg.order
        raw = self._raw()
        levels = []
        for n in range(1, K + 1):
            codes, counts = raw[n - 1]
            if cfg.smoothing in ("kn", "modified-kn") and n < K:
                # Continuation counts: how many distinct tokens precede the n-gram.
                codes, counts = np.unique(raw[n][0] % V**n, return_counts=True)
                codes, counts = codes.astype(np.int64), counts.astype(np.int64)
            level = _group(codes, counts, V)
            _smooth(level, cfg)
            levels.append(level)
        return levels

    def build(self) -> None:
        """Derive the lookup tables from the counts (called on init and after loading)."""
        cfg = self.config
        V, K = cfg.vocab_size, cfg.order
        levels = self._levels()
        offsets = _offsets(V, K)
        # Contexts of every length (0..K-1) as keys, in one sorted array: one row each.
        ctx_keys = np.concatenate([offsets[n - 1] + lv.contexts for n, lv in enumerate(levels, 1)])
        if len(ctx_keys) == 0 or ctx_keys[0] != 0:
            raise ValueError("counts hold no unigrams")
        sizes = [len(lv.contexts) for lv in levels]
        first_row = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        followers = [np.diff(np.append(lv.starts, len(lv.codes))) for lv in levels]
        f_len = np.concatenate(followers).astype(np.int64)
        f_start = np.concatenate([[0], np.cumsum(f_len)[:-1]]).astype(np.int64)
        f_token = np.concatenate([lv.codes % V for lv in levels]).astype(np.int64)
        f_alpha = np.concatenate([lv.alpha for lv in levels])
        gamma = np.concatenate([lv.gamma for lv in levels])
        ng_keys = np.concatenate([offsets[n] + lv.codes for n, lv in enumerate(levels, 1)])
        ng_counts = np.concatenate([lv.counts for lv in levels])
        ctx_totals = np.concatenate([lv.totals for lv in levels])
        # Each context's parent: the longest proper suffix of it that is a context too.
        parent = np.full(len(ctx_keys), -1, dtype=np.int64)
        for n in range(2, K + 1):
            rows = np.arange(first_row[n - 1], first_row[n])
            codes = levels[n - 1].contexts  # length n-1
            best = np.zeros(len(codes), dtype=np.int64)  # the empty context: row 0
            todo = np.arange(len(codes))
            for m in range(n - 2, 0, -1):  # longest first; usually all found at once
                keys = offsets[m] + codes[todo] % V**m
                at = np.minimum(np.searchsorted(ctx_keys, keys), len(ctx_keys) - 1)
                found = ctx_keys[at] == keys
                best[todo[found]] = at[found]
                todo = todo[~found]
                if len(todo) == 0:
                    break
            parent[rows] = best
        t = torch.from_numpy
        self._register("ctx_keys", t(ctx_keys))
        self._register("parent", t(parent))
        self._register("gamma", t(gamma))
        self._register("ctx_totals", t(ctx_totals))
        self._register("f_start", t(f_start))
        self._register("f_len", t(f_len))
        self._register("f_token", t(f_token))
        self._register("f_alpha", t(f_alpha))
        self._register("ng_keys", t(ng_keys))
        self._register("ng_counts", t(ng_counts))
        self._register("offsets", t(offsets))
        # suffix_powers[i, m-1] = V^(m-1-(K-2-i)) when window position i is in the last m.
        suffix_powers = np.zeros((max(K - 1, 1), max(K - 1, 1)), dtype=np.int64)
        for m in range(1, K):
            for j in range(m):  # j-th most recent token, at window position K-2-j
                suffix_powers[K - 2 - j, m - 1] = V**j
        self._register("suffix_powers", t(suffix_powers))
        self._register("lengths", t(np.arange(1, max(K, 2), dtype=np.int64)))
        raw_keys, raw_counts, raw_ctx_keys, raw_ctx_totals = [], [], [], []
        for n, (codes, counts) in enumerate(self._raw(), 1):
            raw_keys.append(offsets[n] + codes)
            raw_counts.append(counts)
            g = _group(codes, counts, V)
            raw_ctx_keys.append(offsets[n - 1] + g.contexts)
            raw_ctx_totals.append(g.totals)
        self._register("raw_keys", t(np.concatenate(raw_keys)))
        self._register("raw_counts", t(np.concatenate(raw_counts)))
        self._register("raw_ctx_keys", t(np.concatenate(raw_ctx_keys)))
        self._register("raw_ctx_totals", t(np.concatenate(raw_ctx_totals)))
        self.discounts = [lv.discounts for lv in levels]
        self.first_row = first_row.tolist()  # rows of contexts of length m: [m], [m + 1]
        self._register("row_bounds", t(first_row[1:K]))
        self.offsets_list = offsets.tolist()
        self.dense = len(ctx_keys) * V <= DENSE_ENTRIES
        if self.dense:
            rows = np.zeros((len(ctx_keys), V))
            rows[0] = gamma[0] / V
            for n in range(1, K + 1):
                lo, hi = first_row[n - 1], first_row[n]
                if lo == hi:
                    continue
                if n > 1:
                    rows[lo:hi] = gamma[lo:hi, None] * rows[parent[lo:hi]]
                r = np.repeat(np.arange(lo, hi), f_len[lo:hi])
                rows[r, f_token[f_start[lo] : f_start[lo] + len(r)]] += f_alpha[
                    f_start[lo] : f_start[lo] + len(r)
                ]
            with np.errstate(divide="ignore"):
                log_rows = np.log(rows).astype(np.float32)
        else:
            log_rows = np.zeros((0, V), dtype=np.float32)
        self._register("log_rows", t(log_rows))

    def _register(self, name: str, value: Tensor) -> None:
        device = self.codes[0].device
        self.register_buffer(name, value.to(device), persistent=False)

    # ---- lookups --------------------------------------------------------------------

    def _buf(self, name: str) -> Tensor:
        value = self._buffers[name]
        assert value is not None
        return value

    def _context_rows(self, windows: Tensor) -> Tensor:
        """Row of the longest seen suffix of each context window (..., K-1) -> (...).

        Windows hold token ids, most recent last, -1 where the text had none yet (always a
        prefix of the window). Lengths are tried longest first, each only for the windows
        not yet matched, so most windows cost one search in one length's keys.
        """
        K, V = self.config.order, self.config.vocab_size
        shape = windows.shape[:-1]
        flat = windows.reshape(-1, max(K - 1, 0))
        rows = torch.zeros(flat.shape[0], dtype=torch.long, device=windows.device)
        codes = []  # codes[m-1]: code of the last m tokens
        code = torch.zeros_like(rows)
        for m in range(1, K):
            code = code + flat[:, K - 1 - m].clamp_min(0) * V ** (m - 1)
            codes.append(code)
        todo = torch.arange(flat.shape[0], device=windows.device)
        ctx_keys = self._buf("ctx_keys")
        for m in range(K - 1, 0, -1):
            lo, hi = self.first_row[m], self.first_row[m + 1]
            if todo.numel() == 0:
                break
            if lo == hi:
                continue
            keys = codes[m - 1][todo] + int(self.offsets_list[m])
            level = ctx_keys[lo:hi]
            at = torch.searchsorted(level, keys).clamp_max(hi - lo - 1)
            found = (level[at] == keys) & (flat[todo, K - 1 - m] >= 0)
            rows[todo[found]] = lo + at[found]
            todo = todo[~found]
        return rows.view(shape)

    def _sparse_rows(self, rows: Tensor) -> Tensor:
        """log P(. | context row) for each row (N,) -> (N, V), from the sparse counts."""
        V = self.config.vocab_size
        N = rows.shape[0]
        probs = torch.zeros(N, V, dtype=torch.float64, device=rows.device)
        weight = torch.ones(N, dtype=torch.float64, device=rows.device)
        cur = rows.clone()
        f_start, f_len = self._buf("f_start"), self._buf("f_len")
        while True:
            live = (cur >= 0).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            ctx = cur[live]
            lens = f_len[ctx]
            owner = torch.repeat_interleave(live, lens)
            first = torch.repeat_interleave(f_start[ctx] - (lens.cumsum(0) - lens), lens)
            pos = first + torch.arange(owner.numel(), device=rows.device)
            probs.index_put_(
                (owner, self._buf("f_token")[pos]),
                weight[owner] * self._buf("f_alpha")[pos],
                accumulate=True,
            )
            weight[live] *= self._buf("gamma")[ctx]
            cur[live] = self._buf("parent")[ctx]
        probs += weight.unsqueeze(1) / V
        return probs.log().float()

    def log_probs(self, rows: Tensor) -> Tensor:
        """rows (...) -> log-probabilities (..., V), float32."""
        if self.dense:
            return self._buf("log_rows")[rows]
        flat = rows.reshape(-1)
        return self._sparse_rows(flat).view(*rows.shape, -1)

    # ---- LanguageModel --------------------------------------------------------------

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        K = self.config.order
        return (torch.full((1, batch_size, K - 1), -1, dtype=torch.long, device=device),)

    def forward(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        rows, state = self.forward_rows(X, state)
        return self.log_probs(rows), state

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        rows, state = self.step_rows(tokens, state)
        return self.log_probs(rows), state

    def forward_rows(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """`forward` up to the table rows (B, T) it reads: what a mixture's gate looks at."""
        K = self.config.order
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        history = torch.cat([state[0][0], X], dim=1)  # (B, K-1+T)
        if K == 1:
            rows = torch.zeros(X.shape, dtype=torch.long, device=X.device)
        else:
            windows = history.unfold(1, K - 1, 1)[:, 1:]  # (B, T, K-1): context after X[:, t]
            rows = self._context_rows(windows)
        return rows, (history[:, history.shape[1] - (K - 1) :].unsqueeze(0),)

    def step_rows(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """`step` up to the table rows (B,) it reads."""
        window = torch.cat([state[0][0], tokens.unsqueeze(1)], dim=1)[:, 1:]  # (B, K-1)
        return self._step_rows(window), (window.unsqueeze(0),)

    def context_order(self, rows: Tensor) -> Tensor:
        """The order of each row's estimate: 1 + the length of its context (1..order)."""
        return self._row_lengths(rows) + 1

    def _step_rows(self, window: Tensor) -> Tensor:
        """`_context_rows` for a few windows (B, K-1): every length in one search, fewer ops."""
        K = self.config.order
        if K == 1:
            return torch.zeros(window.shape[0], dtype=torch.long, device=window.device)
        codes = window.clamp_min(0) @ self._buf("suffix_powers")  # (B, K-1): lengths 1..K-1
        keys = codes + self._buf("offsets")[1:K]
        ctx_keys = self._buf("ctx_keys")
        at = torch.searchsorted(ctx_keys, keys).clamp_max(len(ctx_keys) - 1)
        found = (ctx_keys[at] == keys) & (window.flip(1) >= 0)
        longest = (found * self._buf("lengths")).argmax(dim=1, keepdim=True)  # first max: longest
        return torch.where(found.gather(1, longest), at.gather(1, longest), 0).squeeze(1)

    # ---- explanations ---------------------------------------------------------------

    def _probability(self, rows: Tensor, tokens: Tensor) -> Tensor:
        """P(token | context row) in float64 from the sparse tables: rows, tokens (N,)."""
        V = self.config.vocab_size
        N = rows.shape[0]
        total = torch.zeros(N, dtype=torch.float64, device=rows.device)
        weight = torch.ones(N, dtype=torch.float64, device=rows.device)
        cur = rows.clone()
        ctx_keys, ng_keys = self._buf("ctx_keys"), self._buf("ng_keys")
        offsets = self._buf("offsets")
        length = self._row_lengths(cur)
        while True:
            live = (cur >= 0).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            ctx = cur[live]
            m = length[live]
            keys = offsets[m + 1] + (ctx_keys[ctx] - offsets[m]) * V + tokens[live]
            at = torch.searchsorted(ng_keys, keys).clamp_max(len(ng_keys) - 1)
            hit = ng_keys[at] == keys
            total[live] += torch.where(hit, weight[live] * self._buf("f_alpha")[at], 0.0)
            weight[live] *= self._buf("gamma")[ctx]
            cur[live] = self._buf("parent")[ctx]
            length[live] = self._row_lengths(cur[live])
        return total + weight / V

    def _row_lengths(self, rows: Tensor) -> Tensor:
        """Context length of each row (rows of -1, past the root: 0)."""
        return torch.bucketize(rows.clamp_min(0), self._buf("row_bounds"), right=True)

    def breakdown(self, ids: Sequence[int], first_scored: int = 1) -> Breakdown:
        """The counts and probabilities behind each of ids[first_scored:] (see Breakdown)."""
        cfg = self.config
        V, K = cfg.vocab_size, cfg.order
        device = self.codes[0].device
        seq = torch.as_tensor(list(ids), dtype=torch.long, device=device)
        targets = torch.arange(first_scored, len(seq), device=device)
        N = targets.numel()
        pad = torch.full((K - 1,), -1, dtype=torch.long, device=device)
        history = torch.cat([pad, seq])
        # windows[i]: the K-1 tokens before target i (padded), most recent last
        idx = targets.unsqueeze(1) + torch.arange(K - 1, device=device)  # in history coordinates
        windows = history[idx] if K > 1 else torch.zeros(N, 0, dtype=torch.long, device=device)
        tokens = seq[targets]
        rows = (
            self._context_rows(windows)
            if K > 1
            else torch.zeros(N, dtype=torch.long, device=device)
        )
        prob = self._probability(rows, tokens)
        context_order = self._row_lengths(rows) + 1
        # Per order n: the context is the last n-1 ids of the window.
        counts = torch.full((N, K), -1, dtype=torch.long, device=device)
        ctx_counts, used, used_ctx = counts.clone(), counts.clone(), counts.clone()
        offsets = self._buf("offsets")
        rev = windows.flip(-1)
        code = torch.zeros(N, dtype=torch.long, device=device)
        valid = torch.ones(N, dtype=torch.bool, device=device)
        for n in range(1, K + 1):
            if n > 1:
                valid &= rev[:, n - 2] >= 0
                code = code + rev[:, n - 2].clamp_min(0) * V ** (n - 2)
            ctx_key = offsets[n - 1] + code
            ng_key = offsets[n] + code * V + tokens
            for table, (keys_name, values_name), key in (
                (counts, ("raw_keys", "raw_counts"), ng_key),
                (ctx_counts, ("raw_ctx_keys", "raw_ctx_totals"), ctx_key),
                (used, ("ng_keys", "ng_counts"), ng_key),
                (used_ctx, ("ctx_keys", "ctx_totals"), ctx_key),
            ):
                table[:, n - 1] = torch.where(valid, self._lookup(keys_name, values_name, key), -1)
        orders = torch.arange(1, K + 1, device=device)
        backoff = torch.where(used > 0, orders, 0).max(dim=1).values
        with np.errstate(divide="ignore"):
            logprob = np.log(prob.cpu().numpy())
        return Breakdown(
            tokens=tokens.tolist(),
            logprob=logprob.tolist(),
            context_order=context_order.tolist(),
            backoff_order=backoff.tolist(),
            count=counts.tolist(),
            context_count=ctx_counts.tolist(),
            used_count=used.tolist(),
            used_context_count=used_ctx.tolist(),
        )

    def _lookup(self, keys_name: str, values_name: str, keys: Tensor) -> Tensor:
        table, values = self._buf(keys_name), self._buf(values_name)
        at = torch.searchsorted(table, keys).clamp_max(len(table) - 1)
        return torch.where(table[at] == keys, values[at], 0)

    def entries(self, n: int) -> tuple[Ints, Floats, Floats | None]:
        """Every n-gram seen in training (n = 1: every token) with its probability
        P(w | h) and, below the highest order, its backoff weight gamma(h w) (1 when h w
        is no context): the model in backoff form, as ARPA writes it.

        Returns codes (M,), probabilities (M,) and weights (M,) or None at the top order.
        """
        V, K = self.config.vocab_size, self.config.order
        device = self.codes[0].device
        codes = torch.arange(V, device=device) if n == 1 else self.codes[n - 1].detach()
        # The context's ids, padded on the left to a window of K-1 (-1: no token).
        digits = [(codes // V ** (n - 1 - j)) % V for j in range(n - 1)]
        pad = [torch.full_like(codes, -1)] * (K - n)
        windows = torch.stack([*pad, *digits], dim=1) if K > 1 else codes.new_zeros(len(codes), 0)
        rows = self._context_rows(windows)
        probs = self._probability(rows, codes % V)
        weights = None
        if n < K:
            keys = self._buf("offsets")[n] + codes
            ctx_keys = self._buf("ctx_keys")
            at = torch.searchsorted(ctx_keys, keys).clamp_max(len(ctx_keys) - 1)
            seen = ctx_keys[at] == keys
            weights = torch.where(seen, self._buf("gamma")[at], 1.0).cpu().numpy()
        return codes.cpu().numpy(), probs.cpu().numpy(), weights

    def variant(self, order: int | None = None, smoothing: Smoothing | None = None) -> NgramLM:
        """The same counts with a lower order or another smoothing (None: this model's).

        A model holds the counts of every order up to its own, so any smoothing at any
        lower order is the same counts read another way. Built on first use and kept
        (the last `MAX_VARIANTS`); raises ValueError for an order above the model's.
        """
        order = order or self.config.order
        smoothing = smoothing or self.config.smoothing
        if order > self.config.order:
            raise ValueError(
                f"order must be at most {self.config.order}, the order of the counts this "
                f"model holds, got {order}"
            )
        if (order, smoothing) == (self.config.order, self.config.smoothing):
            return self
        key = (order, smoothing)
        if key not in self.variants:
            config = replace(self.config, order=order, smoothing=smoothing, sizes=())
            model = NgramLM(config, self._raw()[:order]).to(self.codes[0].device).eval()
            while len(self.variants) >= MAX_VARIANTS:
                self.variants.pop(next(iter(self.variants)))
            self.variants[key] = model
        return self.variants[key]
