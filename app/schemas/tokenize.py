"""Tokenize and detokenize with a bundle's own cleanup rule and vocabulary."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.schemas import ResponseBody, StrictRequest, model_field

MAX_TEXT_CHARS = 200_000
MAX_IDS = 200_000
MAX_ID = 10_000_000  # far above any vocabulary; the model's own size is checked per request


class TokenizeRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    text: str = Field(
        max_length=MAX_TEXT_CHARS,
        description="text to tokenize; cleaned with the bundle's rule (a-z and spaces) first",
        examples=["The Time Traveller!"],
    )


class TokenizeResponse(ResponseBody):
    model: str
    cleaned: str = Field(description="the text after cleanup, as the model reads it")
    ids: list[int]
    tokens: list[str] = Field(description="each token's text (what the vocabulary looked up)")
    count: int
    unknown_tokens: int = Field(description="tokens missing from the vocabulary (id 0, <unk>)")


class DetokenizeRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    ids: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(
        max_length=MAX_IDS,
        description="token ids, each below the model's vocabulary size (see /v1/models)",
        examples=[[3, 1, 4, 1, 5]],
    )


class DetokenizeResponse(ResponseBody):
    model: str
    text: str = Field(description="characters joined, or words joined by spaces")
