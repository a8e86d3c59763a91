"""Count-based models and mixtures into bundles: `python -m training ngram` and `mixture`.

Both read the split the recurrent models train on (`training.data.load_tokens`): counts
come from the training split only, and the held-out perplexity is measured on the
validation split as `models.score` defines it for every model. A mixture's weights are fit
on the validation split, never on the training split (which the n-gram model has memorised:
every n-gram there is "seen"), as an RNN's best epoch is chosen on it. So that the figure is
not only a fitted one, its metrics also give `val_ppl_cross_fit`: the weights fit on one
half of the split and measured on the other, both ways.
"""

from __future__ import annotations

import logging
import math
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from models.arpa import check_exportable, write_arpa
from models.bundle import Bundle, load_bundle, save_bundle
from models.mixture import Mixture, MixtureConfig, fit_gate, gate_inputs, mixture_nll
from models.ngram_lm import MAX_ORDER, NgramConfig, NgramLM, Smoothing, count_ngrams, max_order
from models.options import check, option
from models.rnn import LanguageModel
from models.score import Score, score_ids
from training.config import DataConfig, recorded
from training.data import Tokens, load_tokens
from training.errors import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NgramSettings:
    """The n-gram model: its order and how unseen n-grams get probability."""

    order: int = option(7, "n: each token is predicted from the n-1 before it", ge=1, le=MAX_ORDER)
    smoothing: Smoothing = option(
        "kn",
        "mle: the book's ratio of counts (an unseen n-gram gets 0); laplace: the book's "
        "add-epsilon; kn: interpolated Kneser-Ney; modified-kn: its three-discount variant",
    )
    epsilon: float = option(1.0, "laplace: pseudo-count given to the lower order's estimate", gt=0)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class NgramRun:
    """One n-gram bundle: where it goes, its data and its settings."""

    out: Path = option(MISSING, "bundle directory to write, e.g. checkpoints/char-kn7")
    arpa: Path | None = option(
        None, "also write the model as an ARPA file here (laplace, kn or modified-kn)"
    )
    data: DataConfig = field(default_factory=DataConfig)
    ngram: NgramSettings = field(default_factory=NgramSettings)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class MixtureRun:
    """A mixture of bundles beside it, its weights fit on their validation split."""

    out: Path = option(MISSING, "bundle directory to write; the components are bundles beside it")
    components: tuple[str, ...] = option(
        (), "names of the component bundles in the directory of --out (two or more)"
    )
    fixed_weights: bool = option(
        False, "one weight per component, instead of weights that depend on the context"
    )
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        check(self)
        if len(self.components) < 2 or len(set(self.components)) != len(self.components):
            raise ValueError(f"components must name two or more bundles, got {self.components}")


def _held_out(score: Score) -> dict[str, Any]:
    """JSON has no infinity: an MLE model's probability-0 tokens are counted instead."""
    zeros = sum(1 for lp in score.token_logprobs or [] if lp == -math.inf)
    finite = math.isfinite(score.nll) and score.count > 0
    return {
        "val_ppl": score.perplexity if finite else None,
        "val_tokens_scored": score.count,
        "val_zero_probability_tokens": zeros,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _split(tokens: Tokens) -> dict[str, Any]:
    return {
        "corpus_sha1": tokens.corpus_sha1,
        "train_tokens": len(tokens.train_ids),
        "val_tokens": len(tokens.val_ids),
    }


def count_model(tokens: Tokens, settings: NgramSettings) -> NgramLM:
    vocab_size = len(tokens.tokenizer.vocab)
    if settings.order > max_order(vocab_size):
        raise TrainingError(
            f"order {settings.order} is too high for a vocabulary of {vocab_size}: at most "
            f"{max_order(vocab_size)} (n-gram keys must fit 64 bits)"
        )
    config = NgramConfig(vocab_size, settings.order, settings.smoothing, settings.epsilon)
    return NgramLM(config, count_ngrams(tokens.train_ids, settings.order, vocab_size))


def train_ngram(run: NgramRun) -> dict[str, Any]:
    """Count the training split, write the bundle (and ARPA file); returns the metrics."""
    tokens = load_tokens(run.data)
    model = count_model(tokens, run.ngram)
    if run.arpa is not None:
        check_exportable(model)  # before any work is written
    score = score_ids(model, tokens.val_ids, return_logprobs=True)
    metrics = {**_held_out(score), "ngrams": list(model.config.sizes)}
    training = {k: v for k, v in recorded(run).items() if k != "arpa"} | _split(tokens)
    save_bundle(run.out, model, tokens.tokenizer, training, metrics)
    if run.arpa is not None:
        write_arpa(model, tokens.tokenizer.vocab, run.arpa)
    log.info("%s: held-out perplexity %s", run.out, metrics["val_ppl"])
    return metrics


def held_out_by_order(data: DataConfig, orders: list[int], smoothing: Smoothing) -> dict[str, Any]:
    """Held-out perplexity at each order, from one count at the highest (`kn` command)."""
    tokens = load_tokens(data)
    model = count_model(tokens, NgramSettings(max(orders), smoothing))
    results = {}
    for order in sorted(orders):
        score = score_ids(model.variant(order), tokens.val_ids, return_logprobs=True)
        results[str(order)] = _held_out(score)["val_ppl"]
        log.info("%s order %d: held-out perplexity %s", smoothing, order, results[str(order)])
    return {"smoothing": smoothing, "val_tokens": len(tokens.val_ids), "val_ppl_by_order": results}


def _check_component(bundle: Bundle, tokens: Tokens) -> LanguageModel:
    """A component must be a base language model trained on exactly this split."""
    model = bundle.model
    if bundle.kind == "mixture" or not isinstance(model, LanguageModel):
        raise TrainingError(f"component {bundle.name!r} is a {bundle.kind}, not a language model")
    trained = bundle.config.get("training", {})
    for key, value in _split(tokens).items():
        if key in trained and trained[key] != value:
            raise TrainingError(
                f"component {bundle.name!r} was trained with {key} {trained[key]}, the data "
                f"given has {value}: a mixture is fit on its components' own validation split"
            )
    if bundle.tokenizer is None or bundle.tokenizer.rule != tokens.tokenizer.rule:
        raise TrainingError(f"component {bundle.name!r} tokenizes text differently")
    if bundle.tokenizer.vocab.idx_to_token != tokens.tokenizer.vocab.idx_to_token:
        raise TrainingError(f"component {bundle.name!r} has another vocabulary than the data")
    return model


def fit_mixture(run: MixtureRun) -> dict[str, Any]:
    """Fit the mixture's weights on the validation split and write its bundle."""
    tokens = load_tokens(run.data)
    if len(tokens.val_ids) < 4:
        raise TrainingError("a mixture is fit on the validation split, and the data has none")
    bundles = [load_bundle(run.out.parent / name) for name in run.components]
    models = [_check_component(b, tokens) for b in bundles]
    config = MixtureConfig(
        vocab_size=len(tokens.tokenizer.vocab),
        components=run.components,
        component_sha256=tuple(b.config_sha256 for b in bundles),
        ngram_orders=tuple(m.config.order if isinstance(m, NgramLM) else 0 for m in models),
        context=not run.fixed_weights,
    )
    mixture = Mixture(config, models)
    inputs = gate_inputs(mixture, tokens.val_ids)
    half = inputs.chosen.shape[0] // 2
    cross = 0.0
    for fit, held in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))):
        fit_gate(mixture, inputs[fit])
        cross += mixture_nll(mixture, inputs[held])
    fit_gate(mixture, inputs)
    val = score_ids(mixture, tokens.val_ids)
    metrics = {
        "val_ppl": val.perplexity,
        "val_ppl_cross_fit": math.exp(cross / inputs.chosen.shape[0]),
        "val_tokens_scored": val.count,
        "component_val_ppl": {
            b.name: _finite(math.exp(-float(inputs.chosen[:, c].mean())))
            for c, b in enumerate(bundles)
        },
    }
    training = recorded(run) | _split(tokens)
    save_bundle(run.out, mixture, tokens.tokenizer, training, metrics)
    log.info(
        "%s: held-out perplexity %.4f (cross-fit %.4f)",
        run.out,
        val.perplexity,
        metrics["val_ppl_cross_fit"],
    )
    return metrics
