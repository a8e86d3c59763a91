"""OpenAI-style model listing with rnnlm's metadata."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from pydantic import Field

from app.deps import ModelId, ServicesDep
from app.errors import Conflict, responses
from app.registry import describe
from app.schemas import MODEL_NAME, ResponseBody
from app.schemas.tokenize import TokenizerRule
from models.arpa import ArpaError, arpa_chunks, arpa_tokens, check_exportable
from models.ngram_lm import NgramLM

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelCard(ResponseBody):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when the service loaded the bundle (unix seconds)")
    owned_by: str = "rnnlm"
    kind: str = Field(description="char-lm, word-lm, byte-lm, ngram, mixture or forecaster")
    architecture: str | None
    parameters: int
    vocab_size: int | None
    tokenizer: TokenizerRule | None = Field(description="the rule applied to every input")
    device: str
    train_perplexity: float | None = Field(description="training perplexity at the best epoch")
    val_perplexity: float | None = Field(
        description="held-out perplexity (at the best epoch for a recurrent model)"
    )
    order: int | None = Field(description="an n-gram model's order n")
    smoothing: str | None = Field(description="an n-gram model's smoothing")
    components: list[str] | None = Field(description="a mixture's component models")
    default: bool = Field(description="used when a request names no model")
    config: dict[str, Any]


class ModelList(ResponseBody):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def _card(services: ServicesDep, name: str) -> ModelCard:
    bundle = services.registry.get(name)
    entry = services.registry.entries[name]
    return ModelCard(
        id=name,
        created=int(entry.loaded_at),
        default=name == services.default_lm,
        tokenizer=TokenizerRule.of(bundle.tokenizer) if bundle.tokenizer else None,
        **describe(bundle, services.device),
    )


@router.get("", response_model=ModelList)
async def list_models(services: ServicesDep) -> ModelList:
    """Every bundle being served (failed ones are listed by /ready)."""
    return ModelList(data=[_card(services, n) for n in sorted(services.registry.ready())])


@router.get("/{model_id}", response_model=ModelCard, responses=responses(404))
async def get_model(model_id: ModelId, services: ServicesDep) -> ModelCard:
    """One bundle's card."""
    return _card(services, model_id)


@router.get(
    "/{model_id}/arpa",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "the ARPA file"},
        **responses(404, 409),
    },
)
async def get_arpa(
    model_id: Annotated[
        str, Path(pattern=MODEL_NAME, description="an n-gram model", examples=["char-kn10"])
    ],
    services: ServicesDep,
) -> StreamingResponse:
    """An n-gram model in the ARPA backoff format (as KenLM and SRILM read it).

    The space token is written `<sp>` (ARPA separates tokens by whitespace); `<s>` and
    `</s>` are listed with log10 probability -99 because readers require them, though the
    model reads text as one stream. 409 for a model without an ARPA form: recurrent models
    and mixtures (their predictions depend on the whole history), and MLE n-gram models
    (a backoff weight of 0 cannot be written).
    """
    bundle = services.registry.get(model_id)
    model = bundle.model
    if not isinstance(model, NgramLM) or bundle.tokenizer is None:
        raise Conflict(
            f"model {model_id!r} is a {bundle.kind} model, which has no ARPA form: ARPA lists "
            "n-gram probabilities and backoff weights, and only n-gram models are made of those",
            param="model_id",
            code="no_arpa_form",
        )
    vocab = bundle.tokenizer.vocab
    try:
        check_exportable(model)
        arpa_tokens(vocab)
    except ArpaError as exc:
        raise Conflict(
            f"model {model_id!r}: {exc}", param="model_id", code="no_arpa_form"
        ) from None
    return StreamingResponse(
        arpa_chunks(model, vocab),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{model_id}.arpa"'},
    )
