"""n-gram statistics of token streams (d2l §9.2.5, "Word Frequency" and Zipf's law).

Counting is vectorised over integer token keys with numpy and gives exactly the tables
`collections.Counter` gives, in its order: by count, ties by first occurrence. Token keys
are global (a char's byte; a word of up to 8 letters its letters at 5 bits each, which
keeps every key under 2**41 so a key and its position share one int64 in a plain sort; a
longer word an id in the counter's side table), so a large file can be counted chunk by
chunk and merged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from models.corpus import CHUNK_BYTES, read_chunks
from models.text import clean_chunks

MAX_N = 6
_SPACE = 32
_SHORT_WORD = 8  # letters that fit one key, 5 bits each
_LONG_WORD = 1 << (5 * _SHORT_WORD)  # longer words: a side-table id above every short key
_LONG_PARTS = 3  # long words of up to 3 x 8 letters are grouped vectorised
# _LOW_BYTES[k]: the low k bytes of a uint64 (k = 8: all of it).
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
# Each step moves every odd field of a lane down to meet the even one.
_PACK_STEPS = [
    (np.uint64(0x001F001F001F001F), np.uint64(0x1F001F001F001F00), np.uint64(3)),
    (np.uint64(0x000003FF000003FF), np.uint64(0x03FF000003FF0000), np.uint64(6)),
    (np.uint64(0x00000000000FFFFF), np.uint64(0x000FFFFF00000000), np.uint64(12)),
]
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it mod 2**64 is a bijection
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX3 = np.uint64(0x165667B19E3779F9)

NgramLevel = Literal["char", "word"]  # counted after the book's cleanup
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
    positions: Ints  # (M,) element indices in (key, index) order


def _position_bits(m: int) -> int:
    return max(1, (m - 1).bit_length())


def _group(keys: Ints) -> _Groups:
    """Group equal keys: their counts and first occurrences.

    When key and position fit in 63 bits together, one plain sort of (key, position)
    yields both (a plain sort is about 10x faster than a stable argsort).
    """
    M = len(keys)
    bits = _position_bits(M)
    if M and int(keys.min()) >= 0 and int(keys.max()) < 1 << (63 - bits):
        packed = np.sort((keys << bits) | np.arange(M, dtype=np.int64))
        sorted_keys, positions = packed >> bits, packed & ((1 << bits) - 1)
    else:  # wide keys: group by a (63 - bits)-bit hash when no two distinct keys share one
        hashed = ((keys.view(np.uint64) * _MIX) >> np.uint64(bits + 1)).view(np.int64)
        packed = np.sort((hashed << bits) | np.arange(M, dtype=np.int64))
        sorted_keys, positions = packed >> bits, packed & ((1 << bits) - 1)
        by_key = keys[positions]
        same = sorted_keys[1:] == sorted_keys[:-1]
        if not np.array_equal(by_key[1:][same], by_key[:-1][same]):
            # A collision (about 1 in 10**9 per pair of distinct keys): sort the keys.
            positions = np.argsort(keys, kind="stable")
            sorted_keys = keys[positions]
    new_group = np.empty(M, dtype=bool)
    new_group[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    return _Groups(np.diff(np.append(starts, M)), positions[starts], positions)


def _dense_ids(keys: Ints) -> tuple[_Groups, Ints]:
    """Group equal keys, and number each element by its group (0 .. groups - 1)."""
    groups = _group(keys)
    ids = np.empty(len(keys), dtype=np.int64)
    ids[groups.positions] = np.repeat(np.arange(len(groups.counts)), groups.counts)
    return groups, ids


def _fold_rows(rows: Keys) -> tuple[_Groups, Ints]:
    """Group the rows of an (M, n) key matrix, folding in one column at a time."""
    groups, ids = _dense_ids(rows[:, 0])
    for j in range(1, rows.shape[1]):
        column, column_ids = _dense_ids(rows[:, j])
        groups, ids = _dense_ids(ids * len(column.counts) + column_ids)
    return groups, ids


def _pack_letters(words: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Squeeze 8 bytes of 5-bit letters (a = 1, zero-padded) into 40 bits, in place."""
    high = np.empty_like(words)
    for low_mask, high_mask, shift in _PACK_STEPS:  # 8 -> 4 -> 2 -> 1 fields
        np.bitwise_and(words, high_mask, out=high)
        high >>= shift
        words &= low_mask
        words |= high
    return words


class NgramCounter:
    """Counts n-grams for n = 1..max_n over a token stream fed in chunks of cleaned text."""

    CHUNK_TOKENS = 1 << 20  # two dense ids side by side (< 2**40) fit beside a position

    def __init__(self, level: NgramLevel, max_n: int) -> None:
        if not 1 <= max_n <= MAX_N:
            raise ValueError(f"max_n must be in [1, {MAX_N}]")
        self.level = level
        self.max_n = max_n
        self.tokens = 0
        self._tail: Keys = np.empty(0, dtype=np.int64)
        self._long_ids: dict[str, int] = {}  # a long word -> its side-table id
        self._long_words: list[str] = []  # side-table id -> word
        self._counts: dict[int, _Counts] = {}

    def update(self, cleaned: str) -> None:
        """Append a chunk; chunks must split the stream between tokens (words: at spaces)."""
        keys = self._keys(cleaned)
        for i in range(0, len(keys), self.CHUNK_TOKENS):
            self._update_keys(keys[i : i + self.CHUNK_TOKENS])

    def _update_keys(self, keys: Keys) -> None:
        """Count the n-grams that end in `keys`.

        Each n-gram is coded exactly as one integer, code(n) = code(n - 1) * V + id(last
        token) over the chunk's V distinct tokens, so no order but the first needs each
        position's group number; when a code would outgrow the bits left beside the
        position, the (n - 1)-gram codes are renumbered densely first.
        """
        if not len(keys):
            return
        stream = np.concatenate([self._tail, keys])
        offset = self.tokens - len(self._tail)  # stream position of stream[0]
        limit = 1 << (63 - _position_bits(len(stream)))
        unigrams, ids = _dense_ids(stream)
        vocab = len(unigrams.counts)
        codes, distinct = ids, vocab  # each position's (n-1)-gram code, all below `distinct`
        for n in range(1, self.max_n + 1):
            m = len(stream) - n + 1
            if m <= 0:
                break
            if n > 1:
                if distinct * vocab > limit:
                    grouped, codes = _dense_ids(codes)
                    distinct = len(grouped.counts)
                codes, distinct = codes[:m] * vocab + ids[n - 1 :], distinct * vocab
            # Count only the n-grams that end in the new keys; the rest were counted before.
            begin = max(0, len(self._tail) - n + 1)
            counted = unigrams if n == 1 and not begin else _group(codes[begin:])
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
        groups, ids = _fold_rows(rows)
        counts = np.bincount(
            ids, weights=np.concatenate([old.counts, new.counts]), minlength=len(groups.counts)
        ).astype(np.int64)
        first = np.full(len(groups.counts), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, ids, np.concatenate([old.first, new.first]))
        self._counts[n] = _Counts(rows[groups.first], counts, first)

    def _keys(self, cleaned: str) -> Keys:
        """Token keys: a char's byte; a short word's letters, 5 bits each; a long word's id.

        Each word's first 8 bytes are read in one gather through an unaligned uint64 view
        of the text, then cut to the word's length.
        """
        data = np.frombuffer(cleaned.encode("ascii"), dtype=np.uint8)
        if self.level == "char":
            return data.astype(np.int64)
        spaces = np.flatnonzero(data == _SPACE)
        starts = np.concatenate(([0], spaces + 1))
        lengths = np.concatenate((spaces, [len(data)])) - starts
        if len(lengths) and not lengths.all():  # runs of spaces, or spaces at the ends
            starts, lengths = starts[lengths > 0], lengths[lengths > 0]
        padded = np.zeros(len(data) + 8 * _LONG_PARTS, dtype=np.uint8)
        np.bitwise_and(data, 31, out=padded[: len(data)])  # a-z -> 1..26, space -> 0
        windows = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
        words = windows[starts]
        words &= _LOW_BYTES[np.minimum(lengths, 8)]
        keys: Keys = _pack_letters(words).view(np.int64)
        long = np.flatnonzero(lengths > _SHORT_WORD)
        if len(long):
            ids = self._long_word_ids(cleaned, windows, starts[long], lengths[long])
            keys[long] = _LONG_WORD | ids
        return keys

    def _long_word_ids(
        self, cleaned: str, windows: NDArray[np.uint64], starts: Ints, lengths: Ints
    ) -> Ints:
        """Side-table ids of long words, new words added in order of first appearance.

        Words up to 24 letters are read as three 8-byte integers and grouped by a hash of
        the three, checked exact (every word of a group equal to its first); so only the
        distinct words meet Python. Longer ones, and any chunk where the check fails, are
        looked up one by one.
        """
        ids = np.full(len(starts), -1, dtype=np.int64)
        vectorised = np.flatnonzero(lengths <= 8 * _LONG_PARTS)
        if len(vectorised):
            s, n = starts[vectorised], lengths[vectorised]
            parts = [windows[s + 8 * j] & _LOW_BYTES[np.clip(n - 8 * j, 0, 8)] for j in range(3)]
            mixed = (parts[0] * _MIX) ^ (parts[1] * _MIX2) ^ (parts[2] * _MIX3)
            groups, group_ids = _dense_ids((mixed >> np.uint64(1)).view(np.int64))
            representative = groups.first[group_ids]
            if all(np.array_equal(p, p[representative]) for p in parts):
                order = np.argsort(groups.first)  # ids in order of first appearance
                firsts = groups.first[order]
                distinct = np.empty(len(order), dtype=np.int64)
                distinct[order] = [
                    self._long_id(cleaned[a : a + b])
                    for a, b in zip(s[firsts].tolist(), n[firsts].tolist(), strict=True)
                ]
                ids[vectorised] = distinct[group_ids]
        rest = np.flatnonzero(ids < 0)
        for i, a, b in zip(
            rest.tolist(), starts[rest].tolist(), lengths[rest].tolist(), strict=True
        ):
            ids[i] = self._long_id(cleaned[a : a + b])
        return ids

    def _long_id(self, word: str) -> int:
        word_id = self._long_ids.setdefault(word, len(self._long_ids))
        if word_id == len(self._long_words):
            self._long_words.append(word)
        return word_id

    def _tokens(self, keys: Keys) -> list[str]:
        """The tokens `keys` stand for, short words unpacked together."""
        if self.level == "char":
            return [chr(k) for k in keys.tolist()]
        long = np.flatnonzero(keys & _LONG_WORD)
        # (K, 9): 8 letters, then a zero so that no two words run together
        fields = (keys[:, None] >> np.arange(0, 5 * _SHORT_WORD + 5, 5)) & 31
        fields[:, -1] = 0
        fields[long] = [1] + [0] * _SHORT_WORD  # a placeholder letter, replaced below
        words = np.where(fields > 0, fields + 96, _SPACE).astype(np.uint8).tobytes().split()
        tokens = [w.decode("ascii") for w in words]
        for i, key in zip(long.tolist(), keys[long].tolist(), strict=True):
            tokens[i] = self._long_words[key & ~_LONG_WORD]
        return tokens

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
        tokens = self._tokens(c.grams[order].ravel())
        entries = [
            NgramEntry(tuple(tokens[i * n : i * n + n]), count)
            for i, count in enumerate(c.counts[order].tolist())
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


def count_file(
    path: Path, level: NgramLevel, max_n: int, chunk_bytes: int = CHUNK_BYTES
) -> NgramCounter:
    """Count a text file cleaned by the book's rule in bounded memory, chunk by chunk."""
    counter = NgramCounter(level, max_n)
    for chunk in clean_chunks(read_chunks(path, "replace", chunk_bytes)):
        counter.update(chunk)
    return counter
