"""The noisy-sine experiment of d2l §8.1 ("Working with Sequences").

The book's defaults: T=1000 points x_t = sin(0.01 t) + N(0, 0.2), t = 1..T; an AR(tau=4)
MLP 4-10-1 with Xavier init, trained on the first 600 examples with Adam (lr 0.01),
batch 16, 5 epochs, MSE. Unlike the book, the noise is seeded, so a figure can be rebuilt.
Fitting lives here rather than in training/ because the service refits for new parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.options import check, option
from models.score import Cancelled

K_STEPS: tuple[int, ...] = (1, 4, 16, 64)


@dataclass(frozen=True)
class SineConfig:
    """The series and the fit; defaults are the book's."""

    T: int = option(1000, "series length", ge=1)
    tau: int = option(4, "lags fed to the MLP", ge=1)
    num_train: int = option(600, "training examples (at most T - tau)", ge=1)
    noise: float = option(0.2, "std of the Gaussian noise", ge=0)
    num_hiddens: int = option(10, "MLP hidden units", ge=1)
    lr: float = option(0.01, "Adam learning rate", gt=0)
    batch_size: int = option(16, "minibatch size", ge=1)
    epochs: int = option(5, "passes over the data", ge=1)
    seed: int = option(0, "seed of the noise and the fit")

    def __post_init__(self) -> None:
        check(self)
        if self.num_train > self.T - self.tau:
            raise ValueError(f"num_train must be in [1, T - tau] = [1, {self.T - self.tau}]")


@dataclass(frozen=True)
class ForecasterConfig:
    tau: int = 4
    num_hiddens: int = 10


class Forecaster(nn.Module):
    """The book's MLP: x_{t-tau..t-1} -> x_t."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.tau, config.num_hiddens), nn.ReLU(), nn.Linear(config.num_hiddens, 1)
        )
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, X: Tensor) -> Tensor:
        out: Tensor = self.net(X)
        return out.squeeze(-1)  # (N, tau) -> (N,)


def sine_series(T: int = 1000, noise: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(time, x): time = 1..T, x = sin(0.01 t) + noise * N(0, 1), seeded."""
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(1, T + 1, dtype=torch.float32)
    return time, torch.sin(0.01 * time) + noise * torch.randn(T, generator=g)


def lag_features(x: Tensor, tau: int) -> tuple[Tensor, Tensor]:
    """features[i] = x[i : i + tau], labels[i] = x[i + tau] -> ((T - tau, tau), (T - tau,))."""
    T = x.shape[0]
    features = torch.stack([x[i : T - tau + i] for i in range(tau)], dim=1)
    return features, x[tau:]


def fit_forecaster(
    x: Tensor, config: SineConfig, should_stop: Callable[[], bool] | None = None
) -> tuple[Forecaster, list[float]]:
    """Train the MLP on the first `num_train` lag examples; returns it and per-epoch train MSE.

    `should_stop` is polled before each minibatch; when it returns True, raises `Cancelled`.
    """
    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    model = Forecaster(ForecasterConfig(config.tau, config.num_hiddens))
    features, labels = lag_features(x, config.tau)
    X, y = features[: config.num_train], labels[: config.num_train]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    for _ in range(config.epochs):
        for idx in torch.split(torch.randperm(len(X), generator=g), config.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled
            loss = nn.functional.mse_loss(model(X[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        with torch.no_grad():
            history.append(float(nn.functional.mse_loss(model(X), y)))
    return model, history


@dataclass
class Predictions:
    """Predicted values aligned with `time`, and their MSE against the series there."""

    time: list[float]
    values: list[float]
    mse: float


@dataclass
class ForecastResult:
    time: list[float]
    x: list[float]
    one_step: Predictions
    multi_step: Predictions
    k_step: dict[int, Predictions] = field(default_factory=dict)


def _predictions(time: Tensor, truth: Tensor, values: Tensor) -> Predictions:
    mse = float(((values - truth) ** 2).mean()) if values.numel() else float("nan")
    return Predictions(time.tolist(), values.tolist(), mse)


@torch.no_grad()
def one_step(model: Forecaster, time: Tensor, x: Tensor) -> Predictions:
    """Each x_t predicted from the true x_{t-tau..t-1}, t = tau+1..T."""
    tau = model.config.tau
    features, labels = lag_features(x, tau)
    return _predictions(time[tau:], labels, model(features))


@torch.no_grad()
def multi_step(model: Forecaster, time: Tensor, x: Tensor, num_train: int) -> Predictions:
    """From index num_train + tau on, every prediction feeds on earlier predictions."""
    tau = model.config.tau
    start = num_train + tau
    seq = x.clone()
    for i in range(start, x.shape[0]):
        seq[i] = model(seq[i - tau : i].unsqueeze(0))[0]
    return _predictions(time[start:], x[start:], seq[start:])


@torch.no_grad()
def k_step(model: Forecaster, time: Tensor, x: Tensor, k: int) -> Predictions:
    """x_t predicted k steps ahead: from true values up to t-k, predictions after that."""
    tau, T = model.config.tau, x.shape[0]
    n = T - tau - k + 1
    if n <= 0:
        return _predictions(time[:0], x[:0], x[:0])
    cols = [x[i : i + n] for i in range(tau)]  # each (n,)
    for i in range(tau, tau + k):
        cols.append(model(torch.stack(cols[i - tau : i], dim=1)))
    # Row j predicts index j + tau + k - 1.
    return _predictions(
        time[tau + k - 1 : tau + k - 1 + n], x[tau + k - 1 : tau + k - 1 + n], cols[-1]
    )


def run_experiment(
    config: SineConfig,
    model: Forecaster | None = None,
    steps: tuple[int, ...] = K_STEPS,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Forecaster, ForecastResult]:
    """The whole §8.1 experiment: the series, a fitted (or given) model, every prediction."""
    time, x = sine_series(config.T, config.noise, config.seed)
    if model is None:
        model, _ = fit_forecaster(x, config, should_stop)
    model.eval()
    result = ForecastResult(
        time=time.tolist(),
        x=x.tolist(),
        one_step=one_step(model, time, x),
        multi_step=multi_step(model, time, x, config.num_train),
        k_step={k: k_step(model, time, x, k) for k in steps},
    )
    return model, result
