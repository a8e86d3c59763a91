"""OpenAI-style model listing with rnnlm's metadata."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from app.deps import ServicesDep
from app.errors import responses
from app.registry import describe
from app.schemas import ResponseBody
from app.schemas.tokenize import TokenizerRule

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelCard(ResponseBody):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when the service loaded the bundle (unix seconds)")
    owned_by: str = "rnnlm"
    kind: str = Field(description="char-lm, word-lm, byte-lm or forecaster")
    architecture: str | None
    parameters: int
    vocab_size: int | None
    tokenizer: TokenizerRule | None = Field(description="the rule applied to every input")
    device: str
    train_perplexity: float | None = Field(description="training perplexity at the best epoch")
    val_perplexity: float | None = Field(description="held-out perplexity at the best epoch")
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
async def get_model(model_id: str, services: ServicesDep) -> ModelCard:
    """One bundle's card."""
    return _card(services, model_id)
