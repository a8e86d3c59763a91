"""The generation controls /v1/generate and /v1/completions share.

Bounds and descriptions are written once (the `Annotated` types below) and shown by
Swagger; `sampling_params` makes the engine's `SamplingParams` after the checks that need
two fields or the model's vocabulary, each a 422 naming its field. How every control acts
and in which order: models/generate.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import Field

from app.errors import InvalidInput
from models.generate import BAN, SamplingParams
from models.precision import Precision
from models.text import Tokenizer

# Seeds travel as JSON numbers: a browser holds integers exactly only up to 2**53 - 1
# (Number.MAX_SAFE_INTEGER), so larger seeds are refused rather than silently rounded.
MAX_SEED = 2**53 - 1
MAX_TOP_K = 1000
MAX_NGRAM = 20
MAX_WINDOW = 8192  # longer than any text a request can make (prompt + generated)
MAX_BEAMS = 16
MAX_LOGIT_BIAS = 300

DecodePrecision = Annotated[
    Precision | None,
    Field(
        description="the weights to decode with: fp32; bf16; int8 (dynamic quantisation, on "
        "the CPU only). Same request, seed and precision: same text, alone or batched. "
        "null: the server's RNNLM_PRECISION (`precision` in /v1/models)",
        examples=[None],
    ),
]
TopK = Annotated[
    int, Field(ge=0, le=MAX_TOP_K, description="sample among the k likeliest; 0 = all")
]
TopP = Annotated[
    float,
    Field(gt=0.0, le=1.0, description="nucleus: the smallest head holding this much probability"),
]
MinP = Annotated[
    float | None,
    Field(
        gt=0.0,
        le=1.0,
        description="keep only tokens at least min_p times as likely as the likeliest; null: off",
        examples=[None],
    ),
]
TypicalP = Annotated[
    float | None,
    Field(
        gt=0.0,
        le=1.0,
        description="locally typical sampling: keep the tokens whose surprise is closest to "
        "the entropy, up to this much probability; null: off",
        examples=[None],
    ),
]
RepetitionPenalty = Annotated[
    float,
    Field(
        gt=0.0,
        le=10.0,
        description="TGI/transformers' form: the logit of each token in the penalty window is "
        "divided by it (multiplied when negative); 1: off, above 1 discourages repeats",
    ),
]
PresencePenalty = Annotated[
    float,
    Field(
        ge=-2.0,
        le=2.0,
        description="OpenAI's form: subtracted from the logit of each token present in the "
        "penalty window",
    ),
]
FrequencyPenalty = Annotated[
    float,
    Field(
        ge=-2.0,
        le=2.0,
        description="OpenAI's form: times its count in the penalty window, subtracted from "
        "each token's logit",
    ),
]
NoRepeatNgramSize = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_NGRAM,
        description="never repeat an n-gram of this many tokens from the penalty window "
        "(characters for a character model); 0: off",
    ),
]
PenaltyWindow = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_WINDOW,
        description="the penalties and no_repeat_ngram_size look at the last this-many tokens "
        "of the generated text; 0: all of it",
    ),
]
PenalizePrompt = Annotated[
    bool, Field(description="the penalty window takes in the prompt too (token ids)")
]
NumBeams = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_BEAMS,
        description="beam search with this many beams: deterministic, the n best beams "
        "returned with their total log-probability (n <= num_beams; no sampling, no stream); "
        "1: off",
    ),
]
LengthPenalty = Annotated[
    float,
    Field(
        ge=-10.0,
        le=10.0,
        description="beam search ranks a finished beam by total log-probability / "
        "length ** length_penalty: above 0 favours longer beams, below 0 shorter",
    ),
]
EarlyStopping = Annotated[
    bool,
    Field(
        description="beam search ends once num_beams beams have finished (a stop string or "
        "the length limit), rather than once no live beam can still beat them"
    ),
]
LogitBias = Annotated[
    dict[str, Annotated[float, Field(ge=BAN, le=-BAN)]] | None,
    Field(
        max_length=MAX_LOGIT_BIAS,
        description="token -> bias in [-100, 100], added to the token's logit; -100 bans it",
    ),
]


class Sampling(Protocol):
    """The fields a request body needs for `sampling_params`."""

    @property
    def temperature(self) -> float | None: ...
    @property
    def top_k(self) -> int: ...
    @property
    def top_p(self) -> float: ...
    @property
    def min_p(self) -> float | None: ...
    @property
    def typical_p(self) -> float | None: ...
    @property
    def repetition_penalty(self) -> float: ...
    @property
    def presence_penalty(self) -> float: ...
    @property
    def frequency_penalty(self) -> float: ...
    @property
    def no_repeat_ngram_size(self) -> int: ...
    @property
    def penalty_window(self) -> int: ...
    @property
    def penalize_prompt(self) -> bool: ...
    @property
    def num_beams(self) -> int: ...
    @property
    def length_penalty(self) -> float: ...
    @property
    def early_stopping(self) -> bool: ...
    @property
    def n(self) -> int: ...
    @property
    def stream(self) -> bool: ...


def check_beams(body: Sampling) -> None:
    """Beam search is deterministic and answers once: no sampling, no stream, n <= beams."""
    k = body.num_beams
    if k == 1:
        return
    sampling = [
        name
        for name, used in (
            ("temperature", (body.temperature or 0.0) > 0),
            ("top_k", body.top_k > 0),
            ("top_p", body.top_p < 1),
            ("min_p", body.min_p is not None),
            ("typical_p", body.typical_p not in (None, 1.0)),
        )
        if used
    ]
    if sampling:
        raise InvalidInput(
            f"num_beams {k} is beam search, which does not sample: leave out "
            f"{', '.join(sampling)} (or send temperature 0)",
            param="num_beams",
            code="beams_with_sampling",
        )
    if body.stream:
        raise InvalidInput(
            f"num_beams {k} cannot stream: a beam is only final when the search ends",
            param="num_beams",
            code="beams_with_stream",
        )
    if body.n > k:
        raise InvalidInput(
            f"n ({body.n}) must be at most num_beams ({k}): beam search returns its n best beams",
            param="n",
            code="beams_fewer_than_n",
        )


def logit_bias_ids(
    bias: dict[str, float] | None, tokenizer: Tokenizer, *, by_text: bool
) -> tuple[tuple[int, float], ...]:
    """(token id, bias) pairs from a request's logit_bias: keys are token ids (as strings,
    OpenAI's shape) or, with `by_text`, a token's text first. 422 naming logit_bias for a
    key that is no token of the vocabulary, a token given twice, or a ban of every token."""
    if not bias:
        return ()
    vocab = tokenizer.vocab
    size = len(vocab)
    out: dict[int, float] = {}
    for key, value in bias.items():
        if by_text and key in vocab.token_to_idx:
            token = vocab.token_to_idx[key]
        elif key.isascii() and key.isdigit() and int(key) < size:
            token = int(key)
        else:
            what = "a token id or a token's text" if by_text else "a token id"
            raise InvalidInput(
                f"logit_bias key {key!r} is not {what} of this model: the vocabulary has "
                f"{size} tokens (ids 0 to {size - 1}; POST /v1/tokenize shows a text's ids)",
                param="logit_bias",
                code="unknown_token",
            )
        if token in out:
            raise InvalidInput(
                f"logit_bias names token {token} twice ({key!r})", param="logit_bias"
            )
        out[token] = value
    never = set(tokenizer.banned_ids)
    if all(out.get(i, 0.0) <= BAN for i in range(size) if i not in never):
        raise InvalidInput(
            "logit_bias bans every token of the vocabulary: nothing could be generated",
            param="logit_bias",
            code="all_tokens_banned",
        )
    return tuple(out.items())


def sampling_params(
    body: Sampling,
    count: int,
    seed: int,
    logit_bias: tuple[tuple[int, float], ...],
    **fixed: Any,
) -> list[SamplingParams]:
    """`count` SamplingParams alike but for the seed: sequence i samples with seed + i, so a
    request's first choice is the same text whatever its n. Temperature defaults to 1, or
    to 0 with beam search (which `check_beams` allows only greedy)."""
    check_beams(body)
    temperature = body.temperature
    if temperature is None:
        temperature = 0.0 if body.num_beams > 1 else 1.0
    common = {
        "temperature": temperature,
        "top_k": body.top_k,
        "top_p": body.top_p,
        "min_p": body.min_p or 0.0,
        "typical_p": body.typical_p or 1.0,
        "repetition_penalty": body.repetition_penalty,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "no_repeat_ngram_size": body.no_repeat_ngram_size,
        "penalty_window": body.penalty_window,
        "penalize_prompt": body.penalize_prompt,
        "num_beams": body.num_beams,
        "length_penalty": body.length_penalty,
        "early_stopping": body.early_stopping,
        "logit_bias": logit_bias,
        **fixed,
    }
    return [SamplingParams(seed=(seed + i) % (MAX_SEED + 1), **common) for i in range(count)]
