"""Data-parallel training (torchrun) against one process: tokens/s and the weights.

Three runs of the real command line on the book, each into its own bundle:
  one     `python -m training lm ...`: one process, global minibatch B
  ranks   `torchrun --nproc-per-node G -m training lm ...`: the same B split over G ranks,
          which must give the same weights (the relative L2 distance is reported)
  wide    the same G ranks with B rows each (global minibatch G x B): what more devices buy
          when the minibatch grows with them
Tokens/s is each run's own figure (the mean over its epochs after the first, which pays
for warm-up), training steps only: validation and saving excluded. On the CPU the
processes share the machine's cores (one process gets all of them, each rank its share);
on CUDA each rank takes its own GPU, or with more ranks than GPUs they share (gloo).

    python -m bench.ddp [--device cpu|cuda] [--nproc 2] [--model gru|lstm] [--epochs 3]
                        [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from bench._util import ROOT, book_path, machine

MODELS = {
    # bench.training's: the book's GRU-256, one-hot input, 32 x 35, SGD.
    "gru": "--arch gru --num-hiddens 256 --num-steps 35 --optimizer sgd --lr 1 --clip 1",
    # The default LSTM's shape (`make models`) without dropout, so the weights compare.
    "lstm": "--arch lstm --num-layers 2 --num-hiddens 384 --embed-size 64 --num-steps 100 "
    "--optimizer adamw --lr 0.002 --weight-decay 0.01",
}


def run(name: str, out: Path, args: argparse.Namespace, ranks: int, batch: int) -> dict:
    threads = max(1, args.threads // ranks)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [sys.executable, *(launcher if ranks > 1 else []), "-m", "training"]
    command += ["--threads", str(threads), "lm", "--out", str(out / name)]
    command += ["--device", args.device, "--seed", "0"]
    command += ["--epochs", str(args.epochs), "--batch-size", str(batch), "--no-download"]
    command += ["--data-dir", str(book_path().parent), *MODELS[args.model].split()]
    if args.max_tokens:
        command += ["--max-tokens", str(args.max_tokens)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{name} failed ({' '.join(command)}):\n{done.stderr[-4000:]}")
    epochs = json.loads((out / name / "metrics.json").read_text())["epochs"]
    return {
        "run": name,
        "ranks": ranks,
        "global_batch": batch,
        "threads_per_process": threads,
        "tokens_per_s": round(statistics.mean(e["tokens_per_s"] for e in epochs[1:] or epochs)),
        "seconds_per_epoch": round(statistics.mean(e["seconds"] for e in epochs[1:] or epochs), 2),
        "wall_s": round(wall, 1),
        "val_ppl": epochs[-1]["val_ppl"],
    }


def distance(a: Path, b: Path) -> float:
    """The largest relative L2 distance between two bundles' tensors."""
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    return max(float((wa[k] - wb[k]).norm() / wb[k].norm()) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (G)")
    parser.add_argument("--model", choices=sorted(MODELS), default="gru")
    parser.add_argument("--batch-size", type=int, default=32, help="B")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=0, help="train on the first N only")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all"
    )
    args = parser.parse_args()
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    print(json.dumps({"machine": machine(), "gpus": gpus, "model": args.model}))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        one = run("one", out, args, 1, args.batch_size)
        print(json.dumps(one), flush=True)
        ranks = run("ranks", out, args, args.nproc, args.batch_size)
        ranks["relative_weight_distance_to_one"] = distance(out / "ranks", out / "one")
        ranks["speedup"] = round(ranks["tokens_per_s"] / one["tokens_per_s"], 2)
        print(json.dumps(ranks), flush=True)
        wide = run("wide", out, args, args.nproc, args.batch_size * args.nproc)
        wide["speedup"] = round(wide["tokens_per_s"] / one["tokens_per_s"], 2)
        print(json.dumps(wide), flush=True)


if __name__ == "__main__":
    main()
