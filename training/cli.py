"""Command line: `python -m training lm|ngram|mixture|kn|sine|list ...` (argparse; every
flag has help).

The flags of `lm`, `ngram`, `mixture`, `kn` and `sine` come from the config dataclasses
(`training.config`, `training.ngram`, `models.forecast.SineConfig`) through
`training.flags`: a setting is declared once.

Exit status: 0 done, 1 the run failed (missing corpus, NaN loss, ...; for `list`: a bundle
is unreadable or DIR is not a directory), 2 bad flags, 130 interrupted (the last completed
epoch can be resumed with --resume).

`torchrun --nproc-per-node G [--nnodes N ...] -m training lm ...` runs the same command
data-parallel over G x N processes (`training.distributed`): `--batch-size` is then the
global minibatch, split evenly among the ranks; rank 0 logs, prints and writes the bundle;
a rank that fails prints its message with its rank, and torchrun stops the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from models.arpa import ArpaError
from models.bundle import BundleError
from models.corpus import CorpusError
from models.forecast import SineConfig
from training import distributed
from training.config import ConfigError, DataConfig, TrainConfig, build, environment_defaults
from training.errors import TooLittleData, TrainingError
from training.flags import add_flags, flags_by_setting, given
from training.loop import train
from training.ngram import MixtureRun, NgramRun, fit_mixture, held_out_by_order, train_ngram
from training.presets import PRESETS
from training.report import format_table, list_bundles
from training.sine import train_sine

log = logging.getLogger("training")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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

    lm = sub.add_parser("lm", help="train a recurrent language model (d2l ch. 8)")
    add_flags(lm, TrainConfig, environment_defaults())
    lm.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="run one of the book's experiments with all its settings (flags given beside "
        "it override them): "
        + "; ".join(f"{name}: {p.description}" for name, p in sorted(PRESETS.items())),
    )
    lm.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last completed epoch",
    )

    ngram = sub.add_parser(
        "ngram", help="count an n-gram language model (d2l 8.3) into a bundle, held out as lm"
    )
    add_flags(ngram, NgramRun, environment_defaults())

    mixture = sub.add_parser(
        "mixture",
        help="interpolate language-model bundles into a mixture bundle, its weights fit on "
        "their validation split (deterministic: same bundles, same mixture)",
    )
    add_flags(mixture, MixtureRun, environment_defaults())

    kn = sub.add_parser(
        "kn", help="held-out perplexity of Kneser-Ney n-gram baselines on the same split as lm"
    )
    add_flags(kn, DataConfig, environment_defaults())
    kn.add_argument(
        "--order", type=_positive_int, nargs="+", default=[7], help="n-gram orders to evaluate"
    )
    kn.add_argument("--modified", action="store_true", help="three discounts (modified KN)")

    sine = sub.add_parser("sine", help="fit the noisy-sine forecaster (d2l 8.1)")
    sine.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    add_flags(sine, SineConfig)

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


def _flag_text(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return flag
    if isinstance(value, tuple | list):
        return " ".join([flag, *map(str, value)])
    return f"{flag} {value}"


def conflict_message(
    cls: type, exc: ConfigError, explicit: dict[str, Any], preset: str | None = None
) -> str:
    """Name every setting of a conflict as a flag, and where the ones not typed came from."""
    flags = flags_by_setting(cls)
    preset_settings = PRESETS[preset].settings if preset else {}

    def source(name: str) -> str:
        if name in explicit:
            return ""
        return f" (from --preset {preset})" if name in preset_settings else " (the default)"

    parts = [_flag_text(flags[name], value) + source(name) for name, value in exc.values.items()]
    if len(parts) == 1:
        return f"{parts[0]}: {exc.reason}"
    return f"{' and '.join(parts)} conflict: {exc.reason}"


def _config(parser: argparse.ArgumentParser, cls: type, args: argparse.Namespace) -> Any:
    """The command's config from the environment's defaults, the preset (lm) and the flags
    given, in that order (exit 2 on settings that contradict each other)."""
    explicit = given(args, cls)
    names = set(flags_by_setting(cls))
    defaults = {k: v for k, v in environment_defaults().items() if k in names}
    preset = getattr(args, "preset", None)
    preset_settings = PRESETS[preset].settings if preset else {}
    try:
        return build(cls, defaults | preset_settings | explicit)
    except ConfigError as exc:
        parser.error(conflict_message(cls, exc, explicit, preset))
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list(args.dir)
    ranks = distributed.from_environment()  # a torchrun job's rank, else a plain run
    logging.basicConfig(
        level=logging.WARNING if args.quiet or not ranks.is_main else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.command == "kn":
            data: DataConfig = _config(parser, DataConfig, args)
            summary = held_out_by_order(data, args.order, "modified-kn" if args.modified else "kn")
        elif args.command == "ngram":
            run: NgramRun = _config(parser, NgramRun, args)
            summary = {"out": str(run.out)} | train_ngram(run)
        elif args.command == "mixture":
            mix: MixtureRun = _config(parser, MixtureRun, args)
            summary = {"out": str(mix.out)} | fit_mixture(mix)
        elif args.command == "lm":
            config: TrainConfig = _config(parser, TrainConfig, args)
            metrics = train(config, resume=args.resume)
            summary = {"out": str(config.out)} | {k: v for k, v in metrics.items() if k != "epochs"}
        else:
            sine: SineConfig = _config(parser, SineConfig, args)
            metrics = train_sine(sine, args.out)
            summary = {"out": str(args.out)} | {k: v for k, v in metrics.items() if k != "epochs"}
    except TooLittleData as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CorpusError, BundleError, TrainingError, ArpaError, ValueError, OSError) as exc:
        print(f"error: {f'{ranks}: ' if ranks.distributed else ''}{exc}", file=sys.stderr)
        distributed.record_failure(exc)
        return 1
    except RuntimeError as exc:
        if not ranks.distributed:
            raise
        # Most often a collective that broke because another rank failed first (torchrun
        # names that rank as the root cause); one line, not a second traceback.
        print(f"error: {ranks}: stopped: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command with --resume to continue", file=sys.stderr)
        return 130
    if ranks.is_main:
        print(json.dumps(summary, indent=2))
    return 0
