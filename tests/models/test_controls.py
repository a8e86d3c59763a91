"""Generation controls against references computed here, from the documented definitions.

Each reference applies the control's transformation in plain Python to the model's own
logits (read through `forward` over the whole text, not the decoder's `step`), then takes
the greedy choice or the sampling distribution; the decoder must agree.
"""

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from models.generate import (
    DecodeBatch,
    Decoder,
    Join,
    SamplingParams,
    apply_penalties,
    generate,
    ngram_bans,
    sample_next,
)
from models.score import score_ids
from models.text import Tokenizer
from tests.conftest import tiny_lm

V = 28
Transform = Callable[[list[float], list[int], int], list[float]]


def window_of(ids: list[int], prompt_len: int, p: SamplingParams) -> list[int]:
    """The penalty window: the last penalty_window tokens of the generated text (or of
    prompt and generated text with penalize_prompt)."""
    scope = ids if p.penalize_prompt else ids[prompt_len:]
    return scope[-p.penalty_window :] if p.penalty_window else scope


def reference_transform(p: SamplingParams) -> Transform:
    """Steps 1-4 of the documented order, one row, plain Python."""

    def transform(x: list[float], ids: list[int], prompt_len: int) -> list[float]:
        x = list(x)
        for token, bias in p.logit_bias:
            x[token] = -math.inf if bias == -100 else x[token] + bias
        window = window_of(ids, prompt_len, p)
        counts = {t: window.count(t) for t in set(window)}
        for t, c in counts.items():
            r = p.repetition_penalty
            x[t] = x[t] / r if x[t] > 0 else x[t] * r
            x[t] -= c * p.frequency_penalty + p.presence_penalty
        n = p.no_repeat_ngram_size
        if n:
            suffix = ids[len(ids) - (n - 1) :]
            start = len(ids) - len(window)  # the window's first position in ids
            for i in range(start, len(ids) - n + 1):
                if ids[i : i + n - 1] == suffix:
                    x[ids[i + n - 1]] = -math.inf
        x[0] = -math.inf  # <unk>
        return x

    return transform


def last_logits(model: torch.nn.Module, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return logits[0, -1].tolist()


def reference_greedy(model: torch.nn.Module, prefix: list[int], p: SamplingParams) -> list[int]:
    transform = reference_transform(p)
    ids = list(prefix)
    for _ in range(p.max_new_tokens):
        x = transform(last_logits(model, ids), ids, len(prefix))
        ids.append(max(range(len(x)), key=lambda i: x[i]))
    return ids[len(prefix) :]


CONTROLS = {
    "repetition_penalty": {"repetition_penalty": 1.8},
    "repetition_penalty_below_1": {"repetition_penalty": 0.7},
    "presence_penalty": {"presence_penalty": 1.5},
    "frequency_penalty": {"frequency_penalty": 0.6},
    "penalty_window": {"frequency_penalty": 1.0, "penalty_window": 5},
    "penalize_prompt": {"presence_penalty": 2.0, "penalize_prompt": True, "penalty_window": 8},
    "no_repeat_ngram_size": {"no_repeat_ngram_size": 3},
    "no_repeat_unigram_window": {"no_repeat_ngram_size": 1, "penalty_window": 4},
    "no_repeat_ngram_prompt": {"no_repeat_ngram_size": 2, "penalize_prompt": True},
    "logit_bias": {"logit_bias": ((5, -100.0), (1, 3.0), (9, -2.5))},
    "everything": {
        "repetition_penalty": 1.3,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.3,
        "no_repeat_ngram_size": 4,
        "penalty_window": 12,
        "logit_bias": ((2, 1.0),),
    },
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_lm("gru", num_hiddens=32, seed=3)


@pytest.fixture(scope="module")
def prefix(char_tokenizer: Tokenizer) -> list[int]:
    return char_tokenizer.encode("the time traveller ").ids


@pytest.mark.parametrize("name", list(CONTROLS))
def test_greedy_choice_matches_the_reference(
    model: torch.nn.Module, prefix: list[int], char_tokenizer: Tokenizer, name: str
) -> None:
    p = SamplingParams(temperature=0, max_new_tokens=40, **CONTROLS[name])  # type: ignore[arg-type]
    expected = "".join(char_tokenizer.piece(t) for t in reference_greedy(model, prefix, p))
    assert generate(model, prefix, [p], char_tokenizer.detokenizer)[0].text == expected


def test_the_controls_change_the_greedy_text(
    model: torch.nn.Module, prefix: list[int], char_tokenizer: Tokenizer
) -> None:
    plain = SamplingParams(temperature=0, max_new_tokens=40)
    texts = {
        name: generate(model, prefix, [replace(plain, **kw)], char_tokenizer.detokenizer)[0].text  # type: ignore[arg-type]
        for name, kw in CONTROLS.items()
    }
    base = generate(model, prefix, [plain], char_tokenizer.detokenizer)[0].text
    assert all(text != base for text in texts.values()), texts


def reference_filter(
    p: list[float], top_k: int, top_p: float, min_p: float, typical_p: float
) -> list[float]:
    """Step 5's filters on one distribution, each on what the previous kept, renormalised."""

    def renorm(keep: set[int]) -> dict[int, float]:
        total = sum(p[i] for i in keep)
        return {i: p[i] / total for i in keep}

    by_prob = sorted(range(len(p)), key=lambda i: -p[i])
    q = renorm(set(by_prob[:top_k] if top_k else by_prob))
    kept, cum = set(), 0.0
    for i in sorted(q, key=lambda i: -q[i]):
        if cum < top_p:
            kept.add(i)
            cum += q[i]
    q = renorm(kept)
    best = max(q.values())
    q = renorm({i for i in q if q[i] >= min_p * best})
    entropy = -sum(v * math.log(v) for v in q.values() if v > 0)
    kept, cum = set(), 0.0
    for i in sorted(q, key=lambda i: abs(-math.log(q[i]) - entropy) if q[i] > 0 else math.inf):
        if cum < typical_p:
            kept.add(i)
            cum += q[i]
    q = renorm(kept)
    return [q.get(i, 0.0) for i in range(len(p))]


def draw(logits: torch.Tensor, B: int, **kw: float) -> torch.Tensor:
    """B draws (distinct seeds) from one row of logits -> frequencies over V."""
    x = logits.unsqueeze(0).expand(B, -1).contiguous()

    def col(name: str, default: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.full((B,), kw.get(name, default), dtype=dtype)

    picked = sample_next(
        x,
        col("temperature", 1.0),
        col("top_k", 0, torch.long),
        col("top_p", 1.0),
        torch.arange(B),
        torch.zeros(B, dtype=torch.long),
        min_p=col("min_p", 0.0) if "min_p" in kw else None,
        typical_p=col("typical_p", 1.0) if "typical_p" in kw else None,
    )
    return torch.bincount(picked, minlength=x.shape[1]).double() / B


FILTERS = {
    "top_k_then_top_p": {"top_k": 4, "top_p": 0.6},
    "min_p": {"min_p": 0.2},
    "min_p_with_temperature": {"min_p": 0.3, "temperature": 1.7},
    "typical_p": {"typical_p": 0.5},
    "typical_p_after_top_k": {"typical_p": 0.7, "top_k": 6},
    "all_four": {"top_k": 8, "top_p": 0.9, "min_p": 0.05, "typical_p": 0.8, "temperature": 0.8},
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_sampled_distribution_matches_the_filters(name: str) -> None:
    torch.manual_seed(1)
    logits = torch.randn(12) * 1.5
    kw = FILTERS[name]
    probs = torch.softmax(logits.double() / kw.get("temperature", 1.0), 0).tolist()
    expected = reference_filter(
        probs,
        int(kw.get("top_k", 0)),
        kw.get("top_p", 1.0),
        kw.get("min_p", 0.0),
        kw.get("typical_p", 1.0),
    )
    freq = draw(logits, 20000, **kw)
    assert [f > 0 for f in freq.tolist()] == [e > 0 for e in expected]
    torch.testing.assert_close(
        freq, torch.tensor(expected, dtype=torch.float64), atol=0.015, rtol=0
    )


def test_min_p_one_keeps_only_the_top_token() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    assert draw(logits, 500, min_p=1.0).tolist() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["repetition_penalty", "everything", "penalize_prompt"])
def test_sampled_distribution_after_penalties(model: torch.nn.Module, name: str) -> None:
    """One step from a prompt the penalties see: the draw follows the transformed logits."""
    prompt = [3, 8, 5, 3, 12, 5, 3, 8, 5, 21]
    kw = {**CONTROLS[name], "penalize_prompt": True}
    p = SamplingParams(temperature=0.9, **kw)  # type: ignore[arg-type]
    B = 20000
    batch = DecodeBatch(model)
    batch.add(prompt, [replace(p, seed=s) for s in range(B)])
    freq = torch.bincount(batch.next_tokens(), minlength=V).double() / B
    x = reference_transform(p)(last_logits(model, prompt), prompt, len(prompt))
    expected = torch.softmax(torch.tensor(x, dtype=torch.float64) / 0.9, 0)
    assert not freq[expected == 0].any()
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_penalties_keep_minus_infinity_and_neutral_rows() -> None:
    logits = torch.tensor([[-math.inf, 2.0, -1.0, 0.0], [-math.inf, 2.0, -1.0, 0.5]])
    counts = torch.tensor([[1.0, 2.0, 1.0, 0.0], [3.0, 1.0, 2.0, 1.0]])
    out = apply_penalties(
        logits,
        counts,
        torch.tensor([2.0, 1.0]),
        torch.tensor([0.5, 0.0]),
        torch.tensor([0.25, 0.0]),
    )
    assert out[0].tolist() == [-math.inf, 2.0 / 2 - 0.5 - 0.5, -1.0 * 2 - 0.25 - 0.5, 0.0]
    assert torch.equal(out[1], logits[1])  # neutral values: bit for bit unchanged


def test_ngram_bans_per_row_sizes() -> None:
    history = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 5, 4], [1, 2, 3, 1, 2]])
    bans = ngram_bans(history, torch.tensor([0, 0, 2]), torch.tensor([3, 2, 3]), 6)
    assert bans[0].nonzero().squeeze(1).tolist() == [3]  # "1 2 3" seen: after "1 2", not 3
    assert bans[1].nonzero().squeeze(1).tolist() == [4, 5]  # after "4": 4 and 5 seen
    assert not bans[2].any()  # the window starts at column 2: "1 2 3" lies outside it


def test_model_with_minus_infinity_logits(char_tokenizer: Tokenizer) -> None:
    """n-gram models return log-probabilities with -inf: no control may pick those."""

    class Sparse(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_lm("gru", num_hiddens=16)
            self.config = self.inner.config
            self.allowed = torch.tensor([2, 5, 9, 15, 27])

        def mask(self, logits: torch.Tensor) -> torch.Tensor:
            keep = torch.zeros(logits.shape[-1], dtype=torch.bool)
            keep[self.allowed] = True
            return torch.log_softmax(logits.masked_fill(~keep, -math.inf), dim=-1)

        def forward(self, X, state=None):  # type: ignore[no-untyped-def]
            logits, state = self.inner(X, state)
            return self.mask(logits), state

        def step(self, tokens, state):  # type: ignore[no-untyped-def]
            logits, state = self.inner.step(tokens, state)
            return self.mask(logits), state

    model = Sparse()
    allowed = {char_tokenizer.piece(i) for i in model.allowed.tolist()}
    params = [
        replace(SamplingParams(seed=s, max_new_tokens=30), **kw)  # type: ignore[arg-type]
        for s, kw in enumerate([*CONTROLS.values(), *FILTERS.values()])
    ]
    texts = [t.text for t in generate(model, [2, 5], params, char_tokenizer.detokenizer)]  # type: ignore[arg-type]
    beams = SamplingParams(temperature=0, num_beams=3, max_new_tokens=30, repetition_penalty=2)
    texts += [t.text for t in generate(model, [2, 5], [beams], char_tokenizer.detokenizer)]  # type: ignore[arg-type]
    for text in texts:
        assert len(text) == 30 and set(text) <= allowed, text


def test_a_row_whose_bans_leave_nothing_still_decodes(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru")
    everything = tuple((i, -100.0) for i in range(1, V))
    out = generate(
        model,
        [1, 2],
        [SamplingParams(max_new_tokens=5, logit_bias=everything)],
        char_tokenizer.detokenizer,
    )
    assert len(out[0].text) == 5


MIXED = [
    SamplingParams(seed=11, top_k=5),
    SamplingParams(seed=12, temperature=0.7, min_p=0.1, repetition_penalty=1.4),
    SamplingParams(temperature=0, no_repeat_ngram_size=2, penalty_window=6),
    SamplingParams(seed=13, typical_p=0.6, frequency_penalty=0.5, penalize_prompt=True),
    SamplingParams(seed=14, logit_bias=((4, -100.0), (7, 4.0)), logprobs=3),
]


@pytest.mark.parametrize("name", [*CONTROLS, *FILTERS])
def test_same_seed_same_text_alone_or_batched_per_control(
    model: torch.nn.Module, prefix: list[int], char_tokenizer: Tokenizer, name: str
) -> None:
    """Each control alone, then beside other traffic joining and leaving at other steps."""
    kw = {**CONTROLS, **FILTERS}[name]
    p = replace(SamplingParams(seed=77, max_new_tokens=30), **kw)  # type: ignore[arg-type]
    alone = generate(model, prefix, [p], char_tokenizer.detokenizer)[0].text
    decoder: Decoder[int] = Decoder(model, char_tokenizer.detokenizer)
    others = [replace(o, max_new_tokens=10 + 7 * i) for i, o in enumerate(MIXED)]
    decoder.add_all([Join(0, [5, 6, 7], others[:3]), Join(1, [9] * 30, others[3:])])
    texts: dict[tuple[int, int], str] = {}
    for step in range(200):
        if step == 4:  # joins mid-way, after a longer prefix, while others leave
            decoder.add_all([Join(2, prefix, [p]), Join(3, [2, 3], [replace(p, seed=5)])])
        for owner, delta in decoder.step():
            texts[owner, delta.index] = delta.text
        if not decoder:
            break
    assert texts[2, 0] == alone


def test_history_survives_rows_leaving_and_long_prefixes_joining(
    model: torch.nn.Module, char_tokenizer: Tokenizer
) -> None:
    """The shared history trims and grows (left for longer prefixes, right as steps go)."""
    p = SamplingParams(temperature=0, max_new_tokens=150, no_repeat_ngram_size=3, penalty_window=40)
    alone = generate(model, [3, 4], [p], char_tokenizer.detokenizer)[0].text
    decoder: Decoder[int] = Decoder(model, char_tokenizer.detokenizer)
    decoder.add_all([Join(0, [3, 4], [p])])
    texts: dict[int, str] = {}
    for step in range(150):
        if step % 10 == 3:
            length = 5 + 20 * (step // 10)
            q = SamplingParams(seed=step, max_new_tokens=4, repetition_penalty=1.5)
            decoder.add_all([Join(step, [7] * length, [q])])
        for owner, delta in decoder.step():
            texts[owner] = delta.text
    assert texts[0] == alone


def test_logprobs_are_the_models_own_whatever_the_controls(
    model: torch.nn.Module, prefix: list[int], char_tokenizer: Tokenizer
) -> None:
    p = SamplingParams(seed=3, max_new_tokens=30, logprobs=V, **CONTROLS["everything"])  # type: ignore[arg-type]
    out = generate(model, prefix, [p], char_tokenizer.detokenizer)[0]
    ids = prefix + [t.token for t in out.logprobs]
    scored = score_ids(model, ids, len(prefix), return_logprobs=True)
    assert [t.logprob for t in out.logprobs] == pytest.approx(scored.token_logprobs, abs=1e-5)
    assert out.logprob == pytest.approx(sum(scored.token_logprobs or []), abs=1e-4)
    assert all(len(t.top) == V for t in out.logprobs)  # the whole vocabulary on request
