#!/usr/bin/env bash
# Data-parallel training on the GPU machine (docs/scale.md, "Training: G GPUs"): the
# default LSTM's shape on the book, one process against 2 torchrun ranks (same global
# minibatch: same weights; and twice the minibatch: the speed-up), then against one rank
# per GPU when the machine has several. With one GPU the 2 ranks share it (gloo): that
# shows the code path on CUDA, not a speed-up. Run from the repository root with the
# project's dependencies; expected time about 2 minutes on one H200 (each run starts
# Python, torch and CUDA, then 4 short epochs). Output: $OUT/ddp.jsonl.
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PY:-python3}"
# The book: RNNLM_DATA_DIR, the cache, or a verified download; stop here if none works.
"$PY" -m scripts.book --require || exit 1
GPUS=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1

{
  "$PY" -m bench.ddp --device cuda --model lstm --nproc 2 --epochs 4
  if [ "$GPUS" -ge 2 ]; then
    "$PY" -m bench.ddp --device cuda --model lstm --nproc "$GPUS" --epochs 4
  fi
} 2>&1 | tee "$OUT/ddp.jsonl"
