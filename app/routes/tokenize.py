"""Text to token ids and back, with a bundle's own cleanup rule and vocabulary (d2l §8.2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.deps import ServedModel, language_model_of
from app.errors import InvalidInput, responses
from app.schemas.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from models.text import tokenize

router = APIRouter(prefix="/v1", tags=["tokenization"])
ERRORS = responses(400, 401, 404, 413, 422, 503)


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize_text(
    body: TokenizeRequest,
    lm: Annotated[ServedModel, Depends(language_model_of(TokenizeRequest))],
) -> TokenizeResponse:
    """Clean `text` with the bundle's rule and map its tokens to ids (unknown ones to 0)."""
    encoded = lm.tokenizer.encode(body.text)
    return TokenizeResponse(
        model=lm.name,
        cleaned=encoded.cleaned,
        ids=encoded.ids,
        tokens=tokenize(encoded.cleaned, lm.tokenizer.level),
        count=len(encoded.ids),
        unknown_tokens=encoded.unknown,
    )


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize_ids(
    body: DetokenizeRequest,
    lm: Annotated[ServedModel, Depends(language_model_of(DetokenizeRequest))],
) -> DetokenizeResponse:
    """The text of token ids: characters joined, or words joined by single spaces."""
    size = len(lm.tokenizer.vocab)
    bad = [i for i, t in enumerate(body.ids) if t >= size]
    if bad:
        raise InvalidInput(
            f"ids.{bad[0]}: {body.ids[bad[0]]} is not a token of {lm.name!r} "
            f"(its ids are 0 to {size - 1})",
            param=f"ids.{bad[0]}",
            code="id_out_of_range",
        )
    return DetokenizeResponse(model=lm.name, text=lm.tokenizer.decode(body.ids))
