import itertools

import pytest
import torch

from training.batches import (
    min_tokens,
    num_batches,
    random_batches,
    sequential_batches,
    split_tokens,
)

corpus = torch.arange(3000)


def test_split_is_contiguous_and_disjoint() -> None:
    train, val = split_tokens(corpus, 0.1)
    assert len(val) == 300 and torch.equal(torch.cat([train, val]), corpus)
    with pytest.raises(ValueError):
        split_tokens(corpus, 1.0)


@pytest.mark.parametrize("batcher", [random_batches, sequential_batches])
@pytest.mark.parametrize(("batch_size", "num_steps"), [(2, 5), (32, 35), (3, 1), (7, 13)])
def test_shapes_and_targets(batcher, batch_size: int, num_steps: int) -> None:
    g = torch.Generator().manual_seed(0)
    batches = list(batcher(corpus, batch_size, num_steps, g))
    assert len(batches) >= num_batches(len(corpus), batch_size, num_steps) > 0
    for X, Y in batches:
        assert X.shape == Y.shape == (batch_size, num_steps)
        assert torch.equal(Y, X + 1)  # the next token, on this arange corpus


@pytest.mark.parametrize("batcher", [random_batches, sequential_batches])
def test_a_corpus_on_another_device_than_the_generator(batcher) -> None:
    """Training puts a small split on the GPU while the sampler's generator is on the CPU
    (the meta device stands in for CUDA here: it refuses CPU indices the same way)."""
    g = torch.Generator().manual_seed(0)
    X, Y = next(batcher(corpus.to("meta"), 4, 5, g))
    assert X.device.type == Y.device.type == "meta" and X.shape == (4, 5)


def test_random_sampling_covers_without_overlap() -> None:
    g = torch.Generator().manual_seed(1)
    seen = torch.cat([X.flatten() for X, _ in random_batches(corpus, 4, 10, g)])
    assert len(set(seen.tolist())) == len(seen)  # subsequences never overlap
    assert len(seen) >= 3000 - 10 - 4 * 10  # at most the offset and one partial batch lost


def test_sequential_rows_continue_each_other() -> None:
    g = torch.Generator().manual_seed(2)
    batches = list(sequential_batches(corpus, 4, 10, g))
    for (X1, _), (X2, _) in itertools.pairwise(batches):
        assert torch.equal(X2[:, 0], X1[:, -1] + 1)


@pytest.mark.parametrize("batcher", [random_batches, sequential_batches])
def test_no_validation_token_reaches_a_training_batch(batcher) -> None:
    train, val = split_tokens(corpus, 0.2)
    g = torch.Generator().manual_seed(3)
    for X, Y in batcher(train, 5, 8, g):
        assert int(torch.cat([X, Y]).max()) < int(val[0])


def test_offsets_are_drawn_as_the_book_draws_them() -> None:
    """seq_data_iter_random: randint(0, num_steps - 1); sequential: randint(0, num_steps)."""
    firsts = {"random": set(), "sequential": set()}
    for seed in range(300):
        for name, batcher in (("random", random_batches), ("sequential", sequential_batches)):
            X, _ = next(batcher(corpus, 1, 5, torch.Generator().manual_seed(seed)))
            firsts[name].add(int(X[0, 0]) % 5 if name == "random" else int(X[0, 0]))
    assert firsts["random"] == set(range(5))
    assert firsts["sequential"] == set(range(6))


@pytest.mark.parametrize("batcher", [random_batches, sequential_batches])
@pytest.mark.parametrize(("batch_size", "num_steps"), [(32, 35), (2, 5), (3, 1)])
def test_min_tokens_hold_a_minibatch_at_every_offset(batcher, batch_size, num_steps) -> None:
    n = min_tokens(batch_size, num_steps)
    assert num_batches(n, batch_size, num_steps) == 1
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        assert len(list(batcher(torch.arange(n), batch_size, num_steps, g))) >= 1
