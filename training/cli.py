"""Command line: `python -m training lm|sine|kn|list ...` (argparse; every flag has help).

Exit status: 0 done, 1 the run failed (missing corpus, NaN loss, ...; for `list`: a bundle
is unreadable or DIR is not a directory), 2 bad flags, 130 interrupted (the last completed
epoch can be resumed with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from models.bundle import BundleError
from models.corpus import CorpusError
from models.forecast import SineConfig
from models.kneser_ney import KneserNey
from models.rnn import ARCHITECTURES
from models.text import LEVELS, LINE_JOINS
from training.batches import SAMPLINGS
from training.loop import TrainConfig, TrainingError, load_tokens, train
from training.report import format_table, list_bundles
from training.sine import train_sine

log = logging.getLogger("training")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _add_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("RNNLM_DATA_DIR"),
        help="directory holding named corpora such as timemachine.txt (env RNNLM_DATA_DIR)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("RNNLM_CACHE_DIR", Path.home() / ".cache" / "rnnlm")),
        help="where verified downloads of named corpora are kept (env RNNLM_CACHE_DIR)",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="never download a named corpus; fail if it is not in --data-dir or the cache",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice); results are bit-reproducible "
        "for the same seed, thread count and machine",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    lm = sub.add_parser("lm", help="train a recurrent language model (d2l ch. 9)")
    lm.add_argument(
        "--out", type=Path, required=True, help="bundle directory to write, e.g. checkpoints/gru"
    )
    lm.add_argument(
        "--corpus", default="timemachine", help="built-in corpus name or a text file path"
    )
    _add_paths(lm)
    lm.add_argument("--level", choices=LEVELS, default="char", help="tokens: characters or words")
    lm.add_argument(
        "--line-join",
        choices=LINE_JOINS,
        default="space",
        help="join cleaned lines with a space, or with nothing as the book does",
    )
    lm.add_argument(
        "--min-freq", type=_non_negative_int, default=0, help="drop rarer tokens to <unk>"
    )
    lm.add_argument("--arch", choices=sorted(ARCHITECTURES), default="gru", help="network")
    lm.add_argument("--num-hiddens", type=_positive_int, default=256, help="hidden units per layer")
    lm.add_argument("--num-layers", type=_positive_int, default=1, help="stacked recurrent layers")
    lm.add_argument(
        "--dropout",
        type=_fraction,
        default=0.0,
        help="dropout on inputs, between layers, on outputs",
    )
    lm.add_argument(
        "--embed-size",
        type=_non_negative_int,
        default=0,
        help="input embedding size; 0 = one-hot as in the book",
    )
    lm.add_argument("--batch-size", type=_positive_int, default=32, help="sequences per minibatch")
    lm.add_argument(
        "--num-steps", type=_positive_int, default=35, help="tokens per sequence (BPTT length)"
    )
    lm.add_argument(
        "--epochs", type=_positive_int, default=50, help="passes over the training split"
    )
    lm.add_argument("--lr", type=_positive_float, default=1.0, help="learning rate")
    lm.add_argument(
        "--optimizer", choices=("sgd", "adam", "adamw"), default="sgd", help="optimizer"
    )
    lm.add_argument(
        "--weight-decay", type=float, default=0.0, help="L2 penalty (decoupled for adamw)"
    )
    lm.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning-rate schedule over --epochs",
    )
    lm.add_argument(
        "--clip",
        type=_positive_float,
        default=1.0,
        help="clip gradients to this global norm (theta)",
    )
    lm.add_argument(
        "--sampling", choices=SAMPLINGS, default="random", help="minibatch partitioning"
    )
    lm.add_argument(
        "--val-frac", type=_fraction, default=0.1, help="held-out fraction at the end of the corpus"
    )
    lm.add_argument(
        "--patience",
        type=_non_negative_int,
        default=0,
        help="stop after this many epochs without a better validation perplexity; 0 = never",
    )
    lm.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bundle)")
    lm.add_argument(
        "--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N"
    )
    lm.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last completed epoch",
    )

    kn = sub.add_parser(
        "kn", help="held-out perplexity of a Kneser-Ney n-gram baseline on the same split as lm"
    )
    kn.add_argument("--corpus", default="timemachine", help="built-in corpus name or a file path")
    _add_paths(kn)
    kn.add_argument("--level", choices=LEVELS, default="char", help="tokens: characters or words")
    kn.add_argument("--line-join", choices=LINE_JOINS, default="space", help="as for lm")
    kn.add_argument("--val-frac", type=_fraction, default=0.1, help="held-out fraction at the end")
    kn.add_argument(
        "--order", type=_positive_int, nargs="+", default=[7], help="n-gram orders to evaluate"
    )
    kn.add_argument("--modified", action="store_true", help="three discounts (modified KN)")

    sine = sub.add_parser("sine", help="fit the noisy-sine forecaster (d2l 8.1)")
    defaults = SineConfig()
    sine.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    sine.add_argument("--T", type=_positive_int, default=defaults.T, help="series length")
    sine.add_argument("--tau", type=_positive_int, default=defaults.tau, help="lags fed to the MLP")
    sine.add_argument(
        "--num-train", type=_positive_int, default=defaults.num_train, help="training examples"
    )
    sine.add_argument(
        "--noise", type=float, default=defaults.noise, help="std of the Gaussian noise"
    )
    sine.add_argument(
        "--num-hiddens", type=_positive_int, default=defaults.num_hiddens, help="MLP hidden units"
    )
    sine.add_argument("--lr", type=_positive_float, default=defaults.lr, help="Adam learning rate")
    sine.add_argument(
        "--batch-size", type=_positive_int, default=defaults.batch_size, help="minibatch size"
    )
    sine.add_argument(
        "--epochs", type=_positive_int, default=defaults.epochs, help="passes over the data"
    )
    sine.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the noise and the fit"
    )

    listing = sub.add_parser(
        "list", help="table of the bundles in a directory; unreadable ones with the reason"
    )
    listing.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=Path("checkpoints"),
        help="directory of bundles (default: checkpoints)",
    )
    return parser


def _list(directory: Path) -> int:
    """Print the table; 1 when DIR is missing or any bundle in it cannot be served."""
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 1
    rows = list_bundles(directory)
    if not rows:
        print(f"no bundles in {directory}")
        return 0
    print(format_table(rows))
    return 1 if any(r.error for r in rows) else 0


def _lm_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        out=args.out,
        corpus=args.corpus,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        allow_download=not args.no_download,
        level=args.level,
        line_join=args.line_join,
        min_freq=args.min_freq,
        arch=args.arch,
        num_hiddens=args.num_hiddens,
        num_layers=args.num_layers,
        dropout=args.dropout,
        embed_size=args.embed_size,
        batch_size=args.batch_size,
        num_steps=args.num_steps,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        clip=args.clip,
        sampling=args.sampling,
        val_frac=args.val_frac,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
    )


def _kneser_ney(args: argparse.Namespace) -> dict[str, object]:
    data = TrainConfig(
        out=Path("kn"),
        corpus=args.corpus,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        allow_download=not args.no_download,
        level=args.level,
        line_join=args.line_join,
        val_frac=args.val_frac,
    )
    tokenizer, train_ids, val_ids, _ = load_tokens(data)
    variant = "modified" if args.modified else "interpolated"
    results = {}
    for order in args.order:
        model = KneserNey(train_ids.tolist(), order, len(tokenizer.vocab), modified=args.modified)
        results[str(order)] = model.perplexity(val_ids.tolist())
        log.info(
            "%s Kneser-Ney order %d: held-out perplexity %.4f", variant, order, results[str(order)]
        )
    return {"variant": variant, "val_tokens": len(val_ids), "val_ppl_by_order": results}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list(args.dir)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.command == "kn":
            summary = _kneser_ney(args)
        elif args.command == "lm":
            config = _lm_config(args)
            if args.arch == "rnn_scratch" and (
                args.num_layers != 1 or args.dropout or args.embed_size
            ):
                parser.error(
                    "--arch rnn_scratch is the book's model: one layer, no dropout, one-hot"
                )
            metrics = train(config, resume=args.resume)
            summary = {k: v for k, v in metrics.items() if k != "epochs"}
        else:
            sine = SineConfig(
                T=args.T,
                tau=args.tau,
                num_train=args.num_train,
                noise=args.noise,
                num_hiddens=args.num_hiddens,
                lr=args.lr,
                batch_size=args.batch_size,
                epochs=args.epochs,
                seed=args.seed,
            )
            metrics = train_sine(sine, args.out)
            summary = {k: v for k, v in metrics.items() if k != "epochs"}
    except (CorpusError, BundleError, TrainingError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command with --resume to continue", file=sys.stderr)
        return 130
    print(json.dumps({"out": str(args.out), **summary} if "out" in args else summary, indent=2))
    return 0
