import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.text import UNK, Tokenizer, Vocab, clean, clean_corpus, detokenize, tokenize


def book_reference(raw: str) -> list[str]:
    """The book's read_time_machine: per-line regex cleanup, stripped, lower-cased."""
    return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in raw.splitlines()]


def test_book_facts(book_text: str) -> None:
    lines = book_reference(book_text)
    assert len(lines) == 3221
    text = clean_corpus(book_text, line_join="book")
    assert text == "".join(lines)
    tokens = tokenize(text, "char")
    assert len(tokens) == 170580
    assert len(Vocab.build(tokens)) == 28


def test_book_join_fuses_words_and_space_join_does_not(book_text: str) -> None:
    book = clean_corpus(book_text, line_join="book")
    spaced = clean_corpus(book_text)
    assert "travelleryou" in book
    assert "travelleryou" not in spaced
    assert spaced == " ".join(line for line in book_reference(book_text) if line)
    assert "  " not in spaced and spaced == spaced.strip()


@given(st.text(max_size=300))
def test_clean_matches_the_book_regex(text: str) -> None:
    assert clean(text) == re.sub("[^A-Za-z]+", " ", text).lower()


def test_clean_keeps_a_prompts_trailing_space() -> None:
    assert clean("Time Traveller, ") == "time traveller "


def test_vocab_unk_is_zero_and_order_is_deterministic() -> None:
    vocab = Vocab.build(list("bbaacd"), reserved_tokens=["<pad>"])
    assert vocab.idx_to_token == [UNK, "<pad>", "a", "b", "c", "d"]  # ties broken by token
    assert vocab.encode(["a", "z"]) == [2, 0]
    assert vocab.decode([3, 0]) == ["b", UNK]


def test_vocab_min_freq_and_json_round_trip() -> None:
    vocab = Vocab.build(["the", "cat", "the", "dog", "the", "cat"], min_freq=2)
    assert vocab.idx_to_token == [UNK, "the", "cat"]
    again = Vocab.from_json(vocab.to_json())
    assert again.idx_to_token == vocab.idx_to_token and again.token_to_idx == vocab.token_to_idx


def test_vocab_rejects_bad_json() -> None:
    import pytest

    for bad in ('{"idx_to_token": ["a"]}', "[1, 2]", '{"idx_to_token": ["<unk>", "a", "a"]}'):
        with pytest.raises(ValueError):
            Vocab.from_json(bad)


def test_word_tokens_and_detokenize() -> None:
    assert tokenize("the time machine", "word") == ["the", "time", "machine"]
    assert detokenize(["the", "time"], "word") == "the time"
    assert detokenize(list("ab c"), "char") == "ab c"


def test_tokenizer_counts_unknown_tokens() -> None:
    tok = Tokenizer(Vocab.build(["the", "time", "machine"]), level="word")
    encoded = tok.encode("The TIME traveller!")
    assert encoded.cleaned == "the time traveller "
    assert encoded.unknown == 1 and encoded.ids[2] == 0
    assert tok.piece(encoded.ids[0]) == " the"


@pytest.mark.parametrize("level", ["char", "word"])
def test_pieces_are_one_per_token_and_join_back(level: str) -> None:
    tok = Tokenizer(Vocab.build(tokenize("the time machine ab", level)), level=level)  # type: ignore[arg-type]
    encoded = tok.encode("  The time-machine!  ")
    pieces = tok.pieces(encoded.cleaned)
    assert len(pieces) == len(encoded.ids)
    assert "".join(pieces) == (encoded.cleaned if level == "char" else encoded.cleaned.rstrip())
    assert tok.decode(encoded.ids) == (encoded.cleaned if level == "char" else "the time machine")


def test_decode_words_and_unknown() -> None:
    tok = Tokenizer(Vocab.build(["the", "time"]), level="word")
    assert tok.decode([1, 2, 0]) == "the time <unk>"


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="aZ ,.\n\u00e9", min_size=1, max_size=200))
def test_long_texts_clean_like_the_book_regex(piece: str) -> None:
    """Texts past 4 kB take the vectorised path."""
    text = piece * (4096 // len(piece) + 1)
    assert len(text.encode()) >= 4096
    assert clean(text) == re.sub("[^A-Za-z]+", " ", text).lower()
