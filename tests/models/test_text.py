import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.text import (
    BYTE_TOKENS,
    LEVELS,
    NORMALIZES,
    UNK,
    TextError,
    TextRule,
    Tokenizer,
    Vocab,
    char_table,
    clean,
    clean_corpus,
    detokenize,
    encode_chars,
    tokenize,
)


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


# --- Rules beyond the book's: normalize none, the byte level --------------------------------

SAMPLE = "The Time Traveller (1898), naïve café: «Ça va?» 東京\n\nTabs\tand  spaces. e\u0301!\n"
RULES = [
    TextRule(normalize, level)  # type: ignore[arg-type]
    for normalize in NORMALIZES
    for level in LEVELS
]


def tokenizer_for(rule: TextRule, text: str) -> Tokenizer:
    vocab = Vocab.of_bytes() if rule.level == "byte" else Vocab.build(rule.split(rule.apply(text)))
    return Tokenizer.for_rule(rule, vocab)


def expected_text(rule: TextRule, text: str) -> str:
    """What decoding a text's ids gives back: the normalized text (book words: joined by
    single spaces, as the book's vocabulary holds no spaces)."""
    normalized = rule.apply(text)
    if rule.normalize == "book" and rule.level == "word":
        return " ".join(normalized.split())
    return normalized


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.normalize}-{r.level}")
def test_every_rule_round_trips_text_it_was_built_on(rule: TextRule) -> None:
    tok = tokenizer_for(rule, SAMPLE)
    encoded = tok.encode(SAMPLE)
    assert encoded.unknown == 0
    assert tok.decode(encoded.ids) == expected_text(rule, SAMPLE)
    detok = tok.detokenizer()
    streamed = "".join(detok.push(i) for i in encoded.ids) + detok.flush()
    if rule.normalize == "book" and rule.level == "word":
        assert streamed == " " + tok.decode(encoded.ids)  # every word brings its space
    else:
        assert streamed == tok.decode(encoded.ids)
    pieces = tok.pieces(encoded.cleaned)
    assert len(pieces) == len(encoded.ids)
    assert "".join(pieces).rstrip(" ") == encoded.cleaned.rstrip(" ")
    assert tok.tokens(encoded.ids) == rule.split(encoded.cleaned)


def test_none_keeps_case_digits_punctuation_newlines_and_composes() -> None:
    rule = TextRule("none", "char")
    assert rule.apply(SAMPLE) == SAMPLE.replace("e\u0301", "\u00e9")
    assert "É" in rule.apply("E\u0301") and len(rule.apply("E\u0301")) == 1
    words = TextRule("none", "word").split("Hello, wörld!\n 1898  ok")
    assert words == ["Hello", ",", " wörld", "!", "\n", " 1898", " ", " ok"]


def test_word_level_unknowns_and_min_freq_under_none() -> None:
    rule = TextRule("none", "word")
    vocab = Vocab.build(rule.split("the cat. the dog. the cat."), min_freq=2)
    assert vocab.idx_to_token == [UNK, ".", " cat", " the"]  # "the" and " dog": once each
    tok = Tokenizer.for_rule(rule, vocab)
    encoded = tok.encode("the cat. the bird.")
    assert encoded.unknown == 2 and tok.decode(encoded.ids) == "<unk> cat. the<unk>."


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=200))
def test_none_round_trips_any_text(text: str) -> None:
    for level in ("char", "word", "byte"):
        rule = TextRule("none", level)  # type: ignore[arg-type]
        tok = tokenizer_for(rule, text)
        ids = tok.encode(text).ids
        assert tok.decode(ids) == unicodedata.normalize("NFC", text)


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=200))
def test_byte_level_takes_any_bytes_and_streams_them_exactly(data: bytes) -> None:
    tok = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    encoded = tok.encode_bytes(data)
    if unicodedata.is_normalized("NFC", data.decode("utf-8", "surrogateescape")):
        assert encoded.ids == list(data)  # every byte kept as it came, valid UTF-8 or not
    assert encoded.unknown == 0
    detok = tok.detokenizer()
    streamed = [detok.push(b) for b in encoded.ids]
    streamed.append(detok.flush())
    assert (
        "".join(streamed)
        == tok.decode(encoded.ids)
        == bytes(encoded.ids).decode("utf-8", "replace")
    )
    for piece in streamed:  # never half a character: every piece is whole text
        assert piece.encode("utf-8").decode("utf-8") == piece


def test_byte_level_on_invalid_utf8() -> None:
    tok = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    data = b"ok \xff\xfe caf\xc3\xa9 \xe2\x82"
    encoded = tok.encode_bytes(data)
    assert encoded.ids == list(data)
    assert encoded.cleaned == "ok \ufffd\ufffd café \ufffd"  # printable: JSON can hold it
    assert tok.decode(encoded.ids) == encoded.cleaned
    assert tok.tokens(encoded.ids)[:4] == ["o", "k", " ", "<0xFF>"]
    assert tok.banned_ids == () and Vocab.of_bytes().unk is None and len(Vocab.of_bytes()) == 256
    assert Vocab.from_json(Vocab.of_bytes().to_json()).idx_to_token == BYTE_TOKENS


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=60) | st.text(max_size=30).map(lambda t: t.encode("utf-8", "replace")))
def test_byte_offsets_place_each_byte_at_its_character(data: bytes) -> None:
    tok = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    text = data.decode("utf-8", "replace")
    counter = tok.text_offsets(start=5)
    offsets = [counter.push(b) - 5 for b in data]
    assert offsets == sorted(offsets) and all(0 <= o < len(text) for o in offsets)
    for b, o in zip(data, offsets, strict=True):
        assert text[o] == "\ufffd" or b in text[o].encode()
        if b < 0x80:
            assert text[o] == chr(b) and tok.logprob_token(b) == chr(b)
        else:
            assert tok.logprob_token(b) == f"bytes:\\x{b:02x}"
    if data.isascii() or text.encode() == data:  # valid UTF-8: the bytes of each character
        assert offsets == [i for i, ch in enumerate(text) for _ in ch.encode()]


def test_byte_offsets_of_cut_off_and_bad_bytes() -> None:
    tok = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    data = b"\xe2\x82a\xff\xc3\xa9\xf0"  # "\ufffda\ufffd\u00e9\ufffd"
    counter = tok.text_offsets()
    assert [counter.push(b) for b in data] == [0, 0, 1, 2, 3, 3, 4]


@pytest.mark.parametrize("level", ["char", "word"])
def test_char_and_word_levels_refuse_invalid_utf8_naming_the_offset(level: str) -> None:
    tok = tokenizer_for(TextRule("none", level), "abc")  # type: ignore[arg-type]
    with pytest.raises(TextError, match="byte offset 5") as err:
        tok.encode_bytes(b"caf\xc3\xa9\xff rest")
    assert err.value.offset == 5


def test_spec_round_trip_and_old_bundles_read_as_book() -> None:
    for rule in RULES:
        assert TextRule.from_spec(rule.spec()) == rule
    old = {"cleanup": "d2l-letters", "level": "char", "line_join": "space"}
    assert TextRule.from_spec(old) == TextRule("book", "char", "space")
    for bad in (
        {"cleanup": "something", "level": "char"},
        {"cleanup": "d2l-letters", "normalize": "none", "level": "char"},
        {"normalize": "nfkc", "level": "char"},
        {"normalize": "none", "level": "subword"},
    ):
        with pytest.raises(ValueError):
            TextRule.from_spec(bad)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.normalize}-{r.level}")
def test_corpus_in_chunks_equals_the_corpus_whole(rule: TextRule) -> None:
    raw = SAMPLE * 5 + "last line without newline"
    lines = raw.splitlines(keepends=True)
    chunks = ["".join(lines[i : i + 3]) for i in range(0, len(lines), 3)]
    assert "".join(rule.apply_chunks(chunks)) == rule.apply_corpus(raw)
    assert TextRule("book", rule.level, "book").apply_corpus(raw) == clean_corpus(raw, "book")


def test_which_stop_strings_and_tokens_a_rule_can_produce() -> None:
    book = tokenizer_for(TextRule("book", "char"), SAMPLE)
    assert book.unproducible("the end") is None
    reason = book.unproducible("The End.")
    assert reason is not None and "'E', 'T', '.'" in reason.replace(
        "'.', 'E', 'T'", "'E', 'T', '.'"
    )
    assert "a-z" in reason
    raw = tokenizer_for(TextRule("none", "char"), SAMPLE)
    assert raw.unproducible("Time.\n") is None and raw.unproducible("€") is not None
    raw_words = tokenizer_for(TextRule("none", "word"), SAMPLE)
    assert raw_words.unproducible("Traveller (") is None and raw_words.unproducible("Q") is not None
    book_words = tokenizer_for(TextRule("book", "word"), SAMPLE)
    assert book_words.unproducible("time traveller") is None
    assert tokenizer_for(TextRule("none", "byte"), "").unproducible("€ anything") is None
    assert book.token_id("t") == book.vocab.token_to_idx["t"]
    with pytest.raises(TextError, match="changes it to 'x'"):
        book.token_id("X")
    with pytest.raises(TextError, match="not a token"):
        book.token_id(UNK)
    byte = tokenizer_for(TextRule("none", "byte"), "")
    assert byte.token_id("<0xE2>") == 0xE2 and byte.token_id("a") == 97


def test_vectorised_char_encoding_equals_the_vocabulary_lookup() -> None:
    rule = TextRule("none", "char")
    vocab = Vocab.build(rule.split(SAMPLE[:40]))
    table = char_table(vocab)
    text = rule.apply(SAMPLE)
    assert encode_chars(text, table).tolist() == vocab.encode(list(text))
    assert encode_chars("plain ascii", table).tolist() == vocab.encode(list("plain ascii"))


# What evaluation harnesses read: each id's text, the start token, the special tokens.


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.normalize}-{r.level}")
def test_id_pieces_are_one_per_id_and_join_to_the_decoded_text(rule: TextRule) -> None:
    tok = tokenizer_for(rule, SAMPLE)
    ids = tok.encode(SAMPLE).ids
    pieces = tok.id_pieces(ids)
    assert len(pieces) == len(ids) and "".join(pieces) == tok.decode(ids)
    assert tok.id_pieces(ids[:1]) == [tok.decode(ids[:1])] and tok.id_pieces([]) == []


@pytest.mark.parametrize(
    ("normalize", "level", "start"),
    [
        ("book", "char", " "),
        ("book", "word", None),
        ("book", "byte", " "),
        ("none", "char", "\n"),
        ("none", "word", "\n"),
        ("none", "byte", "\n"),
    ],
)
def test_start_token_is_what_separates_texts_under_the_rule(normalize, level, start) -> None:
    tok = tokenizer_for(TextRule(normalize, level), SAMPLE)
    assert (None if tok.start_id is None else tok.decode([tok.start_id])) == start


def test_special_ids_are_unk_and_reserved_tokens() -> None:
    rule = TextRule("book", "word")
    vocab = Vocab.build(rule.split(rule.apply(SAMPLE)), reserved_tokens=["<pad>", "<bos>"])
    assert Tokenizer.for_rule(rule, vocab).special_ids == (0, 1, 2)
    assert tokenizer_for(TextRule("none", "char"), SAMPLE + "<>").special_ids == (0,)
    assert tokenizer_for(TextRule("none", "byte"), SAMPLE).special_ids == ()
