"""Step-wise decoding (d2l §9.5.5 `predict`, grown up): greedy, temperature, top-k, top-p.

`DecodeBatch` holds every active sequence of one model. Each step samples all of them with
one vectorised call and advances them with one forward pass; sequences join (their prefix
encoded in one pass) and leave between steps. Randomness is counter-based: the uniform draw
for a sequence's i-th token is a hash of (seed, i), so a seeded request gives the same text
alone or batched beside any others, and no per-sequence generator object is stepped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from models.rnn import LanguageModel, State
from models.score import logprobs_and_top
from models.text import Detokenizer

# Why a completion ended; "error" only from a server whose decoding step failed.
FinishReason = Literal["length", "stop", "error"]

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(z: Tensor, s: int) -> Tensor:
    """Logical right shift on int64 bits."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def uniform(seeds: Tensor, counters: Tensor) -> Tensor:
    """splitmix64 of (seed, counter) -> float64 in [0, 1); same inputs, same output anywhere."""
    z = seeds * _GOLDEN + counters * _MIX2 + _GOLDEN  # int64 arithmetic wraps
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    z = z ^ _shr(z, 31)
    return _shr(z, 11).double() * (1.0 / (1 << 53))


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its next token. temperature 0 is greedy (argmax)."""

    temperature: float = 1.0
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 100
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # report each token's logprob and this many alternatives

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0 or self.temperature != self.temperature:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError("logprobs must be >= 0")


def sample_next(
    logits: Tensor,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    seeds: Tensor,
    counters: Tensor,
) -> Tensor:
    """Pick one token per row. logits (B, V); the other arguments (B,) -> tokens (B,)."""
    V = logits.shape[1]
    greedy = logits.argmax(dim=1)  # (B,)
    scaled = logits.double() / temperature.clamp_min(1e-6).unsqueeze(1)  # (B, V)
    sorted_logits, order = scaled.sort(dim=1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=1)
    rank = torch.arange(V, device=logits.device).unsqueeze(0)  # (1, V)
    drop = (top_k.unsqueeze(1) > 0) & (rank >= top_k.unsqueeze(1))
    # Nucleus: keep the shortest head whose mass reaches top_p (the first token always stays).
    drop |= (probs.cumsum(dim=1) - probs) >= top_p.unsqueeze(1)
    cdf = probs.masked_fill(drop, 0.0).cumsum(dim=1)  # (B, V)
    u = uniform(seeds, counters) * cdf[:, -1]  # (B,)
    pick = torch.searchsorted(cdf, u.unsqueeze(1), right=True).clamp_max(V - 1)  # (B, 1)
    sampled = order.gather(1, pick).squeeze(1)
    return torch.where(temperature == 0, greedy, sampled)


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability and the likeliest tokens at its place.

    Log-probabilities are the model's own (log-softmax of its logits, before temperature,
    top-k/top-p and the ban on `<unk>`), as `score_ids` reports them for a given text.
    """

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (id, logprob), best first


@dataclass(frozen=True)
class Step:
    """One step's tokens (B,) and, by row, the log-probabilities of the rows that asked."""

    tokens: Tensor
    logprobs: dict[int, TokenLogprob]


class DecodeBatch:
    """The active sequences of one model, advanced together one token per step."""

    COLUMNS = ("logits", "temperature", "top_k", "top_p", "seeds", "counters", "logprobs")

    def __init__(self, model: LanguageModel, banned_ids: Sequence[int] = (0,)) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.banned = torch.tensor(list(banned_ids), dtype=torch.long, device=self.device)
        self.state: State | None = None
        self.logits = torch.empty(0, model.config.vocab_size, device=self.device)  # (B, V)
        self.temperature = torch.empty(0, dtype=torch.float64, device=self.device)
        self.top_k = torch.empty(0, dtype=torch.long, device=self.device)
        self.top_p = torch.empty(0, dtype=torch.float64, device=self.device)
        self.seeds = torch.empty(0, dtype=torch.long, device=self.device)
        self.counters = torch.empty(0, dtype=torch.long, device=self.device)
        self.logprobs = torch.empty(0, dtype=torch.long, device=self.device)  # -1: not asked
        self.all_greedy = True  # then sampling is a plain argmax
        self.any_logprobs = False  # then no row's logits are kept for log-probabilities

    def __len__(self) -> int:
        return self.logits.shape[0]

    def add(self, prefix_ids: Sequence[int], params: Sequence[SamplingParams]) -> None:
        """Encode one prefix in a single forward pass and append a row per `params` entry."""
        self.add_all([prefix_ids], [params])

    @torch.inference_mode()
    def add_all(
        self, prefixes: Sequence[Sequence[int]], params: Sequence[Sequence[SamplingParams]]
    ) -> None:
        """Append the rows of several prefixes (one row per params entry), in order.

        Prefixes of equal length are encoded together in one forward pass: requests that
        join at the same step pay one recurrent-layer call per distinct length, not one each.
        """
        if any(not ids for ids in prefixes):
            raise ValueError("prefix must have at least one token")
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(prefixes):
            by_length.setdefault(len(ids), []).append(i)
        encoded: list[tuple[Tensor, State]] = [None] * len(prefixes)  # type: ignore[list-item]
        for members in by_length.values():
            X = torch.tensor([list(prefixes[i]) for i in members], device=self.device)  # (G, T)
            logits, state = self.model(X)
            for j, i in enumerate(members):
                encoded[i] = (logits[j, -1].float(), tuple(s[:, j : j + 1] for s in state))
        rows = [len(p) for p in params]
        last = [logit.expand(n, -1) for (logit, _), n in zip(encoded, rows, strict=True)]
        states = [
            tuple(s.expand(-1, n, -1) for s in state)
            for (_, state), n in zip(encoded, rows, strict=True)
        ]
        if self.state is not None and len(self):
            states.insert(0, self.state)
        self.state = tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
        self.logits = torch.cat([self.logits, *last])
        flat = [p for group in params for p in group]

        def column(values: list[float] | list[int], dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device)

        self.temperature = torch.cat(
            [self.temperature, column([p.temperature for p in flat], torch.float64)]
        )
        self.top_k = torch.cat([self.top_k, column([p.top_k for p in flat], torch.long)])
        self.top_p = torch.cat([self.top_p, column([p.top_p for p in flat], torch.float64)])
        self.seeds = torch.cat([self.seeds, column([p.seed for p in flat], torch.long)])
        self.counters = torch.cat(
            [self.counters, torch.zeros(len(flat), dtype=torch.long, device=self.device)]
        )
        asked = [-1 if p.logprobs is None else p.logprobs for p in flat]
        self.logprobs = torch.cat([self.logprobs, column(asked, torch.long)])
        self.all_greedy = self.all_greedy and all(p.temperature == 0 for p in flat)
        self.any_logprobs = self.any_logprobs or any(p.logprobs is not None for p in flat)

    def next_tokens(self) -> Tensor:
        """Sample every row's next token from its current logits -> (B,)."""
        return self.sample().tokens

    @torch.inference_mode()
    def sample(self) -> Step:
        """Sample every row's next token; rows whose params ask also get its logprobs.

        The log-probabilities come from the same logits, in one log-softmax and top-k over
        just the asking rows (k = the largest any of them asked for, each row's list cut
        to its own k afterwards), so rows that do not ask cost nothing. Those rows' logits
        are copied before `<unk>` is banned in place: logprobs are the model's own.
        """
        if self.any_logprobs:
            asking = (self.logprobs >= 0).nonzero().squeeze(1)  # (R,)
            raw = self.logits.index_select(0, asking)  # (R, V), a copy
        self.logits.index_fill_(1, self.banned, float("-inf"))
        self.counters += 1
        if self.all_greedy:
            tokens = self.logits.argmax(dim=1)
        else:
            tokens = sample_next(
                self.logits, self.temperature, self.top_k, self.top_p, self.seeds, self.counters - 1
            )
        if not self.any_logprobs:
            return Step(tokens, {})
        ks = self.logprobs.index_select(0, asking)  # (R,)
        picked = tokens.index_select(0, asking)  # (R,)
        chosen, top, ids = logprobs_and_top(raw, picked, int(ks.max()))  # (R,), (R, K), (R, K)
        columns = (asking, picked, ks, chosen, ids, top)
        out = {}
        for row, token, k, logprob, row_ids, row_top in zip(
            *(c.tolist() for c in columns), strict=True
        ):
            out[row] = TokenLogprob(
                token, logprob, tuple(zip(row_ids[:k], row_top[:k], strict=True))
            )
        return Step(tokens, out)

    @torch.inference_mode()
    def feed(self, tokens: Tensor) -> None:
        """Advance every row by its token (B,), producing the logits for the next step."""
        assert self.state is not None
        logits, self.state = self.model.step(tokens, self.state)  # (B, V)
        self.logits = logits.float()

    def keep(self, rows: Tensor) -> None:
        """Drop every row not listed in `rows` (a LongTensor of row indices, in order)."""
        if self.state is not None:
            self.state = tuple(s.index_select(1, rows) for s in self.state)
        for name in self.COLUMNS:
            setattr(self, name, getattr(self, name).index_select(0, rows))
        if not self.all_greedy:
            self.all_greedy = bool((self.temperature == 0).all())
        if self.any_logprobs:
            self.any_logprobs = bool((self.logprobs >= 0).any())


class StopTracker:
    """One completion's text: stop strings, length limit, and what is safe to emit yet.

    Text that could still become a stop string is held back, so the streamed pieces always
    join to exactly the final text (which excludes the stop string, as OpenAI's API does).
    """

    def __init__(self, stop: Sequence[str], max_new_tokens: int, detokenizer: Detokenizer) -> None:
        self.stop = tuple(stop)
        self.max_new_tokens = max_new_tokens
        self.detokenizer = detokenizer
        self.text = ""
        self.tokens = 0
        self.emitted = 0
        self.finish_reason: FinishReason | None = None

    def push(self, token: int) -> str:
        """Add a token; return the newly emittable text (possibly empty).

        The token's text comes from the sequence's own detokenizer (a byte completes a
        character only with the rest of its bytes); the last token flushes what is left.
        """
        if self.finished:
            return ""
        piece = self.detokenizer.push(token)
        if self.tokens + 1 >= self.max_new_tokens:
            piece += self.detokenizer.flush()
        if not self.stop:  # the common case, kept cheap: every piece is final at once
            self.text += piece
            self.tokens += 1
            if self.tokens >= self.max_new_tokens:
                self.finish_reason = "length"
            self.emitted = len(self.text)
            return piece
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += piece
        self.tokens += 1
        hits = [i for s in self.stop if (i := self.text.find(s, start)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.finish_reason = "stop"
        elif self.tokens >= self.max_new_tokens:
            self.finish_reason = "length"
        safe = len(self.text) if self.finish_reason else len(self.text) - self._held()
        out = self.text[self.emitted : safe]
        self.emitted = max(self.emitted, safe)
        return out

    def _held(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        for k in range(min(len(self.text), max((len(s) - 1 for s in self.stop), default=0)), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stop):
                return k
        return 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


def generate(
    model: LanguageModel,
    prefix_ids: Sequence[int],
    params: Sequence[SamplingParams],
    detokenizer: Callable[[], Detokenizer],
    banned_ids: Sequence[int] = (0,),
) -> list[StopTracker]:
    """Decode one completion per `params` entry from a shared prefix, all in one batch.

    `detokenizer` makes each sequence's incremental decoder (`Tokenizer.detokenizer`).
    """
    trackers = [StopTracker(p.stop, p.max_new_tokens, detokenizer()) for p in params]
    for t in trackers:
        if t.max_new_tokens == 0:
            t.finish_reason = "length"
    batch = DecodeBatch(model, banned_ids)
    live = [i for i, t in enumerate(trackers) if not t.finished]
    if live:
        batch.add(prefix_ids, [params[i] for i in live])
    while live:
        tokens = batch.next_tokens()
        still = []
        for row, (i, token) in enumerate(zip(live, tokens.tolist(), strict=True)):
            trackers[i].push(token)
            if not trackers[i].finished:
                still.append(row)
        if len(still) < len(live):
            rows = torch.tensor(still, dtype=torch.long, device=batch.device)
            batch.keep(rows)
            tokens = tokens.index_select(0, rows)
            live = [live[r] for r in still]
        if live:
            batch.feed(tokens)
    return trackers
