import pytest
import torch

from models.forecast import (
    Forecaster,
    ForecasterConfig,
    SineConfig,
    k_step,
    lag_features,
    multi_step,
    one_step,
    run_experiment,
    sine_series,
)


def last_value_model(tau: int = 4) -> Forecaster:
    """A hand-set MLP that predicts x_t = x_{t-1} (exact on a constant series)."""
    model = Forecaster(ForecasterConfig(tau=tau, num_hiddens=2))
    with torch.no_grad():
        first, _, second = model.net
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, tau - 1] = 1.0  # relu(x) and relu(-x) rebuild x
        first.weight[1, tau - 1] = -1.0
        second.weight.copy_(torch.tensor([[1.0, -1.0]]))
        second.bias.zero_()
    return model


def test_series_is_seeded_and_has_the_books_shape() -> None:
    time, x = sine_series(1000, 0.2, seed=3)
    assert time[0] == 1 and time[-1] == 1000 and x.shape == (1000,)
    assert torch.equal(x, sine_series(1000, 0.2, seed=3)[1])
    assert not torch.equal(x, sine_series(1000, 0.2, seed=4)[1])
    assert torch.equal(sine_series(50, 0.0)[1], torch.sin(0.01 * torch.arange(1, 51.0)))


def test_lag_features() -> None:
    features, labels = lag_features(torch.arange(10.0), tau=3)
    assert features.shape == (7, 3) and torch.equal(features[0], torch.tensor([0.0, 1, 2]))
    assert torch.equal(labels, torch.arange(3.0, 10))


def test_predictions_on_a_known_series() -> None:
    model = last_value_model()
    time = torch.arange(1, 101.0)
    constant = torch.full((100,), 2.5)
    assert one_step(model, time, constant).mse == 0.0
    assert multi_step(model, time, constant, num_train=50).mse == 0.0
    ramp = torch.arange(100.0)
    pred = one_step(model, time, ramp)
    assert pred.values == ramp[3:99].tolist() and pred.mse == pytest.approx(1.0)
    k = k_step(model, time, ramp, 4)
    assert k.mse == pytest.approx(16.0)  # four steps behind a unit ramp
    assert len(k.values) == 100 - 4 - 4 + 1
    multi = multi_step(model, time, ramp, num_train=50)
    assert multi.values == [53.0] * 46  # stuck at the last true value


def test_k_step_one_equals_one_step() -> None:
    _model, result = run_experiment(SineConfig(epochs=1))
    assert result.k_step[1].values == pytest.approx(result.one_step.values)


def test_the_books_experiment_learns() -> None:
    _, result = run_experiment(SineConfig())
    assert result.one_step.mse < 0.08  # the noise alone is 0.04
    assert result.k_step[64].mse > result.k_step[4].mse > result.one_step.mse * 0.9
    assert len(result.k_step[64].values) == 933


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SineConfig(T=10, num_train=20)
