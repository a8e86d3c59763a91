"""Data-parallel training over the processes torchrun starts (PyTorch's own launcher).

`python -m training lm ...` is one process and never touches `torch.distributed`. Under
`torchrun --nproc-per-node G [--nnodes N ...] -m training lm ...` each process is one
rank of a job of `world_size` ranks, told its place by torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE). Every rank builds the same model from the same
seed and steps through the same sequence of global minibatches; it computes the loss on
its own rows of each (`Ranks.rows`), `DistributedDataParallel` averages the gradients, so
every rank clips and steps identically, and the result is a one-process run's with the
same seed and global batch, up to the order of floating-point sums.

Everything a rank does alone it does once: it reads only its rows from the token array,
scores only its share of the validation windows (`score_shared`, then one sum), and only
rank 0 writes bundles. A rank that fails records its message where torchrun reports the
root cause (`record_failure`), and torchrun stops the other ranks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler
from torch.nn.parallel import DistributedDataParallel

from models.rnn import LanguageModel
from models.score import DEFAULT_BURN_IN, DEFAULT_SEGMENT_LEN, score_ids
from training.errors import TrainingError

# How long a collective may wait for a rank that does not come (a lost node): past it the
# waiting ranks fail instead of hanging. torchrun stops the others at once when a rank
# on its own node fails, so this is only the backstop.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a job: rank 0 of 1 for a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of every global minibatch of `batch_size` sequences."""
        if batch_size % self.world_size:
            raise TrainingError(
                f"--batch-size {batch_size} is the global minibatch: it must divide evenly "
                f"among the {self.world_size} ranks"
            )
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def share(self, items: int) -> range:
        """This rank's contiguous share of `items` things, as even as they divide."""
        return range(
            self.rank * items // self.world_size, (self.rank + 1) * items // self.world_size
        )

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def from_environment() -> Ranks:
    """The job torchrun described in the environment; a plain run without it."""
    if "WORLD_SIZE" not in os.environ:
        return Ranks()
    return Ranks(
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", 0)),
        int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )


def join(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the job's process group; returns this rank's device.

    On CUDA each rank of a node takes the GPU of its local rank, and ranks talk through
    NCCL. When a node runs more ranks than it has GPUs, ranks share them and talk through
    gloo, which NCCL does not allow; that is for trying the code path on one GPU. On the
    CPU, gloo.
    """
    backend = "gloo"
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        device = torch.device("cuda", ranks.local_rank % gpus)
        torch.cuda.set_device(device)
        if ranks.local_world_size <= gpus:
            backend = "nccl"
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def joined(ranks: Ranks, device: torch.device) -> Iterator[torch.device]:
    """In the job's process group for the duration (nothing to join in a plain run);
    yields this rank's device."""
    if not ranks.distributed:
        yield device
        return
    device = join(ranks, device)
    try:
        yield device
    finally:
        leave()


def wrap(model: LanguageModel, ranks: Ranks, device: torch.device) -> nn.Module:
    """The module to train: `model` itself in a plain run, else its data-parallel wrapper
    (which also copies rank 0's weights to every rank)."""
    if not ranks.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], ranks: Ranks) -> list[float]:
    """Each value summed over the ranks, in float64 (identity in a plain run)."""
    if not ranks.distributed:
        return values
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return [float(v) for v in total.tolist()]


def on_cpu(value: Any) -> Any:
    """`value` with every tensor in it (nested in dicts, lists, tuples) copied to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(on_cpu(v) for v in value)
    return value


def share_object(value: Any, ranks: Ranks) -> Any:
    """Rank 0's `value`, on every rank (pickled: for small things such as a resume state)."""
    if not ranks.distributed:
        return value
    box = [value if ranks.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def score_shared(model: LanguageModel, ids: Tensor, ranks: Ranks) -> tuple[float, int]:
    """(summed negative log-likelihood, tokens scored) of `ids`, as `models.score.score_ids`
    computes it, with each rank scoring its share of the windows and one sum after.

    `score_ids` scores segments of DEFAULT_SEGMENT_LEN targets side by side, each warmed
    on the DEFAULT_BURN_IN tokens before it. Cutting the text at segment boundaries, with
    each share starting `burn_in` tokens early, gives every rank exactly the windows a
    single pass would score, so the sum is the one-process perplexity up to the order of
    additions, and every rank gets the same number.
    """
    if not ranks.distributed:
        score = score_ids(model, ids)
        return score.nll, score.count
    nll, count = score_part(model, ids, ranks)
    total_nll, total_count = all_sum([nll, float(count)], ranks)
    return total_nll, round(total_count)


def score_part(model: LanguageModel, ids: Tensor, ranks: Ranks) -> tuple[float, int]:
    """This rank's share of `score_shared`: whole windows, each with its warm-up."""
    targets = len(ids) - 1  # target j is ids[j + 1]; window k holds targets kL to kL + L
    mine = ranks.share(max(0, -(-targets // DEFAULT_SEGMENT_LEN)))
    if not mine:
        return 0.0, 0
    first = mine.start * DEFAULT_SEGMENT_LEN
    stop = min(targets, mine.stop * DEFAULT_SEGMENT_LEN)
    start = max(0, first - DEFAULT_BURN_IN)
    score = score_ids(model, ids[start : stop + 1], first - start + 1)
    return score.nll, score.count


def record_failure(exc: BaseException) -> None:
    """Write `exc` where torchrun looks for a failed rank's error, so that its summary
    names this rank and message as the root cause (nothing outside torchrun)."""
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        ErrorHandler().record_exception(exc)
