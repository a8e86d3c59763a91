"""n-gram statistics of token streams (d2l §9.2.5, "Word Frequency" and Zipf's law).

Counting is vectorised over integer token keys with numpy and gives exactly the tables
`collections.Counter` gives, in its order: by count, ties by first occurrence. Token keys
are global (a char's byte; a word of up to 7 letters its bytes as one little-endian
integer; a longer word an id in the counter's side table), so a large file can be counted
chunk by chunk and merged.
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
_SHORT_WORD = 7  # letters that fit one key: 7 ASCII bytes < 2**56
_LONG_WORD = 1 << 62  # longer words: a side-table id above every short word's key
# _LOW_BYTES[k]: the low k bytes of a uint64 (k = 8: all of it).
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it mod 2**64 is a bijection
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX3 = np.uint64(0x165667B19E3779F9)

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
    else:  # wide keys: group by a (63 - bits)-bit hash when no two distinct keys share one
        hashed = ((keys.view(np.uint64) * _MIX) >> np.uint64(bits + 1)).view(np.int64)
        packed = np.sort((hashed << bits) | np.arange(M, dtype=np.int64))
        sorted_hashes, positions = packed >> bits, packed & ((1 << bits) - 1)
        by_key = keys[positions]
        same = sorted_hashes[1:] == sorted_hashes[:-1]
        if np.array_equal(by_key[1:][same], by_key[:-1][same]):
            sorted_keys = packed_keys = sorted_hashes
        else:  # a collision (about 1 in 10**9 per pair of distinct keys): sort the keys
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
        self._long_ids: dict[bytes, int] = {}  # a long word's letters -> its side-table id
        self._long_words: list[str] = []  # side-table id -> word
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
        """Token keys: a char's byte; a short word's bytes as an integer, a long word's id.

        Each word's first 8 bytes are read in one gather through an unaligned uint64 view
        of the text, then cut to the word's length.
        """
        data = np.frombuffer(cleaned.encode("ascii"), dtype=np.uint8)
        if self.level == "char":
            return data.astype(np.int64)
        bounds = np.concatenate(([-1], np.flatnonzero(data == _SPACE), [len(data)]))
        starts, lengths = bounds[:-1] + 1, np.diff(bounds) - 1
        starts, lengths = starts[lengths > 0], lengths[lengths > 0]
        padded = np.zeros(len(data) + 16, dtype=np.uint8)
        padded[: len(data)] = data
        windows = np.ndarray((len(data) + 9,), dtype="<u8", buffer=padded, strides=(1,))
        keys: Keys = (windows[starts] & _LOW_BYTES[np.minimum(lengths, 8)]).view(np.int64)
        long = np.flatnonzero(lengths > _SHORT_WORD)
        if len(long):
            keys[long] = _LONG_WORD | self._long_word_ids(windows, starts[long], lengths[long])
        return keys

    def _long_word_ids(self, windows: NDArray[np.uint64], starts: Ints, lengths: Ints) -> Ints:
        """Side-table ids of long words, new words added in order of first appearance.

        Words up to 24 letters are read as three 8-byte integers and grouped by a hash of
        the three, checked exact (every word of a group equal to its first); longer ones,
        and any chunk where the check fails, one by one.
        """
        ids = np.full(len(starts), -1, dtype=np.int64)
        mid = np.flatnonzero(lengths <= 24)
        if len(mid):
            parts = [
                windows[starts[mid] + 8 * j] & _LOW_BYTES[np.clip(lengths[mid] - 8 * j, 0, 8)]
                for j in range(3)
            ]
            mixed = (parts[0] * _MIX) ^ (parts[1] * _MIX2) ^ (parts[2] * _MIX3)
            groups = _group((mixed >> np.uint64(2)).view(np.int64))
            representative = groups.first[groups.inverse]
            if all(np.array_equal(p, p[representative]) for p in parts):
                distinct_ids = np.empty(len(groups.first), dtype=np.int64)
                for g in np.argsort(groups.first):  # ids in order of first appearance
                    word = b"".join(int(p[groups.first[g]]).to_bytes(8, "little") for p in parts)
                    distinct_ids[g] = self._long_id(word.rstrip(b"\0"))
                ids[mid] = distinct_ids[groups.inverse]
        for i in np.flatnonzero(ids < 0):
            letters = windows[starts[i] + np.arange(0, lengths[i], 8)].tobytes()  # 8 per read
            ids[i] = self._long_id(letters[: lengths[i]])
        return ids

    def _long_id(self, word: bytes) -> int:
        word_id = self._long_ids.setdefault(word, len(self._long_ids))
        if word_id == len(self._long_words):
            self._long_words.append(word.decode("ascii"))
        return word_id

    def _token(self, key: int) -> str:
        if self.level == "char":
            return chr(key)
        if key & _LONG_WORD:
            return self._long_words[key & ~_LONG_WORD]
        return key.to_bytes(8, "little").rstrip(b"\0").decode("ascii")

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
