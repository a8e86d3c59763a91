"""/v1/generate: continue a prefix, with every generation control (app/schemas/sampling.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from app.errors import InvalidInput
from app.schemas import (
    LOGPROB_FLOOR,
    Logprob,
    ResponseBody,
    StrictRequest,
    Text,
    Usage,
    model_field,
)
from app.schemas.sampling import (
    MAX_SEED,
    DecodePrecision,
    EarlyStopping,
    FrequencyPenalty,
    LengthPenalty,
    LogitBias,
    MinP,
    NoRepeatNgramSize,
    NumBeams,
    PenalizePrompt,
    PenaltyWindow,
    PresencePenalty,
    RepetitionPenalty,
    TopK,
    TopP,
    TypicalP,
    logit_bias_ids,
    sampling_params,
)
from models.generate import FinishReason, SamplingParams, TokenLogprob
from models.precision import Precision
from models.text import Tokenizer

MAX_PREFIX_CHARS = 4000
MAX_NEW_TOKENS = 2000
MAX_N = 16
MAX_STOP = 4
MAX_STOP_CHARS = 64
MAX_TOP_LOGPROBS = 1000
MAX_LOGPROB_ENTRIES = 500_000  # n x max_new_tokens x (logprobs + 1): the response's size


class GenerateRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    prefix: Text = Field(
        min_length=1,
        max_length=MAX_PREFIX_CHARS,
        description="text to continue; normalized with the bundle's rule first",
        examples=["time traveller "],
    )
    max_new_tokens: int = Field(100, ge=1, le=MAX_NEW_TOKENS, description="tokens to generate")
    temperature: float | None = Field(
        None,
        ge=0.0,
        le=5.0,
        description="0 = greedy (argmax); higher = more random. Default 1, or 0 with num_beams",
        examples=[0],
    )
    top_k: TopK = 0
    top_p: TopP = 1.0
    min_p: MinP = None
    typical_p: TypicalP = None
    repetition_penalty: RepetitionPenalty = Field(1.0, examples=[1.0])
    presence_penalty: PresencePenalty = 0.0
    frequency_penalty: FrequencyPenalty = 0.0
    no_repeat_ngram_size: NoRepeatNgramSize = Field(0, examples=[8])
    penalty_window: PenaltyWindow = 0
    penalize_prompt: PenalizePrompt = False
    logit_bias: LogitBias = Field(
        None,
        description="token (its text, or its id as a string) -> bias in [-100, 100], added "
        'to its logit; -100 bans it. Example: {" ": 2.0} favours spaces (shorter words)',
        examples=[None],
    )
    num_beams: NumBeams = 1
    length_penalty: LengthPenalty = 1.0
    early_stopping: EarlyStopping = False
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="same seed, same text (choice i uses seed + i); default: random. At most "
        "2**53 - 1, the largest integer JavaScript holds exactly",
        examples=[42],
    )
    stop: list[str] = Field(
        default_factory=list,
        max_length=MAX_STOP,
        description=f"up to {MAX_STOP} strings; generation ends before one. A string the "
        "model can never generate (e.g. a capital under the book's a-z rule) is refused",
        examples=[[]],
    )
    n: int = Field(1, ge=1, le=MAX_N, description="completions of the same prefix")
    stream: bool = Field(False, description="server-sent events, one per token")
    precision: DecodePrecision = None
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="per generated token its log-probability and the this-many likeliest "
        "tokens with theirs (the model's own distribution, before every control; more "
        "than the vocabulary gives all of it); streamed with each token too; null: none",
        examples=[None],
    )

    @field_validator("stop")
    @classmethod
    def _stop_lengths(cls, stop: list[str]) -> list[str]:
        for s in stop:
            if not 1 <= len(s) <= MAX_STOP_CHARS:
                raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters")
        return stop

    def to_params(
        self, seed: int, tokenizer: Tokenizer, stop: tuple[str, ...]
    ) -> list[SamplingParams]:
        """One SamplingParams per choice (the beams' when num_beams > 1), with the stop
        strings as the model's rule reads them; 422 naming the field for what the schema
        alone cannot check."""
        if self.logprobs is not None:
            entries = self.n * self.max_new_tokens * (min(self.logprobs, len(tokenizer.vocab)) + 1)
            if entries > MAX_LOGPROB_ENTRIES:
                raise InvalidInput(
                    f"logprobs: n x max_new_tokens x (logprobs + 1) is {entries}, over the "
                    f"{MAX_LOGPROB_ENTRIES} log-probabilities one response may hold",
                    param="logprobs",
                    code="too_many_logprobs",
                )
        return sampling_params(
            self,
            self.n,
            seed,
            logit_bias_ids(self.logit_bias, tokenizer, by_text=True),
            max_new_tokens=self.max_new_tokens,
            stop=stop,
            logprobs=self.logprobs,
        )


class Alternative(ResponseBody):
    token: str = Field(description="the token's text, as generated text would show it")
    id: int
    logprob: Logprob = Field(description="natural log; -9999 stands for probability 0")


class TokenLogprobs(Alternative):
    """A generated token with the likeliest tokens at its place (the distribution's head)."""

    top: list[Alternative] = Field(description="the likeliest tokens here, best first")


def logprobs_json(tokens: list[TokenLogprob], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """`TokenLogprobs` as plain JSON values: a response holds n x tokens x (k + 1) of them,
    and building that many pydantic models costs more than decoding them did."""
    piece = tokenizer.piece

    def alternative(token: int, logprob: float) -> dict[str, Any]:
        return {"token": piece(token), "id": token, "logprob": max(logprob, LOGPROB_FLOOR)}

    return [
        alternative(t.token, t.logprob) | {"top": [alternative(i, v) for i, v in t.top]}
        for t in tokens
    ]


class Choice(ResponseBody):
    index: int
    text: str
    tokens: int
    finish_reason: FinishReason
    logprob: Logprob | None = Field(
        None,
        description="total log-probability: a beam's (what the search ranked by, the model's "
        "own when no bias or penalty is set), or a sampled choice's when logprobs is asked",
    )
    logprobs: list[TokenLogprobs] | None = Field(
        None, description="with logprobs: each generated token's"
    )

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The optional fields appear only when the request asked for them."""
        out: dict[str, Any] = handler(self)
        for name in ("logprob", "logprobs"):
            if out.get(name) is None:
                out.pop(name, None)
        return out


class Timing(ResponseBody):
    queue_ms: float = Field(description="waiting for a place in the batch")
    total_ms: float


class GenerateResponse(ResponseBody):
    id: str
    object: Literal["generation"] = "generation"
    model: str
    prefix: str = Field(description="the prefix after cleanup, as the model read it")
    unknown_tokens: int = Field(description="prefix tokens missing from the vocabulary")
    seed: int
    precision: Precision = Field(description="the weights it decoded with")
    choices: list[Choice]
    usage: Usage
    timing: Timing
