"""Several models' per-token surprisal on one text, side by side."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.schemas import MODEL_NAME, PlotOptions, ResponseBody, StrictRequest, Text

MAX_COMPARE_CHARS = 5_000
MAX_COMPARE_MODELS = 4


class CompareRequest(StrictRequest):
    models: list[Annotated[str, Field(pattern=MODEL_NAME)]] = Field(
        min_length=2,
        max_length=MAX_COMPARE_MODELS,
        description=f"2 to {MAX_COMPARE_MODELS} distinct language models that tokenize text "
        "the same way",
        examples=[["char-lstm", "char-kn10"]],
    )
    text: Text = Field(
        min_length=1,
        max_length=MAX_COMPARE_CHARS,
        description="text to score; every token after the first is scored by every model",
        examples=["the time traveller smiled round at us"],
    )


class ComparePlotRequest(CompareRequest, PlotOptions):
    width: int = Field(1000, ge=200, le=2000, description="pixels")
    height: int = Field(320, ge=150, le=2000, description="pixels")


class ModelSurprisal(ResponseBody):
    model: str
    surprisal: list[float | None] = Field(
        description="bits per token, -log2 P(token | the text before it); null: probability 0"
    )
    perplexity: float | None = Field(description="null when a token has probability 0")


class CompareResponse(ResponseBody):
    tokens: list[str] = Field(description="each scored token's text")
    models: list[ModelSurprisal]
