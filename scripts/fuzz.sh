#!/usr/bin/env bash
# Property-based fuzzing of the live API with schemathesis: every operation of
# /openapi.json, valid and invalid inputs; fails on any 5xx, any response that breaks its
# documented schema or status codes, any invalid input that is accepted, and any traceback
# in the server's log. schemathesis comes from the dev extra (make install), pinned by
# constraints.txt.
# Usage: scripts/fuzz.sh [MAX_EXAMPLES]   (the server runs on the committed bundles)
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-${FUZZ_EXAMPLES:-60}}"
make -s install
# scripts.live_server exits with schemathesis' own status (1 on any finding), or 1 when
# the server logged a traceback: `exec` hands that status to whoever ran this script.
exec .venv/bin/python -m scripts.live_server --checkpoint-dir checkpoints \
  --env RNNLM_REQUEST_TIMEOUT_S=30 -- \
  .venv/bin/st run "{url}/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" --seed 1 --workers 2 --request-timeout 60 --max-response-time 45 \
  --suppress-health-check too_slow,data_too_large --generation-allow-x00 false
