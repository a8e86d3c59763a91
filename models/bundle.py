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
Loading verifies the version and every hash, the shape of every file, and that the sizes
config.json claims are those of the weights (read from the safetensors header before
anything is allocated: config.json is covered by no hash); it raises
`BundleError(name, reason)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from models.files import NAME_PATTERN, file_digest, is_valid_name, write_dir_atomically
from models.forecast import Forecaster, ForecasterConfig, SineConfig
from models.mixture import Mixture, MixtureConfig
from models.ngram_lm import NgramConfig, NgramLM
from models.rnn import LanguageModel, LMConfig, build_model
from models.text import TextRule, Tokenizer, Vocab

FORMAT_VERSION = 1
# Recurrent LMs by token level, count-based LMs, interpolations of LMs, the sine forecaster.
LM_KINDS = ("char-lm", "word-lm", "byte-lm", "ngram", "mixture")
KINDS = (*LM_KINDS, "forecaster")
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
    config_sha256: str = ""  # of config.json: a mixture names its components by it


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _kind_of(model: nn.Module, tokenizer: Tokenizer | None) -> str:
    if isinstance(model, Forecaster):
        return "forecaster"
    if tokenizer is None:
        raise ValueError("a language model bundle needs its tokenizer")
    if isinstance(model, NgramLM):
        return "ngram"
    if isinstance(model, Mixture):
        return "mixture"
    return f"{tokenizer.level}-lm"


def save_bundle(
    path: Path,
    model: nn.Module,
    tokenizer: Tokenizer | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    weights_dtype: torch.dtype | None = None,
) -> None:
    """Write a bundle to `path` atomically, replacing any bundle already there.

    `extra_files` (names from OPTIONAL_FILES, e.g. the curves PNG) go into the same atomic
    write and the same hash list, so a reader never sees them out of step with the weights.
    `weights_dtype` (e.g. float16) stores the floating-point weights at that precision to
    keep a large bundle small; loading casts them back to the model's own dtype.
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
    model_config = module.config
    if not is_dataclass(model_config) or isinstance(model_config, type):
        raise BundleError(name, f"a {type(module).__name__}'s config must be a dataclass")
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if weights_dtype is not None:
        tensors = {
            k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in tensors.items()
        }
    files = {WEIGHTS: save(tensors), METRICS: _json_bytes(metrics or {}), **extra_files}
    if tokenizer is not None:
        files[VOCAB] = tokenizer.vocab.to_json().encode()
    hashes = {fname: hashlib.sha256(data).hexdigest() for fname, data in files.items()}
    config = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": asdict(model_config),
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


def components_of(path: Path) -> list[str]:
    """The bundles a bundle is built on (a mixture's components), read from its config.

    For ordering loads only: nothing is verified here, so a bundle whose config cannot be
    read has no components and fails on its own when it is loaded.
    """
    try:
        config = json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))
        return (
            [str(c) for c in config["model"]["components"]] if config["kind"] == "mixture" else []
        )
    except (OSError, ValueError, KeyError, TypeError):
        return []


Components = Mapping[str, Bundle]


def _build_lm(config: dict[str, Any], _components: Components) -> nn.Module:
    return build_model(LMConfig(**config["model"]))


def _build_ngram(config: dict[str, Any], _components: Components) -> nn.Module:
    return NgramLM(NgramConfig(**config["model"]))


def _build_forecaster(config: dict[str, Any], _components: Components) -> nn.Module:
    return Forecaster(ForecasterConfig(**config["model"]))


def _build_mixture(config: dict[str, Any], components: Components) -> nn.Module:
    """The mixture over its already loaded components, each checked against the config."""
    mixture_config = MixtureConfig(**config["model"])
    parts = []
    for name, sha256 in zip(
        mixture_config.components, mixture_config.component_sha256, strict=True
    ):
        component = components.get(name)
        if component is None:
            raise ComponentError(f"component {name!r} is not loaded (missing or failed to load)")
        if component.kind == "mixture" or not isinstance(component.model, LanguageModel):
            raise ComponentError(
                f"component {name!r} is a {component.kind}, not a base language model"
            )
        if component.config_sha256 != sha256:
            raise ComponentError(
                f"component {name!r} changed since the mixture was fit (config sha256 "
                f"{component.config_sha256[:12]}..., expected {sha256[:12]}...)"
            )
        parts.append(component)
    return Mixture(mixture_config, [p.model for p in parts if isinstance(p.model, LanguageModel)])


class ComponentError(ValueError):
    """A mixture's component is missing or does not match what the mixture was fit on."""


_BUILDERS: dict[str, Callable[[dict[str, Any], Components], nn.Module]] = {
    "char-lm": _build_lm,
    "word-lm": _build_lm,
    "byte-lm": _build_lm,
    "ngram": _build_ngram,
    "mixture": _build_mixture,
    "forecaster": _build_forecaster,
}


# Kinds whose weights are their model's whole state: config.json's sizes are checked
# against the weights' header before anything is built. Other kinds check their configs
# themselves (an n-gram model's sizes, a mixture's components) and load strictly.
SIZED_BY_WEIGHTS = {"char-lm", "word-lm", "byte-lm", "forecaster"}
# Model config fields that count layers: each adds at least one tensor to the weights.
COUNT_FIELDS = ("num_layers",)


def _weight_shapes(name: str, path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the safetensors header, reading no tensor data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise BundleError(name, f"{WEIGHTS} is not a readable safetensors file: {exc}") from exc


def _build_checked(
    name: str, config: dict[str, Any], shapes: dict[str, tuple[int, ...]]
) -> nn.Module:
    """The model config's builder, once the sizes it claims are known to be the weights'.

    Every size in the config is at most the number of values the weights hold, and every
    count at most the number of tensors; then the model is built on the meta device (no
    memory) and its parameter shapes compared with the header's, and only then for real.
    """
    model_config = config.get("model")
    if not isinstance(model_config, dict):
        raise BundleError(name, f"{CONFIG} has no model object")
    values = sum(math.prod(shape) for shape in shapes.values())
    for key, value in model_config.items():
        limit, what = (len(shapes), "tensors") if key in COUNT_FIELDS else (values, "values")
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise BundleError(
                name,
                f"{CONFIG} claims model.{key} = {value}, more than the {limit} {what} "
                f"{WEIGHTS} holds",
            )
    build = _BUILDERS[config["kind"]]
    try:
        with torch.device("meta"):
            skeleton = build(config, {})
    except (TypeError, ValueError, KeyError) as exc:
        raise BundleError(name, f"model config cannot be built: {exc}") from exc
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if expected != shapes:
        wrong = sorted(
            k for k in expected.keys() | shapes.keys() if expected.get(k) != shapes.get(k)
        )
        first = wrong[0]
        raise BundleError(
            name,
            f"{CONFIG} does not describe the weights: {first} is {shapes.get(first)} in "
            f"{WEIGHTS} but {expected.get(first)} for the config ({len(wrong)} tensors differ)",
        )
    return build(config, {})


def _check_metrics(name: str, metrics: object) -> dict[str, Any]:
    """metrics.json: an object; `epochs` a list of objects; `best_epoch` an int or null."""
    if not isinstance(metrics, dict):
        raise BundleError(name, f"{METRICS} must hold a JSON object")
    epochs = metrics.get("epochs", [])
    if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
        raise BundleError(name, f"{METRICS}: epochs must be a list of objects")
    best = metrics.get("best_epoch")
    if best is not None and (not isinstance(best, int) or isinstance(best, bool)):
        raise BundleError(name, f"{METRICS}: best_epoch must be an integer or null")
    return metrics


def _check_training(name: str, config: dict[str, Any]) -> None:
    """`training` is an object; a forecaster's `training.sine` a valid SineConfig (the
    service compares requests with it)."""
    training = config.get("training", {})
    if not isinstance(training, dict):
        raise BundleError(name, f"{CONFIG}: training must be an object")
    sine = training.get("sine")
    if config["kind"] == "forecaster" and sine is not None:
        try:
            SineConfig(**sine)
        except (TypeError, ValueError) as exc:
            raise BundleError(name, f"{CONFIG}: training.sine is not a sine config: {exc}") from exc


def load_bundle(
    path: Path, device: torch.device | str = "cpu", components: Components | None = None
) -> Bundle:
    """Load and validate a bundle; the model comes back in eval mode on `device`.

    A mixture's components are other bundles, loaded by the caller beforehand and passed
    in `components` by name (`components_of` says which), so this reads only `path`.
    """
    path = Path(path)
    name = path.name
    config = read_config(path)
    kind = config["kind"]
    _check_training(name, config)
    try:
        if kind in SIZED_BY_WEIGHTS:
            model = _build_checked(name, config, _weight_shapes(name, path / WEIGHTS))
        else:
            model = _BUILDERS[kind](config, components or {})
    except ComponentError as exc:
        raise BundleError(name, str(exc)) from exc
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
        level_kind = kind.endswith("-lm") and f"{tokenizer.level}-lm" != kind
        if len(vocab) != model.config.vocab_size or level_kind:
            raise BundleError(name, "vocabulary does not match the model")
        if isinstance(model, Mixture):
            for part in model.config.components:
                other = (components or {})[part].tokenizer
                if other is None or other.rule != tokenizer.rule:
                    raise BundleError(name, f"component {part!r} tokenizes text differently")
                if other.vocab.idx_to_token != vocab.idx_to_token:
                    raise BundleError(name, f"component {part!r} has a different vocabulary")
    try:
        metrics = _check_metrics(name, json.loads((path / METRICS).read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(name, f"{METRICS} is not valid JSON") from exc
    model.to(device).eval()
    sha256 = file_digest(path / CONFIG)
    return Bundle(name, path, kind, config, model, tokenizer, metrics, sha256)


def load_in_order(
    paths: Sequence[Path], device: torch.device | str = "cpu"
) -> Iterator[tuple[Path, Bundle | BundleError]]:
    """Load several bundles, each mixture after the bundles it is built on.

    Yields (path, bundle or the reason it failed); a mixture is given the bundles that
    loaded as its components, and one whose component failed says which and why.
    """
    needs = {p.name: components_of(p) for p in paths}
    loaded: dict[str, Bundle] = {}
    failed: dict[str, str] = {}
    for path in sorted(paths, key=lambda p: bool(needs[p.name])):  # stable: the given order
        try:
            problems = [
                f"component {c!r} failed to load ({failed[c]})"
                for c in needs[path.name]
                if c in failed
            ]
            if problems:
                raise BundleError(path.name, "; ".join(problems))
            try:
                bundle = load_bundle(path, device, components=loaded)
            except OSError as exc:  # unreadable files: permissions, I/O errors
                raise BundleError(path.name, f"cannot read: {exc}") from exc
        except BundleError as exc:
            failed[path.name] = exc.reason
            yield path, exc
            continue
        except Exception as exc:  # out of memory included, on a GPU too: this bundle only
            reason = f"failed to load: {type(exc).__name__}: {exc}"
            failed[path.name] = reason
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # what the failed load held goes back to the GPU
            yield path, BundleError(path.name, reason)
            continue
        loaded[path.name] = bundle
        yield path, bundle
