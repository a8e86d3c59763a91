"""Request and response models, one module per feature (matching app/routes/).

Requests (`StrictRequest`) are strict (no string-to-number coercion), reject unknown
fields, and carry a description, bounds and a working example on every field: that text
is the Swagger UI documentation and the 422 messages. Responses (`ResponseBody`) are
built by the service itself and only describe what it sends.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from models.files import NAME_PATTERN

MODEL_NAME = NAME_PATTERN.pattern
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_PRINTABLE_ASCII = b"\t\n\r" + bytes(range(0x20, 0x7F))


def no_control_characters(value: str) -> str:
    """Text is cleaned to letters anyway, but control bytes mean the client sent binary.

    ASCII text is checked by deleting every allowed byte, which is cheaper than the regex
    on large texts (docs/benchmarks.md); the regex then finds where the bad character is.
    """
    if value.isascii() and not value.encode("ascii").translate(None, _PRINTABLE_ASCII):
        return value
    bad = _CONTROL.search(value)
    if bad:
        raise ValueError(
            f"contains control character U+{ord(bad.group()):04X} at position {bad.start()} "
            "(only tab, newline and carriage return are allowed)"
        )
    return value


Text = Annotated[str, AfterValidator(no_control_characters)]


# JSON has no -inf: a token of probability 0 (an MLE n-gram model's unseen n-gram) is
# written as this log-probability, as vLLM writes it.
LOGPROB_FLOOR = -9999.0
Logprob = Annotated[float, PlainSerializer(lambda v: max(v, LOGPROB_FLOOR), return_type=float)]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ResponseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(ResponseBody):
    prompt_tokens: int = Field(description="tokens read (prefix or context)")
    completion_tokens: int = Field(description="tokens generated or scored")
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class PlotOptions(BaseModel):
    """A figure's format and size; a route whose figures are larger overrides the size."""

    format: Literal["png", "svg"] = Field("png", description="image format")
    width: int = Field(640, ge=200, le=2000, description="pixels")
    height: int = Field(480, ge=150, le=2000, description="pixels")


def model_field(description: str = "bundle name; default: the service's default LM") -> object:
    return Field(None, description=description, pattern=MODEL_NAME, examples=["char-lstm"])
