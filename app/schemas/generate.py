from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from app.schemas import ResponseBody, StrictRequest, Text, Usage, model_field
from models.generate import FinishReason, SamplingParams

MAX_PREFIX_CHARS = 4000
MAX_NEW_TOKENS = 2000
MAX_N = 16
MAX_STOP = 4
MAX_STOP_CHARS = 64
MAX_SEED = 2**63 - 1


class GenerateRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    prefix: Text = Field(
        min_length=1,
        max_length=MAX_PREFIX_CHARS,
        description="text to continue; normalized with the bundle's rule first",
        examples=["time traveller "],
    )
    max_new_tokens: int = Field(100, ge=1, le=MAX_NEW_TOKENS, description="tokens to generate")
    temperature: float = Field(
        1.0, ge=0.0, le=5.0, description="0 = greedy (argmax); higher = more random"
    )
    top_k: int = Field(0, ge=0, le=1000, description="sample among the k likeliest; 0 = all")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus: smallest head with this mass")
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="same seed, same text (choice i uses seed + i); default: random",
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

    @field_validator("stop")
    @classmethod
    def _stop_lengths(cls, stop: list[str]) -> list[str]:
        for s in stop:
            if not 1 <= len(s) <= MAX_STOP_CHARS:
                raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters")
        return stop

    def to_params(self, seed: int, stop: tuple[str, ...]) -> list[SamplingParams]:
        """One SamplingParams per choice, as the engine takes them."""
        return choice_params(
            self.n,
            seed,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop=stop,
        )


def choice_params(n: int, seed: int, **common: Any) -> list[SamplingParams]:
    """n SamplingParams alike but for the seed: choice i samples with seed + i, so a
    request's first choice is the same text whatever its n."""
    return [SamplingParams(seed=(seed + i) % (MAX_SEED + 1), **common) for i in range(n)]


class Choice(ResponseBody):
    index: int
    text: str
    tokens: int
    finish_reason: FinishReason


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
    choices: list[Choice]
    usage: Usage
    timing: Timing
