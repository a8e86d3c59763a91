"""Training throughput (tokens/s): the book's training loop against rnnlm's, same model.

GRU-256 (one-hot input, as the book's concise GRU), batch 32 x 35 steps, SGD lr 1, clip 1,
random sampling, on the book's corpus. The baseline is d2l's `train_epoch_ch8` style:
gradient clipping by a Python-side norm (`if norm > theta`, a host sync per step) and the
loss read with `float()` every minibatch. rnnlm's `train_epoch` keeps the running loss on
the device and clips without a sync.

    python -m bench.training [--device cpu] [--batches 60]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch
from torch import nn

from bench._util import book_path, machine
from models.rnn import LMConfig, build_model
from models.score import token_nll
from training.batches import random_batches
from training.config import DataConfig, OptimConfig
from training.data import load_tokens
from training.loop import train_epoch


def book_grad_clipping(net: nn.Module, theta: float) -> None:
    """d2l's grad_clipping: the norm comes back to Python before the comparison."""
    params = [p for p in net.parameters() if p.requires_grad]
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))  # type: ignore[arg-type]
    if norm > theta:
        for p in params:
            p.grad[:] *= theta / norm  # type: ignore[index]


def book_epoch(net: nn.Module, batches, device: torch.device, lr: float) -> tuple[int, float]:
    """d2l's train_epoch_ch8 (random sampling: fresh state per minibatch)."""
    updater = torch.optim.SGD(net.parameters(), lr)
    loss_sum, tokens = 0.0, 0
    for X, Y in batches:
        X, Y = X.to(device), Y.to(device)
        y_hat, _ = net(X, None)
        loss = token_nll(y_hat, Y).mean()
        updater.zero_grad()
        loss.backward()
        book_grad_clipping(net, 1)
        updater.step()
        loss_sum += float(loss) * Y.numel()  # a host sync every minibatch
        tokens += Y.numel()
    return tokens, math.exp(loss_sum / tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batches", type=int, default=60, help="minibatches timed per loop")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    device = torch.device(args.device)
    optim = OptimConfig()
    data = load_tokens(DataConfig(data_dir=book_path().parent, allow_download=False))
    limit = args.batches * optim.batch_size * optim.num_steps + optim.num_steps * 2
    ids = data.train_ids[:limit].to(device)
    results = {}
    for name in ("book", "rnnlm", "book", "rnnlm"):  # interleaved: both see the same load
        torch.manual_seed(0)
        net = build_model(LMConfig("gru", len(data.tokenizer.vocab), 256)).to(device)
        started = time.perf_counter()
        if name == "book":
            g = torch.Generator().manual_seed(0)
            batches = itertools.islice(random_batches(ids, 32, 35, g), args.batches)
            tokens, _ = book_epoch(net, batches, device, lr=1.0)
        else:
            optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
            tokens = train_epoch(net, optimizer, ids, optim, 1, device).tokens
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = tokens / (time.perf_counter() - started)
        results[name] = max(results.get(name, 0.0), rate)
    print(
        json.dumps(
            {
                "model": "gru-256 one-hot",
                "batch": "32 x 35",
                "book_tokens_per_s": results["book"],
                "rnnlm_tokens_per_s": results["rnnlm"],
                "ratio": results["rnnlm"] / results["book"],
            }
        )
    )


if __name__ == "__main__":
    main()
