from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from app.schemas import PlotOptions, ResponseBody, StrictRequest
from models.forecast import SineConfig

MAX_T = 4000
MAX_EPOCHS = 20
MAX_K = 256


class ForecastRequest(StrictRequest):
    """The §8.1 experiment; the defaults are the book's and use the committed forecaster."""

    T: int = Field(1000, ge=20, le=MAX_T, description="series length")
    tau: int = Field(4, ge=1, le=64, description="lags the MLP reads")
    num_train: int = Field(
        600, ge=1, description="training examples (at most T - tau - 1: multi-step needs a point)"
    )
    noise: float = Field(0.2, ge=0.0, le=2.0, description="std of the Gaussian noise")
    num_hiddens: int = Field(10, ge=1, le=64, description="MLP hidden units")
    lr: float = Field(0.01, gt=0.0, le=1.0, description="Adam learning rate")
    batch_size: int = Field(16, ge=1, le=1024, description="minibatch size")
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS, description="passes over the training data")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the noise and the fit")
    k_steps: list[int] = Field(
        default_factory=lambda: [1, 4, 16, 64],
        min_length=1,
        max_length=8,
        description=f"horizons of the k-step predictions, each 1..{MAX_K}, up to 8",
        examples=[[1, 4, 16, 64]],
    )

    @field_validator("k_steps")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if not 1 <= len(ks) <= 8 or any(not 1 <= k <= MAX_K for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"give 1 to 8 distinct horizons, each in [1, {MAX_K}]")
        return sorted(ks)

    @model_validator(mode="after")
    def _sizes(self) -> ForecastRequest:
        if self.num_train > self.T - self.tau - 1:
            raise ValueError(
                f"num_train must be at most T - tau - 1 = {self.T - self.tau - 1}, so that "
                "the multi-step predictions have at least one point"
            )
        if max(self.k_steps) > self.T - self.tau:
            raise ValueError(f"each k must be at most T - tau = {self.T - self.tau}")
        return self

    def to_config(self) -> SineConfig:
        return SineConfig(
            T=self.T,
            tau=self.tau,
            num_train=self.num_train,
            noise=self.noise,
            num_hiddens=self.num_hiddens,
            lr=self.lr,
            batch_size=self.batch_size,
            epochs=self.epochs,
            seed=self.seed,
        )


class PredictionsOut(ResponseBody):
    time: list[float]
    values: list[float | None] = Field(description="null where a prediction is not finite")
    mse: float | None = Field(
        description="mean squared error against the series at the same times; null when not "
        "finite (see `diverged`)"
    )


class SeriesOut(ResponseBody):
    time: list[float]
    x: list[float]


class ForecastResponse(ResponseBody):
    model: str = Field(description="the committed bundle's name, or 'fitted' for new parameters")
    config: dict[str, float | int]
    series: SeriesOut
    one_step: PredictionsOut
    multi_step: PredictionsOut
    k_step: dict[str, PredictionsOut]
    diverged: bool = Field(
        description="some predictions or errors are not finite (shown as null): the fit "
        "diverged, e.g. too high a learning rate for the noise and batch size"
    )


class ForecastPlotRequest(ForecastRequest, PlotOptions):
    figure: Literal["data", "one_step", "multi_step", "k_step", "all"] = Field(
        "all", description="one of the book's four figures, or all four in a grid"
    )
    width: int = Field(800, ge=200, le=2400, description="pixels")
    height: int = Field(600, ge=150, le=2400, description="pixels")
