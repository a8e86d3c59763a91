#!/usr/bin/env bash
# The RNN components of the default mixture, trained on CUDA (docs/benchmarks.md,
# "Quality: the default mixture"). Two 2-layer LSTM-768 models (the best configuration of
# bench/results/char_lm_sweep_h100.md, 3.613 held out) with seeds 0 and 1, side by side on
# one GPU; each writes a bundle into checkpoints/ and a log, and both are packed into
# $OUT/bundles.tgz.part-NN (15 MB pieces, as the device tool returns files of at most
# 16 MiB) for the CPU machine, where `make mixture` builds the rest:
#     cat bundles.tgz.part-* | tar xz    # in the repository root
# Expected: about 1-2 minutes of training on an H200 (the 384-unit default takes 28 s).
# Run from the repository root on a machine with a GPU and the project's dependencies.
set -uo pipefail
OUT="${OUT:-runs/quality-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PY:-python3}"
# The book: RNNLM_DATA_DIR, the cache, or a verified download; stop here if none works.
"$PY" -m scripts.book --require || exit 1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

train() {  # NAME SEED
    local start=$SECONDS
    "$PY" -m training lm --out "checkpoints/$1" \
        --arch lstm --num-layers 2 --num-hiddens 768 --embed-size 64 --dropout 0.5 \
        --optimizer adamw --lr 0.002 --weight-decay 0.1 --schedule cosine --batch-size 32 \
        --num-steps 100 --epochs 40 --seed "$2" --device cuda >"$OUT/$1.log" 2>&1
    echo "$1 rc=$? in $((SECONDS - start)) s"
    tail -6 "$OUT/$1.log"
}

train char-lstm-768 0 &
train char-lstm-768-s1 1 &
wait
tar cz checkpoints/char-lstm-768 checkpoints/char-lstm-768-s1 |
    split -b 15m -d - "$OUT/bundles.tgz.part-"
ls -l "$OUT"
