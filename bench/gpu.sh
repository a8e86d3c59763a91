#!/usr/bin/env bash
# One prepared GPU session (docs/benchmarks.md, "GPU"): train the default LSTM on CUDA,
# run the generation, training and concurrency benchmarks there, and check the service's
# CUDA path (RNNLM_DEVICE=cuda puts the bundles on the GPU, /v1/models says so, and it
# generates and scores). Run from the repository root on a machine with a GPU and the
# project's dependencies; results go to $OUT (default runs/gpu).
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PY:-python3}"
# The book: RNNLM_DATA_DIR, the cache, or a verified download; stop here if none works.
"$PY" -m scripts.book --require || exit 1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# The default LSTM: the Makefile's `models` recipe with --device cuda (TRAIN=0 skips it).
if [ "${TRAIN:-1}" = 1 ]; then
"$PY" -m training lm --out checkpoints/char-lstm \
    --arch lstm --num-layers 2 --num-hiddens 384 --embed-size 64 --dropout 0.5 \
    --optimizer adamw --lr 0.002 --weight-decay 0.01 --schedule cosine --batch-size 32 \
    --num-steps 100 --epochs 40 --seed 0 --device cuda >"$OUT/train.log" 2>&1
echo "train rc=$?"
tail -4 "$OUT/train.log"
tar czf "$OUT/char-lstm.tgz" checkpoints/char-lstm
fi

{
    "$PY" -m bench.generation --device cuda
    "$PY" -m bench.training --device cuda
    RNNLM_DEVICE=cuda "$PY" -m bench.concurrency
} 2>&1 | tee "$OUT/bench.jsonl"

RNNLM_DEVICE=cuda "$PY" - <<'EOF' 2>&1 | tee "$OUT/service.txt"
import httpx
from bench._util import book_path, serve

with serve({"RNNLM_DEVICE": "cuda"}) as server:
    url = server.url
    print(f"ready after {server.startup_s:.1f} s")
    models = httpx.get(f"{url}/v1/models").json()["data"]
    print({m["id"]: m.get("device") for m in models})
    body = {"prefix": "time traveller ", "max_new_tokens": 60, "temperature": 0}
    print(httpx.post(f"{url}/v1/generate", json=body, timeout=60).json()["choices"][0])
    text = book_path().read_text()[:20000]
    r = httpx.post(f"{url}/v1/perplexity", json={"text": text}, timeout=60).json()
    print({k: r[k] for k in ("perplexity", "tokens_scored")})
EOF
