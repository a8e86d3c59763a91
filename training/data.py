"""From a data config to token ids: corpus -> cleaned text -> tokens -> vocabulary -> ids.

Needs nothing but the `DataConfig`, so anything that wants the training split (the
Kneser-Ney baseline, benchmarks) gets exactly the tokens a run of the same settings trains
on. The held-out split is the corpus's last `val_frac`; `max_tokens` keeps the first N
tokens of the rest for training, as the book's `load_corpus_time_machine(max_tokens)` keeps
the first N of the corpus. The vocabulary is built from the training tokens alone, so
validation is truly unseen.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models.corpus import read_corpus, resolve_corpus
from models.files import file_digest
from models.text import TextRule, Tokenizer, Vocab
from training.batches import split_tokens
from training.config import DataConfig
from training.tokens import Progress, TokenFile, build_token_file, open_token_file


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


def token_file_dir(out: Path) -> Path:
    """Hidden sibling of the bundle (as the resume state): the service never takes it for a
    bundle, and `--resume` finds the token file it trained from."""
    return out.with_name(f".{out.name}.tokens")


def prepare_tokens(data: DataConfig, out: Path, progress: Progress | None = None) -> TokenFile:
    """The run's token file: reused when it was built from this very file version with the
    same rule and split, built (one streaming pass over the corpus) otherwise."""
    path = resolve_corpus(data.corpus, data.data_dir, data.cache_dir, data.allow_download)
    stat = path.stat()
    source = {
        "corpus": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "rule": TextRule(data.normalize, data.level, data.line_join).spec(),
        "min_freq": data.min_freq,
        "reserved_tokens": list(data.reserved_tokens),
        "val_frac": data.val_frac,
        "max_tokens": data.max_tokens,
    }
    folder = token_file_dir(out)
    stamp = folder / "source.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == source:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return open_token_file(folder)
    stamp.unlink(missing_ok=True)
    tokens = build_token_file(
        path,
        TextRule(data.normalize, data.level, data.line_join),
        folder,
        min_freq=data.min_freq,
        reserved_tokens=data.reserved_tokens,
        val_frac=data.val_frac,
        max_train=data.max_tokens,
        progress=progress,
    )
    stamp.write_text(json.dumps(source))
    return tokens
