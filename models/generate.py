"""Step-wise decoding (d2l §9.5.5 `predict`, grown up): sampling controls and beam search.

`DecodeBatch` holds every active sequence of one model. Each step transforms all rows'
logits with one vectorised pass (each row with its own parameters), picks every row's
next token, and advances them with one forward pass; sequences join (their prefix encoded
in one pass) and leave between steps. Randomness is counter-based: the uniform draw for a
sequence's i-th token is a hash of (seed, i), so a seeded request gives the same text
alone or batched beside any others, and no per-sequence generator object is stepped.

The order of the transforms, for each row (a control left at its neutral value is skipped
for the whole batch when no row uses it):

1. `logit_bias`: each listed token's bias is added to its logit; a bias of -100 bans the
   token outright (probability 0).
2. `repetition_penalty` (TGI and transformers' multiplicative form): the logit of every
   token present in the penalty window is divided by the penalty when positive,
   multiplied by it when negative.
3. `frequency_penalty` and `presence_penalty` (OpenAI's additive form): each token's logit
   loses `count * frequency_penalty + (count > 0) * presence_penalty`, where count is its
   number of occurrences in the penalty window.
4. `no_repeat_ngram_size` n: a token that would complete an n-gram already present in the
   penalty window is banned. `<unk>` is banned always.
5. Temperature 0 is greedy: the argmax of the logits so far. Otherwise the logits are
   divided by the temperature and, in this order, each filter keeps part of what the
   previous ones kept (renormalised): `top_k` (the k likeliest), `top_p` (the shortest
   head with this much mass), `min_p` (tokens with at least min_p times the top token's
   probability), `typical_p` (the tokens whose surprise is closest to the entropy, up to
   this much mass). Then one counter-based draw from what is left.

The penalty window is the last `penalty_window` tokens (0: all) of the generated text, or
of prompt and generated text together with `penalize_prompt`. Penalties count token ids.
If the bans leave a row nothing, that step ignores them for that row rather than fail.

Beam search (`num_beams` > 1) is deterministic: each step, every beam's candidates are
scored by the beam's total log-probability plus the candidate's log-probability under the
transformed distribution (steps 1-4, log-softmax; the model's own when no bias or penalty
is set), and the best `num_beams` continue. A beam that hits a stop string or the length
limit becomes a hypothesis, scored total / generated_tokens ** length_penalty.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Generic, Literal, TypeVar

import torch
from torch import Tensor

from models.rnn import LanguageModel, State
from models.score import logprobs_and_top
from models.text import Detokenizer

# Why a completion ended; "error" only from a server whose decoding step failed.
FinishReason = Literal["length", "stop", "error"]

BAN = -100.0  # a logit_bias of -100 bans its token outright
_MASK64 = (1 << 64) - 1
_FAR = 1 << 62  # a history column no row reaches: rows that keep no history start there


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
    """How one sequence picks its next token (the module docstring gives the order).

    Neutral values switch a control off: temperature 0 is greedy (argmax), top_k 0,
    top_p 1, min_p 0, typical_p 1, repetition_penalty 1, presence/frequency_penalty 0,
    no_repeat_ngram_size 0, penalty_window 0 (the whole text), num_beams 1.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    penalty_window: int = 0
    penalize_prompt: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias in [-100, 100])
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    seed: int = 0
    max_new_tokens: int = 100
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # report each token's logprob and this many alternatives

    def __post_init__(self) -> None:
        checks = (
            (self.temperature >= 0.0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (0.0 <= self.min_p <= 1.0, "min_p must be in [0, 1]"),
            (0.0 < self.typical_p <= 1.0, "typical_p must be in (0, 1]"),
            (0.0 < self.repetition_penalty < math.inf, "repetition_penalty must be > 0"),
            (math.isfinite(self.presence_penalty), "presence_penalty must be finite"),
            (math.isfinite(self.frequency_penalty), "frequency_penalty must be finite"),
            (self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0"),
            (self.penalty_window >= 0, "penalty_window must be >= 0"),
            (all(i >= 0 and BAN <= b <= -BAN for i, b in self.logit_bias), "bad logit_bias"),
            (len({i for i, _ in self.logit_bias}) == len(self.logit_bias), "logit_bias ids twice"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.num_beams == 1 or self.temperature == 0, "beam search needs temperature 0"),
            (math.isfinite(self.length_penalty), "length_penalty must be finite"),
            (self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
            (all(self.stop), "stop strings must be non-empty"),
            (self.logprobs is None or self.logprobs >= 0, "logprobs must be >= 0"),
        )
        for ok, message in checks:
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(message)

    @property
    def penalized(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    @property
    def keeps_history(self) -> bool:
        """Whether this row's transforms read the tokens before it."""
        return self.penalized or self.no_repeat_ngram_size > 0


# Per-row parameter columns: name -> (dtype, value from the params).
_PARAM_COLUMNS: dict[str, tuple[torch.dtype, Callable[[SamplingParams], float]]] = {
    "temperature": (torch.float64, attrgetter("temperature")),
    "top_k": (torch.long, attrgetter("top_k")),
    "top_p": (torch.float64, attrgetter("top_p")),
    "min_p": (torch.float64, attrgetter("min_p")),
    "typical_p": (torch.float64, attrgetter("typical_p")),
    "repetition_penalty": (torch.float32, attrgetter("repetition_penalty")),
    "presence_penalty": (torch.float32, attrgetter("presence_penalty")),
    "frequency_penalty": (torch.float32, attrgetter("frequency_penalty")),
    "ngram": (torch.long, attrgetter("no_repeat_ngram_size")),
    "window": (torch.long, attrgetter("penalty_window")),
    "seeds": (torch.long, attrgetter("seed")),
    "logprobs": (torch.long, lambda p: -1 if p.logprobs is None else p.logprobs),
}


def sample_next(
    logits: Tensor,
    temperature: Tensor,
    top_k: Tensor | None,
    top_p: Tensor | None,
    seeds: Tensor,
    counters: Tensor,
    *,
    min_p: Tensor | None = None,
    typical_p: Tensor | None = None,
) -> Tensor:
    """Pick one token per row. logits (B, V); the other arguments (B,) -> tokens (B,).

    Temperature, then top_k, top_p, min_p and typical_p, each on what the previous kept;
    temperature 0 rows take the argmax. A filter no row uses may be None (skipped). Every
    row needs at least one finite logit.
    """
    V = logits.shape[1]
    scaled = logits.double() / temperature.clamp_min(1e-6).unsqueeze(1)  # (B, V)
    sorted_logits, order = scaled.sort(dim=1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=1)
    keep: Tensor | None = None
    if top_k is not None:
        k = top_k.unsqueeze(1)
        keep = (k == 0) | (torch.arange(V, device=logits.device).unsqueeze(0) < k)
    if top_p is not None:
        # Nucleus: the shortest head reaching top_p of the mass top_k left (the first token
        # always stays). Without top_k that mass is exactly 1.
        cum = probs.cumsum(dim=1)
        limit = top_p
        if top_k is not None:
            head = cum.gather(1, (top_k - 1).clamp(0, V - 1).unsqueeze(1)).squeeze(1)
            limit = top_p * torch.where(top_k > 0, head, torch.ones_like(head))
        nucleus = (cum - probs) < limit.unsqueeze(1)
        keep = nucleus if keep is None else keep & nucleus
    if min_p is not None:
        above = probs >= min_p.unsqueeze(1) * probs[:, :1]
        keep = above if keep is None else keep & above
    if typical_p is not None:
        typical = _typical(probs, keep, typical_p)
        keep = typical if keep is None else keep & typical
    cdf = (probs if keep is None else probs.masked_fill(~keep, 0.0)).cumsum(dim=1)  # (B, V)
    u = uniform(seeds, counters) * cdf[:, -1]  # (B,)
    pick = torch.searchsorted(cdf, u.unsqueeze(1), right=True).clamp_max(V - 1)  # (B, 1)
    sampled = order.gather(1, pick).squeeze(1)
    return torch.where(temperature == 0, logits.argmax(dim=1), sampled)


def _typical(probs: Tensor, keep: Tensor | None, mass: Tensor) -> Tensor:
    """Locally typical sampling's keep mask over the kept part of `probs` (both (B, V)).

    Tokens sorted by how far their surprise -log q lies from the entropy of q (the kept
    distribution renormalised); the closest ones are kept until they hold `mass` of q.
    """
    q = probs if keep is None else probs.masked_fill(~keep, 0.0)
    q = q / q.sum(dim=1, keepdim=True)
    log_q = q.log()  # -inf where q is 0
    entropy = -(q * log_q).nan_to_num(0.0).sum(dim=1, keepdim=True)  # (B, 1)
    distance = (-log_q - entropy).abs()  # +inf where q is 0: sorted last
    by_distance = distance.argsort(dim=1, stable=True)
    q_sorted = q.gather(1, by_distance)
    kept_sorted = (q_sorted.cumsum(dim=1) - q_sorted) < mass.unsqueeze(1)
    typical = torch.zeros_like(kept_sorted).scatter_(1, by_distance, kept_sorted)
    return typical | (mass >= 1.0).unsqueeze(1)


def apply_penalties(
    logits: Tensor, counts: Tensor, repetition: Tensor, presence: Tensor, frequency: Tensor
) -> Tensor:
    """TGI's repetition penalty, then OpenAI's frequency and presence penalties.

    logits and counts (B, V) (counts: occurrences in each row's window), penalties (B,).
    Neutral values (1, 0, 0) leave a row's logits bit for bit unchanged; -inf stays -inf.
    """
    seen = counts > 0
    r = repetition.unsqueeze(1)
    scaled = torch.where(logits > 0, logits / r, logits * r)
    out = torch.where(seen, scaled, logits)
    return out - frequency.unsqueeze(1) * counts - presence.unsqueeze(1) * seen


def ngram_bans(history: Tensor, low: Tensor, n: Tensor, vocab_size: int) -> Tensor:
    """Tokens that would repeat an n-gram: history (R, T) of token ids, the next token's
    place being column T; n-grams counted only when they lie within [low, T); n (R,) with
    0 meaning no ban -> (R, V) bool.

    The next token x is banned when the last n-1 tokens followed by x already occur as an
    n-gram in the window: every earlier place p whose n-1 predecessors equal those last
    n-1 tokens bans history[p]. One comparison per offset d < max(n), over the batch.
    """
    R, T = history.shape
    p = torch.arange(T, device=history.device).unsqueeze(0)  # (1, T)
    match = (n.unsqueeze(1) > 0) & (p - (n.unsqueeze(1) - 1) >= low.unsqueeze(1))  # (R, T)
    for d in range(1, min(int(n.max()), T)):
        same = torch.zeros_like(match)
        same[:, d:] = history[:, : T - d] == history[:, T - d : T - d + 1]
        match &= same | (n <= d).unsqueeze(1)
    banned = torch.zeros(R, vocab_size + 1, dtype=torch.bool, device=history.device)
    banned.scatter_(1, torch.where(match, history, vocab_size), True)
    return banned[:, :vocab_size]


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability and the likeliest tokens at its place.

    Log-probabilities are the model's own (log-softmax of its logits, before any control:
    bias, penalties, temperature, filters, the ban on `<unk>`), as `score_ids` reports
    them for a given text.
    """

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (id, logprob), best first


@dataclass(frozen=True)
class BeamCandidates:
    """One beam group's best continuations this step, best first (at most 2 x beams).

    score: the beam's total log-probability with the candidate's; parent: the beam (its
    position in the group); raw/top: the model's own log-probability of the candidate
    and its parent's likeliest tokens, when the group asked for logprobs.
    """

    scores: list[float]
    parents: list[int]
    tokens: list[int]
    raw: list[float] | None = None
    top: list[tuple[tuple[int, float], ...]] | None = None


@dataclass(frozen=True)
class Step:
    """One step's tokens (B,) (beam rows' entries unused), by row the log-probabilities of
    the sampled rows that asked, and by first row each beam group's candidates."""

    tokens: Tensor
    logprobs: dict[int, TokenLogprob]
    beams: dict[int, BeamCandidates] = field(default_factory=dict)


Encoded = tuple[int, State]  # (tokens of a prefix already encoded, the state after them)


def join_states(states: Sequence[State | None]) -> State | None:
    """Several rows' states as one (batch on dim 1), or None if the rows have none."""
    if not states or states[0] is None:
        return None
    return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))


class DecodeBatch:
    """The active sequences of one model, advanced together one token per step.

    Every per-row tensor lives in `columns` (row on dim 0), so joining, leaving and
    reordering (beam search) are one `cat` / `index_select` per tensor. Rows whose params
    read the past (penalties, n-gram bans) keep a token history: one (B, C) tensor whose
    column `end` is the next token of every row (all rows advance together), each row's
    text right-aligned before it, and per-row token counts over the penalty window.
    """

    def __init__(self, model: LanguageModel, banned_ids: Sequence[int] = (0,)) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = model.config.vocab_size
        self.banned = torch.tensor(list(banned_ids), dtype=torch.long, device=self.device)
        self.state: State | None = None
        self.logits = torch.empty(0, self.vocab_size, device=self.device)  # (B, V)
        self.params: list[SamplingParams] = []
        self.groups: list[int] = []  # per row: its beam group id, -1 when sampled
        self._next_group = 0
        self.columns: dict[str, Tensor] = {
            name: torch.empty(0, dtype=dtype, device=self.device)
            for name, (dtype, _) in _PARAM_COLUMNS.items()
        }
        self.columns["counters"] = torch.empty(0, dtype=torch.long, device=self.device)
        self.columns["beam_score"] = torch.empty(0, dtype=torch.float64, device=self.device)
        self.end = 0  # the history's next column
        self._refresh()

    def __len__(self) -> int:
        return self.logits.shape[0]

    def _refresh(self) -> None:
        """Batch-wide switches and row sets, recomputed only when rows change."""
        ps = self.params
        self.all_greedy = all(p.temperature == 0 for p in ps)  # then sampling is an argmax
        self.any_top_k = any(p.top_k > 0 for p in ps)
        self.any_top_p = any(p.top_p < 1 for p in ps)
        self.any_min_p = any(p.min_p > 0 for p in ps)
        self.any_typical = any(p.typical_p < 1 for p in ps)
        self.any_penalty = any(p.penalized for p in ps)
        self.any_ngram = any(p.no_repeat_ngram_size > 0 for p in ps)
        self.any_bias = "bias" in self.columns
        self.any_history = "history" in self.columns
        asking = [r for r, p in enumerate(ps) if p.logprobs is not None and self.groups[r] < 0]
        self.asking = torch.tensor(asking, dtype=torch.long, device=self.device)
        # Beam groups: runs of rows with one group id -> (first row, width); and by width,
        # the groups' first rows and all their rows (G * width,) for one top-k per width.
        self.blocks: list[tuple[int, int]] = []
        r = 0
        while r < len(ps):
            width = ps[r].num_beams if self.groups[r] >= 0 else 1
            if self.groups[r] >= 0:
                self.blocks.append((r, width))
            r += width
        self.beam_rows: dict[int, tuple[list[int], Tensor]] = {}
        for k in sorted({k for _, k in self.blocks}):
            firsts = [r for r, w in self.blocks if w == k]
            rows = [first + j for first in firsts for j in range(k)]
            self.beam_rows[k] = (firsts, torch.tensor(rows, dtype=torch.long, device=self.device))

    def add(self, prefix_ids: Sequence[int], params: Sequence[SamplingParams]) -> None:
        """Encode one prefix in a single forward pass and append a row per `params` entry."""
        self.add_all([prefix_ids], [params])

    @torch.inference_mode()
    def add_all(
        self,
        prefixes: Sequence[Sequence[int]],
        params: Sequence[Sequence[SamplingParams]],
        encoded: Sequence[Encoded | None] | None = None,
    ) -> None:
        """Append the rows of several prefixes (one row per params entry), in order.

        A prefix whose params ask for beam search (num_beams k > 1) must list k entries:
        they become one beam group. `encoded[i]`, when given, is (n, state): the first n
        tokens of prefixes[i] are already in `state` (a long prefix encoded a chunk at a
        time), and only the rest is encoded here; the whole prefix still counts as the
        sequence's history. What is left to encode of equal length (and alike in having a
        state) is encoded together in one forward pass: requests that join at the same
        step pay one recurrent-layer call per distinct length, not one each.
        """
        if any(not ids for ids in prefixes):
            raise ValueError("prefix must have at least one token")
        for group in params:
            if group and group[0].num_beams > 1 and len(group) != group[0].num_beams:
                raise ValueError("a beam group lists num_beams params")
            for p in group:
                if any(i >= self.vocab_size for i, _ in p.logit_bias):
                    raise ValueError(f"logit_bias token id out of range (vocab {self.vocab_size})")
        done = list(encoded) if encoded is not None else [None] * len(prefixes)
        rest = [
            list(ids[e[0] :]) if e else list(ids) for ids, e in zip(prefixes, done, strict=True)
        ]
        if any(not ids for ids in rest):
            raise ValueError("at least one token of each prefix must be left to encode")
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, ids in enumerate(rest):
            groups.setdefault((len(ids), done[i] is not None), []).append(i)
        out: list[tuple[Tensor, State]] = [None] * len(prefixes)  # type: ignore[list-item]
        for members in groups.values():
            X = torch.tensor([rest[i] for i in members], device=self.device)  # (G, T)
            starts = [e[1] if (e := done[i]) else None for i in members]
            logits, state = self.model(X, join_states(starts))
            for j, i in enumerate(members):
                out[i] = (logits[j, -1].float(), tuple(s[:, j : j + 1] for s in state))
        rows = [len(p) for p in params]
        last = [logit.expand(n, -1) for (logit, _), n in zip(out, rows, strict=True)]
        states = [
            tuple(s.expand(-1, n, -1) for s in state)
            for (_, state), n in zip(out, rows, strict=True)
        ]
        if self.state is not None and len(self):
            states.insert(0, self.state)
        self.state = tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
        self.logits = torch.cat([self.logits, *last])
        flat = [p for group in params for p in group]
        prefix_of = [list(ids) for ids, group in zip(prefixes, params, strict=True) for _ in group]
        new: dict[str, Tensor] = {
            name: torch.tensor([value(p) for p in flat], dtype=dtype, device=self.device)
            for name, (dtype, value) in _PARAM_COLUMNS.items()
        }
        new["counters"] = torch.zeros(len(flat), dtype=torch.long, device=self.device)
        scores: list[float] = []
        for group in params:
            if group and group[0].num_beams > 1:  # only the first beam starts alive
                scores += [0.0] + [-math.inf] * (len(group) - 1)
                self.groups += [self._next_group] * len(group)
                self._next_group += 1
            else:
                scores += [0.0] * len(group)
                self.groups += [-1] * len(group)
        new["beam_score"] = torch.tensor(scores, dtype=torch.float64, device=self.device)
        if any(p.logit_bias for p in flat) or self.any_bias:
            self._add_bias(new, flat)
        if any(p.keeps_history for p in flat) or self.any_history:
            self._add_history(new, flat, prefix_of)
        for name, tensor in new.items():
            self.columns[name] = torch.cat([self.columns[name], tensor])
        self.params += flat
        self._refresh()

    def _zeros_for_old_rows(self, name: str, like: Tensor, fill: float | bool = 0) -> None:
        """Start a batch-wide tensor: rows already present get `fill` (a neutral value)."""
        if name not in self.columns:
            shape = (len(self.params), *like.shape[1:])  # rows before this join
            self.columns[name] = torch.full(shape, fill, dtype=like.dtype, device=self.device)

    def _add_bias(self, new: dict[str, Tensor], flat: list[SamplingParams]) -> None:
        """Dense (rows, V) bias and ban matrices for the joining rows."""
        V = self.vocab_size
        bias = torch.zeros(len(flat), V, device=self.device)
        ban = torch.zeros(len(flat), V, dtype=torch.bool, device=self.device)
        for r, p in enumerate(flat):
            for token, value in p.logit_bias:
                if value <= BAN:
                    ban[r, token] = True
                else:
                    bias[r, token] = value
        new["bias"], new["ban"] = bias, ban
        self._zeros_for_old_rows("bias", bias)
        self._zeros_for_old_rows("ban", ban, False)

    def _add_history(
        self, new: dict[str, Tensor], flat: list[SamplingParams], prefixes: list[list[int]]
    ) -> None:
        """History rows for the joining rows (their prefix right-aligned before `end`).

        Rows that read no history get an empty one (start at _FAR): they never read it.
        """
        longest = max(
            (len(ids) for ids, p in zip(prefixes, flat, strict=True) if p.keeps_history), default=0
        )
        if "history" not in self.columns:
            self.end = longest
            old = len(self.params)  # rows before this join
            self.columns["history"] = torch.full(
                (old, max(64, 2 * longest)), -1, dtype=torch.long, device=self.device
            )
            for name in ("text_start", "scope_start"):
                self.columns[name] = torch.full((old,), _FAR, device=self.device)
            self.columns["counts"] = torch.zeros(old, self.vocab_size, device=self.device)
        elif longest > self.end:  # make room on the left for a longer prefix
            shift = longest - self.end
            history = self.columns["history"]
            pad = torch.full((len(history), shift), -1, dtype=torch.long, device=self.device)
            self.columns["history"] = torch.cat([pad, history], dim=1)
            self.columns["text_start"] += shift
            self.columns["scope_start"] += shift
            self.end += shift
        width = self.columns["history"].shape[1]
        history = torch.full((len(flat), width), -1, dtype=torch.long, device=self.device)
        counts = torch.zeros(len(flat), self.vocab_size, device=self.device)
        starts, scopes = [], []
        for r, (ids, p) in enumerate(zip(prefixes, flat, strict=True)):
            if not p.keeps_history:
                starts.append(_FAR)
                scopes.append(_FAR)
                continue
            start = self.end - len(ids)
            history[r, start : self.end] = torch.tensor(ids, device=self.device)
            starts.append(start)
            scopes.append(start if p.penalize_prompt else self.end)
            if p.penalize_prompt:
                seen = ids[-p.penalty_window :] if p.penalty_window else ids
                counts[r] = torch.bincount(
                    torch.tensor(seen, device=self.device), minlength=self.vocab_size
                ).float()
        new["history"], new["counts"] = history, counts
        new["text_start"] = torch.tensor(starts, device=self.device)
        new["scope_start"] = torch.tensor(scopes, device=self.device)

    def _window_low(self) -> Tensor:
        """Each row's first history column inside its penalty window (B,)."""
        window = self.columns["window"]
        scope = self.columns["scope_start"]
        return torch.where(window > 0, torch.maximum(scope, self.end - window), scope)

    def _bans(self) -> Tensor | None:
        """(B, V) bool of tokens banned by logit_bias and no_repeat_ngram_size, or None."""
        ban = self.columns["ban"] if self.any_bias else None
        if self.any_ngram:
            n = self.columns["ngram"]
            rows = (n > 0).nonzero().squeeze(1)
            low = self._window_low().index_select(0, rows)
            first = max(0, min(int(low.min()), self.end - int(n.max()) + 1))
            history = self.columns["history"].index_select(0, rows)[:, first : self.end]
            found = ngram_bans(history, low - first, n.index_select(0, rows), self.vocab_size)
            repeats = torch.zeros(len(self), self.vocab_size, dtype=torch.bool, device=self.device)
            repeats.index_copy_(0, rows, found)
            ban = repeats if ban is None else ban | repeats
        return ban

    def next_tokens(self) -> Tensor:
        """Sample every row's next token from its current logits -> (B,)."""
        return self.sample().tokens

    @torch.inference_mode()
    def sample(self) -> Step:
        """Every sampled row's next token and every beam group's candidates.

        Rows whose params ask also get their token's log-probability: one log-softmax and
        top-k over just the asking rows (k = the largest any of them asked for, each
        row's list cut to its own k afterwards), so rows that do not ask cost nothing.
        """
        raw = self.logits  # the model's own, never written to
        soft = raw  # after bias and penalties: what beams score with
        if self.any_bias:
            soft = soft + self.columns["bias"]
        if self.any_penalty:
            c = self.columns
            soft = apply_penalties(
                soft,
                c["counts"],
                c["repetition_penalty"],
                c["presence_penalty"],
                c["frequency_penalty"],
            )
        ban = self._bans()
        logits = soft.index_fill(1, self.banned, -math.inf)
        if ban is not None:
            banned = logits.masked_fill(ban, -math.inf)
            dead = torch.isneginf(banned).all(dim=1, keepdim=True)  # the bans left nothing
            logits = torch.where(dead, logits, banned)
        counters = self.columns["counters"]
        self.columns["counters"] = counters + 1
        if self.all_greedy:
            tokens = logits.argmax(dim=1)
        else:
            c = self.columns
            tokens = sample_next(
                logits,
                c["temperature"],
                c["top_k"] if self.any_top_k else None,
                c["top_p"] if self.any_top_p else None,
                c["seeds"],
                counters,
                min_p=c["min_p"] if self.any_min_p else None,
                typical_p=c["typical_p"] if self.any_typical else None,
            )
        beams = self._beam_candidates(raw, soft, logits) if self.blocks else {}
        if not len(self.asking):
            return Step(tokens, {}, beams)
        asking = self.asking
        ks = self.columns["logprobs"].index_select(0, asking)  # (R,)
        picked = tokens.index_select(0, asking)  # (R,)
        rows = raw.index_select(0, asking)
        chosen, top, ids = logprobs_and_top(rows, picked, int(ks.max()))  # (R,), (R, K), (R, K)
        columns = (asking, picked, ks, chosen, ids, top)
        out = {}
        for row, token, k, logprob, row_ids, row_top in zip(
            *(c.tolist() for c in columns), strict=True
        ):
            out[row] = TokenLogprob(
                token, logprob, tuple(zip(row_ids[:k], row_top[:k], strict=True))
            )
        return Step(tokens, out, beams)

    def _beam_candidates(
        self, raw: Tensor, soft: Tensor, logits: Tensor
    ) -> dict[int, BeamCandidates]:
        """Each beam group's best 2 x k continuations over its k beams x V tokens.

        A candidate's score is its beam's total plus log-softmax(soft) at the token; banned
        tokens (-inf in `logits`) are never candidates. Groups of equal width are ranked
        with one top-k.
        """
        V = self.vocab_size
        out: dict[int, BeamCandidates] = {}
        for k, (firsts, rows) in self.beam_rows.items():
            lp = torch.log_softmax(soft.index_select(0, rows), dim=1)
            lp = lp.masked_fill(torch.isneginf(logits.index_select(0, rows)), -math.inf)
            total = lp.double() + self.columns["beam_score"].index_select(0, rows).unsqueeze(1)
            scores, flat = total.view(len(firsts), k * V).topk(min(2 * k, k * V), dim=1)
            flat_ids = flat.tolist()
            asked = self.columns["logprobs"].index_select(0, rows).view(len(firsts), k)[:, 0]
            own = top_rows = None
            if bool((asked >= 0).any()):
                own_lp = torch.log_softmax(raw.index_select(0, rows).float(), dim=1)
                own = own_lp.view(len(firsts), k * V).gather(1, flat).tolist()
                top_v, top_i = own_lp.topk(min(int(asked.max()), V), dim=1)
                top_rows = [
                    tuple(zip(i, v, strict=True))
                    for i, v in zip(top_i.tolist(), top_v.tolist(), strict=True)
                ]
            asked_k = asked.tolist()
            for g, (first, s, ids) in enumerate(
                zip(firsts, scores.tolist(), flat_ids, strict=True)
            ):
                kept = asked_k[g]
                out[first] = BeamCandidates(
                    s,
                    [i // V for i in ids],
                    [i % V for i in ids],
                    None if own is None or kept < 0 else own[g],
                    None
                    if top_rows is None or kept < 0
                    else [top_rows[g * k + j][:kept] for j in range(k)],
                )
        return out

    @torch.inference_mode()
    def feed(self, tokens: Tensor) -> None:
        """Advance every row by its token (B,), producing the logits for the next step."""
        assert self.state is not None
        if self.any_history:
            self._append(tokens)
        logits, self.state = self.model.step(tokens, self.state)  # (B, V)
        self.logits = logits.float()

    def _append(self, tokens: Tensor) -> None:
        """Write every row's new token into the history and update the window counts."""
        c = self.columns
        if self.end == c["history"].shape[1]:  # full: double the width
            c["history"] = torch.cat([c["history"], torch.full_like(c["history"], -1)], dim=1)
        c["history"][:, self.end] = tokens
        self.end += 1
        counts = c["counts"]
        counts.scatter_add_(1, tokens.unsqueeze(1), torch.ones(len(tokens), 1, device=self.device))
        window = c["window"]
        leaving = self.end - 1 - window  # the column that just left a full window
        gone = (window > 0) & (leaving >= c["scope_start"])
        if bool(gone.any()):
            token = c["history"].gather(1, leaving.clamp_min(0).unsqueeze(1))  # (B, 1)
            counts.scatter_add_(1, token.clamp_min(0), -gone.float().unsqueeze(1))

    def reorder(self, rows: Tensor, beam_scores: Tensor) -> None:
        """Beam search's step when no row joins or leaves: each beam group's rows replaced by
        copies of its chosen beams (`rows` maps within groups), with their new totals.

        Only what differs between the beams of a group moves (state, token history); the
        logits are stale until the `feed` that must follow.
        """
        if self.state is not None:
            self.state = tuple(s.index_select(1, rows) for s in self.state)
        for name in ("history", "counts"):
            if name in self.columns:
                self.columns[name] = self.columns[name].index_select(0, rows)
        self.columns["beam_score"] = beam_scores.to(torch.float64)

    def keep(self, rows: Tensor, beam_scores: Tensor | None = None) -> None:
        """Keep the rows listed in `rows` (a LongTensor of row indices), in that order.

        Indices may repeat (beam search copies a beam to extend it two ways); then
        `beam_scores` gives every kept row's new total (beam rows; others ignore it).
        """
        if self.state is not None:
            self.state = tuple(s.index_select(1, rows) for s in self.state)
        self.logits = self.logits.index_select(0, rows)
        for name, tensor in self.columns.items():
            self.columns[name] = tensor.index_select(0, rows)
        if beam_scores is not None:
            self.columns["beam_score"] = beam_scores.to(torch.float64)
        order = rows.tolist()
        self.params = [self.params[r] for r in order]
        self.groups = [self.groups[r] for r in order]
        if self.any_bias and not any(p.logit_bias for p in self.params):
            del self.columns["bias"], self.columns["ban"]
        if self.any_history:
            self._trim_history()
        self._refresh()

    def _trim_history(self) -> None:
        """Drop the history when no row reads it; cut columns no row needs any more."""
        c = self.columns
        if not any(p.keeps_history for p in self.params):
            for name in ("history", "counts", "text_start", "scope_start"):
                del c[name]
            self.end = 0
            return
        first = int(c["text_start"].min())
        if first > c["history"].shape[1] // 2:
            c["history"] = c["history"][:, first:]
            c["text_start"] -= first
            c["scope_start"] -= first
            self.end -= first


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

    def copy(self) -> StopTracker:
        """An independent tracker in the same place (a beam extended two ways): its
        detokenizer is copied too (`copy.copy` of a detokenizer is an independent one)."""
        other = StopTracker.__new__(StopTracker)
        other.__dict__.update(self.__dict__)
        other.detokenizer = copy.copy(self.detokenizer)
        return other

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


@dataclass
class Delta:
    """New text for one sequence; `finish_reason` set on its last delta.

    A streamed sequence gets a delta per step that has news; any other gets one, when it
    finishes, with its whole text and all its logprobs. `logprobs` holds the tokens' when
    the params asked (a delta may carry a token and no text: text that could still turn
    into a stop string is held back, its tokens not). `logprob`, on a finished sequence:
    a beam's total as the search ranked it, or a sampled sequence's sum of its tokens'
    log-probabilities when its params asked for logprobs.
    """

    index: int
    text: str
    tokens: int
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprob: float | None = None


Owner = TypeVar("Owner")
_Chain = tuple[TokenLogprob, "_Chain"] | None  # a beam's logprobs, newest first, shared tails


def _unchain(chain: _Chain) -> list[TokenLogprob]:
    out = []
    while chain is not None:
        item, chain = chain
        out.append(item)
    return out[::-1]


@dataclass
class Join(Generic[Owner]):
    """A prefix and its sequences' params (one per choice), joining the batch together;
    `encoded`: (n, state) when the prefix's first n tokens were encoded beforehand."""

    owner: Owner
    prefix_ids: Sequence[int]
    params: Sequence[SamplingParams]
    stream: bool = False
    encoded: Encoded | None = None


def rows_needed(params: Sequence[SamplingParams]) -> int:
    """How many batch rows a request's sequences occupy while they decode."""
    if params and params[0].num_beams > 1:
        return params[0].num_beams if params[0].max_new_tokens > 0 else 0
    return sum(1 for p in params if p.max_new_tokens > 0)


@dataclass
class _Hypothesis:
    score: float  # total / length ** length_penalty
    total: float
    tracker: StopTracker
    chain: _Chain


class _Beams:
    """One request's beam search: its finished hypotheses and when to stop (HF's rules)."""

    def __init__(self, params: SamplingParams, n: int) -> None:
        if not 1 <= n <= params.num_beams:
            raise ValueError("beam search returns at most num_beams sequences")
        self.n, self.width = n, params.num_beams
        self.length_penalty, self.early_stopping = params.length_penalty, params.early_stopping
        self.max_new_tokens = params.max_new_tokens
        self.finished: list[_Hypothesis] = []

    def score(self, total: float, length: int) -> float:
        return total / math.pow(max(length, 1), self.length_penalty)

    def advance(self, beams: Sequence[_Row[Owner]], found: BeamCandidates) -> list[_Next]:
        """The next beams (parent, token, total, tracker, logprobs); [] when the search ends.

        Candidates are taken best first: one that ends (stop string, length) becomes a
        hypothesis if it ranks among the best `width`; the others continue until `width`
        beams are found.
        """
        out: list[_Next] = []
        for rank, (total, parent, token) in enumerate(
            zip(found.scores, found.parents, found.tokens, strict=True)
        ):
            if total == -math.inf:
                break
            source = beams[parent]
            tracker = source.tracker.copy()
            tracker.push(token)
            chain = source.chain
            if found.raw is not None and found.top is not None:
                chain = (TokenLogprob(token, found.raw[rank], found.top[parent]), chain)
            if tracker.finished:
                if rank < self.width:
                    self._add(_Hypothesis(self.score(total, tracker.tokens), total, tracker, chain))
            else:
                out.append(_Next(parent, token, total, tracker, chain))
                if len(out) == self.width:
                    break
        if out and self._complete(out[0].total, out[0].tracker.tokens):
            return []
        return out

    def _add(self, hypothesis: _Hypothesis) -> None:
        self.finished.append(hypothesis)
        self.finished.sort(key=lambda h: -h.score)
        del self.finished[self.width :]

    def _complete(self, best_total: float, length: int) -> bool:
        """Done once `width` hypotheses are finished and (unless early_stopping) no live
        beam can still beat the worst of them. Totals only fall as beams grow, so the best
        a beam can reach is its total now, normalised at the most favourable length."""
        if len(self.finished) < self.width:
            return False
        if self.early_stopping:
            return True
        reach = self.max_new_tokens if self.length_penalty > 0 else length
        return self.finished[-1].score >= self.score(best_total, reach)

    def results(self) -> list[Delta]:
        """The best n hypotheses, as final deltas (repeated if fewer ever finished)."""
        best = self.finished[: self.n]
        best += best[-1:] * (self.n - len(best))
        return [
            Delta(
                i,
                h.tracker.text,
                h.tracker.tokens,
                h.tracker.finish_reason,
                _unchain(h.chain),
                h.total,
            )
            for i, h in enumerate(best)
        ]


@dataclass(frozen=True)
class _Next:
    """A beam chosen to continue: from which beam (parent), by which token."""

    parent: int
    token: int
    total: float
    tracker: StopTracker
    chain: _Chain


@dataclass
class _Row(Generic[Owner]):
    """What the decoder knows about one batch row beside its tensors."""

    owner: Owner
    index: int
    stream: bool
    tracker: StopTracker  # holds the row's detokenizer
    logprobs: list[TokenLogprob] = field(default_factory=list)  # kept for a plain sequence
    total: float = 0.0
    beams: _Beams | None = None
    chain: _Chain = None


class Decoder(Generic[Owner]):
    """A DecodeBatch plus each sequence's text: joins, one step, the deltas it produced.

    `Owner` is whatever the caller groups sequences by (a request); deltas come back as
    (owner, delta). Beam groups answer once, when their search ends.
    """

    def __init__(
        self,
        model: LanguageModel,
        detokenizer: Callable[[], Detokenizer],
        banned_ids: Sequence[int] = (0,),
    ) -> None:
        """`detokenizer()` makes each new row's detokenizer."""
        self.batch = DecodeBatch(model, banned_ids)
        self.detokenizer = detokenizer
        self.rows: list[_Row[Owner]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add_all(self, joins: Sequence[Join[Owner]]) -> list[tuple[Owner, Delta]]:
        """Add the sequences of several prefixes; returns the deltas of those that end at
        once (max_new_tokens 0)."""
        done: list[tuple[Owner, Delta]] = []
        prefixes: list[Sequence[int]] = []
        groups: list[list[SamplingParams]] = []
        encoded: list[Encoded | None] = []
        for join in joins:
            params = list(join.params)
            if not params:
                continue
            first = params[0]
            if first.max_new_tokens == 0:
                done += [(join.owner, Delta(i, "", 0, "length")) for i in range(len(params))]
                continue
            if first.num_beams > 1:
                beams = _Beams(first, len(params))
                self.rows += [
                    _Row(
                        join.owner,
                        0,
                        False,
                        StopTracker(first.stop, first.max_new_tokens, self.detokenizer()),
                        beams=beams,
                    )
                    for _ in range(first.num_beams)
                ]
                groups.append([first] * first.num_beams)
            else:
                live = []
                for i, p in enumerate(params):
                    if p.max_new_tokens == 0:
                        done.append((join.owner, Delta(i, "", 0, "length")))
                        continue
                    tracker = StopTracker(p.stop, p.max_new_tokens, self.detokenizer())
                    row = _Row(join.owner, i, join.stream, tracker)
                    self.rows.append(row)
                    live.append(p)
                if not live:
                    continue
                groups.append(live)
            prefixes.append(join.prefix_ids)
            encoded.append(join.encoded)
        if prefixes:
            self.batch.add_all(prefixes, groups, encoded)
        return done

    def sequences(self) -> list[tuple[Owner, int]]:
        """(owner, index) of every sequence still decoding (a beam group's n once each)."""
        out: list[tuple[Owner, int]] = []
        seen: set[int] = set()
        for row in self.rows:
            if row.beams is None:
                out.append((row.owner, row.index))
            elif id(row.beams) not in seen:
                seen.add(id(row.beams))
                out += [(row.owner, i) for i in range(row.beams.n)]
        return out

    def clear(self) -> None:
        """Drop every sequence (after a failed step)."""
        self.rows = []
        self.batch.keep(torch.empty(0, dtype=torch.long, device=self.batch.device))

    def step(self, cancelled: Callable[[Owner], bool] | None = None) -> list[tuple[Owner, Delta]]:
        """One decoding step for every row: pick, emit, drop finished (and cancelled), feed."""
        if not self.rows:
            return []
        step = self.batch.sample()
        tokens = step.tokens.tolist()
        out: list[tuple[Owner, Delta]] = []
        keep: list[int] = []
        rows: list[_Row[Owner]] = []
        fed: list[int] = []  # with beams: each kept row's token
        totals: list[float] = []
        r = 0
        while r < len(self.rows):
            row = self.rows[r]
            if row.beams is not None:
                width = row.beams.width
                if cancelled is None or not cancelled(row.owner):
                    self._advance(r, step.beams[r], out, keep, rows, fed, totals)
                r += width
                continue
            r += 1
            if cancelled is not None and cancelled(row.owner):
                continue
            token = tokens[r - 1]
            tracker = row.tracker
            text = tracker.push(token)
            finish = tracker.finish_reason
            logprob = step.logprobs.get(r - 1)
            if logprob is not None:
                row.total += logprob.logprob
            total = row.total if finish is not None and logprob is not None else None
            if row.stream:
                if text or finish or logprob:
                    lps = [logprob] if logprob is not None else []
                    delta = Delta(row.index, text, tracker.tokens, finish, lps, total)
                    out.append((row.owner, delta))
            else:
                if logprob is not None:
                    row.logprobs.append(logprob)
                if finish is not None:
                    delta = Delta(
                        row.index, tracker.text, tracker.tokens, finish, row.logprobs, total
                    )
                    out.append((row.owner, delta))
            if finish is None:
                keep.append(r - 1)
                rows.append(row)
                fed.append(token)
                totals.append(0.0)
        device = self.batch.device
        if self.batch.blocks:  # beams moved: rows follow their parents, tokens are chosen
            index = torch.tensor(keep, dtype=torch.long, device=device)
            scores = torch.tensor(totals, dtype=torch.float64, device=device)
            if len(keep) == len(self.rows):  # nobody left: only the beams' rows move
                self.batch.reorder(index, scores)
            else:
                self.batch.keep(index, scores)
            next_tokens = torch.tensor(fed, dtype=torch.long, device=device)
        elif len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=device)
            self.batch.keep(index)
            next_tokens = step.tokens.index_select(0, index)
        else:
            next_tokens = step.tokens
        self.rows = rows
        if rows:
            self.batch.feed(next_tokens)
        return out

    def _advance(
        self,
        first: int,
        found: BeamCandidates,
        out: list[tuple[Owner, Delta]],
        keep: list[int],
        rows: list[_Row[Owner]],
        fed: list[int],
        totals: list[float],
    ) -> None:
        """One beam group's step: its next beams into keep/rows/fed/totals, or its results."""
        beams = self.rows[first].beams
        assert beams is not None
        block = self.rows[first : first + beams.width]
        chosen = beams.advance(block, found)
        if not chosen:
            out += [(block[0].owner, delta) for delta in beams.results()]
            return
        if len(chosen) < beams.width:  # a small vocabulary, bans: dead copies fill in
            chosen += [replace(chosen[0], total=-math.inf)] * (beams.width - len(chosen))
        for beam in chosen:
            keep.append(first + beam.parent)
            owner = block[0].owner
            rows.append(_Row(owner, 0, False, beam.tracker, beams=beams, chain=beam.chain))
            fed.append(beam.token)
            totals.append(beam.total)


def generate(
    model: LanguageModel,
    prefix_ids: Sequence[int],
    params: Sequence[SamplingParams],
    detokenizer: Callable[[], Detokenizer],
    banned_ids: Sequence[int] = (0,),
) -> list[Delta]:
    """Decode one completion per `params` entry from a shared prefix, all in one batch
    (beam search: the best len(params) beams); each the final delta of its sequence.

    `detokenizer` makes each sequence's incremental decoder (`Tokenizer.detokenizer`).
    """
    decoder: Decoder[None] = Decoder(model, detokenizer, banned_ids)
    out: list[Delta] = [Delta(i, "", 0) for i in range(len(params))]
    for _, delta in decoder.add_all([Join(None, prefix_ids, params)]):
        out[delta.index] = delta
    while decoder:
        for _, delta in decoder.step():
            out[delta.index] = delta
    return out
