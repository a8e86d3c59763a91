#!/usr/bin/env bash
# The GPU checks of issue 16 in one command, within 4.5 minutes (docs/benchmarks.md, "GPU"):
#   1. one greedy stream of the default LSTM (char-lstm) on the GPU in each precision
#      against the book's predict loop in the same run, the held-out perplexity of each
#      precision, and the seed-exactness check (a request alone = the same request inside
#      batches of 2, 64 and 1024)                             -> precision.jsonl
#   2. the engine (app/scheduler.py) in-process with 64 and 1024 concurrent sequences, and
#      the whole book scored in-process                     -> engine.jsonl
#   3. the whole book scored through the service (/v1/perplexity), when the machine has
#      the HTTP stack (fastapi, uvicorn, httpx); parts 1-2 need only torch, numpy,
#      safetensors and the repository                       -> service.jsonl
# Everything printed also goes to gpu.log; at most these 4 files are written to $OUT.
# Every part runs under its own `timeout`; one failing does not stop the others.
#
#   OUT=bench/results/gpu-h200 bash bench/gpu.sh     # on the GPU machine, repository root
#   DEVICE=cpu QUICK=1 OUT=/tmp/gpu-smoke bash bench/gpu.sh   # a smoke run on a CPU (< 2 min)
#
# The book is found as the tests find it (python -m scripts.book): RNNLM_DATA_DIR, the
# cache, or a verified download.
# TRAIN=1 first retrains checkpoints/char-lstm on the GPU (the Makefile's recipe, ~30 s on
# an H200; outside the 4.5 minutes), as the committed bundle was made.
set -uo pipefail
OUT="${OUT:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
PY="${PY:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$LOG"; }
part() {  # part NAME SECONDS OUTFILE COMMAND...: run under a time limit, tee to the log
    local name=$1 limit=$2 out=$3
    shift 3
    log "$name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG" | grep '^{' >"$out"
    local rc=${PIPESTATUS[0]}
    log "$name rc=$rc in $((SECONDS - started))s"
    RESULTS+=("$name=$rc")
}
RESULTS=()

log "start $(date -u +%FT%TZ) device=$DEVICE quick=$QUICK"
# The book: RNNLM_DATA_DIR, the cache, or a verified download; stop here if none works.
"$PY" -m scripts.book --require 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
if [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
    2>&1 | tee -a "$LOG"

if [ "${TRAIN:-0}" = 1 ]; then
    log "train checkpoints/char-lstm on $DEVICE"
    timeout 300 "$PY" -m training lm --out checkpoints/char-lstm \
        --arch lstm --num-layers 2 --num-hiddens 384 --embed-size 64 --dropout 0.5 \
        --optimizer adamw --lr 0.002 --weight-decay 0.01 --schedule cosine --batch-size 32 \
        --num-steps 100 --epochs 40 --seed 0 --device "$DEVICE" 2>&1 | tail -4 | tee -a "$LOG"
fi

if [ "$QUICK" = 1 ]; then
    precision_args=(--quick --no-held-out)
    engine_args=(--rows 4 16 --tokens 20 --book-chars 20000)
    service_args=(--chars 20000 --baseline-chars 1000)
else
    precision_args=(--tokens 1000 --batches 2 64 1024)
    engine_args=(--rows 64 1024 --tokens 1000 --book-chars 0)
    service_args=(--baseline-chars 20000)
fi

part precision 85 "$OUT/precision.jsonl" \
    "$PY" -m bench.precision --device "$DEVICE" "${precision_args[@]}"
part engine 95 "$OUT/engine.jsonl" \
    "$PY" -m bench.engine --device "$DEVICE" "${engine_args[@]}"
if "$PY" -c 'import fastapi, uvicorn, httpx, pydantic_settings' 2>/dev/null; then
    RNNLM_DEVICE="$DEVICE" part service 65 "$OUT/service.jsonl" \
        "$PY" -m bench.perplexity --model char-lstm "${service_args[@]}"
else
    log "service: skipped (no fastapi/uvicorn/httpx here); engine.jsonl has the in-process book"
    RESULTS+=("service=skipped")
fi
log "done $(date -u +%FT%TZ): ${RESULTS[*]}"
