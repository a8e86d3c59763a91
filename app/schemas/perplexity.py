from __future__ import annotations

from pydantic import Field

from app.schemas import ResponseBody, StrictRequest, Text, model_field

MAX_TEXT_CHARS = 200_000
MAX_CONTEXT_CHARS = 20_000


class PerplexityRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    text: Text = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="text to score; cleaned with the bundle's rule first",
        examples=["the time traveller smiled round at us"],
    )
    context: Text = Field(
        "",
        max_length=MAX_CONTEXT_CHARS,
        description="read before the text but not scored; without it the first token is not scored",
        examples=[""],
    )
    return_tokens: bool = Field(False, description="include each scored token's log-probability")


class TokenLogprob(ResponseBody):
    token: str
    logprob: float


class PerplexityResponse(ResponseBody):
    model: str
    perplexity: float = Field(description="exp(cross_entropy)")
    cross_entropy: float = Field(description="mean negative log-likelihood, nats per token")
    bits_per_token: float
    tokens_scored: int
    unknown_tokens: int = Field(
        description="tokens of context and text missing from the vocabulary"
    )
    tokens: list[TokenLogprob] | None = None
