"""The service's figures: matplotlib's object API on the Agg/SVG canvases, returned as bytes.

No pyplot and no global rcParams, so concurrent requests never share figure state. A
figure is cleared once rendered: its artists form reference cycles, and what they hold
(the plotted data) would otherwise stay in memory until a full garbage collection. A
curve is drawn through at most MAX_POINTS of its points, spread evenly in log scale: a
Zipf plot of a million n-grams looks the same and costs a fixed amount.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from models.curves import curves_figure
from models.forecast import ForecastResult

DPI = 100
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
# OpenAPI: what a plot route answers.
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "the figure"}
}


MAX_POINTS = 2000


def render(fig: Figure, fmt: str, width: int, height: int) -> bytes:
    """PNG of exactly width x height pixels, or SVG with the same size in px; the figure
    is cleared afterwards (its data freed now, not at the next garbage collection)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=fmt, dpi=DPI)
    finally:
        fig.clear()
    data = buffer.getvalue()
    if fmt == "svg":  # matplotlib sizes SVG in pt; state the pixel size the caller asked for
        head, rest = data.split(b"<svg", 1)
        tag, body = rest.split(b">", 1)
        tag = re.sub(rb'width="[^"]*"', f'width="{width}px"'.encode(), tag, count=1)
        tag = re.sub(rb'height="[^"]*"', f'height="{height}px"'.encode(), tag, count=1)
        data = head + b"<svg" + tag + b">" + body
    return data


def _figure(width: int, height: int) -> Figure:
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def log_spaced(
    counts: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(ranks, counts) at up to MAX_POINTS ranks evenly spaced in log scale, first and last
    included; every rank when there are fewer."""
    if len(counts) <= MAX_POINTS:
        ranks = np.arange(1, len(counts) + 1)
    else:
        ranks = np.unique(np.geomspace(1, len(counts), MAX_POINTS).round().astype(np.int64))
    return ranks, counts[ranks - 1]


def zipf_plot(
    curves: Sequence[tuple[str, npt.NDArray[np.int64]]],
    title: str,
    fmt: str,
    width: int,
    height: int,
) -> bytes:
    """d2l Fig. 9.2.x: frequency against rank on log-log axes, one curve per n (counts
    largest first)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    for label, counts in curves:
        ax.plot(*log_spaced(counts), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("token: x (rank)")
    ax.set_ylabel("frequency: n(x)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return render(fig, fmt, width, height)


def _data(ax: Axes, result: ForecastResult) -> None:
    ax.plot(result.time, result.x, lw=0.8, label="data")


FIGURES = ("data", "one_step", "multi_step", "k_step")


def _draw(ax: Axes, figure: str, result: ForecastResult) -> None:
    if figure == "data":
        _data(ax, result)
        ax.set_title("noisy sine series")
    elif figure == "one_step":
        _data(ax, result)
        ax.plot(result.one_step.time, result.one_step.values, lw=0.8, label="1-step preds")
        ax.set_title(f"1-step predictions (mse {result.one_step.mse:.3f})")
    elif figure == "multi_step":
        _data(ax, result)
        ax.plot(result.one_step.time, result.one_step.values, lw=0.8, label="1-step preds")
        ax.plot(result.multi_step.time, result.multi_step.values, lw=0.8, label="multistep preds")
        ax.set_title(f"multi-step predictions (mse {result.multi_step.mse:.3f})")
    else:
        for k, preds in result.k_step.items():
            ax.plot(preds.time, preds.values, lw=0.8, label=f"{k}-step preds")
        ax.set_title("k-step-ahead predictions")
    ax.set_xlabel("time")
    ax.set_ylabel("x")
    ax.legend(fontsize="small")


def forecast_plot(result: ForecastResult, figure: str, fmt: str, width: int, height: int) -> bytes:
    """The book's §8.1 figures, one of them or all four in a 2 x 2 grid."""
    fig = _figure(width, height)
    if figure == "all":
        for i, name in enumerate(FIGURES):
            _draw(fig.add_subplot(2, 2, i + 1), name, result)
    else:
        _draw(fig.add_subplot(), figure, result)
    return render(fig, fmt, width, height)


def surprisal_plot(
    tokens: Sequence[str],
    rows: Sequence[tuple[str, Sequence[float | None]]],
    fmt: str,
    width: int,
    height: int,
) -> bytes:
    """A strip per model, a cell per token coloured by its surprisal in bits (black where
    the model gives the token probability 0); the tokens label the cells when they fit."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(
        np.array([[math.inf if v is None else v for v in r] for _, r in rows], dtype=float)
    )
    cmap = colormaps["viridis_r"].with_extremes(bad="black")
    image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=0, interpolation="nearest")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    if len(tokens) <= width // 9:
        ax.set_xticks(range(len(tokens)), [t.replace(" ", "␣") for t in tokens], fontsize=7)
    else:
        ax.set_xlabel("token")
    ax.set_title("per-token surprisal")
    fig.colorbar(image, ax=ax, label="bits")
    return render(fig, fmt, width, height)


def training_curves(
    history: Sequence[dict[str, Any]],
    name: str,
    best_epoch: int | None,
    clip: float | None,
    fmt: str,
    width: int,
    height: int,
) -> bytes:
    """The bundle's training curves by epoch, the figure training saves as curves.png."""
    return render(curves_figure(history, name, best_epoch, clip, width, height), fmt, width, height)
