"""OpenAI-style model listing with rnnlm's metadata, and how each model was trained.

`/v1/models/{id}/training` and `/v1/models/{id}/curves` show the history a bundle carries
in metrics.json (see `models.history`): per epoch, train and held-out perplexity, tokens/s,
the learning rate, the gradient norm before clipping and how often clipping acted.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field

from app.deps import ModelId, ServicesDep
from app.errors import Conflict, NotFound, responses
from app.plots import IMAGE_RESPONSES, MEDIA_TYPES, training_curves
from app.registry import describe
from app.schemas import MODEL_NAME, PlotOptions, ResponseBody
from app.schemas.tokenize import TokenizerRule
from models.arpa import ArpaError, arpa_chunks, arpa_tokens, check_exportable
from models.bundle import Bundle
from models.curves import default_height
from models.history import Record, at_best_epoch, epochs_of
from models.ngram_lm import NgramLM
from models.precision import Precision, precisions_on

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
    precision: Precision | None = Field(
        description="the weights generation decodes with when a request names none "
        "(RNNLM_PRECISION); scoring uses fp32 unless asked. null: not a language model"
    )
    precisions: list[Precision] | None = Field(
        description="the precisions a request may ask for on this device"
    )
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
    lm = name in services.language_models
    return ModelCard(
        id=name,
        created=int(entry.loaded_at),
        default=name == services.default_lm,
        precision=services.settings.precision if lm else None,
        precisions=list(precisions_on(services.device)) if lm else None,
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


class EpochOut(ResponseBody):
    """One epoch as metrics.json records it; a figure the bundle does not record is null."""

    epoch: int
    train_ppl: float | None = Field(
        None, description="training perplexity over the epoch's minibatches"
    )
    val_ppl: float | None = Field(
        None, description="held-out perplexity after the epoch; null without a held-out split"
    )
    lr: float | None = Field(None, description="learning rate in the epoch")
    tokens_per_s: float | None = Field(None, description="training tokens per second")
    seconds: float | None = Field(None, description="training time of the epoch")
    steps: int | None = Field(None, description="optimizer steps (minibatches)")
    grad_norm_mean: float | None = Field(
        None, description="global gradient norm before clipping, mean over the epoch's steps"
    )
    grad_norm_max: float | None = Field(
        None, description="global gradient norm before clipping, largest in the epoch"
    )
    clipped_fraction: float | None = Field(
        None, description="share of the steps whose norm exceeded the clipping threshold"
    )
    train_mse: float | None = Field(None, description="the forecaster's training MSE")


class TrainingOut(ResponseBody):
    id: str
    object: Literal["model.training"] = "model.training"
    kind: str = Field(description="char-lm, word-lm or forecaster")
    best_epoch: int | None = Field(
        description="the epoch whose weights the bundle holds (the best by held-out "
        "perplexity, the last without a held-out split); null for the forecaster"
    )
    epochs: list[EpochOut] = Field(description="the per-epoch history, oldest first")
    settings: dict[str, Any] = Field(
        description="the training settings recorded in the bundle's config.json (corpus, "
        "split, tokens, network, optimiser, clipping, seed, ...)"
    )
    samples: dict[str, str] | None = Field(
        None,
        description="greedy continuations of the book's prompts by the bundle's weights "
        "(bundles trained before they were recorded have none)",
    )


TRAINING_EXAMPLE = {
    "id": "d2l-scratch",
    "object": "model.training",
    "kind": "char-lm",
    "best_epoch": 500,
    "epochs": [
        {
            "epoch": 500,
            "train_ppl": 1.0467,
            "val_ppl": None,
            "lr": 1.0,
            "tokens_per_s": 9274.5,
            "seconds": 0.966,
            "steps": 8,
            "grad_norm_mean": 0.239,
            "grad_norm_max": 0.782,
            "clipped_fraction": 0.0,
            "train_mse": None,
        }
    ],
    "settings": {"arch": "rnn_scratch", "num_hiddens": 512, "max_tokens": 10000, "lr": 1.0},
    "samples": {
        "time traveller": "time traveller for so it will be convenient to speak of himwas e"
    },
}


def _number(value: Any) -> float | None:
    """A finite number, or None (JSON holds no NaN; metrics.json may be hand-edited)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _settings(bundle: Bundle) -> dict[str, Any]:
    settings = bundle.config.get("training")
    return settings if isinstance(settings, dict) else {}


def _epoch_out(record: Record) -> EpochOut:
    """Only the recorded figures that are numbers: a hand-edited metrics.json never 500s."""
    figures = {name: _number(record.get(name)) for name in EpochOut.model_fields}
    steps = figures.pop("steps")
    return EpochOut(
        **(figures | {"epoch": record["epoch"], "steps": None if steps is None else int(steps)})
    )


# Bundle kinds that are not trained epoch by epoch, and what to read instead.
NO_EPOCHS = {
    "ngram": "an n-gram model is counted from its corpus, not trained epoch by epoch (its "
    "held-out perplexity is in its metrics.json and /v1/models/{id})",
    "mixture": "a mixture only fits the weights of trained models (see its components' histories)",
}


def _history(services: ServicesDep, model_id: str) -> tuple[Bundle, list[Record]]:
    """The bundle and its per-epoch records, or a 404 saying why there are none."""
    bundle = services.registry.get(model_id)
    epochs = epochs_of(bundle.metrics)
    if not epochs:
        reason = NO_EPOCHS.get(
            bundle.kind,
            "its metrics.json holds no per-epoch records (a bundle saved without them, such "
            "as one written before rnnlm recorded them)",
        )
        raise NotFound(
            f"model {model_id!r} has no recorded training history: {reason}",
            param="model_id",
            code="no_training_history",
        )
    return bundle, epochs


@router.get(
    "/{model_id}/training",
    response_model=TrainingOut,
    responses={
        200: {"content": {"application/json": {"example": TRAINING_EXAMPLE}}},
        **responses(404),
    },
)
async def get_training(model_id: ModelId, services: ServicesDep) -> TrainingOut:
    """How the bundle was trained: its per-epoch history and its training settings."""
    bundle, epochs = _history(services, model_id)
    samples = bundle.metrics.get("samples")
    good_samples = isinstance(samples, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in samples.items()
    )
    return TrainingOut(
        id=model_id,
        kind=bundle.kind,
        best_epoch=at_best_epoch(bundle.metrics).get("epoch"),
        epochs=[_epoch_out(e) for e in epochs],
        settings=_settings(bundle),
        samples=samples if good_samples else None,
    )


class CurvesQuery(PlotOptions):
    model_config = ConfigDict(extra="forbid")

    height: int | None = Field(  # type: ignore[assignment]
        None, ge=150, le=2000, description="pixels; default 400 per panel"
    )


@router.get(
    "/{model_id}/curves",
    response_class=Response,
    responses={**IMAGE_RESPONSES, **responses(404, 422, 503)},
)
async def get_curves(
    model_id: ModelId, query: Annotated[CurvesQuery, Query()], services: ServicesDep
) -> Response:
    """The training curves by epoch: perplexity (train and held-out) or the forecaster's
    MSE, and the gradient norm before clipping with the threshold, when recorded."""
    bundle, epochs = _history(services, model_id)
    clip = _number(_settings(bundle).get("clip"))
    best = at_best_epoch(bundle.metrics).get("epoch")
    height = query.height or default_height(epochs)
    image = await services.jobs.run(
        training_curves, epochs, model_id, best, clip, query.format, query.width, height
    )
    return Response(image, media_type=MEDIA_TYPES[query.format])
