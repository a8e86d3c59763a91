"""Fit the noisy-sine forecaster (d2l §8.1) and write it as a bundle."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.bundle import CURVES, save_bundle
from models.curves import curves_figure, png
from models.forecast import SineConfig, fit_forecaster, run_experiment, sine_series

log = logging.getLogger(__name__)


def train_sine(config: SineConfig, out: Path) -> dict[str, Any]:
    """Fit on the seeded series, evaluate every prediction mode, save; returns the metrics."""
    _, x = sine_series(config.T, config.noise, config.seed)
    model, history = fit_forecaster(x, config)
    _, result = run_experiment(config, model)
    epochs = [{"epoch": i + 1, "train_mse": mse} for i, mse in enumerate(history)]
    metrics = {
        "epochs": epochs,
        "one_step_mse": result.one_step.mse,
        "multi_step_mse": result.multi_step.mse,
        "k_step_mse": {str(k): p.mse for k, p in result.k_step.items()},
    }
    for record in epochs:
        log.info("epoch %d train mse %.4f", record["epoch"], record["train_mse"])
    curves = png(curves_figure(epochs, Path(out).name))
    save_bundle(
        out, model, training={"sine": asdict(config)}, metrics=metrics, extra_files={CURVES: curves}
    )
    return metrics
