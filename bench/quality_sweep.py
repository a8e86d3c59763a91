"""Model selection for the default char LM: train a grid of configurations in parallel.

Each configuration trains with `training.loop.train` on the book's corpus and the default
split (last 10% held out); the table reports the best validation perplexity reached.

    python -m bench.quality_sweep --grid bench/grids/char_lm.json --jobs 8 --device cuda \
        --out runs/sweep

The grid is a JSON list of objects of training settings (the `lm` flags' names, with
underscores; not `out`); a key "name" labels the row.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from training.config import TrainConfig, setting_names
from training.loop import train

FIELDS = set(setting_names(TrainConfig)) - {"out"}


def run_one(job: tuple[dict[str, Any], Path, str, str | None]) -> dict[str, Any]:
    spec, out_dir, device, data_dir = job
    spec = dict(spec)
    name = spec.pop("name")
    unknown = set(spec) - FIELDS
    if unknown:
        raise SystemExit(f"{name}: unknown fields {sorted(unknown)}")
    config = TrainConfig.build(
        out=out_dir / name,
        data_dir=Path(data_dir) if data_dir else None,
        device=device,
        allow_download=False,
        **spec,
    )
    started = time.perf_counter()
    try:
        metrics = train(config)
    except Exception as exc:  # a failed row is reported, not fatal to the sweep
        return {"name": name, "error": f"{type(exc).__name__}: {exc}"}
    best = metrics["best_epoch"]
    return {
        "name": name,
        "best_val_ppl": metrics["best_val_ppl"],
        "best_epoch": best,
        "train_ppl_at_best": metrics["train_ppl_at_best"],
        "epochs_run": len(metrics["epochs"]),
        "seconds": time.perf_counter() - started,
        "tokens_per_s": metrics["epochs"][best - 1]["tokens_per_s"],
        "spec": spec,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=Path, required=True, help="JSON list of configurations")
    parser.add_argument("--jobs", type=int, default=1, help="configurations trained at once")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--data-dir", default=None, help="directory holding timemachine.txt")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="where bundles go")
    args = parser.parse_args()
    grid = json.loads(args.grid.read_text())
    jobs = [(spec, args.out, args.device, args.data_dir) for spec in grid]
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        rows = []
        for row in pool.imap_unordered(run_one, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    rows.sort(key=lambda r: r.get("best_val_ppl", float("inf")))
    print("\n| config | best val ppl | epoch | train ppl | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | error: {r['error']} | | | |")
        else:
            print(
                f"| {r['name']} | {r['best_val_ppl']:.3f} | {r['best_epoch']}/{r['epochs_run']} "
                f"| {r['train_ppl_at_best']:.3f} | {r['seconds']:.0f} |"
            )
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
