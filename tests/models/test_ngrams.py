import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import ngrams
from models.ngrams import MAX_N, NgramCounter, count_file, zipf_fit
from models.text import clean, clean_chunks, clean_corpus

# d2l §9.2.5, printed from the book's corpus.
BOOK_UNIGRAMS = [
    ("the", 2261),
    ("i", 1267),
    ("and", 1245),
    ("of", 1155),
    ("a", 816),
    ("to", 695),
    ("was", 552),
    ("in", 541),
    ("that", 443),
    ("my", 440),
]
BOOK_BIGRAMS = [
    (("of", "the"), 309),
    (("in", "the"), 169),
    (("i", "had"), 130),
    (("i", "was"), 112),
    (("and", "the"), 109),
    (("the", "time"), 102),
    (("it", "was"), 99),
    (("to", "the"), 85),
    (("as", "i"), 78),
    (("of", "a"), 73),
]
BOOK_TRIGRAMS = [
    (("the", "time", "traveller"), 59),
    (("the", "time", "machine"), 30),
    (("the", "medical", "man"), 24),
    (("it", "seemed", "to"), 16),
    (("it", "was", "a"), 15),
    (("here", "and", "there"), 15),
    (("seemed", "to", "me"), 14),
    (("i", "did", "not"), 14),
    (("i", "saw", "the"), 13),
    (("i", "began", "to"), 13),
]


def as_pairs(counter: NgramCounter, n: int, k: int) -> list:
    return [(e.tokens if n > 1 else e.tokens[0], e.count) for e in counter.table(n, k).entries]


def test_the_books_word_tables(book_text: str) -> None:
    counter = NgramCounter("word", 3)
    counter.update(clean_corpus(book_text))
    assert as_pairs(counter, 1, 10) == BOOK_UNIGRAMS
    assert as_pairs(counter, 2, 10) == BOOK_BIGRAMS
    assert as_pairs(counter, 3, 10) == BOOK_TRIGRAMS
    assert counter.table(1, 1).total == 32775


def reference(tokens: list[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


words = st.lists(
    st.sampled_from(
        [
            *("a", "b", "x", "the", "time", "seventy", "nineteen", "traveller"),
            *("internationalisation", "pneumonoultramicroscopicsilicovolcanoconiosis"),
        ]
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(words, st.integers(1, MAX_N), st.integers(1, 50), st.integers(1, 3))
def test_tables_equal_counters_in_counters_order(tokens, n, top_k, min_count) -> None:
    counter = NgramCounter("word", n)
    counter.update(" ".join(tokens))
    ref = reference(tokens, n)
    expected = [(k, c) for k, c in ref.most_common() if c >= min_count][:top_k]
    table = counter.table(n, top_k, min_count)
    assert [(e.tokens, e.count) for e in table.entries] == expected
    assert table.total == sum(ref.values()) and table.unique == len(ref)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab c", max_size=200), st.integers(1, MAX_N), st.integers(1, 7))
def test_chunked_char_counts_equal_one_pass(text, n, pieces) -> None:
    text = clean(text)
    whole = NgramCounter("char", n)
    whole.update(text)
    chunked = NgramCounter("char", n)
    cut = np.linspace(0, len(text), pieces + 1).astype(int)
    for a, b in itertools.pairwise(cut):
        chunked.update(text[a:b])
    ref = reference(list(text), n)
    assert [(e.tokens, e.count) for e in chunked.table(n, 1000).entries] == ref.most_common()
    assert chunked.table(n, 1000) == whole.table(n, 1000)


def test_streaming_a_file_equals_counting_it_whole(book_path, tmp_path) -> None:
    text = book_path.read_text()
    counter = count_file(book_path, "word", 4, chunk_bytes=20_000)
    whole = NgramCounter("word", 4)
    whole.update(clean_corpus(text))
    for n in range(1, 5):
        assert counter.table(n, 300) == whole.table(n, 300)
    assert "".join(clean_chunks(text.splitlines(keepends=True))) == clean_corpus(text)


def test_a_large_vocabulary_renumbers_codes_and_stays_exact() -> None:
    """1500 distinct words: a 6-gram code would outgrow int64 beside the position bits."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(1, 14))) for _ in range(1500)]
    tokens = [vocab[i] for i in rng.zipf(1.2, 4000) % len(vocab)]
    counter = NgramCounter("word", MAX_N)
    counter.update(" ".join(tokens))
    for n in (1, 2, 5, 6):
        ref = reference(tokens, n)
        assert [(e.tokens, e.count) for e in counter.table(n, 100).entries] == ref.most_common(100)


def test_hash_collisions_fall_back_to_exact_grouping(monkeypatch) -> None:
    """With every hash equal, both checked-hash paths notice and still count exactly."""
    for name in ("_MIX", "_MIX2", "_MIX3"):
        monkeypatch.setattr(ngrams, name, np.uint64(0))
    keys = np.array([5, 1 << 62, 5, 3 << 61, 1 << 62, 5], dtype=np.int64)  # wide: hashed
    groups = ngrams._group(keys)
    assert dict(zip(groups.first.tolist(), groups.counts.tolist(), strict=True)) == {
        0: 3,
        1: 2,
        3: 1,
    }
    text = "internationalisation nineteen traveller a traveller travellers a nineteen"
    tokens = text.split(" ")
    counter = NgramCounter("word", 2)
    counter.update(text)
    for n in (1, 2):
        assert as_pairs(counter, n, 10) == [
            (k if n > 1 else k[0], c) for k, c in reference(tokens, n).most_common()
        ]


def test_zipf_fit_recovers_the_exponent() -> None:
    counts = [int(1e6 / r**1.3) for r in range(1, 2000)]
    fit = zipf_fit(counts)
    assert fit is not None and fit.exponent == pytest.approx(1.3, abs=0.01) and fit.r2 > 0.99
    assert zipf_fit([5]) is None


def test_bad_n_is_rejected() -> None:
    with pytest.raises(ValueError):
        NgramCounter("word", MAX_N + 1)
    with pytest.raises(ValueError):
        NgramCounter("word", 2).table(3, 10)
