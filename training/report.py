"""Training reports: the curves PNG saved inside each bundle, and the table of bundles
printed by `python -m training list`.

The curves are drawn here rather than in app/plots.py because app/ must not be imported
by training/, and a bundle should show how it was trained without a running service.
matplotlib's object API on the Agg canvas, as in the service: no pyplot global state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from models.bundle import BundleError, is_valid_name, load_bundle
from models.rnn import num_parameters

WIDTH, HEIGHT, DPI = 640, 400, 100


def curves_png(
    history: Sequence[dict[str, Any]],
    series: Sequence[tuple[str, str]],
    ylabel: str,
    title: str,
    best_epoch: int | None = None,
) -> bytes:
    """A PNG of each (key, label) of `series` against the epoch, on a log scale.

    Args:
        history: per-epoch records as in metrics.json, each with "epoch" and the keys.
        best_epoch: marked with a dotted line: the epoch whose weights the bundle holds.
    """
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    for key, label in series:
        values = [h.get(key, math.nan) for h in history]
        ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, ms=3, label=label)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    _log_axis(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _log_axis(ax: Any) -> None:
    """Log y (the first epochs would flatten the rest), labelled in plain numbers; within a
    decade the minor ticks are labelled too, or the axis could show no number at all."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())


def lm_curves_png(history: Sequence[dict[str, Any]], name: str, best_epoch: int) -> bytes:
    """Train and validation perplexity by epoch (d2l's perplexity plot, both splits)."""
    series = [("train_ppl", "train"), ("val_ppl", "validation")]
    return curves_png(history, series, "perplexity", f"{name}: perplexity by epoch", best_epoch)


def sine_curves_png(history: Sequence[dict[str, Any]], name: str) -> bytes:
    """Training MSE of the sine forecaster by epoch."""
    return curves_png(history, [("train_mse", "train")], "MSE", f"{name}: training loss by epoch")


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


def describe_bundle(path: Path) -> BundleRow:
    """Load (and so fully validate) a bundle and summarise it; never raises BundleError."""
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        return BundleRow(path.name, error=exc.reason)
    except OSError as exc:  # unreadable files: permissions, I/O errors
        return BundleRow(path.name, error=f"cannot read: {exc}")
    metrics = bundle.metrics if isinstance(bundle.metrics, dict) else {}
    epochs = metrics.get("epochs")
    history: list[dict[str, Any]] = epochs if isinstance(epochs, list) else []
    best = metrics.get("best_epoch")
    at_best = history[best - 1] if isinstance(best, int) and 0 < best <= len(history) else {}
    return BundleRow(
        name=path.name,
        kind=bundle.kind,
        arch=str(bundle.config.get("model", {}).get("arch", "mlp")),
        params=num_parameters(bundle.model),
        epochs=len(history),
        best_epoch=best if isinstance(best, int) else None,
        train_ppl=at_best.get("train_ppl"),
        val_ppl=at_best.get("val_ppl"),
    )


def list_bundles(directory: Path) -> list[BundleRow]:
    """Every bundle-like directory in `directory`, by name; hidden ones (resume state,
    temporary saves) are skipped, and a name the service would ignore is flagged."""
    rows = []
    for path in sorted(p for p in directory.iterdir() if p.is_dir()):
        if path.name.startswith("."):
            continue
        if not is_valid_name(path.name):
            rows.append(BundleRow(path.name, error="not a valid bundle name; the service skips it"))
        else:
            rows.append(describe_bundle(path))
    return rows


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
