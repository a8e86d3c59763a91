"""OpenAI's legacy completions API (`POST /v1/completions`), as far as an RNN LM can serve it.

OpenAI's sampling fields act as OpenAI defines them (presence_penalty, frequency_penalty,
logit_bias by token id, best_of ranked by total log-probability, logprobs up to 5); the
controls OpenAI lacks come under vLLM's names where it has them (top_k, min_p,
repetition_penalty, ...) and /v1/generate's otherwise. `suffix` has no meaning for a
left-to-right RNN: only its neutral value (null or empty) is accepted, and `user` is
accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from app.errors import InvalidInput
from app.schemas import (
    Logprob,
    ResponseBody,
    StrictRequest,
    Text,
    Usage,
    model_field,
    no_control_characters,
)
from app.schemas.generate import (
    MAX_N,
    MAX_NEW_TOKENS,
    MAX_STOP,
    MAX_STOP_CHARS,
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
from models.generate import FinishReason, SamplingParams
from models.text import Tokenizer

# Sized for evaluation harnesses: lm-eval's common `batch_size` 32 with `max_length` 8192
# fits (its defaults are 1 and 2048); the request total bounds one request's scoring work.
MAX_PROMPTS = 64
MAX_CHOICES = 64  # prompts x max(n, best_of)
MAX_PROMPT_TOKENS = 32_768  # one prompt: token ids, or characters (and tokens) of a text
MAX_REQUEST_TOKENS = 262_144  # all prompts of a request together
MAX_LOGPROBS = 5
MAX_USER_CHARS = 256

PromptText = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]
TokenIds = Annotated[
    list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)
]
StopString = Annotated[Text, Field(min_length=1, max_length=MAX_STOP_CHARS)]
PROMPT_SHAPES = (
    "prompt must be a text, a list of texts, a list of token ids, or a list of lists of token ids"
)


def _is_id(value: object) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass, not a token id


def prompt_items(value: object) -> list[Any]:
    """The prompts of any of OpenAI's four shapes, or ValueError saying what is wrong.

    Checked here rather than left to the union type, whose errors name pydantic's
    internal branches instead of the prompt and position at fault.
    """
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        got = "an empty list" if texts == [] else f"{type(value).__name__}"
        raise ValueError(f"{PROMPT_SHAPES}; got {got}")
    if isinstance(texts[0], str):
        for p, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"prompt {p} is not a text, as prompt 0 is; {PROMPT_SHAPES}")
            if not text:
                raise ValueError(f"prompt {p} is an empty text")
            try:
                no_control_characters(text)
            except ValueError as exc:
                raise ValueError(f"prompt {p} {exc}") from None
        return texts
    prompts = texts if isinstance(texts[0], list) else [texts]
    for p, ids in enumerate(prompts):
        if not isinstance(ids, list) or not ids:
            what = "an empty list" if ids == [] else "not a list of token ids"
            raise ValueError(f"prompt {p} is {what}; {PROMPT_SHAPES}")
        bad = next((i for i, t in enumerate(ids) if not _is_id(t)), None)
        if bad is not None:
            raise ValueError(
                f"prompt {p}, position {bad}: {ids[bad]!r:.20} is not a token id "
                "(a whole number >= 0)"
            )
    return prompts


def check_prompt_sizes(sizes: list[int], unit: str) -> None:
    """The caps on prompts per request, one prompt's length and the request's total."""
    if len(sizes) > MAX_PROMPTS:
        raise ValueError(f"at most {MAX_PROMPTS} prompts per request, got {len(sizes)}")
    for p, size in enumerate(sizes):
        if size > MAX_PROMPT_TOKENS:
            raise ValueError(f"prompt {p} has {size} {unit}; at most {MAX_PROMPT_TOKENS}")
    if sum(sizes) > MAX_REQUEST_TOKENS:
        raise ValueError(
            f"the prompts hold {sum(sizes)} {unit} in all; at most {MAX_REQUEST_TOKENS} per request"
        )


class StreamOptions(StrictRequest):
    include_usage: bool = Field(
        False, description="end the stream with a chunk holding the usage (and no choices)"
    )


class CompletionRequest(StrictRequest):
    model: str | None = model_field()  # type: ignore[assignment]
    prompt: (
        PromptText
        | Annotated[list[PromptText], Field(min_length=1, max_length=MAX_PROMPTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(
        description="what to continue: a text, a list of texts, token ids (the model's own, "
        "see /tokenize), or a list of token-id lists; each prompt is its own request and "
        "choices come prompt by prompt. Texts are cleaned with the bundle's rule first "
        "(`prompt_cleanup` in the response says when that changed one); token ids are read "
        f"as they are. Up to {MAX_PROMPTS} prompts of up to {MAX_PROMPT_TOKENS} tokens "
        f"(or characters), {MAX_REQUEST_TOKENS} in all.",
        examples=["the time traveller "],
    )
    max_tokens: int = Field(
        16,
        ge=0,
        le=MAX_NEW_TOKENS,
        description="tokens to generate; 0 generates nothing (useful with echo and logprobs)",
        examples=[32],
    )
    temperature: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        description="0 = greedy (argmax); higher = more random. Default 1, or 0 with num_beams",
        examples=[1.0],
    )
    top_p: TopP = 1.0
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
        description="same seed, same text (choice i of each prompt uses seed + i); default: "
        "random. At most 2**53 - 1, the largest integer JavaScript holds exactly",
        examples=[42],
    )
    stream: bool = Field(False, description="server-sent `text_completion` chunks, then [DONE]")
    precision: DecodePrecision = None
    stream_options: StreamOptions | None = Field(
        None, description="with stream: {include_usage}", examples=[None]
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_LOGPROBS,
        description="per token its log-probability and this many likeliest alternatives "
        "(the model's own distribution, before every control); null: none",
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
    presence_penalty: PresencePenalty = Field(0.0, examples=[0.5])
    frequency_penalty: FrequencyPenalty = Field(0.0, examples=[0.3])
    logit_bias: LogitBias = Field(
        None,
        description="token id (as a string, OpenAI's shape) -> bias in [-100, 100], added to "
        "the token's logit; -100 bans it. Ids: POST /v1/tokenize",
        examples=[{"2": -100}],
    )
    best_of: int | None = Field(
        None,
        ge=1,
        le=MAX_N,
        description="sample this many completions per prompt and return the n with the "
        "highest total log-probability, best first (OpenAI's best_of; >= n; not with stream)",
        examples=[2],
    )
    top_k: TopK = 0
    min_p: MinP = None
    typical_p: TypicalP = None
    repetition_penalty: RepetitionPenalty = 1.0
    no_repeat_ngram_size: NoRepeatNgramSize = 0
    penalty_window: PenaltyWindow = 0
    penalize_prompt: PenalizePrompt = False
    num_beams: NumBeams = 1
    length_penalty: LengthPenalty = 1.0
    early_stopping: EarlyStopping = False
    suffix: str | None = Field(
        None,
        max_length=MAX_STOP_CHARS,
        description="not supported: only null or empty",
        examples=[None],
    )

    strict_cleanup: bool = Field(
        False,
        description="refuse (422) a text prompt or stop string that the bundle's cleanup "
        "would change, instead of cleaning it: the text the model reads is then exactly "
        "the text sent",
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: object) -> object:
        items = prompt_items(value)
        unit = "characters" if isinstance(items[0], str) else "tokens"
        check_prompt_sizes([len(p) for p in items], unit)
        return value

    @field_validator("suffix")
    @classmethod
    def _neutral_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value:
            raise ValueError(f"{info.field_name} is not supported by rnnlm; send null or omit it")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n", 1)
        if value is not None and value < n:
            raise ValueError(f"best_of ({value}) must be at least n ({n})")
        if value is not None and value > n and info.data.get("stream"):
            raise ValueError("best_of > n cannot stream: the best are known only at the end")
        prompts = info.data.get("prompt")
        count = len(prompt_items(prompts)) if prompts is not None else 1
        if value is not None and value * count > MAX_CHOICES:
            raise ValueError(f"best_of x number of prompts must be at most {MAX_CHOICES}")
        return value

    @field_validator("n")
    @classmethod
    def _few_choices(cls, n: int, info: ValidationInfo) -> int:
        prompts = info.data.get("prompt")
        count = len(prompt_items(prompts)) if prompts is not None else 1
        if n * count > MAX_CHOICES:
            raise ValueError(f"n x number of prompts must be at most {MAX_CHOICES}")
        return n

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        return prompt_items(self.prompt)

    def stop_list(self) -> list[str]:
        """The stop strings as sent."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def candidates(self) -> int:
        """Sequences to decode per prompt: best_of when it ranks, n otherwise."""
        return max(self.n, self.best_of or 0)

    def to_params(
        self, seed: int, tokenizer: Tokenizer, stop: tuple[str, ...]
    ) -> list[SamplingParams]:
        """The sequences of one prompt, as the engine takes them (stop strings as the
        model's rule reads them); best_of's candidates always report log-probabilities
        (ranking needs them; the response shows them only when asked)."""
        if self.candidates > self.n and self.num_beams > 1:
            raise InvalidInput(
                "best_of ranks sampled completions; beam search (num_beams) ranks its own",
                param="best_of",
                code="best_of_with_beams",
            )
        logprobs = self.logprobs
        if self.candidates > self.n and logprobs is None:
            logprobs = 0
        return sampling_params(
            self,
            self.candidates,
            seed,
            logit_bias_ids(self.logit_bias, tokenizer, by_text=False),
            max_new_tokens=self.max_tokens,
            stop=stop,
            logprobs=logprobs,
        )


class CompletionLogprobs(ResponseBody):
    """OpenAI's legacy logprobs object: parallel lists, one entry per token."""

    tokens: list[str] = Field(
        description="each token's text (a word keeps its leading space); a byte model's byte "
        "from 0x80 up, OpenAI's `bytes:\\xNN`"
    )
    token_logprobs: list[Logprob | None] = Field(description="null for a prompt's first token")
    top_logprobs: list[dict[str, Logprob] | None] = Field(
        description="the likeliest tokens at each place, and the chosen one"
    )
    text_offset: list[int] = Field(
        description="where each token starts in the choice's text, in characters (each byte "
        "of a character at that character)"
    )


class CompletionChoice(ResponseBody):
    index: int = Field(description="prompt index x n + choice within the prompt")
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None = Field(
        description="stop: a stop string; length: max_tokens; null: more chunks to come"
    )


class PromptCleanup(ResponseBody):
    """A text prompt that the bundle's cleanup changed: the model read `cleaned`."""

    index: int = Field(description="which prompt")
    cleaned: str = Field(description="the text as the model read it (and as echo shows it)")
    first_change: int = Field(description="the first character position that differs")


class StopCleanup(ResponseBody):
    """A stop string that the bundle's rule changed: generation stops at `cleaned`."""

    index: int = Field(description="which stop string")
    cleaned: str = Field(description="the stop string as generation matches it")


class CompletionResponse(ResponseBody):
    """A completion, or (streaming) one chunk of one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="unix seconds")
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    prompt_cleanup: list[PromptCleanup] | None = Field(
        None,
        description="the text prompts that cleanup changed (null when none did; in a stream, "
        "on the first chunk); token ids are never changed. `strict_cleanup` refuses them",
    )
    stop_cleanup: list[StopCleanup] | None = Field(
        None,
        description='the stop strings the rule changed (e.g. "\\n\\n" to " " under the '
        "book's rule, which then stops at the next space); null when none; in a stream, on "
        "the first chunk. `strict_cleanup` refuses them",
    )
