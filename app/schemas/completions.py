"""OpenAI's legacy completions API (`POST /v1/completions`), as far as an RNN LM can serve it.

Fields that OpenAI clients send by default but rnnlm cannot honour are accepted at their
neutral value and ignored (`user`; `presence_penalty`/`frequency_penalty` 0; `best_of`
equal to n; `suffix` null or empty; `logit_bias` empty); any other value is a 422 naming
the field, rather than a silent difference from what the client asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from app.schemas import ResponseBody, StrictRequest, Usage, model_field
from app.schemas.generate import (
    MAX_N,
    MAX_NEW_TOKENS,
    MAX_PREFIX_CHARS,
    MAX_SEED,
    MAX_STOP,
    MAX_STOP_CHARS,
    choice_params,
)
from models.generate import FinishReason, SamplingParams
from models.text import clean

MAX_PROMPTS = 16
MAX_CHOICES = 64  # prompts x n
MAX_LOGPROBS = 5
MAX_USER_CHARS = 256
MAX_LOGIT_BIAS = 300

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PREFIX_CHARS)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class StreamOptions(StrictRequest):
    include_usage: bool = Field(
        False, description="end the stream with a chunk holding the usage (and no choices)"
    )


class CompletionRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        description=f"text to continue, or a list of up to {MAX_PROMPTS} texts (each its own "
        "request; choices come prompt by prompt). Cleaned with the bundle's rule (a-z and "
        "spaces) first. Token-id prompts are not accepted.",
        examples=["the time traveller "],
    )
    max_tokens: int = Field(
        16,
        ge=0,
        le=MAX_NEW_TOKENS,
        description="tokens to generate; 0 generates nothing (useful with echo and logprobs)",
        examples=[32],
    )
    temperature: float = Field(
        1.0, ge=0.0, le=2.0, description="0 = greedy (argmax); higher = more random"
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus: smallest head with this mass")
    n: int = Field(1, ge=1, le=MAX_N, description="completions per prompt")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = Field(
        None,
        description=f"up to {MAX_STOP} strings; generation ends before one. Each is cleaned "
        "with the bundle's rule like the prompt: letters lower-cased, every run of other "
        'characters one space, so "\\n" or "." stops at the next space (word boundary)',
        examples=[["the end"]],
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="same seed, same text (choice i of each prompt uses seed + i); default: random",
        examples=[42],
    )
    stream: bool = Field(False, description="server-sent `text_completion` chunks, then [DONE]")
    stream_options: StreamOptions | None = Field(
        None, description="with stream: {include_usage}", examples=[None]
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_LOGPROBS,
        description="per token its log-probability and this many likeliest alternatives "
        "(the model's own distribution, before temperature and top_p); null: none",
        examples=[2],
    )
    echo: bool = Field(
        False,
        description="prepend the cleaned prompt to each choice's text; with logprobs, the "
        "prompt tokens' log-probabilities too (the first one null)",
    )
    user: str | None = Field(
        None, max_length=MAX_USER_CHARS, description="accepted and ignored", examples=["swagger"]
    )
    presence_penalty: float = Field(0.0, description="not supported: only 0 is accepted")
    frequency_penalty: float = Field(0.0, description="not supported: only 0 is accepted")
    best_of: int | None = Field(
        None,
        ge=1,
        le=MAX_N,
        description="not supported: only equal to n is accepted",
        examples=[1],
    )
    suffix: str | None = Field(
        None,
        max_length=MAX_STOP_CHARS,
        description="not supported: only null or empty",
        examples=[None],
    )
    logit_bias: dict[str, float] | None = Field(
        None,
        max_length=MAX_LOGIT_BIAS,
        description="not supported: only null or empty",
        examples=[{}],
    )

    @field_validator("presence_penalty", "frequency_penalty", "suffix", "logit_bias")
    @classmethod
    def _neutral_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value:
            raise ValueError(f"{info.field_name} is not supported by rnnlm; send 0/null or omit it")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n", 1)
        if value is not None and value != n:
            raise ValueError(
                f"best_of is not supported by rnnlm; send best_of = n ({n}) or omit it"
            )
        return value

    @field_validator("n")
    @classmethod
    def _few_choices(cls, n: int, info: ValidationInfo) -> int:
        prompts = info.data.get("prompt")
        count = len(prompts) if isinstance(prompts, list) else 1
        if n * count > MAX_CHOICES:
            raise ValueError(f"n x number of prompts must be at most {MAX_CHOICES}")
        return n

    def prompts(self) -> list[str]:
        return self.prompt if isinstance(self.prompt, list) else [self.prompt]

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings after the bundle's cleanup (a non-empty string never cleans to
        nothing: a run of non-letters becomes one space)."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(dict.fromkeys(clean(s) for s in stop))

    def to_params(self, seed: int) -> list[SamplingParams]:
        """The n choices of one prompt, as the engine takes them."""
        return choice_params(
            self.n,
            seed,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_tokens,
            stop=self.stop_strings(),
            logprobs=self.logprobs,
        )


class CompletionLogprobs(ResponseBody):
    """OpenAI's legacy logprobs object: parallel lists, one entry per token."""

    tokens: list[str] = Field(description="each token's text (a word keeps its leading space)")
    token_logprobs: list[float | None] = Field(description="null for a prompt's first token")
    top_logprobs: list[dict[str, float] | None] = Field(
        description="the likeliest tokens at each place, and the chosen one"
    )
    text_offset: list[int] = Field(description="where each token starts in the choice's text")


class CompletionChoice(ResponseBody):
    index: int = Field(description="prompt index x n + choice within the prompt")
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None = Field(
        description="stop: a stop string; length: max_tokens; null: more chunks to come"
    )


class CompletionResponse(ResponseBody):
    """A completion, or (streaming) one chunk of one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="unix seconds")
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
