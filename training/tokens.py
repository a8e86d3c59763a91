"""A corpus as a flat file of token ids, built in one streaming pass, read back by windows.

`build_token_file` reads the corpus once, chunk by chunk (models/corpus.py), applies the
rule and writes provisional ids to a scratch file while counting them (`_Provisional`: at
the char level an ASCII chunk is its own ids, one byte each, which is what makes the
common case run at memory speed; see docs/benchmarks.md, "Your own text").
The validation split is the contiguous tail, as for an in-memory run: its counts are taken
off the scratch file's tail, the vocabulary is built from the training counts alone (the
same `Vocab` as `Vocab.build` of the training tokens), and one more pass over the scratch
file writes the final ids (`tokens.npy`, the smallest unsigned dtype that holds them). The
byte level needs neither: bytes are their own ids.

Memory stays bounded by the chunk size whatever the corpus size: nothing holds the whole
text or all its ids, the files are written and read with plain I/O (not mapped, so their
pages never count against the process), and `TokenFile.windows` reads only the rows a
minibatch needs, which is also how a data-parallel rank reads its share of every batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from models.corpus import CHUNK_BYTES, decoding_for, read_chunks
from models.text import TextRule, Tokenizer, Vocab, code_points, utf8_bytes

TOKENS, META = "tokens.npy", "tokens.json"
_IO_TOKENS = 1 << 22  # ids per read or write when remapping
_MAX_CHARS = 1 << 16  # distinct characters the char-level scratch file (uint16) numbers

Progress = Callable[[int], None]  # hears the corpus bytes read so far


class TokenFileError(ValueError):
    """A corpus the token file cannot hold (e.g. more distinct characters than it numbers)."""


def _dtype(vocab_size: int) -> np.dtype[np.unsignedinteger]:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise TokenFileError(f"a vocabulary of {vocab_size} tokens is too large")


def _count(ids: NDArray[np.integer[Any]], size: int) -> NDArray[np.int64]:
    """How often each id in [0, size) occurs: torch's bincount, 3-4x numpy's on one core
    (it counts uint8 without widening them first)."""
    if ids.dtype not in (np.uint8, np.int32, np.int64):  # what torch's bincount takes
        ids = ids.astype(np.int32)
    counted: NDArray[np.int64] = torch.bincount(torch.from_numpy(ids), minlength=size).numpy()
    return counted


class _Scratch:
    """The provisional ids on disk: one byte each while they fit, two bytes once they do
    not (the file written so far is widened once, in blocks)."""

    def __init__(self, path: Path, dtype: type[np.unsignedinteger[Any]]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.file: BinaryIO = path.open("wb")

    def write(self, ids: NDArray[np.integer[Any]] | bytes, largest: int) -> None:
        """Append ids, all below `largest` + 1."""
        if largest > np.iinfo(self.dtype).max:
            self._widen()
        if isinstance(ids, bytes):  # uint8 ids: the bytes as they are
            if self.dtype == np.uint8:
                self.file.write(ids)
                return
            ids = np.frombuffer(ids, dtype=np.uint8)
        ids.astype(self.dtype, copy=False).tofile(self.file)

    def _widen(self) -> None:
        self.file.close()
        wider = self.path.with_name(self.path.name + ".wide")
        with self.path.open("rb") as src, wider.open("wb") as out:
            while len(block := np.fromfile(src, dtype=self.dtype, count=_IO_TOKENS)):
                block.astype(np.uint16).tofile(out)
        os.replace(wider, self.path)
        self.dtype = np.dtype(np.uint16)
        self.file = self.path.open("ab")

    def close(self) -> None:
        self.file.close()


class _Provisional:
    """Tokens -> provisional ids, and their counts.

    Characters: an ASCII character's id is its code point (a chunk of ASCII text is its own
    ids: no lookup), any other character is numbered from 128 in first-seen order. Words:
    first-seen order. Final ids come later from the training counts, so these numbers only
    have to be consistent within the one pass.
    """

    def __init__(self, rule: TextRule) -> None:
        self.rule = rule
        ascii_chars = rule.level == "char"
        self.tokens: list[str] = [chr(c) for c in range(128)] if ascii_chars else []
        self.counts = np.zeros(len(self.tokens), dtype=np.int64)
        self._seen: NDArray[np.int32] | None = None
        if ascii_chars:
            self._seen = np.full(0x110000, -1, dtype=np.int32)
            self._seen[:128] = np.arange(128)
        self._words: dict[str, int] = {}
        self._carry = ""  # a word cut off at a chunk's end waits for the next chunk

    def ids(self, chunk: str, last: bool) -> NDArray[np.integer[Any]] | bytes:
        """A chunk's provisional ids (bytes when it is ASCII text at the char level)."""
        ids: NDArray[np.integer[Any]] | bytes
        counted: NDArray[np.integer[Any]]
        if self.rule.level == "char":
            if chunk.isascii():  # the common case, at memory speed
                ids = chunk.encode("ascii")
                counted = np.frombuffer(bytearray(ids), dtype=np.uint8)
            else:
                ids = counted = self._char_ids(chunk)
        else:
            ids = counted = self._word_ids(chunk, last)
        grown = _count(counted, len(self.tokens))
        grown[: len(self.counts)] += self.counts
        self.counts = grown
        return ids

    def _char_ids(self, chunk: str) -> NDArray[np.int32]:
        assert self._seen is not None
        points = code_points(chunk)
        ids = np.take(self._seen, points)
        if ids.min() < 0:  # characters not seen before: number them by code point
            fresh = np.flatnonzero(np.bincount(points[ids < 0]))
            self._seen[fresh] = np.arange(len(self.tokens), len(self.tokens) + len(fresh))
            self.tokens += [chr(p) for p in fresh.tolist()]
            if len(self.tokens) > _MAX_CHARS:
                raise TokenFileError(
                    f"over {_MAX_CHARS} distinct characters: use --level byte or word"
                )
            ids = np.take(self._seen, points)
        return ids

    def _word_ids(self, chunk: str, last: bool) -> NDArray[np.int64]:
        text = self._carry + chunk
        words = self.rule.split(text)
        self._carry = ""
        if not last and words and not text[-1].isspace():
            self._carry = words.pop()
        table = self._words
        for word in dict.fromkeys(words).keys() - table.keys():
            table[word] = len(self.tokens)
            self.tokens.append(word)
        return np.fromiter(map(table.__getitem__, words), dtype=np.int64, count=len(words))


@dataclass(frozen=True)
class TokenFile:
    """Token ids on disk: the first `n_train` are the training split, the rest validation."""

    path: Path
    tokenizer: Tokenizer
    n_tokens: int
    n_train: int  # where the held-out tail starts
    train_end: int  # training reads [0, train_end): n_train, or fewer with max_tokens
    corpus_sha1: str
    dtype: np.dtype[np.unsignedinteger]
    offset: int  # bytes before the first id (the .npy header)

    @property
    def n_val(self) -> int:
        return self.n_tokens - self.n_train

    def array(self) -> np.memmap[Any, np.dtype[np.unsignedinteger]]:
        """All ids, memory-mapped (read-only): for tools; training reads `windows`."""
        return np.load(self.path, mmap_mode="r")  # type: ignore[no-any-return]

    def windows(self, starts: NDArray[np.int64] | list[int], length: int) -> Tensor:
        """Rows of `length` ids from each start -> (len(starts), length) int64, read with
        one positioned read per row, so only what a minibatch needs is ever in memory."""
        out = np.empty((len(starts), length), dtype=self.dtype)
        size = self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for row, start in enumerate(np.asarray(starts).tolist()):
                if not 0 <= start <= self.n_tokens - length:
                    raise IndexError(f"window {start}+{length} is outside {self.n_tokens} ids")
                data = os.pread(fd, length * size, self.offset + start * size)
                out[row] = np.frombuffer(data, dtype=self.dtype)
        finally:
            os.close(fd)
        return torch.from_numpy(out.astype(np.int64))

    def read(self, start: int, stop: int) -> Tensor:
        """Ids [start, stop) as one int64 tensor."""
        if stop <= start:
            return torch.empty(0, dtype=torch.long)
        return self.windows([start], stop - start)[0]

    def train(self) -> TokenSpan:
        return TokenSpan(self, 0, self.train_end)

    def val(self) -> TokenSpan:
        return TokenSpan(self, self.n_train, self.n_tokens)


@dataclass(frozen=True)
class TokenSpan:
    """Ids [start, stop) of a token file, read by windows: a split to train or score on."""

    file: TokenFile
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def windows(self, starts: NDArray[np.int64] | list[int], length: int) -> Tensor:
        starts = np.asarray(starts, dtype=np.int64)
        if len(starts) and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"a window of {length} ids falls outside the span of {len(self)}")
        return self.file.windows(starts + self.start, length)

    def tensor(self) -> Tensor:
        """The whole span in memory (small corpora: the fastest to train from)."""
        return self.file.read(self.start, self.stop)

    def chunks(self, size: int) -> Iterator[tuple[int, Tensor]]:
        """(offset in the span, ids) of consecutive pieces of at most `size` ids."""
        for a in range(0, len(self), size):
            yield a, self.file.read(self.start + a, min(self.stop, self.start + a + size))


def _write_header(out: BinaryIO, dtype: np.dtype[np.unsignedinteger], n: int) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    np.lib.format.write_array_header_1_0(out, header)


def _remap(
    src: BinaryIO,
    dest: BinaryIO,
    dtype: np.dtype[np.unsignedinteger],
    remap: NDArray[np.unsignedinteger[Any]],
) -> None:
    """Provisional ids to final ids, block by block; byte ids to byte ids by
    `bytes.translate` (memory speed), others by one table lookup."""
    if dtype == np.uint8 and remap.dtype == np.uint8:
        table = bytes(remap.tolist()) + bytes(256 - len(remap))
        while block := src.read(_IO_TOKENS):
            dest.write(block.translate(table))
        return
    while len(ids := np.fromfile(src, dtype=dtype, count=_IO_TOKENS)):
        np.take(remap, ids).tofile(dest)


def build_token_file(
    corpus: Path,
    rule: TextRule,
    out_dir: Path,
    *,
    min_freq: int = 0,
    reserved_tokens: Sequence[str] = (),
    val_frac: float = 0.1,
    max_train: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
    progress: Progress | None = None,
) -> TokenFile:
    """Stream `corpus` once into `out_dir/tokens.npy` (and `tokens.json`, its vocabulary
    and split); see the module docstring. `max_train` > 0 trains on (and builds the
    vocabulary from) only the first that many tokens; the held-out tail stays the same."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / TOKENS
    scratch = out_dir / ".tokens.scratch"
    digest = hashlib.sha1()
    read = 0

    def count(block: bytes) -> None:
        nonlocal read
        digest.update(block)
        read += len(block)
        if progress is not None:
            progress(read)

    provisional = _Provisional(rule)
    n = 0
    out = _Scratch(scratch, np.uint8 if rule.level != "word" else np.uint32)
    try:
        raw = read_chunks(corpus, decoding_for(rule), chunk_bytes, on_bytes=count)
        chunks = rule.apply_chunks(raw)
        pending = next(chunks, None)
        while pending is not None:
            following = next(chunks, None)
            if rule.level == "byte":
                data = utf8_bytes(pending)
                out.write(data, 255)
                n += len(data)
            else:
                ids = provisional.ids(pending, last=following is None)
                out.write(ids, len(provisional.tokens) - 1)
                n += len(ids)
            pending = following
    finally:
        out.close()
    scratch_dtype = out.dtype
    n_val = round(n * val_frac)
    n_train = n - n_val
    train_end = min(n_train, max_train) if max_train else n_train
    if rule.level == "byte":
        vocab = Vocab.of_bytes()
        dtype = np.dtype(np.uint8)
        with final.open("wb") as dest, scratch.open("rb") as src:
            _write_header(dest, dtype, n)
            shutil.copyfileobj(src, dest, 1 << 24)
    else:
        unused = np.zeros(len(provisional.tokens), dtype=np.int64)  # counts past train_end
        with scratch.open("rb") as src:
            src.seek(train_end * scratch_dtype.itemsize)
            while len(block := np.fromfile(src, dtype=scratch_dtype, count=_IO_TOKENS)):
                unused += _count(block, len(unused))
        train_counts = provisional.counts - unused
        vocab = Vocab.from_counts(
            {t: c for t, c in zip(provisional.tokens, train_counts.tolist(), strict=True) if c},
            min_freq,
            reserved_tokens,
        )
        dtype = _dtype(len(vocab))
        remap = np.array([vocab.token_to_idx.get(t, 0) for t in provisional.tokens], dtype=dtype)
        with final.open("wb") as dest, scratch.open("rb") as src:
            _write_header(dest, dtype, n)
            _remap(src, dest, scratch_dtype, remap)
    scratch.unlink()
    sha1 = digest.hexdigest()
    meta = {
        "rule": rule.spec(),
        "min_freq": min_freq,
        "val_frac": val_frac,
        "n_tokens": n,
        "n_train": n_train,
        "train_end": train_end,
        "corpus_sha1": sha1,
        "idx_to_token": vocab.idx_to_token,
    }
    (out_dir / META).write_text(json.dumps(meta, ensure_ascii=False))
    return open_token_file(out_dir)


def open_token_file(out_dir: Path) -> TokenFile:
    meta = json.loads((out_dir / META).read_text())
    rule = TextRule.from_spec(meta["rule"])
    tokenizer = Tokenizer.for_rule(rule, Vocab(meta["idx_to_token"]))
    array = np.load(out_dir / TOKENS, mmap_mode="r")
    return TokenFile(
        out_dir / TOKENS,
        tokenizer,
        int(meta["n_tokens"]),
        int(meta["n_train"]),
        int(meta["train_end"]),
        meta["corpus_sha1"],
        array.dtype,
        int(array.offset),
    )
