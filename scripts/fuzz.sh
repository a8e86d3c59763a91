#!/usr/bin/env bash
# Property-based fuzzing of the live API with schemathesis: every operation of
# /openapi.json, valid and invalid inputs; fails on any 5xx, any response that breaks its
# documented schema or status codes, and any invalid input that is accepted.
# Usage: scripts/fuzz.sh [MAX_EXAMPLES]   (the server runs on the committed bundles)
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-${FUZZ_EXAMPLES:-60}}"
PY=.venv/bin/python
$PY -m pip install -q 'schemathesis>=4,<5'
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp)
RNNLM_LOG_LEVEL=warning RNNLM_REQUEST_TIMEOUT_S=30 \
  .venv/bin/uvicorn --factory app.main:create_app --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null || { cat "$LOG"; echo "server not ready"; exit 1; }
.venv/bin/st run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" --seed 1 --workers 2 --request-timeout 60 --max-response-time 45 \
  --suppress-health-check too_slow,data_too_large --generation-allow-x00 false
status=$?
if grep -q "Traceback" "$LOG"; then echo "server logged a traceback:"; cat "$LOG"; exit 1; fi
exit $status
