"""The book's two chapter 8 experiments as presets of every setting (`lm --preset NAME`).

d2l (1st edition) §8.5 trains its from-scratch RNN and §8.6 its `nn.RNN` model with the
same call: `load_data_time_machine(batch_size=32, num_steps=35)` (the corpus cleaned line
by line and the lines joined with nothing, character tokens, the first 10,000 of them,
sequential partitioning, no validation split), then `train_ch8(net, train_iter, vocab,
lr=1, num_epochs=500, device)`: plain SGD, gradient clipping at theta = 1, and a greedy
continuation of "time traveller" every 10 epochs. The book's second §8.5 run is the same
with random sampling: `--preset d2l-scratch --sampling random`.

A preset sets every setting, so a change of the defaults never changes the experiment;
any flag given beside it overrides that one setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    description: str
    settings: dict[str, Any]


_BOOK: dict[str, Any] = {
    "corpus": "timemachine",
    "level": "char",
    "line_join": "book",
    "min_freq": 0,
    "reserved_tokens": (),
    "max_tokens": 10_000,
    "val_frac": 0.0,
    "embed_size": 0,
    "num_layers": 1,
    "dropout": 0.0,
    "batch_size": 32,
    "num_steps": 35,
    "sampling": "sequential",
    "epochs": 500,
    "lr": 1.0,
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "schedule": "constant",
    "clip": 1.0,
    "patience": 0,
    "seed": 0,
    "sample_every": 10,
}

PRESETS: dict[str, Preset] = {
    "d2l-scratch": Preset(
        "d2l §8.5: the RNN from scratch, 512 hidden units, one-hot input",
        _BOOK | {"arch": "rnn_scratch", "num_hiddens": 512},
    ),
    "d2l-concise": Preset(
        "d2l §8.6: nn.RNN with 256 hidden units and a linear output layer, one-hot input",
        _BOOK | {"arch": "rnn", "num_hiddens": 256},
    ),
}
