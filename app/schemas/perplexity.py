from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from app.schemas import ResponseBody, StrictRequest, Text, model_field
from models.ngram_lm import MAX_ORDER, Smoothing
from models.precision import Precision

MAX_TEXT_CHARS = 200_000  # one text, one item of `texts`, one line of a document
MAX_DOCUMENT_CHARS = 3_000_000  # a document scored line by line (the body cap bounds it too)
MAX_CONTEXT_CHARS = 20_000
MAX_ITEMS = 100_000  # texts in `texts`, lines of a document
MAX_BREAKDOWN_TOKENS = 5_000
Mode = Literal["text", "texts", "lines"]


class PerplexityRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    text: Text | None = Field(
        None,
        min_length=1,
        max_length=MAX_DOCUMENT_CHARS,
        description=f"one text to score (up to {MAX_TEXT_CHARS} characters), or with "
        f"`per_line` a document (up to {MAX_DOCUMENT_CHARS}) whose lines are scored one by one; "
        "normalized with the bundle's rule first. Give this or `texts`",
        examples=["the time traveller smiled round at us"],
    )
    texts: list[Annotated[Text, Field(min_length=1, max_length=MAX_TEXT_CHARS)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ITEMS,
        description=f"up to {MAX_ITEMS} texts (each up to {MAX_TEXT_CHARS} characters), each "
        "scored on its own: one result per text and their token-weighted total",
    )
    per_line: bool = Field(
        False,
        description="score each line of `text` on its own, in order (lines with too few "
        "tokens are listed as skipped)",
    )
    context: Text = Field(
        "",
        max_length=MAX_CONTEXT_CHARS,
        description="read before each text (or line) but not scored; without it the first "
        "token of each is not scored",
        examples=[""],
    )
    return_tokens: bool = Field(False, description="include each scored token's log-probability")
    precision: Precision = Field(
        "fp32",
        description="the weights to score with: fp32 (the model as trained), bf16 or int8 "
        "(on the CPU only), to see what a lighter precision costs in perplexity",
    )
    breakdown: bool = Field(
        False,
        description="n-gram models, one text: for each scored token the counts behind its "
        "probability (n(context, token) and n(context) at every order) and the order it "
        f"backed off to; up to {MAX_BREAKDOWN_TOKENS} scored tokens",
    )
    order: int | None = Field(
        None,
        ge=1,
        le=MAX_ORDER,
        description="n-gram models: score with a lower order than the model's own (its counts "
        "hold every order up to its own)",
        examples=[None],
    )
    smoothing: Smoothing | None = Field(
        None, description="n-gram models: read the same counts with another smoothing"
    )

    @model_validator(mode="after")
    def _one_input(self) -> PerplexityRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` and `texts`")
        if self.texts is not None and self.per_line:
            raise ValueError("per_line scores the lines of one `text`, not `texts`")
        return self


class PerplexityUpload(StrictRequest):
    """The form fields beside an uploaded file (multipart/form-data)."""

    model: str | None = model_field()  # type: ignore[assignment]
    per_line: bool = Field(False, description="score each line of the file on its own")
    context: Text = Field("", max_length=MAX_CONTEXT_CHARS, description="as for JSON")
    return_tokens: bool = Field(False, description="as for JSON")
    precision: Precision = Field("fp32", description="as for JSON")


class TokenLogprob(ResponseBody):
    token: str
    logprob: float | None = Field(description="natural log; null for probability 0")


class NgramCount(ResponseBody):
    n: int = Field(description="the order: the context is the n-1 tokens before the token")
    context: str
    count: int = Field(description="n(context, token): how often the training text has both")
    context_count: int = Field(description="n(context): how often the context is followed there")
    used_count: int = Field(
        description="the count the smoothing uses: n(context, token), except for Kneser-Ney "
        "below the highest order, where it is the continuation count N1+(. context token)"
    )
    used_context_count: int = Field(description="the matching total for the context")


class TokenBreakdown(ResponseBody):
    token: str
    probability: float
    logprob: float | None = Field(description="natural log; null for probability 0")
    order: int = Field(description="order of the estimate: 1 + the longest context seen")
    backoff_order: int = Field(
        description="highest order at which the n-gram itself was seen (0: never; the "
        "probability then comes from smoothing alone)"
    )
    counts: list[NgramCount] = Field(description="one entry per order the text has context for")


class ZeroProbability(ResponseBody):
    """Why a perplexity is infinite: the first token the model gives probability 0."""

    position: int = Field(description="index of the token among the text's tokens (from 0)")
    token: str = Field(description="the token, as the vocabulary holds it")
    reason: str
    item: int | None = Field(None, description="in a total: the text (or line) it is in")


class PerplexityScore(ResponseBody):
    perplexity: float | None = Field(
        description="exp(cross_entropy); null when infinite (see `infinite`) or nothing scored"
    )
    cross_entropy: float | None = Field(description="mean negative log-likelihood, nats/token")
    bits_per_token: float | None
    log_prob: float | None = Field(
        description="natural log of the probability of the scored tokens; null when -infinity"
    )
    tokens_scored: int
    unknown_tokens: int = Field(description="tokens of context and text the vocabulary lacks")
    infinite: bool = Field(
        False, description="the model gives some token probability 0: infinite perplexity"
    )
    zero_probability: ZeroProbability | None = Field(
        None, description="when infinite: which token, where, and why"
    )


class PerplexityItem(PerplexityScore):
    index: int = Field(description="the text's (or line's) place in the request, from 0")
    line: int | None = Field(None, description="per-line mode: the line number, from 1")
    skipped: str | None = Field(None, description="why the line was not scored (too short)")
    tokens: list[TokenLogprob] | None = None


class PerplexityResponse(PerplexityScore):
    """One text's score; for `texts` or per-line mode the token-weighted total of all of
    them (the top-level fields) and each one's own (`results`, in request order)."""

    model: str
    mode: Mode
    tokens: list[TokenLogprob] | None = None
    results: list[PerplexityItem] | None = None
    breakdown: list[TokenBreakdown] | None = Field(
        None, description="with `breakdown` (n-gram models): the counts behind each token"
    )
