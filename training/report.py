"""The table of bundles printed by `python -m training list`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.bundle import Bundle, BundleError, load_in_order
from models.files import is_valid_name
from models.history import at_best_epoch, epochs_of, held_out_perplexity
from models.rnn import num_parameters


@dataclass(frozen=True)
class BundleRow:
    """One line of `python -m training list`; `error` says why a bundle cannot be read."""

    name: str
    kind: str = "-"
    arch: str = "-"
    params: int | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    train_ppl: float | None = None
    val_ppl: float | None = None
    error: str | None = None


def describe_bundle(path: Path, bundle: Bundle | BundleError) -> BundleRow:
    """Summarise a loaded bundle, or say why it could not be loaded."""
    if isinstance(bundle, BundleError):
        return BundleRow(path.name, error=bundle.reason)
    metrics = bundle.metrics if isinstance(bundle.metrics, dict) else {}
    at_best = at_best_epoch(metrics)
    return BundleRow(
        name=path.name,
        kind=bundle.kind,
        arch=str(bundle.config.get("model", {}).get("arch", "mlp")),
        params=num_parameters(bundle.model),
        epochs=len(epochs_of(metrics)),
        best_epoch=at_best.get("epoch"),
        train_ppl=at_best.get("train_ppl"),
        val_ppl=held_out_perplexity(metrics),
    )


def list_bundles(directory: Path) -> list[BundleRow]:
    """Every bundle-like directory in `directory`, by name (each loaded, so fully
    validated; mixtures after their components); hidden ones (resume state, temporary
    saves) are skipped, and a name the service would ignore is flagged."""
    dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    rows = {
        p.name: BundleRow(p.name, error="not a valid bundle name; the service skips it")
        for p in dirs
        if not is_valid_name(p.name)
    }
    for path, result in load_in_order([p for p in dirs if is_valid_name(p.name)]):
        rows[path.name] = describe_bundle(path, result)
    return [rows[p.name] for p in dirs]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


HEADER = ("name", "kind", "arch", "params", "epochs", "best epoch", "train ppl", "val ppl")


def format_table(rows: Sequence[BundleRow]) -> str:
    """A fixed-width table; an unreadable bundle gets its reason in place of the figures."""
    cells = [
        [r.name, r.kind, r.arch, r.params, r.epochs, r.best_epoch, r.train_ppl, r.val_ppl]
        for r in rows
    ]
    text = [[_cell(c) for c in line] for line in cells]
    widths = [max([len(h)] + [len(t[i]) for t in text]) for i, h in enumerate(HEADER)]
    numeric = range(3, len(HEADER))

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(HEADER)]
    for row, values in zip(rows, text, strict=True):
        out.append(
            f"{row.name.ljust(widths[0])}  UNREADABLE: {row.error}" if row.error else line(values)
        )
    return "\n".join(out)
