"""Request and response models, one module per feature (matching app/routes/).

Requests are strict (no string-to-number coercion), reject unknown fields, and carry a
description, bounds and a working example on every field: that text is the Swagger UI
documentation and the 422 messages.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens read (prefix or context)")
    completion_tokens: int = Field(description="tokens generated or scored")
    total_tokens: int


def model_field(description: str = "bundle name; default: the service's default LM") -> object:
    return Field(None, description=description, pattern=MODEL_NAME, examples=["char-lstm"])
