"""The loaded bundles: discovered in the checkpoint directory, validated, put on the device.

A bundle that fails to load, for any reason (a damaged file, a config the weights do not
match, running out of memory), is kept with its reason (shown by /ready and logged) while
the others serve. Requests name models only through `get`, a dictionary lookup, so a
model name never becomes a filesystem path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.errors import NotFound
from models.bundle import Bundle, BundleError, load_in_order
from models.files import is_valid_name
from models.history import at_best_epoch, held_out_perplexity
from models.mixture import Mixture
from models.ngram_lm import NgramLM
from models.rnn import LanguageModel, num_parameters

log = logging.getLogger(__name__)

# The default LM when none is configured: the first of these that is served (the mixture
# has the lowest held-out perplexity of the committed bundles; README, "Models").
PREFERRED_DEFAULTS = ("char-mix", "char-lstm")


@dataclass
class Entry:
    name: str
    state: str  # "ready" or "failed"
    reason: str | None = None
    bundle: Bundle | None = None
    loaded_at: float = field(default_factory=time.time)


class Registry:
    def __init__(self, checkpoint_dir: Path, device: torch.device) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.entries: dict[str, Entry] = {}

    def load_all(self) -> None:
        """Load every bundle directory; never raises for a bad bundle.

        Bundles built on others (mixtures) load after every other bundle, given the ready
        ones as their components; a mixture whose component failed says which and why.
        """
        if not self.checkpoint_dir.is_dir():
            log.warning("checkpoint directory %s does not exist", self.checkpoint_dir)
            return
        paths = [
            p for p in sorted(self.checkpoint_dir.iterdir()) if p.is_dir() and is_valid_name(p.name)
        ]
        for path, result in load_in_order(paths, self.device):
            if isinstance(result, BundleError):
                log.error("bundle %s not served: %s", path.name, result.reason)
                self.entries[path.name] = Entry(path.name, "failed", result.reason)
            else:
                self.entries[path.name] = Entry(path.name, "ready", bundle=result)
                log.info("bundle %s loaded (%s) on %s", path.name, result.kind, self.device)

    def ready(self, kind: str | None = None) -> dict[str, Bundle]:
        return {
            name: e.bundle
            for name, e in self.entries.items()
            if e.bundle is not None and (kind is None or e.bundle.kind == kind)
        }

    def language_models(self) -> dict[str, Bundle]:
        """The ready bundles that generate and score text (any kind with that interface)."""
        return {
            n: b
            for n, b in self.ready().items()
            if isinstance(b.model, LanguageModel) and b.tokenizer is not None
        }

    def get(self, name: str) -> Bundle:
        """The ready bundle `name`, or a 404 that lists the ready ones."""
        entry = self.entries.get(name)
        if entry is None or entry.bundle is None:
            raise self.not_found(name, self.ready())
        return entry.bundle

    def not_found(self, name: str, available: Iterable[str]) -> NotFound:
        """The 404 for `name`: why it is not served (if it failed), and what is."""
        entry = self.entries.get(name)
        why = f" ({entry.reason})" if entry is not None and entry.reason else ""
        known = ", ".join(sorted(available)) or "none"
        return NotFound(
            f"model {name!r} is not available{why}; available: {known}",
            param="model",
            code="model_not_found",
        )

    def default_lm(self, configured: str | None) -> str | None:
        lms = self.language_models()
        for name in (configured, *PREFERRED_DEFAULTS):
            if name and name in lms:
                return name
        return next(iter(sorted(lms)), None)


def describe(bundle: Bundle, device: torch.device) -> dict[str, Any]:
    """Metadata shown by /v1/models."""
    model_cfg = bundle.config.get("model", {})
    at_best = at_best_epoch(bundle.metrics)
    model = bundle.model
    return {
        "kind": bundle.kind,
        "architecture": model_cfg.get("arch", "mlp" if bundle.kind == "forecaster" else None),
        "parameters": num_parameters(bundle.model),
        "vocab_size": len(bundle.tokenizer.vocab) if bundle.tokenizer else None,
        "device": str(device),
        "train_perplexity": at_best.get("train_ppl"),
        # Count-based models and mixtures have no epochs: one held-out figure.
        "val_perplexity": held_out_perplexity(bundle.metrics),
        "order": model.config.order if isinstance(model, NgramLM) else None,
        "smoothing": model.config.smoothing if isinstance(model, NgramLM) else None,
        "components": list(model.config.components) if isinstance(model, Mixture) else None,
        "config": model_cfg,
    }
