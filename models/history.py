"""The training history a bundle carries in metrics.json, and the lookups on it.

metrics.json holds `epochs`, one record per trained epoch (`epoch`, `train_ppl`,
`val_ppl`, `lr`, `tokens_per_s`, ... for a language model; `train_mse` for the forecaster),
and for a language model `best_epoch`: the epoch whose weights the bundle holds. Training
writes it; the service and `python -m training list` read it through these functions, so
both agree on what "the figures at the best epoch" are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Record = dict[str, Any]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def best_epoch(history: Sequence[Mapping[str, Any]]) -> int:
    """The epoch with the lowest validation perplexity (the last one when there is none:
    `val_ppl` null without a held-out split)."""
    finite = [h for h in history if _finite(h.get("val_ppl"))]
    return int(min(finite, key=lambda h: h["val_ppl"])["epoch"]) if finite else len(history)


def lm_metrics(history: Sequence[Record], **extra: Any) -> dict[str, Any]:
    """A language model's metrics.json: the history, its best epoch and the figures there."""
    best = best_epoch(history)
    return {
        "epochs": list(history),
        "best_epoch": best,
        "best_val_ppl": history[best - 1]["val_ppl"],
        "train_ppl_at_best": history[best - 1]["train_ppl"],
        **extra,
    }


def epochs_of(metrics: Mapping[str, Any]) -> list[Record]:
    """The per-epoch records of a metrics.json; empty when it has none (or not as a list)."""
    epochs = metrics.get("epochs")
    if not isinstance(epochs, list):
        return []
    return [e for e in epochs if isinstance(e, dict) and isinstance(e.get("epoch"), int)]


def at_best_epoch(metrics: Mapping[str, Any]) -> Record:
    """The record of the epoch whose weights the bundle holds; empty when not recorded."""
    epochs = epochs_of(metrics)
    best = metrics.get("best_epoch")
    if not isinstance(best, int) or isinstance(best, bool):
        return {}
    return next((e for e in epochs if e["epoch"] == best), {})


def held_out_perplexity(metrics: Mapping[str, Any]) -> float | None:
    """The bundle's held-out perplexity: at the best epoch for a trained network, the one
    `val_ppl` of a model without epochs (n-gram counts, a mixture); None when unknown or
    infinite (an MLE n-gram model with unseen n-grams in the held-out text)."""
    value = at_best_epoch(metrics).get("val_ppl", metrics.get("val_ppl"))
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
