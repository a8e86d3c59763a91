"""The n-gram LM's probabilities against counts and formulas computed here, independently."""

import itertools
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

import models.ngram_lm as ngram_lm
from models.bundle import load_bundle, save_bundle
from models.ngram_lm import SMOOTHINGS, NgramConfig, NgramLM, count_ngrams, max_order
from models.score import score_ids
from models.text import Tokenizer

V = 6  # token 0 never occurs in the training ids below, like <unk>


def training_ids(n: int = 600, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    ids = [1]
    for _ in range(n - 1):  # a skewed Markov chain, so counts have every shape
        prev = ids[-1]
        ids.append(rng.choice([prev % 5 + 1, prev % 5 + 1, 1, 2, 3, 3, 4, 5, 5, 5]))
    return ids


def raw_counts(ids: list[int], order: int) -> list[Counter[tuple[int, ...]]]:
    counts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(order + 1)]
    for n in range(1, order + 1):
        for i in range(len(ids) - n + 1):
            counts[n][tuple(ids[i : i + n])] += 1
    return counts


def reference_probs(
    ids: list[int], order: int, smoothing: str, contexts: list[tuple[int, ...]], eps: float = 1.0
) -> list[list[float]]:
    """P(w | context) for every context and w, straight from the formulas."""
    counts = raw_counts(ids, order)
    used = [Counter()] + [counts[n] for n in range(1, order + 1)]
    if smoothing in ("kn", "modified-kn"):
        for n in range(1, order):  # continuation counts: distinct tokens seen before
            used[n] = Counter(g[1:] for g in counts[n + 1])
    return [[prob(used, order, smoothing, c, w, eps) for w in range(V)] for c in contexts]


def prob(
    used: list[Counter[tuple[int, ...]]],
    order: int,
    smoothing: str,
    context: tuple[int, ...],
    w: int,
    eps: float,
) -> float:
    """One order at a time, from the empty context up, one dictionary scan per order."""
    p = 1.0 / V
    context = context[len(context) - (order - 1) :] if order > 1 else ()
    for n in range(1, order + 1):
        if len(context) < n - 1:
            break
        h = context[len(context) - (n - 1) :] if n > 1 else ()
        followers = {g[-1]: c for g, c in used[n].items() if g[:-1] == h}
        total = sum(followers.values())
        if total == 0:
            continue  # an unseen context: keep the shorter context's estimate
        c = followers.get(w, 0)
        if smoothing == "mle":
            p = c / total
        elif smoothing == "laplace":
            p = (c + eps * p) / (total + eps)
        else:
            of = Counter(used[n].values())  # count-of-counts
            if of[1] == 0 or of[2] == 0:  # the documented fallback for a sparse order
                d = [0.5, 0.5, 0.5]
            else:
                y = of[1] / (of[1] + 2 * of[2])
                d = [y, y, y]
                if smoothing == "modified-kn" and of[3]:
                    m = [
                        1 - 2 * y * of[2] / of[1],
                        2 - 3 * y * of[3] / of[2],
                        3 - 4 * y * of[4] / of[3],
                    ]
                    d = m if min(m) > 0 else d
            kinds = Counter(min(v, 3) for v in followers.values())
            gamma = sum(d[k - 1] * kinds[k] for k in (1, 2, 3)) / total
            p = max(c - (d[min(c, 3) - 1] if c else 0.0), 0.0) / total + gamma * p
    return p


def model_probs(model: NgramLM, contexts: list[tuple[int, ...]]) -> torch.Tensor:
    """P(. | context) for each context, each read from the start of a text (begin_state)."""
    out = []
    for context in contexts:
        logits, _ = model(torch.tensor([context]))
        out.append(logits[0, -1].double().exp())
    return torch.stack(out)


def all_contexts(order: int) -> list[tuple[int, ...]]:
    rng = random.Random(1)
    contexts = [c for n in range(1, order) for c in itertools.product(range(V), repeat=n)]
    contexts += [tuple(rng.randrange(V) for _ in range(order + 2)) for _ in range(20)]
    return contexts


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_probabilities_equal_the_formulas_on_counts(smoothing: str) -> None:
    ids, order = training_ids(), 3
    model = NgramLM(NgramConfig(V, order, smoothing), count_ngrams(ids, order, V))
    contexts = all_contexts(order)
    got = model_probs(model, contexts)
    expected = torch.tensor(reference_probs(ids, order, smoothing, contexts), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.sum(1), torch.ones(len(contexts), dtype=torch.float64))


def test_mle_is_the_books_ratio_of_counts() -> None:
    ids = training_ids()
    counts = raw_counts(ids, 2)
    model = NgramLM(NgramConfig(V, 2, "mle"), count_ngrams(ids, 2, V))
    for x in range(1, V):
        n_x = sum(c for g, c in counts[2].items() if g[0] == x)  # n(x) followed by a token
        probs = model_probs(model, [(x,)])[0]
        for x2 in range(V):
            assert probs[x2].item() == pytest.approx(counts[2][(x, x2)] / n_x)


def test_laplace_is_the_books_formula() -> None:
    """P(x) = (n(x) + eps/m) / (n + eps); P(x'|x) = (n(x, x') + eps P(x')) / (n(x) + eps)."""
    ids, eps = training_ids(), 2.5
    counts = raw_counts(ids, 2)
    n = len(ids)
    model = NgramLM(NgramConfig(V, 2, "laplace", epsilon=eps), count_ngrams(ids, 2, V))
    for x in range(V):
        n_x = sum(c for g, c in counts[2].items() if g[0] == x)
        for x2 in range(V):
            p_x2 = (counts[1][(x2,)] + eps / V) / (n + eps)
            expected = (counts[2][(x, x2)] + eps * p_x2) / (n_x + eps)
            assert model_probs(model, [(x,)])[0, x2].item() == pytest.approx(expected)


def test_mle_unseen_ngram_has_probability_zero_and_infinite_perplexity() -> None:
    ids = [1, 2, 3] * 50
    model = NgramLM(NgramConfig(4, 2, "mle"), count_ngrams(ids, 2, 4))
    logits, _ = model(torch.tensor([[1]]))
    assert logits[0, 0, 2].item() == 0.0  # P(2 | 1) = 1
    assert logits[0, 0, 3].item() == -math.inf  # 1 is never followed by 3
    score = score_ids(model, [1, 2, 3, 1, 3, 1])
    assert score.perplexity == math.inf and not math.isnan(score.nll)
    assert score_ids(model, [1, 2, 3, 1, 2]).perplexity == pytest.approx(1.0)


def test_mle_generation_backs_off_from_a_context_without_followers() -> None:
    """The text ends with `3 3`: that context has no follower, so the model uses `3`'s."""
    ids = [1, 2, 3] * 20 + [3]
    model = NgramLM(NgramConfig(4, 3, "mle"), count_ngrams(ids, 3, 4))
    logits, _ = model(torch.tensor([[3, 3]]))
    assert torch.isfinite(logits).any()
    assert logits[0, -1].exp().sum().item() == pytest.approx(1.0)
    assert logits[0, -1].argmax().item() == 1  # P(1 | 3) = 20/21


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_step_equals_forward_and_segments_equal_one_pass(smoothing: str) -> None:
    ids, order = training_ids(), 4
    model = NgramLM(NgramConfig(V, order, smoothing), count_ngrams(ids, order, V))
    text = training_ids(200, seed=5)
    X = torch.tensor([text[:40], text[40:80]])
    full, _ = model(X)
    state = model.begin_state(2)
    steps = []
    for t in range(X.shape[1]):
        logits, state = model.step(X[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full)
    one = score_ids(model, text, segment_len=10_000)
    many = score_ids(model, text, segment_len=16, burn_in=order)
    assert many.nll == pytest.approx(one.nll, rel=1e-6)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_rows_computed_per_request_equal_the_precomputed_table(
    smoothing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, order = training_ids(), 4
    counts = count_ngrams(ids, order, V)
    dense = NgramLM(NgramConfig(V, order, smoothing), counts)
    monkeypatch.setattr(ngram_lm, "DENSE_ENTRIES", 0)
    sparse = NgramLM(NgramConfig(V, order, smoothing), counts)
    assert dense.dense and not sparse.dense
    X = torch.tensor([training_ids(64, seed=3)])
    torch.testing.assert_close(sparse(X)[0], dense(X)[0])


def test_breakdown_shows_the_counts_used() -> None:
    ids, order = training_ids(), 3
    counts = raw_counts(ids, order)
    model = NgramLM(NgramConfig(V, order, "kn"), count_ngrams(ids, order, V))
    text = [1, 2, 3, 0, 5, 5]
    b = model.breakdown(text)
    logits, _ = model(torch.tensor([text[:-1]]))
    expected = logits[0].gather(1, torch.tensor(text[1:]).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(torch.tensor(b.logprob, dtype=torch.float32), expected)
    for i, t in enumerate(range(1, len(text))):
        w = text[t]
        for n in range(1, order + 1):
            if t < n - 1:
                assert b.count[i][n - 1] == -1  # not enough context for this order
                continue
            h = tuple(text[t - n + 1 : t])
            assert b.count[i][n - 1] == counts[n][(*h, w)]
            assert b.context_count[i][n - 1] == sum(c for g, c in counts[n].items() if g[:-1] == h)
    assert b.context_order[2] == 3 and b.backoff_order[2] == 0  # 0 never seen at all
    assert b.context_order[3] == 1  # after 0 (never seen): the unigram estimate
    continuation = Counter(g[1:] for g in counts[3])  # N1+(. w1 w2)
    assert b.used_count[1][1] == continuation[(2, 3)]


def test_bundle_round_trip(tmp_path: Path, char_tokenizer: Tokenizer) -> None:
    ids = char_tokenizer.encode("the time traveller was expounding a recondite matter").ids
    model = NgramLM(NgramConfig(28, 5, "modified-kn"), count_ngrams(ids, 5, 28))
    save_bundle(tmp_path / "kn5", model, char_tokenizer, {"corpus": "x"}, {"val_ppl": 9.0})
    loaded = load_bundle(tmp_path / "kn5")
    assert loaded.kind == "ngram"
    assert loaded.config["model"]["sizes"] == [len(c) for c, _ in count_ngrams(ids, 5, 28)]
    X = torch.tensor([ids[:20]])
    torch.testing.assert_close(loaded.model(X)[0], model(X)[0])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="smoothing must be one of mle, laplace, kn, modified-kn"):
        NgramConfig(28, 3, "witten-bell")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"order must be in \[1, 12\]"):
        NgramConfig(28, 14)
    assert max_order(28) == 12 and max_order(4600) == 5
