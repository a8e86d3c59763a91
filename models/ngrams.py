"""n-gram statistics of token streams (d2l §9.2.5, "Word Frequency" and Zipf's law).

Counting is vectorised over integer token keys with numpy and gives exactly the tables
`collections.Counter` gives, in its order: by count, ties by first occurrence. Token keys
are global (a char's byte; a word's letters packed 5 bits each, or a side table for words
longer than 12 letters), so a large file can be counted chunk by chunk and merged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.text import Level, clean

MAX_N = 6
_SPACE = 32
_PACKED_LETTERS = 12  # 12 letters x 5 bits = 60-bit keys
_LONG_WORD = 1 << 62  # longer words (rare): a side-table id above every packed key

Keys = NDArray[np.int64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class NgramEntry:
    tokens: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class NgramTable:
    n: int
    total: int  # n-grams in the text
    unique: int  # distinct n-grams (before min_count)
    entries: list[NgramEntry]


@dataclass(frozen=True)
class ZipfFit:
    """log(count) = intercept - exponent * log(rank), least squares over the table."""

    exponent: float
    intercept: float
    r2: float


@dataclass
class _Counts:
    grams: Keys  # (U, n) token keys
    counts: Ints  # (U,)
    first: Ints  # (U,) stream position of the first occurrence


@dataclass
class _Groups:
    counts: Ints  # (U,) per distinct key, in key order
    first: Ints  # (U,) index of each key's first occurrence
    inverse: Ints  # (M,) index of each element's distinct key


def _group(keys: Ints) -> _Groups:
    """Group equal keys: their counts, first occurrences and each element's group.

    When key and position fit in 63 bits together, one plain sort of (key, position)
    yields all three (a plain sort is several times faster than a stable argsort).
    """
    M = len(keys)
    bits = max(1, (M - 1).bit_length())
    packed_keys = None
    if M and int(keys.min()) >= 0 and int(keys.max()) < 1 << (63 - bits):
        packed = np.sort((keys << bits) | np.arange(M, dtype=np.int64))
        sorted_keys, positions = packed >> bits, packed & ((1 << bits) - 1)
        packed_keys = sorted_keys
    else:
        positions = np.argsort(keys)
        sorted_keys = keys[positions]
    new_group = np.empty(M, dtype=bool)
    new_group[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    inverse = np.empty(M, dtype=np.int64)
    inverse[positions] = np.cumsum(new_group) - 1
    counts = np.diff(np.append(starts, M))
    first = positions[starts]
    if sorted_keys is not packed_keys:  # an unstable sort: find the first occurrences
        first = np.full(len(starts), M, dtype=np.int64)
        np.minimum.at(first, inverse, np.arange(M, dtype=np.int64))
    return _Groups(counts, first, inverse)


def _fold_rows(rows: Keys) -> _Groups:
    """Group the rows of an (M, n) key matrix, folding in one column at a time."""
    groups = _group(rows[:, 0])
    for j in range(1, rows.shape[1]):
        column = _group(rows[:, j])
        groups = _group(groups.inverse * len(column.counts) + column.inverse)
    return groups


class NgramCounter:
    """Counts n-grams for n = 1..max_n over a token stream fed in chunks of cleaned text."""

    CHUNK_TOKENS = 1 << 20  # keeps (rank, id, position) within one int64 while folding

    def __init__(self, level: Level, max_n: int) -> None:
        if not 1 <= max_n <= MAX_N:
            raise ValueError(f"max_n must be in [1, {MAX_N}]")
        self.level = level
        self.max_n = max_n
        self.tokens = 0
        self._tail: Keys = np.empty(0, dtype=np.int64)
        self._long_words: dict[str, int] = {}
        self._counts: dict[int, _Counts] = {}

    def update(self, cleaned: str) -> None:
        """Append a chunk; chunks must split the stream between tokens (words: at spaces)."""
        keys = self._keys(cleaned)
        for i in range(0, len(keys), self.CHUNK_TOKENS):
            self._update_keys(keys[i : i + self.CHUNK_TOKENS])

    def _update_keys(self, keys: Keys) -> None:
        if not len(keys):
            return
        stream = np.concatenate([self._tail, keys])
        offset = self.tokens - len(self._tail)  # stream position of stream[0]
        ids = _group(stream)
        grams = ids
        for n in range(1, self.max_n + 1):
            m = len(stream) - n + 1
            if m <= 0:
                break
            if n > 1:  # the n-gram at i: the (n-1)-gram at i, then the token at i + n - 1
                grams = _group(grams.inverse[:m] * len(ids.counts) + ids.inverse[n - 1 :])
            # Count only the n-grams that end in the new keys; the rest were counted before.
            begin = max(0, len(self._tail) - n + 1)
            counted = _group(grams.inverse[begin:]) if begin else grams
            first = counted.first + begin
            rows = np.stack([stream[first + j] for j in range(n)], axis=1)  # (U, n)
            self._merge(n, _Counts(rows, counted.counts, first + offset))
        self.tokens += len(keys)
        self._tail = (
            stream[max(0, len(stream) - self.max_n + 1) :] if self.max_n > 1 else stream[:0]
        )

    def _merge(self, n: int, new: _Counts) -> None:
        old = self._counts.get(n)
        if old is None:
            self._counts[n] = new
            return
        rows = np.concatenate([old.grams, new.grams])
        groups = _fold_rows(rows)
        counts = np.bincount(
            groups.inverse,
            weights=np.concatenate([old.counts, new.counts]),
            minlength=len(groups.counts),
        ).astype(np.int64)
        first = np.full(len(groups.counts), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, groups.inverse, np.concatenate([old.first, new.first]))
        self._counts[n] = _Counts(rows[groups.first], counts, first)

    def _keys(self, cleaned: str) -> Keys:
        """Token keys: a char's byte; a word's letters packed 5 bits each, or a side-table id."""
        data = np.frombuffer(cleaned.encode("ascii"), dtype=np.uint8)
        if self.level == "char":
            return data.astype(np.int64)
        is_letter = np.empty(len(data) + 2, dtype=np.int8)
        is_letter[0] = is_letter[-1] = 0
        np.not_equal(data, _SPACE, out=is_letter[1:-1].view(bool))
        edges = np.flatnonzero(np.diff(is_letter))
        starts, ends = edges[0::2], edges[1::2]
        lengths = ends - starts
        padded = np.append(data, np.zeros(_PACKED_LETTERS, dtype=np.uint8))
        keys = np.zeros(len(starts), dtype=np.int64)
        for j in range(_PACKED_LETTERS):  # Horner's rule, one letter column at a time
            letter = padded[starts + j].astype(np.int64) - 96
            keys = np.where(j < lengths, (keys << 5) | letter, keys)
        for i in np.flatnonzero(lengths > _PACKED_LETTERS):
            word = cleaned[starts[i] : ends[i]]
            keys[i] = _LONG_WORD | self._long_words.setdefault(word, len(self._long_words))
        return keys

    def _token(self, key: int) -> str:
        if self.level == "char":
            return chr(key)
        if key & _LONG_WORD:
            return next(w for w, i in self._long_words.items() if i == key & ~_LONG_WORD)
        letters = bytearray()
        while key:
            letters.append(96 + (key & 31))
            key >>= 5
        return letters[::-1].decode("ascii")

    def counts(self, n: int) -> Ints:
        """All counts of the n-gram table, largest first."""
        c = self._counts.get(n)
        return np.sort(c.counts)[::-1] if c is not None else np.empty(0, dtype=np.int64)

    def table(self, n: int, top_k: int, min_count: int = 1) -> NgramTable:
        """The `top_k` most frequent n-grams seen at least `min_count` times, Counter's order."""
        if not 1 <= n <= self.max_n:
            raise ValueError(f"n must be in [1, {self.max_n}]")
        c = self._counts.get(n)
        if c is None:
            return NgramTable(n, 0, 0, [])
        total = int(c.counts.sum())
        eligible = np.flatnonzero(c.counts >= min_count)
        if top_k < len(eligible):
            # Everything tied with the k-th count competes on first occurrence.
            kth = np.partition(c.counts[eligible], len(eligible) - top_k)[len(eligible) - top_k]
            eligible = eligible[c.counts[eligible] >= kth]
        order = eligible[np.lexsort((c.first[eligible], -c.counts[eligible]))][:top_k]
        grams = c.grams[order].tolist()
        names = {k: self._token(k) for k in set().union(*grams)} if grams else {}
        entries = [
            NgramEntry(tuple(names[k] for k in gram), count)
            for gram, count in zip(grams, c.counts[order].tolist(), strict=True)
        ]
        return NgramTable(n, total, len(c.counts), entries)


def zipf_fit(counts: Iterable[int]) -> ZipfFit | None:
    """Fit Zipf's law to counts sorted largest first; None with fewer than two ranks."""
    y = np.log(np.asarray(list(counts), dtype=np.float64))
    if len(y) < 2:
        return None
    x = np.log(np.arange(1, len(y) + 1, dtype=np.float64))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    spread = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / spread if spread > 0 else 1.0
    return ZipfFit(float(-slope), float(intercept), r2 if math.isfinite(r2) else 0.0)


def clean_chunks(lines: Iterable[str], chunk_chars: int = 1 << 22) -> Iterator[str]:
    """Clean a stream of lines in chunks whose concatenation is `clean_corpus(text)`.

    Chunks end at line ends, so no word is cut; spaces at the seams are collapsed.
    """
    pending: list[str] = []
    size = 0
    ends_with_space = True  # so the very first chunk is left-stripped
    buffered = ""

    def flush(parts: list[str]) -> Iterator[str]:
        nonlocal ends_with_space, buffered
        text = clean("".join(parts))
        if ends_with_space:
            text = text.lstrip(" ")
        if not text:
            return
        # Hold back a trailing space until we know more text follows.
        if buffered:
            yield buffered
        ends_with_space = text.endswith(" ")
        buffered = text

    for line in lines:
        pending.append(line)
        size += len(line)
        if size >= chunk_chars:
            yield from flush(pending)
            pending, size = [], 0
    yield from flush(pending)
    if buffered.rstrip(" "):
        yield buffered.rstrip(" ")


def count_file(path: Path, level: Level, max_n: int, chunk_chars: int = 1 << 22) -> NgramCounter:
    """Count a text file in bounded memory, streaming it in chunks of lines."""
    counter = NgramCounter(level, max_n)
    with path.open(encoding="utf-8", errors="replace") as f:
        for chunk in clean_chunks(f, chunk_chars):
            counter.update(chunk)
    return counter
