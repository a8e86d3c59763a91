import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from models.bundle import load_bundle
from tests.conftest import tiny_train_config
from training import loop
from training.config import TrainConfig
from training.errors import TrainingError
from training.loop import EpochStats, clip_gradients, train


def small_config(tmp_path: Path, corpus: Path, **settings) -> TrainConfig:
    return tiny_train_config(tmp_path / "ck" / "tiny", corpus, **settings)


def weights_sha(out: Path) -> str:
    return hashlib.sha256((out / "weights.safetensors").read_bytes()).hexdigest()


def test_clipping_bounds_the_norm_and_keeps_the_direction() -> None:
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    params[0].grad = torch.tensor([3.0, 0.0, 4.0])
    params[1].grad = torch.tensor([0.0, 12.0])
    before = torch.cat([p.grad for p in params]).clone()
    norm = clip_gradients(params, theta=1.0)
    after = torch.cat([p.grad for p in params])
    assert norm.item() == pytest.approx(13.0)
    assert after.norm().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(after / after.norm(), before / before.norm())
    small = torch.nn.Parameter(torch.zeros(2))
    small.grad = torch.tensor([0.3, 0.4])
    clip_gradients([small], theta=1.0)
    torch.testing.assert_close(small.grad, torch.tensor([0.3, 0.4]))  # under theta: untouched


def test_a_tiny_run_learns_and_writes_a_bundle(tmp_path: Path, tiny_corpus: Path) -> None:
    config = small_config(tmp_path, tiny_corpus, epochs=3)
    metrics = train(config)
    ppl = [e["val_ppl"] for e in metrics["epochs"]]
    assert ppl[-1] < ppl[0] * 0.8
    bundle = load_bundle(config.out)
    assert bundle.kind == "char-lm"
    assert bundle.metrics["best_epoch"] == metrics["best_epoch"]
    assert bundle.config["training"]["corpus_sha1"]
    assert all(e["tokens_per_s"] > 0 and e["train_ppl"] > 1 for e in metrics["epochs"])


def test_weights_dtype_float16_stores_half_precision(tmp_path: Path, tiny_corpus: Path) -> None:
    config = small_config(tmp_path, tiny_corpus, epochs=1, weights_dtype="float16")
    train(config)
    with safe_open(str(config.out / "weights.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}
    assert load_bundle(config.out).config["training"]["weights_dtype"] == "float16"


def test_same_seed_same_weights(tmp_path: Path, tiny_corpus: Path, curves_not_drawn: None) -> None:
    a = small_config(tmp_path / "a", tiny_corpus, epochs=2, dropout=0.2, num_layers=2)
    b = a.replace(out=tmp_path / "b" / "tiny")
    train(a)
    train(b)
    assert weights_sha(a.out) == weights_sha(b.out)
    c = a.replace(out=tmp_path / "c" / "tiny", seed=1)
    train(c)
    assert weights_sha(c.out) != weights_sha(a.out)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_resume_equals_an_uninterrupted_run(
    tmp_path: Path,
    tiny_corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    sampling: str,
    curves_not_drawn: None,
) -> None:
    full = small_config(tmp_path / "full", tiny_corpus, epochs=3, dropout=0.1, sampling=sampling)
    train(full)
    cut = full.replace(out=tmp_path / "cut" / "tiny")
    real_epoch = loop.train_epoch

    def interrupted(*args, **kw):
        if args[4] == 2:  # the epoch argument: Ctrl-C during epoch 2
            raise KeyboardInterrupt
        return real_epoch(*args, **kw)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(loop, "train_epoch", real_epoch)
    metrics = train(cut, resume=True)  # epochs 2 and 3: the resumed state carries over twice
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert weights_sha(cut.out) == weights_sha(full.out)
    done = json.loads((full.out / "metrics.json").read_text())
    assert [e["val_ppl"] for e in metrics["epochs"]] == [e["val_ppl"] for e in done["epochs"]]


def test_resume_refuses_changed_settings(
    tmp_path: Path, tiny_corpus: Path, curves_not_drawn: None
) -> None:
    config = small_config(tmp_path, tiny_corpus, epochs=1)
    train(config)
    with pytest.raises(TrainingError, match="lr"):
        train(config.replace(lr=0.5, epochs=2), resume=True)
    assert len(train(config.replace(epochs=2), resume=True)["epochs"]) == 2  # more epochs: fine


def test_nan_loss_stops_and_keeps_the_last_good_bundle(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(tmp_path, tiny_corpus, epochs=3)
    real_epoch = loop.train_epoch

    def poisoned(*args, **kw):
        stats = real_epoch(*args, **kw)
        return EpochStats(float("nan"), stats.tokens, stats.seconds) if args[4] == 2 else stats

    monkeypatch.setattr(loop, "train_epoch", poisoned)
    with pytest.raises(TrainingError, match="nan"):
        train(config)
    bundle = load_bundle(config.out)
    assert [e["epoch"] for e in bundle.metrics["epochs"]] == [1]


def test_early_stopping_keeps_the_best_weights(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch, curves_not_drawn: None
) -> None:
    """Validation perplexity scripted: best at epoch 2, then `patience` (2) epochs without a
    better one (epoch 4 beats epoch 3, not epoch 2): training stops after epoch 4, and the
    bundle holds the weights of epoch 2."""
    scripted = iter([10.0, 5.0, 7.0, 6.0, 4.0, 3.0])
    weights_at: dict[int, dict[str, torch.Tensor]] = {}

    def validate(model, ids):
        weights_at[len(weights_at) + 1] = copy.deepcopy(model.state_dict())
        return next(scripted)

    monkeypatch.setattr(loop, "_validate", validate)
    config = small_config(tmp_path, tiny_corpus, epochs=6, patience=2)
    metrics = train(config)
    assert [e["val_ppl"] for e in metrics["epochs"]] == [10.0, 5.0, 7.0, 6.0]
    assert metrics["best_epoch"] == 2
    bundle = load_bundle(config.out)
    assert bundle.metrics["best_val_ppl"] == 5.0
    kept = {k: v.float() for k, v in bundle.model.state_dict().items()}
    torch.testing.assert_close(kept, {k: v.float() for k, v in weights_at[2].items()})
    assert not all(torch.equal(weights_at[2][k], v) for k, v in weights_at[4].items())


def test_too_little_text_for_one_batch(tmp_path: Path) -> None:
    corpus = tmp_path / "short.txt"
    corpus.write_text("just a few words")
    with pytest.raises(TrainingError, match="too short"):
        train(small_config(tmp_path, corpus, batch_size=32, num_steps=35))
