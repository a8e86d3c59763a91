"""Training curves by epoch, drawn from a bundle's history (the records of metrics.json).

Training saves them into each bundle as curves.png, so a bundle shows how it was trained
without a running service; the service draws them again on request, as PNG or SVG. One
panel per recorded quantity: perplexity (train and validation) or the forecaster's MSE,
and, when recorded, the gradient norm before clipping with the clipping threshold.
matplotlib's object API on a bare Figure: no pyplot global state, safe across threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

WIDTH, PANEL_HEIGHT, DPI = 640, 400, 100


@dataclass(frozen=True)
class Panel:
    ylabel: str
    title: str
    series: tuple[tuple[str, str], ...]  # (metrics key, legend label)


PANELS = (
    Panel("perplexity", "perplexity by epoch", (("train_ppl", "train"), ("val_ppl", "validation"))),
    Panel("MSE", "training loss by epoch", (("train_mse", "train"),)),
    Panel(
        "gradient norm",
        "gradient norm before clipping",
        (("grad_norm_mean", "mean over steps"), ("grad_norm_max", "max over steps")),
    ),
)


def _values(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    values = [h.get(key) for h in history]
    return [float(v) if isinstance(v, int | float) else math.nan for v in values]


def panels_of(history: Sequence[Mapping[str, Any]]) -> list[Panel]:
    """The panels the history has any finite figure for, in the order of PANELS."""
    return [
        p
        for p in PANELS
        if any(math.isfinite(v) for key, _ in p.series for v in _values(history, key))
    ]


def default_height(history: Sequence[Mapping[str, Any]]) -> int:
    return PANEL_HEIGHT * max(1, len(panels_of(history)))


def curves_figure(
    history: Sequence[Mapping[str, Any]],
    name: str,
    best_epoch: int | None = None,
    clip: float | None = None,
    width: int = WIDTH,
    height: int | None = None,
) -> Figure:
    """The curves of `history` (records with "epoch" and the keys of PANELS).

    Args:
        best_epoch: marked with a dotted line: the epoch whose weights the bundle holds
            (the best by validation perplexity; the last without a held-out split).
        clip: the clipping threshold theta, drawn on the gradient-norm panel.
    """
    panels = panels_of(history)
    height = height or default_height(history)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    epochs = _values(history, "epoch")
    for i, panel in enumerate(panels or PANELS[:1]):
        ax = fig.add_subplot(max(1, len(panels)), 1, i + 1)
        for key, label in panel.series:
            values = _values(history, key)
            if any(math.isfinite(v) for v in values):
                ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, ms=3, label=label)
        if clip is not None and panel.series[0][0] == "grad_norm_mean":
            ax.axhline(clip, color="black", linestyle="--", lw=0.8, label=f"clip θ = {clip:g}")
        if best_epoch is not None:
            kept = f"weights kept (epoch {best_epoch})"
            ax.axvline(best_epoch, color="grey", linestyle=":", label=kept)
        if ax.lines:
            _log_axis(ax)
            ax.legend(fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.ylabel)
        ax.set_title(f"{name}: {panel.title}" if i == 0 else panel.title)
        ax.grid(True, which="both", alpha=0.3)
    return fig


def _log_axis(ax: Axes) -> None:
    """Log y (the first epochs would flatten the rest), labelled in plain numbers; within a
    decade the minor ticks are labelled too, or the axis could show no number at all."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
