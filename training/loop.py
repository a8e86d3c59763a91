"""The training loop for recurrent LMs (d2l §9.5.4-§9.5.6, grown up).

Per epoch: minibatches from the training split only, loss = mean token cross-entropy,
gradient clipping by global norm, then train and held-out validation perplexity (the
shared `models.score` definition) and tokens/s. The bundle always holds the best weights
by validation perplexity; a resume state beside it holds the last completed epoch.
Every random draw of epoch e is seeded from (seed, e), so resuming gives the very same
result as an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from models.bundle import CURVES, is_valid_name, save_bundle, write_dir_atomically
from models.corpus import read_corpus, resolve_corpus, sha1_of
from models.rnn import LanguageModel, LMConfig, build_model, num_parameters
from models.score import score_ids, token_nll
from models.text import Level, LineJoin, Tokenizer, Vocab, clean_corpus, tokenize
from training.batches import BATCHERS, Sampling, num_batches, split_tokens
from training.report import lm_curves_png

log = logging.getLogger(__name__)

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine"]


class TrainingError(Exception):
    """A run that cannot start or continue; the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    corpus: str = "timemachine"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    allow_download: bool = True
    level: Level = "char"
    line_join: LineJoin = "space"
    min_freq: int = 0
    arch: str = "gru"
    num_hiddens: int = 256
    num_layers: int = 1
    dropout: float = 0.0
    embed_size: int = 0
    batch_size: int = 32
    num_steps: int = 35
    epochs: int = 50
    lr: float = 1.0
    optimizer: Optimizer = "sgd"
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    clip: float = 1.0
    sampling: Sampling = "random"
    val_frac: float = 0.1
    patience: int = 0  # epochs without improvement before stopping; 0: never stop early
    seed: int = 0
    device: str = "auto"

    # Settings that may differ between a run and its resumption.
    RESUMABLE_CHANGES = ("epochs", "patience", "device", "data_dir", "cache_dir", "allow_download")


def clip_gradients(params: Iterable[nn.Parameter], theta: float) -> Tensor:
    """Scale all gradients so their global L2 norm is at most theta (d2l §9.5.3).

    Returns the norm before clipping. No host sync: the scale is min(1, theta / norm).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm: Tensor = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads])
    )
    scale = (theta / (norm + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, scale)
    return norm


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    return device


def load_tokens(config: TrainConfig) -> tuple[Tokenizer, Tensor, Tensor, str]:
    """Corpus -> cleaned text -> tokens -> (tokenizer, train ids, validation ids, sha1).

    The vocabulary is built from the training split alone, so validation is truly unseen.
    """
    path = resolve_corpus(config.corpus, config.data_dir, config.cache_dir, config.allow_download)
    tokens = tokenize(clean_corpus(read_corpus(path), config.line_join), config.level)
    n_val = round(len(tokens) * config.val_frac)
    vocab = Vocab.build(tokens[: len(tokens) - n_val], min_freq=config.min_freq)
    ids = torch.tensor(vocab.encode(tokens), dtype=torch.long)
    train_ids, val_ids = split_tokens(ids, config.val_frac)
    return Tokenizer(vocab, config.level, config.line_join), train_ids, val_ids, sha1_of(path)


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _lr_at(config: TrainConfig, epoch: int) -> float:
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(1, config.epochs)))
    return config.lr


class Progress:
    """A one-line live progress bar on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, epoch: int, epochs: int) -> None:
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.live = sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int, loss_sum: Tensor, tokens: int, started: float) -> None:
        now = time.perf_counter()
        if not self.live or now - self.last < 0.5:
            return
        self.last = now
        ppl = math.exp(float(loss_sum) / max(tokens, 1))  # one host sync per half second
        width = 30
        filled = int(width * done / max(self.total, 1))
        sys.stderr.write(
            f"\repoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{self.total} ppl {ppl:.3f} {tokens / (now - started):,.0f} tok/s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")


def train_epoch(
    model: LanguageModel,
    optimizer: torch.optim.Optimizer,
    train_ids: Tensor,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
) -> tuple[float, int, float]:
    """One pass over the training split -> (mean train loss, tokens, seconds)."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout masks
    for group in optimizer.param_groups:
        group["lr"] = _lr_at(config, epoch)
    model.train()
    batches = BATCHERS[config.sampling](train_ids, config.batch_size, config.num_steps, generator)
    progress = Progress(
        num_batches(len(train_ids), config.batch_size, config.num_steps), epoch, config.epochs
    )
    loss_sum = torch.zeros((), device=device)
    tokens, state, started = 0, None, time.perf_counter()
    for i, (X, Y) in enumerate(batches, 1):
        X, Y = X.to(device, non_blocking=True), Y.to(device, non_blocking=True)
        if config.sampling == "sequential" and state is not None:
            state = tuple(s.detach() for s in state)  # keep the state, cut the graph
        else:
            state = None  # random sampling: each minibatch starts afresh
        logits, state = model(X, state)
        loss = token_nll(logits, Y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        clip_gradients(model.parameters(), config.clip)
        optimizer.step()
        loss_sum += loss.detach() * Y.numel()
        tokens += Y.numel()
        progress.update(i, loss_sum, tokens, started)
    progress.close()
    if tokens == 0:
        raise TrainingError(
            f"the training split ({len(train_ids)} tokens) is too short for one minibatch of "
            f"batch_size {config.batch_size} x num_steps {config.num_steps}"
        )
    return float(loss_sum) / tokens, tokens, time.perf_counter() - started


def _resume_dir(out: Path) -> Path:
    """Hidden sibling of the bundle: the service never takes it for a bundle."""
    return out.with_name(f".{out.name}.resume")


def config_json(config: TrainConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}


def _save_resume(
    config: TrainConfig,
    model: nn.Module,
    best_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, Any]],
) -> None:
    """Everything needed to continue after the last completed epoch, no pickle involved."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {
        f"best.{k}": v.detach().cpu().contiguous() for k, v in best_model.state_dict().items()
    }
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for idx, slots in opt_state["state"].items():
        for key, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    state = {
        "config": config_json(config),
        "history": history,
        "optimizer_scalars": scalars,
        "param_groups": opt_state["param_groups"],
    }
    write_dir_atomically(
        _resume_dir(config.out),
        {"state.json": json.dumps(state, indent=1).encode(), "state.safetensors": save(tensors)},
    )


def _load_resume(
    config: TrainConfig, model: nn.Module, best_model: nn.Module, optimizer: torch.optim.Optimizer
) -> list[dict[str, Any]]:
    """Restore the last completed epoch; an empty history when there is nothing to resume."""
    folder = _resume_dir(config.out)
    if not (folder / "state.json").is_file():
        log.warning("nothing to resume at %s: starting from epoch 1", folder)
        return []
    state = json.loads((folder / "state.json").read_text())
    changed = [
        f"{k}: {state['config'].get(k)!r} -> {v!r}"
        for k, v in config_json(config).items()
        if k not in TrainConfig.RESUMABLE_CHANGES and state["config"].get(k) != v
    ]
    if changed:
        raise TrainingError("cannot resume with different settings: " + "; ".join(changed))
    tensors = load_file(str(folder / "state.safetensors"), device=str(_device_of(model)))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_model.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("best.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state["state"].setdefault(int(idx), {})[name] = value
    for key, value in state["optimizer_scalars"].items():
        idx, name = key.split(".", 1)
        opt_state["state"].setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict(opt_state)
    history: list[dict[str, Any]] = state["history"]
    log.info("resuming %s after epoch %d", config.out, len(history))
    return history


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def best_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch with the lowest validation perplexity (the last one when there is none)."""
    finite = [h for h in history if math.isfinite(h["val_ppl"])]
    return min(finite, key=lambda h: h["val_ppl"])["epoch"] if finite else len(history)


def _metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    best = best_epoch(history)
    return {
        "epochs": history,
        "best_epoch": best,
        "best_val_ppl": history[best - 1]["val_ppl"],
        "train_ppl_at_best": history[best - 1]["train_ppl"],
    }


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train a language model and write its bundle to `config.out`; returns the metrics."""
    if not is_valid_name(config.out.name):
        raise TrainingError(
            f"output name {config.out.name!r} must match ^[a-z0-9][a-z0-9._-]{{0,63}}$"
        )
    if config.out.exists() and not config.out.is_dir():
        raise TrainingError(f"output path {config.out} exists and is not a directory")
    device = resolve_device(config.device)
    tokenizer, train_ids, val_ids, corpus_sha1 = load_tokens(config)
    torch.manual_seed(config.seed)
    model = build_model(
        LMConfig(
            config.arch,
            len(tokenizer.vocab),
            config.num_hiddens,
            config.num_layers,
            config.dropout,
            config.embed_size,
        )
    ).to(device)
    best_model = copy.deepcopy(model)
    optimizer = _make_optimizer(config, model)
    history = _load_resume(config, model, best_model, optimizer) if resume else []
    info = config_json(config) | {
        "corpus_sha1": corpus_sha1,
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "parameters": num_parameters(model),
    }
    for machine_specific in ("out", "data_dir", "cache_dir", "allow_download", "device"):
        info.pop(machine_specific)
    train_ids, val_ids = train_ids.to(device), val_ids.to(device)
    for epoch in range(len(history) + 1, config.epochs + 1):
        if config.patience and history and epoch - 1 - best_epoch(history) >= config.patience:
            log.info("early stop: no better validation perplexity in %d epochs", config.patience)
            break
        loss, tokens, seconds = train_epoch(model, optimizer, train_ids, config, epoch, device)
        if not math.isfinite(loss):
            raise TrainingError(
                f"epoch {epoch}: training loss is {loss}; stopped. {config.out} keeps the last "
                "good weights (try a lower lr or clip)"
            )
        val_ppl = score_ids(model, val_ids).perplexity if len(val_ids) > 1 else math.nan
        history.append(
            {
                "epoch": epoch,
                "train_ppl": math.exp(loss),
                "val_ppl": val_ppl,
                "lr": _lr_at(config, epoch),
                "tokens_per_s": tokens / seconds,
                "seconds": seconds,
            }
        )
        log.info(
            "epoch %d/%d  train ppl %.3f  val ppl %.3f  %.0f tok/s",
            epoch,
            config.epochs,
            math.exp(loss),
            val_ppl,
            tokens / seconds,
        )
        if best_epoch(history) == epoch:
            best_model.load_state_dict(model.state_dict())
        curves = lm_curves_png(history, config.out.name, best_epoch(history))
        save_bundle(config.out, best_model, tokenizer, info, _metrics(history), {CURVES: curves})
        _save_resume(config, model, best_model, optimizer, history)
    if not history:
        raise TrainingError("no epoch was trained (epochs must be >= 1)")
    return _metrics(history)
