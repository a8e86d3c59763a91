"""The book's chapter 8 runs (--preset), --max-tokens, --reserved-tokens, gradient norms."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from models.bundle import load_bundle
from tests.conftest import tiny_train_config
from training.cli import main
from training.config import DataConfig
from training.data import load_tokens
from training.loop import train
from training.presets import PRESETS

GRAD_KEYS = ("grad_norm_mean", "grad_norm_max", "clipped_fraction", "steps")


def _run(capsys, *argv: str) -> dict:
    assert main(["-q", "--threads", "1", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _check_preset_bundle(out: Path, preset: str, train_tokens: int) -> None:
    bundle = load_bundle(out)
    settings = bundle.config["training"]
    for key in ("line_join", "sampling", "lr", "clip", "batch_size", "num_steps", "arch"):
        assert settings[key] == PRESETS[preset].settings[key], key
    assert settings["train_tokens"] == train_tokens and settings["val_tokens"] == 0
    epochs = bundle.metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert e["val_ppl"] is None  # no held-out split, as in the book
        assert 0 < e["grad_norm_mean"] <= e["grad_norm_max"]
        assert 0 <= e["clipped_fraction"] <= 1 and e["steps"] >= 1
    assert bundle.metrics["best_epoch"] == 2  # without validation: the last epoch
    assert set(bundle.metrics["samples"]) == {"time traveller", "traveller"}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_runs_end_to_end_on_the_book(
    preset: str, book_path: Path, tmp_path: Path, capsys
) -> None:
    """The book's settings, two epochs instead of 500."""
    out = tmp_path / preset
    summary = _run(
        capsys, "lm", "--preset", preset, "--epochs", "2", "--out", str(out),
        "--data-dir", str(book_path.parent), "--no-download",
    )  # fmt: skip
    _check_preset_bundle(out, preset, train_tokens=10_000)
    assert len(load_bundle(out).tokenizer.vocab) == 28  # <unk>, space and 26 letters
    for prefix, text in summary["samples"].items():
        assert text.startswith(prefix) and len(text) == len(prefix) + 50  # predict_ch8's 50


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_value_can_be_overridden(
    preset: str, tiny_corpus: Path, tmp_path: Path, capsys, curves_not_drawn: None
) -> None:
    out = tmp_path / "small"
    _run(
        capsys, "lm", "--preset", preset, "--epochs", "1", "--out", str(out),
        "--corpus", str(tiny_corpus), "--num-hiddens", "16", "--sampling", "random",
    )  # fmt: skip
    settings = load_bundle(out).config["training"]
    assert (settings["num_hiddens"], settings["sampling"], settings["epochs"]) == (16, "random", 1)
    assert settings["max_tokens"] == 10_000 and settings["line_join"] == "book"  # the preset's


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--preset", "d2l-scratch", "--num-layers", "2"],
         ["--arch rnn_scratch (from --preset d2l-scratch)", "--num-layers 2", "conflict"]),
        (["--preset", "d2l-scratch", "--embed-size", "8"],
         ["--preset d2l-scratch", "--embed-size 8"]),
        (["--preset", "d2l-concise", "--max-tokens", "500"],
         ["--max-tokens 500", "--batch-size 32", "--num-steps 35", "at least 1156 tokens"]),
        (["--max-tokens", "50", "--batch-size", "4", "--num-steps", "10"],
         ["--max-tokens 50", "--batch-size 4", "--num-steps 10", "at least 51 tokens"]),
        (["--reserved-tokens", "<bos>", "<bos>"], ["--reserved-tokens <bos> <bos>", "distinct"]),
        (["--preset", "d2l-book"], ["invalid choice", "d2l-concise", "d2l-scratch"]),
    ],
)  # fmt: skip
def test_contradictions_exit_2_naming_both(
    flags: list[str], words: list[str], tmp_path: Path, capsys
) -> None:
    # No corpus anywhere: should a case not conflict, it fails fast instead of training.
    where = ["--data-dir", str(tmp_path), "--cache-dir", str(tmp_path), "--no-download"]
    with pytest.raises(SystemExit) as stop:
        main(["lm", "--out", str(tmp_path / "x"), *where, *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "x").exists()


def test_max_tokens_keeps_the_first_tokens_and_the_held_out_split(tiny_corpus: Path) -> None:
    full = load_tokens(DataConfig(corpus=str(tiny_corpus), val_frac=0.2))
    cut = load_tokens(DataConfig(corpus=str(tiny_corpus), val_frac=0.2, max_tokens=300))
    assert len(cut.train_ids) == 300
    # The same first characters (the cut's vocabulary is its own, so compare text).
    first = full.tokenizer.decode(full.train_ids[:300].tolist())
    assert cut.tokenizer.decode(cut.train_ids.tolist()) == first
    assert cut.tokenizer.decode(cut.val_ids.tolist()) == full.tokenizer.decode(
        full.val_ids.tolist()
    )
    whole = load_tokens(DataConfig(corpus=str(tiny_corpus), max_tokens=10**9))
    assert len(whole.train_ids) == len(load_tokens(DataConfig(corpus=str(tiny_corpus))).train_ids)


def test_reserved_tokens_follow_unk(
    tiny_corpus: Path, tmp_path: Path, capsys, curves_not_drawn: None
) -> None:
    data = load_tokens(DataConfig(corpus=str(tiny_corpus), reserved_tokens=("<pad>", "<bos>")))
    assert data.tokenizer.vocab.idx_to_token[:3] == ["<unk>", "<pad>", "<bos>"]
    out = tmp_path / "reserved"
    _run(
        capsys, "lm", "--out", str(out), "--corpus", str(tiny_corpus), "--epochs", "1",
        "--num-hiddens", "8", "--batch-size", "4", "--num-steps", "8",
        "--reserved-tokens", "<pad>", "<eos>",
    )  # fmt: skip
    bundle = load_bundle(out)
    assert bundle.tokenizer.vocab.idx_to_token[1:3] == ["<pad>", "<eos>"]
    assert bundle.config["training"]["reserved_tokens"] == ["<pad>", "<eos>"]


def test_no_validation_split_trains_and_keeps_the_last_epoch(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """--val-frac 0 used to fail writing metrics.json: NaN is not JSON."""
    config = tiny_train_config(tmp_path / "noval", tiny_corpus, val_frac=0.0, epochs=2)
    metrics = train(config)
    assert [e["val_ppl"] for e in metrics["epochs"]] == [None, None]
    assert load_bundle(config.out).metrics["best_epoch"] == 2


@pytest.mark.parametrize(("clip", "fraction"), [(1e-4, 1.0), (1e6, 0.0)])
def test_gradient_norms_and_how_often_clipping_acts(
    clip: float, fraction: float, tiny_corpus: Path, tmp_path: Path
) -> None:
    config = tiny_train_config(tmp_path / "clip", tiny_corpus, clip=clip, epochs=1)
    [epoch] = train(config)["epochs"]
    assert epoch["clipped_fraction"] == fraction
    assert 0 < epoch["grad_norm_mean"] <= epoch["grad_norm_max"] and math.isfinite(
        epoch["grad_norm_max"]
    )


def test_samples_are_logged_every_n_epochs(
    tiny_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, curves_not_drawn: None
) -> None:
    config = tiny_train_config(tmp_path / "s", tiny_corpus, epochs=2, sample_every=1)
    with caplog.at_level(logging.INFO, logger="training.loop"):
        metrics = train(config)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("sample: time traveller" in line for line in lines) == 2  # epochs 1 and 2
    assert any("clipped" in line and "grad norm" in line for line in lines)
    model = load_bundle(config.out)
    assert metrics["samples"] == model.metrics["samples"]
    assert torch.is_tensor(next(model.model.parameters()))
