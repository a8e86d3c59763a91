"""The training loop for recurrent LMs (d2l §8.5-§8.6, grown up).

Three parts, each replaceable on its own: the data (`training.data.prepare_tokens`: the
corpus as a token file, streamed once; the minibatch samplers of `training.batches`, which
read a large split from that file row by row, in bounded memory), one epoch
(`train_epoch`: loss = mean token cross-entropy, gradient clipping by global norm, an
optimizer step per minibatch), and saving (`save_epoch`: the bundle with the best weights
by validation perplexity, and the resume state with the last completed epoch). `train`
strings them together and evaluates train and held-out perplexity (the shared
`models.score` definition) and tokens/s.
Every random draw of epoch e is seeded from (seed, e), so resuming gives the very same
result as an uninterrupted run.

Started by torchrun, the same loop runs data-parallel (`training.distributed`): each rank
trains on its rows of every global minibatch, scores its share of the validation split,
and rank 0 alone writes the bundle and the resume state.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from models.bundle import CURVES, save_bundle
from models.curves import curves_figure, png
from models.device import resolve_device
from models.files import NAME_PATTERN, is_valid_name
from models.generate import SamplingParams, generate
from models.history import best_epoch, lm_metrics
from models.rnn import LanguageModel, build_model, num_parameters
from models.score import DEFAULT_BURN_IN, Score, score_ids, token_nll
from models.text import Tokenizer
from training import distributed
from training.batches import ALL_ROWS, BATCHERS, Corpus, min_tokens, num_batches
from training.config import OptimConfig, TrainConfig
from training.data import prepare_tokens
from training.distributed import Ranks
from training.errors import TooLittleData, TrainingError
from training.resume import load_resume, save_resume
from training.tokens import TokenFile, TokenSpan

log = logging.getLogger(__name__)
IN_MEMORY_TOKENS = 1 << 24  # a split up to this many ids is loaded whole (128 MiB as int64)
VAL_PIECE_TOKENS = 1 << 20  # a held-out split on disk is scored in pieces of this many ids


def clip_gradients(params: Iterable[nn.Parameter], theta: float) -> Tensor:
    """Scale all gradients so their global L2 norm is at most theta (d2l §8.5.5).

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


def make_optimizer(optim: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    makers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    optimizer: torch.optim.Optimizer = makers[optim.optimizer](
        model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay
    )
    return optimizer


def lr_at(optim: OptimConfig, epoch: int) -> float:
    if optim.schedule == "cosine":
        return optim.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(1, optim.epochs)))
    return optim.lr


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean token cross-entropy over the epoch's minibatches
    tokens: int
    seconds: float
    steps: int = 0  # optimizer steps (minibatches)
    grad_norm_mean: float = math.nan  # global gradient norm before clipping, over the steps
    grad_norm_max: float = math.nan
    clipped_fraction: float = math.nan  # share of steps whose norm exceeded theta


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_ids: Corpus,
    optim: OptimConfig,
    epoch: int,
    device: torch.device,
    ranks: Ranks = Ranks(),
) -> EpochStats:
    """One pass over the training split (this rank's rows of it; `model` is then the
    data-parallel wrapper, which averages the gradients over the ranks).

    The running loss and the gradient-norm figures stay on the device: the host reads them
    once at the end (and, on a terminal, for the progress bar at most twice a second).
    """
    generator = torch.Generator().manual_seed(optim.seed * 100_003 + epoch)
    # Dropout masks: each rank its own stream (a plain run's seed is unchanged).
    torch.manual_seed((optim.seed * 100_003 + epoch) * ranks.world_size + ranks.rank)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(optim, epoch)
    model.train()
    rows = ranks.rows(optim.batch_size) if ranks.distributed else ALL_ROWS
    batches = BATCHERS[optim.sampling](
        train_ids, optim.batch_size, optim.num_steps, generator, rows
    )
    total = num_batches(len(train_ids), optim.batch_size, optim.num_steps)
    bar = tqdm(
        total=total * optim.batch_size * optim.num_steps,
        desc=f"epoch {epoch}/{optim.epochs}",
        unit="tok",
        unit_scale=True,
        leave=False,
        disable=None if ranks.is_main else True,  # a bar on a terminal, not in a log file
    )
    loss_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    norm_max = torch.zeros((), device=device)
    clipped = torch.zeros((), device=device)
    tokens, steps, state, started, shown = 0, 0, None, time.perf_counter(), 0.0
    for X, Y in batches:
        X, Y = X.to(device, non_blocking=True), Y.to(device, non_blocking=True)
        if optim.sampling == "sequential" and state is not None:
            state = tuple(s.detach() for s in state)  # keep the state, cut the graph
        else:
            state = None  # random sampling: each minibatch starts afresh
        logits, state = model(X, state)
        loss = token_nll(logits, Y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        norm = clip_gradients(model.parameters(), optim.clip)
        optimizer.step()
        loss_sum += loss.detach() * Y.numel()
        norm_sum += norm
        torch.maximum(norm_max, norm, out=norm_max)
        clipped += norm > optim.clip
        tokens += Y.numel()
        steps += 1
        bar.update(Y.numel() * ranks.world_size)
        if not bar.disable and time.perf_counter() - shown >= 0.5:
            shown = time.perf_counter()
            bar.set_postfix(ppl=f"{math.exp(float(loss_sum) / tokens):.3f}", refresh=False)
    bar.close()
    if tokens == 0:
        raise TrainingError(
            f"the training split ({len(train_ids)} tokens) is too short for one minibatch of "
            f"batch_size {optim.batch_size} x num_steps {optim.num_steps}"
        )
    return EpochStats(
        loss=float(loss_sum) / tokens,
        tokens=tokens,
        seconds=time.perf_counter() - started,
        steps=steps,
        grad_norm_mean=float(norm_sum) / steps,
        grad_norm_max=float(norm_max),
        clipped_fraction=float(clipped) / steps,
    )


# The book's sample prompts: train_ch8 prints predict_ch8 of each, 50 tokens, greedy.
SAMPLE_PREFIXES = ("time traveller", "traveller")
SAMPLE_TOKENS = 50


def samples(model: LanguageModel, tokenizer: Tokenizer) -> dict[str, str]:
    """Each sample prefix and its greedy continuation, as the book's predict_ch8 prints it
    (argmax at every step, nothing banned)."""
    model.eval()
    params = [SamplingParams(temperature=0.0, max_new_tokens=SAMPLE_TOKENS)]
    texts = {}
    for prefix in SAMPLE_PREFIXES:
        ids = tokenizer.encode(prefix).ids
        [tracker] = generate(model, ids, params, tokenizer.detokenizer, banned_ids=())
        texts[prefix] = prefix + tracker.text
    return texts


def draw_curves(config: TrainConfig, history: list[dict[str, Any]]) -> bytes:
    """The bundle's curves.png for `history`, with the kept epoch and theta marked."""
    figure = curves_figure(history, config.out.name, best_epoch(history), clip=config.optim.clip)
    return png(figure)


# Drawing curves.png can take several times a small model's epoch (docs/benchmarks.md,
# "Training"), so the bundle saved after an epoch carries them only while drawing stays
# within this share of the run's time.
CURVES_TIME_SHARE = 0.1
clock = time.perf_counter  # the schedule's clock (a test may stand in for it)


@dataclass
class Curves:
    """The run's curves.png, drawn from its history when the time allows.

    After an epoch the curves are drawn again once the time since the last drawing is at
    least 1 / CURVES_TIME_SHARE times what that drawing took; a bundle saved in between
    carries no curves.png rather than curves behind its metrics (the service draws them
    from metrics.json on request). The run's final bundle always carries them.
    """

    config: TrainConfig
    png: bytes | None = None
    epochs: int = 0  # the length of the history `png` was drawn from
    cost: float = 0.0  # seconds the last drawing took
    drawn_at: float = 0.0

    def after_epoch(self, history: list[dict[str, Any]]) -> bytes | None:
        if self.png is not None and clock() - self.drawn_at < self.cost / CURVES_TIME_SHARE:
            return None
        return self.of(history)

    def of(self, history: list[dict[str, Any]]) -> bytes:
        """The curves of `history`, drawn now unless the last drawing was of it."""
        if self.png is None or self.epochs != len(history):
            start = clock()
            self.png, self.epochs = draw_curves(self.config, history), len(history)
            self.drawn_at = clock()
            self.cost = self.drawn_at - start
        return self.png


def write_bundle(
    config: TrainConfig,
    best_model: nn.Module,
    tokenizer: Tokenizer,
    info: dict[str, Any],
    history: list[dict[str, Any]],
    curves: bytes | None,
    **extra: Any,
) -> None:
    """The bundle: the best weights, the metrics of `history` (plus `extra`) and `curves`,
    the PNG drawn from that very history (None: no curves.png)."""
    metrics = lm_metrics(history, **extra)
    dtype = getattr(torch, config.weights_dtype)
    files = {} if curves is None else {CURVES: curves}
    save_bundle(config.out, best_model, tokenizer, info, metrics, files, dtype)


def save_epoch(
    config: TrainConfig,
    model: nn.Module,
    best_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer: Tokenizer,
    info: dict[str, Any],
    history: list[dict[str, Any]],
    curves: Curves,
) -> None:
    """After each epoch: the bundle (best weights, metrics, curves when drawn), then the
    resume state."""
    write_bundle(config, best_model, tokenizer, info, history, curves.after_epoch(history))
    save_resume(config, model, best_model, optimizer, history)


def _token_file(config: TrainConfig) -> TokenFile:
    """The corpus as a token file (built in one streaming pass, or reused), with a bar."""
    bar = tqdm(desc="tokenizing", unit="B", unit_scale=True, leave=False, disable=None)

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        tokens = prepare_tokens(config.data, config.out, progress)
    finally:
        bar.close()
    log.info(
        "token file %s: %d tokens (%d train, %d held out), vocabulary %d",
        tokens.path,
        tokens.n_tokens,
        tokens.train_end,
        tokens.n_val,
        len(tokens.tokenizer.vocab),
    )
    return tokens


def _split(span: TokenSpan, device: torch.device) -> Corpus:
    """A split in device memory when it is small, else read from the token file by rows."""
    return span.tensor().to(device) if len(span) <= IN_MEMORY_TOKENS else span


def _in_memory(ids: Corpus, device: torch.device) -> Tensor:
    assert isinstance(ids, TokenSpan)
    return ids.tensor().to(device)


def _validate(model: LanguageModel, ids: Corpus) -> float:
    """Held-out perplexity; a split on disk is scored piece by piece (each piece reading
    the `DEFAULT_BURN_IN` ids before it first, as `score_ids` does within one text)."""
    if isinstance(ids, Tensor):
        return score_ids(model, ids).perplexity
    assert isinstance(ids, TokenSpan)
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start, _ in ids.chunks(VAL_PIECE_TOKENS):
        warm = min(start, DEFAULT_BURN_IN)
        stop = min(len(ids), start + VAL_PIECE_TOKENS)
        piece = ids.file.read(ids.start + start - warm, ids.start + stop).to(device)
        score = score_ids(model, piece, max(1, warm))
        nll, count = nll + score.nll, count + score.count
    return math.exp(nll / count)


def _format(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train a language model and write its bundle to `config.out`; returns the metrics.

    metrics.json (see `models.history`) holds per epoch: train and validation perplexity
    (validation null without a held-out split), learning rate, tokens/s, seconds, steps,
    the gradient norm before clipping (mean and max over the steps) and the share of steps
    clipping was active; after the run, `samples`: the greedy continuations of the book's
    prompts by the bundle's weights.

    Under torchrun every rank calls this with the same config; they train one model
    together (`training.distributed`) and all return the same metrics.
    """
    if not is_valid_name(config.out.name):
        raise TrainingError(f"output name {config.out.name!r} must match {NAME_PATTERN.pattern}")
    if config.out.exists() and not config.out.is_dir():
        raise TrainingError(f"output path {config.out} exists and is not a directory")
    ranks = distributed.from_environment()
    if ranks.distributed:
        ranks.rows(config.optim.batch_size)  # the global minibatch must split evenly
    with distributed.joined(ranks, resolve_device(config.device)) as device:
        return _train(config, resume, ranks, device)


def _train(config: TrainConfig, resume: bool, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    if ranks.rank == 0:  # one process streams the corpus; the others reuse its token file
        data = _token_file(config)
    if ranks.distributed:
        torch.distributed.barrier()
    if ranks.rank != 0:
        data = _token_file(config)
    optim = config.optim
    need = min_tokens(optim.batch_size, optim.num_steps)
    if data.train_end < need:
        raise TooLittleData(
            f"the training split ({data.train_end} tokens) is too short for one minibatch: "
            f"batch_size {optim.batch_size} x num_steps {optim.num_steps} needs {need} tokens"
        )
    torch.manual_seed(optim.seed)
    model = build_model(config.model.lm_config(len(data.tokenizer.vocab))).to(device)
    best_model = copy.deepcopy(model)
    optimizer = make_optimizer(optim, model)
    history = _resume(config, model, best_model, optimizer, ranks) if resume else []
    net = distributed.wrap(model, ranks, device)
    info = config.recorded() | {
        "corpus_sha1": data.corpus_sha1,
        "train_tokens": data.train_end,
        "val_tokens": data.n_val,
        "parameters": num_parameters(model),
    }
    if ranks.distributed:
        info["data_parallel_ranks"] = ranks.world_size
    train_ids, val_ids = _split(data.train(), device), _split(data.val(), device)
    curves = Curves(config)
    for epoch in range(len(history) + 1, optim.epochs + 1):
        if optim.patience and history and epoch - 1 - best_epoch(history) >= optim.patience:
            log.info("early stop: no better validation perplexity in %d epochs", optim.patience)
            break
        stats = _pooled(train_epoch(net, optimizer, train_ids, optim, epoch, device, ranks), ranks)
        if not math.isfinite(stats.loss):
            raise TrainingError(
                f"epoch {epoch}: training loss is {stats.loss}; stopped. {config.out} keeps the "
                "last good weights (try a lower lr or clip)"
            )
        if len(val_ids) <= 1:
            val_ppl = None
        elif ranks.distributed:
            shared = val_ids if isinstance(val_ids, Tensor) else _in_memory(val_ids, device)
            val_ppl = Score(*distributed.score_shared(model, shared, ranks)).perplexity
        else:
            val_ppl = _validate(model, val_ids)
        record = {
            "epoch": epoch,
            "train_ppl": math.exp(stats.loss),
            "val_ppl": val_ppl,
            "lr": lr_at(optim, epoch),
            "tokens_per_s": stats.tokens / stats.seconds,
            "seconds": stats.seconds,
            "steps": stats.steps,
            "grad_norm_mean": stats.grad_norm_mean,
            "grad_norm_max": stats.grad_norm_max,
            "clipped_fraction": stats.clipped_fraction,
        }
        history.append(record)
        log.info(
            "epoch %d/%d  train ppl %.3f  val ppl %s  %.0f tok/s  grad norm %.3g mean %.3g max, "
            "clipped %.0f%%",
            epoch,
            optim.epochs,
            record["train_ppl"],
            _format(val_ppl, ".3f"),
            record["tokens_per_s"],
            stats.grad_norm_mean,
            stats.grad_norm_max,
            100 * stats.clipped_fraction,
        )
        if config.sample_every and epoch % config.sample_every == 0:
            for text in samples(model, data.tokenizer).values():
                log.info("epoch %d sample: %s", epoch, text)
        if best_epoch(history) == epoch:
            best_model.load_state_dict(model.state_dict())
        if ranks.is_main:
            save_epoch(config, model, best_model, optimizer, data.tokenizer, info, history, curves)
    if not history:
        raise TrainingError("no epoch was trained (epochs must be >= 1)")
    final = samples(best_model, data.tokenizer)
    for text in final.values():
        log.info("sample (the bundle's weights): %s", text)
    if ranks.is_main:  # the last epoch's bundle again, with the samples; its resume state stands
        write_bundle(
            config, best_model, data.tokenizer, info, history, curves.of(history), samples=final
        )
    return lm_metrics(history, samples=final)


def _pooled(stats: EpochStats, ranks: Ranks) -> EpochStats:
    """One rank's epoch -> the whole job's: the token-weighted mean loss and the tokens of
    all ranks. The gradient-norm figures are the job's already: every rank clips the same
    averaged gradients."""
    if not ranks.distributed:
        return stats
    nll, tokens = distributed.all_sum([stats.loss * stats.tokens, float(stats.tokens)], ranks)
    return dataclasses.replace(stats, loss=nll / tokens, tokens=round(tokens))


def _resume(
    config: TrainConfig,
    model: nn.Module,
    best_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ranks: Ranks,
) -> list[dict[str, Any]]:
    """The resume state, read by rank 0 and handed to the others (whose machines need not
    see `config.out`). It holds no trace of the rank count, so a run may resume on more or
    fewer ranks than it started with, or on none."""
    if not ranks.distributed:
        return load_resume(config, model, best_model, optimizer)
    state: Any = None
    if ranks.is_main:
        try:
            history = load_resume(config, model, best_model, optimizer)
            state = distributed.on_cpu(
                (history, model.state_dict(), best_model.state_dict(), optimizer.state_dict())
            )
        except TrainingError as exc:
            state = str(exc)  # every rank fails with rank 0's reason
    state = distributed.share_object(state, ranks)
    if isinstance(state, str):
        raise TrainingError(state)
    history, weights, best_weights, optimizer_state = state
    if not ranks.is_main:
        model.load_state_dict(weights)
        best_model.load_state_dict(best_weights)
        optimizer.load_state_dict(optimizer_state)
    return list(history)
