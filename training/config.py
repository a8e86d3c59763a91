"""What a training run is: the data, the model and the optimisation, each a frozen config.

Every field is declared once, with `models.options.option`: its default, help text and
bounds. From that one declaration come the command-line flag (`training.flags`), the
validation (each config's `__post_init__`), the settings recorded in the bundle's
config.json, and the check that a resumed run has the settings it started with. Field
names are unique across the three configs, so a run is also one flat mapping of settings
(`TrainConfig.build(**settings)`, `config.settings()`), as flags, presets, sweep grids and
config.json spell it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from models.options import check, option, type_hints
from models.rnn import ARCHITECTURES, LMConfig
from models.text import LEVELS, NORMALIZES, UNK, Level, LineJoin, Normalize
from training.batches import Sampling, min_tokens

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine"]

# Where this machine keeps things: never recorded in a bundle, free to change on --resume.
MACHINE_SETTINGS = ("out", "data_dir", "cache_dir", "allow_download", "device")
# Settings a resumed run may change besides those: how long it runs.
RESUMABLE_SETTINGS = (*MACHINE_SETTINGS, "epochs", "patience", "sample_every")


class ConfigError(ValueError):
    """Settings that contradict each other; `values` names each one involved."""

    def __init__(self, reason: str, values: dict[str, Any]) -> None:
        given = ", ".join(f"{k}={v!r}" for k, v in values.items())
        super().__init__(f"{given}: {reason}")
        self.reason = reason
        self.values = values


@dataclass(frozen=True)
class DataConfig:
    """The corpus and how it becomes token ids: enough to load the tokens on its own."""

    corpus: str = option("timemachine", "built-in corpus name or a text file path")
    data_dir: Path | None = option(
        None, "directory holding named corpora such as timemachine.txt (env RNNLM_DATA_DIR)"
    )
    cache_dir: Path | None = option(
        None, "where verified downloads of named corpora are kept (env RNNLM_CACHE_DIR)"
    )
    allow_download: bool = option(
        True,
        "never download a named corpus; fail if it is not in --data-dir or the cache",
        flag="--no-download",
    )
    normalize: Normalize = option(
        "book",
        "book: the book's cleanup (lower-case a-z and spaces); none: the text as it is "
        "(case, digits, punctuation, newlines, any letter) after Unicode NFC",
        choices=NORMALIZES,
    )
    level: Level = option(
        "char",
        "tokens: characters, words, or UTF-8 bytes (256 tokens, never <unk>)",
        choices=LEVELS,
    )
    line_join: LineJoin = option(
        "space", "join cleaned lines with a space, or with nothing as the book does (book rule)"
    )
    min_freq: int = option(0, "drop rarer tokens to <unk>", ge=0)
    reserved_tokens: tuple[str, ...] = option(
        (), "tokens the vocabulary holds right after <unk> (the book's Vocab reserved_tokens)"
    )
    max_tokens: int = option(
        0,
        "train on the first N tokens of the corpus only, as the book's max_tokens (the "
        "held-out split stays the corpus's last --val-frac); 0 = all",
        ge=0,
    )
    val_frac: float = option(0.1, "held-out fraction at the end of the corpus", ge=0, lt=1)

    def __post_init__(self) -> None:
        check(self)
        reserved = self.reserved_tokens
        if len(set(reserved)) != len(reserved) or "" in reserved or UNK in reserved:
            raise ConfigError(
                f"reserved tokens must be distinct, non-empty and not {UNK} (always index 0)",
                {"reserved_tokens": reserved},
            )


@dataclass(frozen=True)
class ModelConfig:
    """The network, less the vocabulary size (that comes from the data)."""

    arch: str = option("gru", "network", choices=tuple(sorted(ARCHITECTURES)))
    num_hiddens: int = option(256, "hidden units per layer", ge=1)
    num_layers: int = option(1, "stacked recurrent layers", ge=1)
    dropout: float = option(0.0, "dropout on inputs, between layers, on outputs", ge=0, lt=1)
    embed_size: int = option(0, "input embedding size; 0 = one-hot as in the book", ge=0)

    def __post_init__(self) -> None:
        check(self)
        if self.arch == "rnn_scratch":
            plain = {"num_layers": 1, "dropout": 0.0, "embed_size": 0}
            extras = {k: getattr(self, k) for k, v in plain.items() if getattr(self, k) != v}
            if extras:
                raise ConfigError(
                    "the from-scratch RNN is the book's model: one layer, one-hot input, "
                    "no dropout",
                    {"arch": self.arch, **extras},
                )

    def lm_config(self, vocab_size: int) -> LMConfig:
        return LMConfig(vocab_size=vocab_size, **dataclasses.asdict(self))


@dataclass(frozen=True)
class OptimConfig:
    """Minibatches, the optimizer and its schedule, clipping, stopping, the seed."""

    batch_size: int = option(32, "sequences per minibatch", ge=1)
    num_steps: int = option(35, "tokens per sequence (BPTT length)", ge=1)
    sampling: Sampling = option("random", "minibatch partitioning")
    epochs: int = option(50, "passes over the training split", ge=1)
    lr: float = option(1.0, "learning rate", gt=0)
    optimizer: Optimizer = option("sgd", "optimizer")
    weight_decay: float = option(0.0, "L2 penalty (decoupled for adamw)", ge=0)
    schedule: Schedule = option("constant", "learning-rate schedule over --epochs")
    clip: float = option(1.0, "clip gradients to this global norm (theta)", gt=0)
    patience: int = option(
        0,
        "stop after this many epochs without a better validation perplexity; 0 = never",
        ge=0,
    )
    seed: int = option(0, "random seed (same seed, same bundle)")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class TrainConfig:
    """One run: where the bundle goes, on which device, and the three configs."""

    out: Path = option(MISSING, "bundle directory to write, e.g. checkpoints/gru")
    device: str = option("auto", "auto (cuda when present), cpu, cuda or cuda:N")
    sample_every: int = option(
        0,
        "log the greedy continuations of the sample prefixes every N epochs, as the book "
        "prints one every 10; 0 = after the last epoch only",
        ge=0,
    )
    weights_dtype: Literal["float32", "float16"] = option(
        "float32",
        "precision of the weights the bundle stores: float16 halves the file of a large "
        "model (it is still served in float32)",
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        check(self)
        optim, max_tokens = self.optim, self.data.max_tokens
        need = min_tokens(optim.batch_size, optim.num_steps)
        if max_tokens and max_tokens < need:
            raise ConfigError(
                f"the first {max_tokens} tokens hold no minibatch: batch_size "
                f"{optim.batch_size} x num_steps {optim.num_steps} needs at least {need} "
                "tokens (the batch, the largest starting offset and the shifted targets)",
                {
                    "max_tokens": max_tokens,
                    "batch_size": optim.batch_size,
                    "num_steps": optim.num_steps,
                },
            )

    @classmethod
    def build(cls, **settings: Any) -> TrainConfig:
        """A run from flat settings (`out=..., lr=0.5`); the rest keep their defaults."""
        return build(cls, settings)

    def settings(self) -> dict[str, Any]:
        """Every setting by its flat name (the inverse of `build`)."""
        return flatten(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return build(TrainConfig, self.settings() | changes)

    def recorded(self) -> dict[str, Any]:
        """The settings a bundle records: JSON values, nothing machine-specific."""
        return recorded(self)


def environment_defaults() -> dict[str, Any]:
    """The command line's corpus locations: RNNLM_DATA_DIR, and RNNLM_CACHE_DIR or
    ~/.cache/rnnlm (the Python API downloads nowhere unless given a cache_dir)."""
    data_dir = os.environ.get("RNNLM_DATA_DIR")
    cache_dir = os.environ.get("RNNLM_CACHE_DIR")
    return {
        "data_dir": Path(data_dir) if data_dir else None,
        "cache_dir": Path(cache_dir) if cache_dir else Path.home() / ".cache" / "rnnlm",
    }


def recorded(config: Any) -> dict[str, Any]:
    """A config's flat settings as a bundle records them: JSON values, nothing
    machine-specific."""
    return {k: _json(v) for k, v in flatten(config).items() if k not in MACHINE_SETTINGS}


def _json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def nested_configs(cls: type) -> dict[str, type]:
    """The fields of `cls` that are configs themselves, with their classes."""
    hints = type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if _is_config(hints[f.name])}


def _is_config(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


C = TypeVar("C")


def build(cls: type[C], settings: dict[str, Any]) -> C:
    """Build a config (and its nested configs) from flat settings; unknown names fail."""
    unknown = set(settings) - set(setting_names(cls))
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    nested = nested_configs(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in nested:
            values[f.name] = build(
                nested[f.name],
                {k: v for k, v in settings.items() if k in setting_names(nested[f.name])},
            )
        elif f.name in settings:
            values[f.name] = settings[f.name]
    return cls(**values)


def setting_names(cls: type) -> tuple[str, ...]:
    """The flat setting names of a config, nested ones included, in declaration order."""
    nested = nested_configs(cls)
    names: list[str] = []
    for f in dataclasses.fields(cls):
        names.extend(setting_names(nested[f.name]) if f.name in nested else [f.name])
    return tuple(names)


def flatten(config: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values |= flatten(value) if dataclasses.is_dataclass(value) else {f.name: value}
    return values
