#!/usr/bin/env bash
# The committed LSTMs a CPU takes hours to train, run on CUDA (README, "Models"):
# char-lstm-512 (the default mixture's stronger RNN) and char-lstm-raw (the raw-text LM),
# side by side. Their bundles (float16 weights, about 6.6 MB each) and logs are packed
# into $OUT/bundles.tgz for the CPU machine, where `make mixture` refits the default
# mixture on them:  tar xzf bundles.tgz   (in the repository root)
# Measured: about 70 s each on an H200, side by side. Resume states (optimizer moments,
# 50 MB each) stay behind: only the bundles travel. `make models` runs the same two
# commands on the CPU (DEVICE=cpu THREADS=1).
# Run from the repository root with the project's dependencies.
set -uo pipefail
OUT="${OUT:-runs/quality-gpu}"
DEVICE="${DEVICE:-cuda}"
PY="${PY:-python3}"
THREADS=(${THREADS:+--threads "$THREADS"})
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The book: RNNLM_DATA_DIR, the cache, or a verified download; stop here if none works.
"$PY" -m scripts.book --require || exit 1
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

LSTM=(--arch lstm --num-layers 2 --embed-size 64 --optimizer adamw --lr 0.002
      --schedule cosine --batch-size 32 --num-steps 100 --epochs 40 --device "$DEVICE"
      --weights-dtype float16)
train() {  # NAME FLAGS...
    local name=$1 start=$SECONDS
    shift
    "$PY" -m training "${THREADS[@]}" lm --out "checkpoints/$name" "${LSTM[@]}" "$@" \
        >"$OUT/$name.log" 2>&1
    echo "$name rc=$? in $((SECONDS - start)) s"
    tail -4 "$OUT/$name.log"
}
train char-lstm-512 --num-hiddens 512 --dropout 0.5 --weight-decay 0.1 --seed 1 &
train char-lstm-raw --num-hiddens 512 --dropout 0.3 --weight-decay 0.01 --seed 0 \
    --normalize none --level char &
wait
tar czf "$OUT/bundles.tgz" checkpoints/char-lstm-512 checkpoints/char-lstm-raw "$OUT"/*.log
ls -l "$OUT"
