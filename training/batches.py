"""Minibatches of token subsequences (d2l 1st ed. §8.3.4, "Reading Long Sequence Data").

Random sampling draws subsequences from anywhere in the split, so consecutive minibatches
are unrelated and the hidden state is reset for each. Sequential partitioning keeps row b
of minibatch i+1 directly after row b of minibatch i, so the state can be carried over
(detached). Both start at a random offset each epoch, drawn as the book draws it: in
[0, num_steps - 1] for random sampling, in [0, num_steps] for sequential partitioning.

Under data parallelism every rank draws the same global minibatches (same generator) and
takes its own `rows` of each, so together the ranks train on exactly the minibatches of a
one-process run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol, TypeVar

import torch
from torch import Tensor

Sampling = Literal["random", "sequential"]
ALL_ROWS = slice(None)
T = TypeVar("T")


def split_tokens(tokens: Sequence[T], val_frac: float) -> tuple[Sequence[T], Sequence[T]]:
    """Contiguous split: the last `val_frac` of the stream is held out for validation."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    n_val = round(len(tokens) * val_frac)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


class Windows(Protocol):
    """Token ids read by rows: a token file's split (training.tokens.TokenSpan), whose
    minibatches are read from disk row by row, or an in-memory tensor."""

    def __len__(self) -> int: ...

    def windows(self, starts: Any, length: int) -> Tensor: ...


Corpus = Tensor | Windows


def _rows(corpus: Corpus, starts: Tensor, length: int) -> Tensor:
    """(len(starts), length) ids, row r from starts[r]."""
    if isinstance(corpus, Tensor):  # the starts come from a CPU generator
        starts = starts.to(corpus.device)
        return corpus[starts[:, None] + torch.arange(length, device=corpus.device)]
    return corpus.windows(starts.numpy(), length)


def random_batches(
    corpus: Corpus,
    batch_size: int,
    num_steps: int,
    generator: torch.Generator,
    rows: slice = ALL_ROWS,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled, non-overlapping subsequences: yields X, Y of shape (batch_size, num_steps),
    or only the given `rows` of each (a data-parallel rank's share; only they are read)."""
    offset = int(torch.randint(num_steps, (1,), generator=generator))
    num_subseqs = (len(corpus) - offset - 1) // num_steps
    starts = offset + num_steps * torch.randperm(num_subseqs, generator=generator)
    for i in range(0, num_subseqs - batch_size + 1, batch_size):
        window = _rows(corpus, starts[i : i + batch_size][rows], num_steps + 1)  # (B, T + 1)
        yield window[:, :-1], window[:, 1:]


def sequential_batches(
    corpus: Corpus,
    batch_size: int,
    num_steps: int,
    generator: torch.Generator,
    rows: slice = ALL_ROWS,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Row b of each minibatch continues row b of the previous one: X, Y (batch_size,
    num_steps), or only the given `rows` of each."""
    offset = int(torch.randint(num_steps + 1, (1,), generator=generator))
    row_len = (len(corpus) - offset - 1) // batch_size  # row b is [offset + b * row_len, ...)
    row_starts = (offset + row_len * torch.arange(batch_size))[rows]
    for i in range(0, row_len - num_steps + 1, num_steps):
        window = _rows(corpus, row_starts + i, num_steps + 1)  # (B, T + 1)
        yield window[:, :-1], window[:, 1:]


def min_tokens(batch_size: int, num_steps: int) -> int:
    """The fewest tokens that hold one minibatch at any offset either sampler may draw:
    batch_size x num_steps, the largest offset (num_steps), one more for the targets."""
    return (batch_size + 1) * num_steps + 1


def num_batches(corpus_len: int, batch_size: int, num_steps: int) -> int:
    """Minibatches per epoch at the largest offset (either sampler); 0: too little text."""
    return max(0, ((corpus_len - num_steps - 1) // batch_size) // num_steps)


BATCHERS = {"random": random_batches, "sequential": sequential_batches}
