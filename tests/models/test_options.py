"""Config fields with their own help and bounds, and the small lookups shared by both sides."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch

from models.device import resolve_device
from models.files import file_digest
from models.forecast import SineConfig
from models.history import at_best_epoch, best_epoch, epochs_of, lm_metrics
from models.options import check, choices_of, option, option_of

Color = Literal["red", "green"]


@dataclass(frozen=True)
class Example:
    rate: float = option(0.5, "a rate", ge=0, lt=1)
    count: int = option(1, "how many", ge=1)
    color: Color = option("red", "a colour")
    name: str = option("x", "free text")

    def __post_init__(self) -> None:
        check(self)


def test_bounds_and_choices_are_checked_where_the_config_is_built() -> None:
    Example(rate=0.0, count=3, color="green")
    for kw, words in [
        ({"rate": 1.0}, "rate must be < 1"),
        ({"rate": float("nan")}, "rate must be a finite number"),
        ({"count": 0}, "count must be >= 1, got 0"),
        ({"color": "blue"}, "color must be one of red, green"),
    ]:
        with pytest.raises(ValueError, match=words):
            Example(**kw)


def test_a_field_knows_its_help_and_choices() -> None:
    fields = {f.name: f for f in Example.__dataclass_fields__.values()}
    assert option_of(fields["count"]).help == "how many"
    assert choices_of(Example, fields["color"]) == ("red", "green")
    assert choices_of(Example, fields["name"]) is None


def test_the_sine_config_keeps_its_book_defaults_and_bounds() -> None:
    assert SineConfig() == SineConfig(T=1000, tau=4, num_train=600, noise=0.2, epochs=5)
    with pytest.raises(ValueError, match="lr must be > 0"):
        SineConfig(lr=0)
    with pytest.raises(ValueError, match="num_train"):
        SineConfig(T=10, num_train=20)


def test_file_digest_is_hashlibs(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 100_000)
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_digest(path, "sha1") == hashlib.sha1(path.read_bytes()).hexdigest()


def test_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_the_best_epoch_and_its_figures() -> None:
    history = [
        {"epoch": 1, "train_ppl": 9.0, "val_ppl": 8.0},
        {"epoch": 2, "train_ppl": 6.0, "val_ppl": 7.0},
        {"epoch": 3, "train_ppl": 5.0, "val_ppl": 7.5},
    ]
    metrics = lm_metrics(history)
    assert metrics["best_epoch"] == best_epoch(history) == 2
    assert at_best_epoch(metrics) == history[1]
    no_validation = [{**h, "val_ppl": float("nan")} for h in history]
    assert best_epoch(no_validation) == 3  # the last epoch's weights are kept
    # Whatever an older or hand-edited metrics.json holds, the lookup never raises.
    for odd in ({}, {"epochs": "x"}, {"epochs": history, "best_epoch": 9}, {"best_epoch": True}):
        assert at_best_epoch(odd) == {}
    assert epochs_of({"epochs": [history[0], "junk", {"epoch": "2"}]}) == [history[0]]
