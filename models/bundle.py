"""The checkpoint bundle: a directory holding everything needed to serve one model.

    config.json         format version, kind, model config, tokenizer, training settings,
                        library versions, sha256 of every other file
    vocab.json          the vocabulary (language models only)
    weights.safetensors the parameters; never pickle, so loading runs no code
    metrics.json        per-epoch training and validation figures
    curves.png          optional: the training curves by epoch (bundles from before it
                        have none and still load)

Saving builds the bundle in a temporary sibling directory and swaps it into place in one
atomic rename, so a crash at any moment leaves either the old bundle or the new one.
Loading verifies the version and every hash and raises `BundleError(name, reason)`.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from models.files import NAME_PATTERN, file_digest, is_valid_name, write_dir_atomically
from models.forecast import Forecaster, ForecasterConfig
from models.rnn import LanguageModel, LMConfig, build_model
from models.text import TextRule, Tokenizer, Vocab

FORMAT_VERSION = 1
KINDS = ("char-lm", "word-lm", "byte-lm", "forecaster")
CONFIG, VOCAB, WEIGHTS, METRICS = "config.json", "vocab.json", "weights.safetensors", "metrics.json"
CURVES = "curves.png"
# Files a bundle may carry beside the required ones; hashed in config.json like the rest.
OPTIONAL_FILES = (CURVES,)


class BundleError(Exception):
    """A bundle that cannot be saved or served, with the bundle's name and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"bundle {name!r}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class Bundle:
    name: str
    path: Path
    kind: str
    config: dict[str, Any]
    model: nn.Module
    tokenizer: Tokenizer | None
    metrics: dict[str, Any] = field(default_factory=dict)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _kind_of(model: nn.Module, tokenizer: Tokenizer | None) -> str:
    if isinstance(model, Forecaster):
        return "forecaster"
    if tokenizer is None:
        raise ValueError("a language model bundle needs its tokenizer")
    return f"{tokenizer.level}-lm"


def save_bundle(
    path: Path,
    model: nn.Module,
    tokenizer: Tokenizer | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> None:
    """Write a bundle to `path` atomically, replacing any bundle already there.

    `extra_files` (names from OPTIONAL_FILES, e.g. the curves PNG) go into the same atomic
    write and the same hash list, so a reader never sees them out of step with the weights.
    """
    path = Path(path)
    name = path.name
    if not is_valid_name(name):
        raise BundleError(name, f"name must match {NAME_PATTERN.pattern}")
    extra_files = extra_files or {}
    unknown = sorted(set(extra_files) - set(OPTIONAL_FILES))
    if unknown:
        raise BundleError(name, f"unknown optional files {unknown} (known: {OPTIONAL_FILES})")
    kind = _kind_of(model, tokenizer)
    # Unwrap torch.compile so the saved keys never carry an `_orig_mod.` prefix.
    module = getattr(model, "_orig_mod", model)
    if not isinstance(module, LanguageModel | Forecaster):
        raise BundleError(name, f"cannot save a {type(module).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    files = {WEIGHTS: save(tensors), METRICS: _json_bytes(metrics or {}), **extra_files}
    if tokenizer is not None:
        files[VOCAB] = tokenizer.vocab.to_json().encode()
    hashes = {fname: hashlib.sha256(data).hexdigest() for fname, data in files.items()}
    config = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": asdict(module.config),
        "tokenizer": None if tokenizer is None else tokenizer.spec(),
        "training": training or {},
        "versions": {"torch": torch.__version__.split("+")[0], "python": platform.python_version()},
        "files": dict(sorted(hashes.items())),
    }
    files[CONFIG] = _json_bytes(config)
    write_dir_atomically(path, files)


def read_config(path: Path) -> dict[str, Any]:
    """Read and check config.json and the hashes of the files it lists."""
    name = path.name
    config_path = path / CONFIG
    if not path.is_dir():
        raise BundleError(name, f"no bundle directory at {path}")
    if not config_path.is_file():
        raise BundleError(name, f"missing {CONFIG}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(name, f"{CONFIG} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise BundleError(name, f"{CONFIG} must hold a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise BundleError(name, f"{CONFIG} has no integer format_version: not an rnnlm bundle")
    if version > FORMAT_VERSION:
        raise BundleError(
            name, f"format_version {version} is newer than this rnnlm reads ({FORMAT_VERSION})"
        )
    kind = config.get("kind")
    if kind not in KINDS:
        raise BundleError(name, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    files = config.get("files")
    needed = {WEIGHTS, METRICS} | ({VOCAB} if kind != "forecaster" else set())
    if not isinstance(files, dict) or not needed <= files.keys():
        raise BundleError(name, f"{CONFIG} must list the sha256 of {', '.join(sorted(needed))}")
    for fname, expected in files.items():
        if fname not in needed and fname not in OPTIONAL_FILES:
            raise BundleError(name, f"{CONFIG} lists an unexpected file {fname!r}")
        file_path = path / fname
        if not file_path.is_file():
            raise BundleError(name, f"missing {fname}")
        if file_digest(file_path) != expected:
            raise BundleError(name, f"{fname} does not match its sha256 (truncated or altered)")
    return config


def _build_lm(config: dict[str, Any]) -> nn.Module:
    return build_model(LMConfig(**config["model"]))


def _build_forecaster(config: dict[str, Any]) -> nn.Module:
    return Forecaster(ForecasterConfig(**config["model"]))


_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "char-lm": _build_lm,
    "word-lm": _build_lm,
    "byte-lm": _build_lm,
    "forecaster": _build_forecaster,
}


def load_bundle(path: Path, device: torch.device | str = "cpu") -> Bundle:
    """Load and validate a bundle; the model comes back in eval mode on `device`."""
    path = Path(path)
    name = path.name
    config = read_config(path)
    kind = config["kind"]
    try:
        model = _BUILDERS[kind](config)
    except (TypeError, ValueError, KeyError) as exc:
        raise BundleError(name, f"model config cannot be built: {exc}") from exc
    try:
        state = load_file(str(path / WEIGHTS))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise BundleError(name, f"weights do not fit the model: {exc}") from exc
    tokenizer = None
    if kind != "forecaster":
        try:
            vocab = Vocab.from_json((path / VOCAB).read_text(encoding="utf-8"))
            tokenizer = Tokenizer.for_rule(TextRule.from_spec(config["tokenizer"]), vocab)
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(name, f"bad vocabulary or tokenizer: {exc}") from exc
        assert isinstance(model, LanguageModel)  # what _BUILDERS makes for an LM kind
        if len(vocab) != model.config.vocab_size or f"{tokenizer.level}-lm" != kind:
            raise BundleError(name, "vocabulary does not match the model")
    try:
        metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(name, f"{METRICS} is not valid JSON") from exc
    model.to(device).eval()
    return Bundle(name, path, kind, config, model, tokenizer, metrics)
