"""Request and response models, one module per feature (matching app/routes/).

Requests are strict (no string-to-number coercion), reject unknown fields, and carry a
description, bounds and a working example on every field: that text is the Swagger UI
documentation and the 422 messages.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_PRINTABLE_ASCII = b"\t\n\r" + bytes(range(0x20, 0x7F))


def _no_control_characters(value: str) -> str:
    """Text is cleaned to letters anyway, but control bytes mean the client sent binary.

    ASCII text is checked by deleting every allowed byte (7x the regex's speed on 2 MB);
    the regex then finds where the first bad character is.
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


Text = Annotated[str, AfterValidator(_no_control_characters)]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens read (prefix or context)")
    completion_tokens: int = Field(description="tokens generated or scored")
    total_tokens: int


def model_field(description: str = "bundle name; default: the service's default LM") -> object:
    return Field(None, description=description, pattern=MODEL_NAME, examples=["char-lstm"])
