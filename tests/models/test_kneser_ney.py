import random

import pytest

from models.kneser_ney import KneserNey


@pytest.mark.parametrize("modified", [False, True])
def test_probabilities_sum_to_one(modified: bool) -> None:
    rng = random.Random(0)
    ids = [rng.choice([1, 2, 3, 3, 4, 5]) for _ in range(2000)]
    kn = KneserNey(ids, order=4, vocab_size=7, modified=modified)
    for context in [(), (1,), (3, 3), (9, 9, 9), (1, 2, 3, 4, 5)]:
        assert sum(kn.prob(context, w) for w in range(7)) == pytest.approx(1.0)
    assert kn.prob((3, 3), 0) > 0  # never seen, still possible


def test_beats_uniform_on_structured_text() -> None:
    ids = [1, 2, 3, 4] * 200
    kn = KneserNey(ids, order=3, vocab_size=6)
    assert kn.perplexity([1, 2, 3, 4] * 10) < 1.5
