"""Tokenize and detokenize with a bundle's own rule and vocabulary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidatorFunctionWrapHandler, WrapValidator, model_validator

from app.schemas import ResponseBody, StrictRequest, Text, model_field
from models.text import Tokenizer

MAX_TEXT_CHARS = 200_000
MAX_IDS = 200_000
MAX_ID = 10_000_000  # far above any vocabulary; the model's own size is checked per request


class TokenizeRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    text: str = Field(
        max_length=MAX_TEXT_CHARS,
        description="text to tokenize; normalized with the bundle's rule first (see `tokenizer`)",
        examples=["The Time Traveller!"],
    )


class TokenizerRule(ResponseBody):
    """How a bundle turns text into tokens (recorded in the bundle, applied to every input)."""

    normalize: Literal["book", "none"] = Field(
        description="book: lower-case a-z and single spaces; none: the text as given, after NFC"
    )
    level: Literal["char", "word", "byte"]
    line_join: Literal["space", "book"] = Field(
        description="how a corpus' lines meet under the book's rule (training only)"
    )
    description: str

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> TokenizerRule:
        rule = tokenizer.rule
        return cls(
            normalize=rule.normalize,
            level=rule.level,
            line_join=rule.line_join,
            description=rule.describe(),
        )


class TokenizeResponse(ResponseBody):
    model: str
    tokenizer: TokenizerRule
    cleaned: str = Field(description="the text after the bundle's rule, as the model reads it")
    ids: list[int]
    tokens: list[str] = Field(
        description="each token's text, what the vocabulary looked up (a byte above 0x7F as <0xNN>)"
    )
    count: int
    unknown_tokens: int = Field(description="tokens missing from the vocabulary (id 0, <unk>)")


def _first_bad_id(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """One error naming the first bad id, rather than one per bad item (a 1 MB body can
    hold 200,000 of them: their errors alone would be megabytes, built on the event loop)."""
    if isinstance(value, list) and len(value) <= MAX_IDS:  # longer: one too_long error
        bad = (i for i, x in enumerate(value) if type(x) is not int or not 0 <= x <= MAX_ID)
        first = next(bad, None)
        if first is not None:
            handler(value[: first + 1])  # fails with that item's own error, at its index
    return handler(value)


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=MAX_ID)]], WrapValidator(_first_bad_id)]


class DetokenizeRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    ids: TokenIds | None = Field(
        None,
        max_length=MAX_IDS,
        description="token ids, each below the model's vocabulary size (see /v1/models); "
        "give this or `tokens`",
        examples=[[3, 1, 4, 1, 5]],
    )
    tokens: TokenIds | None = Field(
        None,
        max_length=MAX_IDS,
        description="the same as `ids`, under the name vLLM and llama.cpp use; give one of them",
    )

    @model_validator(mode="after")
    def _one_list(self) -> DetokenizeRequest:
        if (self.ids is None) == (self.tokens is None):
            raise ValueError("give exactly one of `ids` and `tokens` (the token ids)")
        return self

    @property
    def ids_name(self) -> str:
        """The name the client used for its ids, for error messages."""
        return "ids" if self.ids is not None else "tokens"

    @property
    def token_ids(self) -> list[int]:
        ids = self.ids if self.ids is not None else self.tokens
        assert ids is not None  # checked by _one_list
        return ids


class DetokenizeResponse(ResponseBody):
    model: str
    text: str = Field(
        description="tokens joined (book-rule words by spaces; bytes decoded as UTF-8)"
    )


# vLLM's tokenizer endpoints (`/tokenize`, `/detokenize`, `/tokenizer_info`), in the shapes
# its server and lm-evaluation-harness' remote tokenizer use.


class ServerTokenizeRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    prompt: Text = Field(
        max_length=MAX_TEXT_CHARS,
        description="text to tokenize, with the model's rule (the same ids /v1/completions reads)",
        examples=["The Time Traveller!"],
    )
    add_special_tokens: bool = Field(
        True,
        description="accepted for vLLM compatibility; rnnlm's tokenizers add no special "
        "tokens to a text (`add_bos_token` is false in /tokenizer_info)",
    )
    return_token_strs: bool = Field(False, description="also return each token's text")


class ServerTokenizeResponse(ResponseBody):
    count: int = Field(description="number of tokens")
    max_model_len: int = Field(description="the longest prompt /v1/completions accepts, in tokens")
    tokens: list[int] = Field(description="token ids")
    token_strs: list[str] | None = Field(None, description="each token's text, when asked")


class ServerDetokenizeRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    tokens: TokenIds = Field(
        max_length=MAX_IDS,
        description="token ids, each below the model's vocabulary size",
        examples=[[3, 9, 2]],
    )


class ServerDetokenizeResponse(ResponseBody):
    prompt: str = Field(description="the text of the ids")


class AddedToken(ResponseBody):
    content: str
    special: bool = True


class TokenizerInfo(ResponseBody):
    """A model's tokenizer, in the keys of a Hugging Face `tokenizer_config.json` (as vLLM's
    /tokenizer_info returns them) plus rnnlm's own: the rule, level and whole vocabulary."""

    tokenizer_class: str = Field(description="rnnlm-<normalize>-<level>")
    model: str = Field(description="the model this tokenizer belongs to")
    normalize: str = Field(description="book (a-z and single spaces) or none (text as given)")
    level: str = Field(description="char, word or byte tokens")
    vocab_size: int
    vocab: list[str] = Field(description="every token's text, by id")
    bos_token: str | None = Field(
        description="the token a text is read after when nothing precedes it (what a line "
        "break becomes under the rule: a space under the book's, a newline under none); "
        "lm-eval puts it before a text to score the text's first token. null when the "
        "rule has no such token (word level under the book's rule)"
    )
    eos_token: None = Field(
        None, description="always null: rnnlm's models never end a text on their own"
    )
    unk_token: str | None = Field(
        description="what tokens missing from the vocabulary become (null at the byte level)"
    )
    pad_token: None = Field(None, description="always null: requests are never padded")
    add_bos_token: bool = Field(False, description="false: texts are tokenized as they are")
    add_eos_token: bool = False
    model_max_length: int = Field(description="the longest prompt /v1/completions accepts")
    added_tokens_decoder: dict[str, AddedToken] = Field(
        description="the special tokens by id: `<unk>` and any reserved ones"
    )
