"""How text becomes tokens: a bundle's rule and vocabulary (d2l §8.2, grown up).

A rule has two parts, both recorded in the bundle (config.json `tokenizer`):

* `normalize`: `book` is the book's cleanup (every run of non-letters becomes one space,
  the text is lower-cased: only `a-z` and the space survive); `none` keeps the text as it
  is after Unicode NFC composition (case, digits, punctuation, newlines, any letter).
* `level`: `char` (one token per character), `word` or `byte` (one token per UTF-8 byte:
  a fixed vocabulary of all 256 bytes, so nothing is ever `<unk>` and any byte string,
  valid UTF-8 or not, can be scored).

Words under `book` are the space-separated runs (the spaces are implied between them, as
in the book). Words under `none` carry their own leading space (` ?\\w+`, ` ?` and one
punctuation mark, or one whitespace character), so tokens join back to the exact text.

For corpora under `book`, `line_join` says how lines meet: the book cleans line by line
and concatenates the lines with nothing between them (`book`), which fuses words across
line breaks ("traveller" + "you"); the default (`space`) keeps a space there instead.
Under `none` the line breaks are part of the text and `line_join` plays no part.
"""

from __future__ import annotations

import codecs
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Normalize = Literal["book", "none"]
Level = Literal["char", "word", "byte"]
LineJoin = Literal["space", "book"]
NORMALIZES: tuple[Normalize, ...] = ("book", "none")
LEVELS: tuple[Level, ...] = ("char", "word", "byte")
LINE_JOINS: tuple[LineJoin, ...] = ("space", "book")
UNK = "<unk>"
BOOK_CLEANUP = "d2l-letters"  # how bundles written before `normalize` named the book's rule

# A byte's token text: ASCII bytes are their character, the others `<0xNN>` (as the byte
# fallback of SentencePiece vocabularies shows them).
BYTE_TOKENS = [chr(b) if b < 0x80 else f"<0x{b:02X}>" for b in range(256)]

# Bytes to lower-case letters or a space. Every byte of a multi-byte UTF-8 character is
# >= 0x80 and maps to a space, as the book's `[^A-Za-z]+` treats non-ASCII characters.
_TO_LETTER_OR_SPACE = bytes(
    b + 32 if 65 <= b <= 90 else b if 97 <= b <= 122 else 32 for b in range(256)
)
_SPACES = re.compile(rb"  +")
_WORD_WITH_SPACE = re.compile(r" *[^ ]+")
_RAW_WORD = re.compile(r" ?\w+| ?[^\w\s]|\s")
_UNICODE_MAX = 0x110000

Ids = NDArray[np.int64]


class TextError(ValueError):
    """Input a rule cannot take (not UTF-8 under a char or word rule, a lone surrogate).

    `offset` is the byte offset of the first bad byte when the input was bytes.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


def clean(text: str) -> str:
    """Apply the book's rule to a span of text: non-letter runs to one space, lower-case.

    Edges are kept, so a prompt's trailing space survives ("time traveller "). Equivalent
    to `re.sub("[^A-Za-z]+", " ", text).lower()`, several times faster.
    """
    data = text.encode("utf-8", "surrogatepass").translate(_TO_LETTER_OR_SPACE)
    if len(data) < 4096:
        return _SPACES.sub(b" ", data).decode("ascii")
    # Long texts: drop every space that follows a space, vectorised (10x the regex's speed).
    chars = np.frombuffer(data, dtype=np.uint8)
    keep = np.empty(len(chars), dtype=bool)
    keep[0] = True
    np.logical_or(chars[1:] != 32, chars[:-1] != 32, out=keep[1:])
    return chars[keep].tobytes().decode("ascii")


def clean_corpus(raw: str, line_join: LineJoin = "space") -> str:
    """Clean a whole corpus file's text into one string of `a-z` and single spaces."""
    if line_join == "book":
        return "".join(clean(line).strip() for line in raw.splitlines())
    if line_join == "space":
        return clean(raw).strip()
    raise ValueError(f"line_join must be one of {LINE_JOINS}, got {line_join!r}")


def clean_chunks(chunks: Iterable[str], line_join: LineJoin = "space") -> Iterator[str]:
    """Clean a corpus given in pieces that end at line ends: the pieces' concatenation is
    `clean_corpus` of the whole text (spaces at the seams collapsed, both ends stripped).
    """
    if line_join == "book":
        for chunk in chunks:
            if text := "".join(clean(line).strip() for line in chunk.splitlines()):
                yield text
        return
    ends_with_space = True  # so the very first piece is left-stripped
    held = ""  # the last piece, held until we know whether more text follows it
    for chunk in chunks:
        text = clean(chunk)
        if ends_with_space:
            text = text.lstrip(" ")
        if not text:
            continue
        if held:
            yield held
        ends_with_space = text.endswith(" ")
        held = text
    if held.rstrip(" "):
        yield held.rstrip(" ")


def tokenize(text: str, level: Level) -> list[str]:
    """Split text cleaned by the book's rule into characters or space-separated words."""
    if level == "char":
        return list(text)
    if level == "word":
        return text.split()
    raise ValueError(f"level must be 'char' or 'word' for the book's rule, got {level!r}")


def detokenize(tokens: Iterable[str], level: Level) -> str:
    """Inverse of `tokenize` on cleaned text."""
    return ("" if level == "char" else " ").join(tokens)


def decode_utf8(data: bytes, level: Level) -> str:
    """Bytes to text for a rule. The byte level takes anything (undecodable bytes are kept
    as surrogate escapes and encode back to themselves); char and word levels need UTF-8.

    Raises:
        TextError: not UTF-8, with the offset of the first bad byte.
    """
    if level == "byte":
        return data.decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextError(
            f"not UTF-8 at byte offset {exc.start} (byte 0x{data[exc.start]:02X}); "
            "a char or word model reads UTF-8 text only (a byte model takes any bytes)",
            offset=exc.start,
        ) from exc


def utf8_bytes(text: str) -> bytes:
    """The UTF-8 bytes of text, surrogate escapes from `decode_utf8` back to their bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise TextError(
            f"lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start}"
        ) from exc


def printable(text: str) -> str:
    """Text safe to show (and to put in JSON): undecodable bytes as U+FFFD."""
    if text.isascii():
        return text
    return utf8_bytes(text).decode("utf-8", "replace")


@dataclass(frozen=True)
class TextRule:
    """How raw text becomes a token stream, before any vocabulary exists."""

    normalize: Normalize = "book"
    level: Level = "char"
    line_join: LineJoin = "space"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("normalize", self.normalize, NORMALIZES),
            ("level", self.level, LEVELS),
            ("line_join", self.line_join, LINE_JOINS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    def apply(self, text: str) -> str:
        """Normalize a span of text (a prompt, a line): edges kept."""
        return clean(text) if self.normalize == "book" else unicodedata.normalize("NFC", text)

    def apply_corpus(self, raw: str) -> str:
        """Normalize a whole corpus; `book` also strips the ends and joins the lines."""
        return "".join(self.apply_chunks([raw]))

    def apply_chunks(self, chunks: Iterable[str]) -> Iterator[str]:
        """`apply_corpus` of a text given in pieces that end at line ends (or before an
        ASCII character), piece by piece, in bounded memory."""
        if self.normalize == "book":
            yield from clean_chunks(chunks, self.line_join)
            return
        for chunk in chunks:
            yield unicodedata.normalize("NFC", chunk)

    def split(self, text: str) -> list[str]:
        """Normalized text to its tokens' text (a byte's token text: `BYTE_TOKENS`)."""
        if self.level == "char":
            return list(text)
        if self.level == "byte":
            return [BYTE_TOKENS[b] for b in utf8_bytes(text)]
        return text.split() if self.normalize == "book" else _RAW_WORD.findall(text)

    def spec(self) -> dict[str, str]:
        """The rule as a bundle's config.json records it."""
        spec: dict[str, str] = {
            "normalize": self.normalize,
            "level": self.level,
            "line_join": self.line_join,
        }
        if self.normalize == "book":
            spec["cleanup"] = BOOK_CLEANUP  # what readers from before `normalize` look for
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TextRule:
        """Read a bundle's rule; bundles from before `normalize` name the book's rule as
        `"cleanup": "d2l-letters"`."""
        cleanup = spec.get("cleanup")
        if cleanup is not None and cleanup != BOOK_CLEANUP:
            raise ValueError(f"unknown cleanup {cleanup!r} (known: {BOOK_CLEANUP!r})")
        normalize = spec.get("normalize", "book")
        if cleanup is not None and normalize != "book":
            raise ValueError(f"cleanup {cleanup!r} contradicts normalize {normalize!r}")
        return cls(normalize, spec["level"], spec.get("line_join", "space"))

    def describe(self) -> str:
        """One phrase a user reads in an error message."""
        if self.normalize == "book":
            what = "normalize book: lower-case a-z and single spaces only"
        else:
            what = "normalize none: the text as given, after NFC"
        return f"{what}, {self.level} level"


@dataclass
class Vocab:
    """Token <-> index map with `<unk>` fixed at 0, then reserved tokens, then by frequency.

    Ties in frequency are broken by the token itself, so the same text always gives the
    same indices (the book's order depends on first occurrence and on `sorted`'s input).
    The byte vocabulary (`Vocab.of_bytes()`) is the exception: all 256 bytes, index = byte,
    and no `<unk>` because no byte is ever unknown.
    """

    idx_to_token: list[str]
    token_to_idx: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.idx_to_token or (
            self.idx_to_token[0] != UNK and self.idx_to_token != BYTE_TOKENS
        ):
            raise ValueError(f"vocabulary must start with {UNK!r} (or be the 256 bytes)")
        if len(set(self.idx_to_token)) != len(self.idx_to_token):
            raise ValueError("vocabulary has duplicate tokens")
        self.token_to_idx = {tok: i for i, tok in enumerate(self.idx_to_token)}

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        min_freq: int = 0,
        reserved_tokens: Sequence[str] = (),
    ) -> Vocab:
        """Count `tokens` and keep those seen at least `min_freq` times."""
        return cls.from_counts(Counter(tokens), min_freq, reserved_tokens)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], min_freq: int = 0, reserved_tokens: Sequence[str] = ()
    ) -> Vocab:
        """The vocabulary of tokens counted elsewhere (a corpus streamed in chunks); tokens
        with a count of 0 are not kept."""
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        special = [UNK, *(t for t in reserved_tokens if t != UNK)]
        floor = max(1, min_freq)
        return cls([*special, *(t for t, c in ranked if c >= floor and t not in special)])

    @classmethod
    def of_bytes(cls) -> Vocab:
        return cls(list(BYTE_TOKENS))

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int | None:
        """The index of `<unk>` (0), or None for the byte vocabulary."""
        return 0 if self.idx_to_token[0] == UNK else None

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Map tokens to indices; unknown tokens map to `<unk>` (0)."""
        get = self.token_to_idx.get
        return [get(t, 0) for t in tokens]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.idx_to_token[i] for i in indices]

    def to_json(self) -> str:
        return json.dumps({"idx_to_token": self.idx_to_token}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data: Any = json.loads(text)
        tokens = data.get("idx_to_token") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("vocab JSON needs a list of strings under 'idx_to_token'")
        return cls(tokens)


@dataclass(frozen=True)
class Encoded:
    cleaned: str  # the text after the rule, as the model reads it (printable)
    ids: list[int]
    unknown: int  # tokens the vocabulary lacks (mapped to <unk>)


class Detokenizer(Protocol):
    """One sequence's text, token by token: what each new token makes final.

    The pieces `push` returns, then `flush`, join to exactly the decoded text; at the byte
    level a piece never ends inside a UTF-8 character (bytes wait for the rest of it).
    `copy.copy` of one is an independent detokenizer in the same place (beam search).
    """

    def push(self, idx: int) -> str: ...

    def flush(self) -> str: ...


class _PieceDetokenizer:
    """Char and word levels: every token's text is final at once."""

    def __init__(self, pieces: Sequence[str]) -> None:
        self._pieces = pieces

    def push(self, idx: int) -> str:
        return self._pieces[idx]

    def __copy__(self) -> _PieceDetokenizer:
        return self  # nothing to copy: every token's text is final at once

    def flush(self) -> str:
        return ""


class _ByteDetokenizer:
    """Byte level: UTF-8 decoded incrementally; a bad or cut-off sequence reads U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, idx: int) -> str:
        return self._decoder.decode(bytes((idx,)))

    def __copy__(self) -> _ByteDetokenizer:
        """An independent decoder holding the same pending bytes (beam search extends a
        row several ways)."""
        other = _ByteDetokenizer()
        other._decoder.setstate(self._decoder.getstate())
        return other

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class TextOffsets(Protocol):
    """Where each token of one sequence starts in its decoded text, token by token."""

    def push(self, idx: int) -> int: ...


class _PieceOffsets:
    """Char and word levels: a token starts where the text before it ends."""

    def __init__(self, pieces: Sequence[str], start: int) -> None:
        self._pieces, self._at = pieces, start

    def push(self, idx: int) -> int:
        at = self._at
        self._at += len(self._pieces[idx])
        return at


class _ByteOffsets:
    """Byte level: the offset, in decoded characters, of the character a byte belongs to.

    Every byte of a multi-byte character gets that character's offset, so offsets count
    characters of the text, never bytes (as OpenAI's `text_offset` does for tokens that
    split a character). Bytes that do not decode read as U+FFFD, as in the text itself.
    """

    def __init__(self, start: int) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._at = start

    def push(self, idx: int) -> int:
        self._at += len(self._decoder.decode(bytes((idx,))))
        pending = bool(self._decoder.getstate()[0])
        # A byte still waiting for the rest of its character belongs to the next character;
        # otherwise it ended the last one decoded (itself, or a character it completed).
        return self._at if pending else self._at - 1


@dataclass(frozen=True)
class Tokenizer:
    """A bundle's text pipeline: its rule (normalize, level, line_join) and vocabulary."""

    vocab: Vocab
    level: Level = "char"
    line_join: LineJoin = "space"
    normalize: Normalize = "book"

    def __post_init__(self) -> None:
        if (self.level == "byte") != (self.vocab.idx_to_token == BYTE_TOKENS):
            raise ValueError("the byte level goes with the 256-byte vocabulary, and only it")

    @cached_property
    def rule(self) -> TextRule:
        return TextRule(self.normalize, self.level, self.line_join)

    @classmethod
    def for_rule(cls, rule: TextRule, vocab: Vocab) -> Tokenizer:
        return cls(vocab, rule.level, rule.line_join, rule.normalize)

    def spec(self) -> dict[str, str]:
        return self.rule.spec()

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Ids generation never emits: `<unk>` (the byte vocabulary has none)."""
        unk = self.vocab.unk
        return () if unk is None else (unk,)

    def encode(self, text: str) -> Encoded:
        """Apply the rule, then map tokens to ids (unknown ones to `<unk>`, 0)."""
        normalized = self.rule.apply(text)
        if self.level == "byte":
            return Encoded(printable(normalized), list(utf8_bytes(normalized)), 0)
        ids = self.vocab.encode(self.rule.split(normalized))
        return Encoded(normalized, ids, ids.count(0))

    def encode_bytes(self, data: bytes) -> Encoded:
        """`encode` for raw bytes (an uploaded file).

        Raises:
            TextError: not UTF-8 under a char or word rule, naming the byte offset.
        """
        return self.encode(decode_utf8(data, self.level))

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Each id's token as the vocabulary holds it (a high byte as `<0xNN>`)."""
        return self.vocab.decode(ids)

    @cached_property
    def _pieces(self) -> list[str]:
        if self.level == "word" and self.normalize == "book":
            return [" " + t for t in self.vocab.idx_to_token]
        return self.vocab.idx_to_token

    def piece(self, idx: int) -> str:
        """The text one token appends to a completion (a byte: its token text)."""
        return self._pieces[idx]

    def logprob_token(self, idx: int) -> str:
        """A token's name in OpenAI's logprobs (`tokens`, `top_logprobs` keys): its piece,
        or for a byte that is no character on its own, OpenAI's `bytes:\\xNN`."""
        if self.level == "byte" and idx >= 0x80:
            return f"bytes:\\x{idx:02x}"
        return self._pieces[idx]

    def text_offsets(self, start: int = 0) -> TextOffsets:
        """Offsets, in characters, of a generated sequence's tokens in its decoded text (the
        first token at `start`); see `_ByteOffsets` for the bytes of one character."""
        return _ByteOffsets(start) if self.level == "byte" else _PieceOffsets(self._pieces, start)

    def detokenizer(self) -> Detokenizer:
        """A fresh incremental decoder for one generated sequence."""
        return _ByteDetokenizer() if self.level == "byte" else _PieceDetokenizer(self._pieces)

    def pieces(self, cleaned: str) -> list[str]:
        """The text of each token of a normalized text, a word's leading spaces kept with it.

        One piece per id of `encode`, and the pieces join back to the text (less trailing
        spaces at word level under `book`), so a piece's offset in the text is the length
        of those before it: what OpenAI's `logprobs.tokens` and `text_offset` show for a
        prompt. At the byte level a piece is the text its byte completes ("" inside a
        character).
        """
        if self.level == "char":
            return list(cleaned)
        if self.level == "byte":
            decoder = _ByteDetokenizer()
            out = [decoder.push(b) for b in utf8_bytes(cleaned)]
            if out:
                out[-1] += decoder.flush()
            return out
        if self.normalize == "book":
            return _WORD_WITH_SPACE.findall(cleaned)
        return _RAW_WORD.findall(cleaned)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, each in [0, vocabulary size); `<unk>` reads as "<unk>"."""
        if self.level == "byte":
            return bytes(ids).decode("utf-8", "replace")
        if self.level == "word" and self.normalize == "book":
            return " ".join(self.vocab.decode(ids))
        return "".join(self.vocab.decode(ids))

    @cached_property
    def _alphabet(self) -> frozenset[str]:
        """Every character generated text can hold (the byte level: any)."""
        chars = {c for t in self.vocab.idx_to_token[1:] for c in t}
        if self.level == "word" and self.normalize == "book":
            chars.add(" ")
        return frozenset(chars)

    def unproducible(self, text: str) -> str | None:
        """Why generated text can never contain `text` (a stop string), or None if it can.

        The check is by character: a character no token holds can never be generated.
        """
        if self.level == "byte":
            return None
        missing = sorted(set(text) - self._alphabet)
        if not missing:
            return None
        shown = ", ".join(repr(c) for c in missing[:5]) + (", ..." if len(missing) > 5 else "")
        return (
            f"{text!r} can never be generated: no token of this model holds {shown} "
            f"({self.rule.describe()})"
        )

    def token_id(self, token: str) -> int:
        """The id of a token given as its text (a byte as its character or `<0xNN>`).

        Raises:
            TextError: not a token of this vocabulary, saying why (e.g. the book's rule
                keeps only lower-case a-z).
        """
        idx = self.vocab.token_to_idx.get(token)
        if idx is not None and idx != self.vocab.unk:
            return idx
        hint = f"{self.rule.describe()}; {len(self.vocab)} tokens"
        if self.normalize == "book" and self.rule.apply(token) != token:
            hint = f"the rule changes it to {self.rule.apply(token)!r}; {hint}"
        raise TextError(f"{token!r} is not a token of this model ({hint})")

    def id_pieces(self, ids: Sequence[int]) -> list[str]:
        """The text of each id of a token-id sequence: they join to `decode(ids)` (at the
        byte level a piece is the text its byte completes, "" inside a character)."""
        decoder = self.detokenizer()
        pieces = [decoder.push(i) for i in ids]
        if pieces:
            pieces[-1] += decoder.flush()
            if self.level == "word" and self.normalize == "book":
                pieces[0] = pieces[0][1:]  # the spaces are between words, not before the first
        return pieces

    @cached_property
    def start_id(self) -> int | None:
        """The token a text is read after when nothing comes before it, or None.

        The models read running text with no document markers, so a text's first token
        is predicted after what separates texts: a line break under the rule (a space
        under the book's, at the char level). Evaluation harnesses put it before a text
        to score its first token. Word-level vocabularies under the book's rule have none.
        """
        ids = self.encode("\n").ids
        return ids[0] if len(ids) == 1 and ids[0] != self.vocab.unk else None

    @cached_property
    def special_ids(self) -> tuple[int, ...]:
        """Ids no text encodes to on its own: `<unk>` and reserved tokens such as `<pad>`
        (the byte vocabulary has none)."""
        if self.level == "byte":
            return ()
        return tuple(
            i
            for i, token in enumerate(self.vocab.idx_to_token)
            if i == self.vocab.unk or self.encode(token).ids != [i]
        )


def char_table(vocab: Vocab) -> NDArray[np.int32]:
    """Code point -> id for a char vocabulary (0, `<unk>`, for characters it lacks): turns a
    whole text into ids in one vectorised lookup (`encode_chars`)."""
    table = np.zeros(_UNICODE_MAX, dtype=np.int32)
    for idx, token in enumerate(vocab.idx_to_token[1:], 1):
        if len(token) == 1:
            table[ord(token)] = idx
    return table


def code_points(text: str) -> NDArray[np.uint8] | NDArray[np.uint32]:
    """A text's code points as one array (surrogate escapes included); bytes when ASCII."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def encode_chars(text: str, table: NDArray[np.int32]) -> NDArray[np.int32]:
    """Char-level ids of a normalized text, vectorised (see `char_table`)."""
    return np.take(table, code_points(text))
