import math

import pytest
import torch

from models.score import score_ids, score_many, token_nll
from tests.conftest import tiny_lm


class Uniform(torch.nn.Module):
    """Logits all zero: every token equally likely."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, X, state=None):
        return torch.zeros(*X.shape, self.vocab_size) + 0 * self.dummy, state


def test_uniform_model_perplexity_is_the_vocabulary_size() -> None:
    score = score_ids(Uniform(28), torch.randint(0, 28, (500,)).tolist())  # type: ignore[arg-type]
    assert score.count == 499
    assert score.perplexity == pytest.approx(28)
    assert score.bits_per_token == pytest.approx(math.log2(28))


def reference_nll(model, ids: list[int], first: int) -> list[float]:
    """Independent computation: one full forward pass, log-softmax, pick the targets."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    logp = torch.log_softmax(logits[0, :-1].double(), dim=-1)
    return [-float(logp[t - 1, ids[t]]) for t in range(first, len(ids))]


@pytest.mark.parametrize("arch", ["gru", "lstm", "rnn_scratch"])
def test_score_matches_an_independent_computation(arch: str) -> None:
    model = tiny_lm(arch)
    ids = torch.randint(0, 28, (300,)).tolist()
    ref = reference_nll(model, ids, first=1)
    score = score_ids(model, ids, return_logprobs=True)
    assert score.count == len(ref)
    assert score.nll == pytest.approx(sum(ref), rel=1e-5)
    assert score.token_logprobs == pytest.approx([-x for x in ref], abs=1e-4)


def test_context_is_read_but_not_scored() -> None:
    model = tiny_lm("gru")
    ids = torch.randint(0, 28, (100,)).tolist()
    score = score_ids(model, ids, first_scored=40)
    assert score.count == 60
    assert score.nll == pytest.approx(sum(reference_nll(model, ids, first=40)), rel=1e-5)


def test_long_texts_in_segments_stay_close_to_the_sequential_value() -> None:
    model = tiny_lm("gru", num_hiddens=32)
    ids = torch.randint(0, 28, (5000,)).tolist()
    exact = score_ids(model, ids, segment_len=10**6)
    segmented = score_ids(model, ids, segment_len=256, burn_in=64, return_logprobs=True)
    assert segmented.count == exact.count == 4999
    assert len(segmented.token_logprobs or []) == 4999
    assert segmented.perplexity == pytest.approx(exact.perplexity, rel=1e-3)


def test_empty_and_single_token_texts() -> None:
    model = tiny_lm("gru")
    assert score_ids(model, [3]).count == 0
    assert math.isnan(score_ids(model, [3]).perplexity)


def test_token_nll_shape() -> None:
    logits = torch.randn(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    assert token_nll(logits, targets).shape == (2, 3)


def test_top_logprobs_are_the_likeliest_tokens_at_each_place() -> None:
    model = tiny_lm("lstm")
    ids = torch.randint(0, 28, (60,)).tolist()
    plain = score_ids(model, ids, 5, return_logprobs=True)
    score = score_ids(model, ids, 5, return_logprobs=True, top_logprobs=3)
    assert score.token_logprobs == plain.token_logprobs  # asking for more changes nothing
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    logp = torch.log_softmax(logits[0, 4:-1], dim=-1)  # (55, V): places predicting ids[5:]
    assert score.top_logprobs is not None and len(score.top_logprobs) == score.count == 55
    for place, top in zip(logp, score.top_logprobs, strict=True):
        values, indices = place.topk(3)
        assert [i for i, _ in top] == indices.tolist()
        assert [v for _, v in top] == pytest.approx(values.tolist(), abs=1e-5)
    assert score_ids(model, ids, top_logprobs=3).top_logprobs is None  # needs return_logprobs
    with pytest.raises(ValueError):
        score_ids(model, ids, return_logprobs=True, top_logprobs=-1)


def test_many_texts_side_by_side_score_as_each_alone() -> None:
    model = tiny_lm("lstm", num_layers=2)
    generator = torch.Generator().manual_seed(3)
    lengths = [1, 2, 5, 40, 300, 9, 1, 77]
    texts = [(torch.randint(1, 28, (n,), generator=generator).tolist(), 1) for n in lengths]
    texts.append((texts[3][0], 10))  # a context of 9 tokens read first
    many = score_many(
        model, texts, segment_len=64, burn_in=16, return_logprobs=True, top_logprobs=2
    )
    for (ids, first), got in zip(texts, many, strict=True):
        alone = score_ids(
            model, ids, first, segment_len=64, burn_in=16, return_logprobs=True, top_logprobs=2
        )
        assert got.count == alone.count == max(0, len(ids) - first)
        assert got.nll == pytest.approx(alone.nll, rel=1e-5, abs=1e-6)
        assert got.token_logprobs == pytest.approx(alone.token_logprobs, rel=1e-5, abs=1e-6)
        assert [[i for i, _ in t] for t in got.top_logprobs or []] == [
            [i for i, _ in t] for t in alone.top_logprobs or []
        ]
