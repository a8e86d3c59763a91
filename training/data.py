"""From a data config to token ids: corpus -> cleaned text -> tokens -> vocabulary -> ids.

Needs nothing but the `DataConfig`, so anything that wants the training split (the
Kneser-Ney baseline, benchmarks) gets exactly the tokens a run of the same settings trains
on. The held-out split is the corpus's last `val_frac`; `max_tokens` keeps the first N
tokens of the rest for training, as the book's `load_corpus_time_machine(max_tokens)` keeps
the first N of the corpus. The vocabulary is built from the training tokens alone, so
validation is truly unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.corpus import read_corpus, resolve_corpus
from models.files import file_digest
from models.text import TextRule, Tokenizer, Vocab
from training.batches import split_tokens
from training.config import DataConfig


@dataclass(frozen=True)
class Tokens:
    tokenizer: Tokenizer
    train_ids: Tensor  # (N,) int64
    val_ids: Tensor  # (M,) int64; empty without a validation split
    corpus_sha1: str


def load_tokens(data: DataConfig) -> Tokens:
    """The tokenizer, the training and validation ids, and the corpus file's sha1."""
    path = resolve_corpus(data.corpus, data.data_dir, data.cache_dir, data.allow_download)
    rule = TextRule(data.normalize, data.level, data.line_join)
    tokens = rule.split(rule.apply_corpus(read_corpus(path, rule)))
    train_tokens, val_tokens = split_tokens(tokens, data.val_frac)
    if data.max_tokens:
        train_tokens = train_tokens[: data.max_tokens]
    if rule.level == "byte":
        vocab = Vocab.of_bytes()
    else:
        vocab = Vocab.build(train_tokens, data.min_freq, data.reserved_tokens)
    return Tokens(
        Tokenizer.for_rule(rule, vocab),
        torch.tensor(vocab.encode(train_tokens), dtype=torch.long),
        torch.tensor(vocab.encode(val_tokens), dtype=torch.long),
        file_digest(path, "sha1"),
    )
