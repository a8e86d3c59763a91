#!/usr/bin/env bash
# End-to-end browser test of the playground: headless Debian chromium driven by selenium
# against a live server on tiny trained bundles (tests/browser). Installs chromium and
# chromium-driver with apt when they are missing; exits non-zero when a test fails.
# Usage: scripts/browser-test.sh [PYTEST ARGS...]
#   RNNLM_SCREENSHOTS=docs/img  also save docs/img/playground.png and swagger.png
#   RNNLM_BROWSER_CHECKPOINTS=DIR  serve DIR (e.g. the committed bundles) instead
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver
fi
make -s install book  # the n-gram panel's test needs the book (RNNLM_DATA_DIR or the cache)
# Here a missing browser is a failure, not a skip: this script exists to run the test.
export RNNLM_BROWSER_REQUIRED=1
exec .venv/bin/python -m pytest -q -rs -m browser tests/browser "$@"
