#!/usr/bin/env bash
# End-to-end container check: build the image, `docker compose up --wait`, exercise the
# API (ready, generate, perplexity, a plot), check the process is not root, run a tiny
# `train` job into the checkpoints volume, then start a second replica and nginx in front
# (profile `proxy`) and drive mixed traffic through the proxy while that replica is
# stopped and restarted (bench/failover.py: no failure after the stop, no wrong answer),
# print the image size, the start-up time and the failover counts, then tear everything
# down. Uses a running engine if there is one; otherwise (as root)
# installs docker.io and starts dockerd itself, and afterwards stops it by PID and removes
# its network rules. With no registry reachable, python:3.11-slim is a local stand-in
# (debootstrap), nginx:1.28 is Debian's nginx on that base, and torch comes from the
# machine's wheel (TORCH_WHEELS=1).
# Prints "SKIPPED: docker smoke: <reason>" and exits 0 when no engine can be started.
# Engine data and the base tarball are kept in $DOCKER_SMOKE_DIR between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${DOCKER_SMOKE_DIR:-/var/tmp/rnnlm-docker}
PORT=${DOCKER_SMOKE_PORT:-18000}
PROXY_PORT=${DOCKER_SMOKE_PROXY_PORT:-18080}
TORCH_VERSION=$(sed -n 's/^TORCH_VERSION := //p' Makefile)
URL=http://127.0.0.1:$PORT
export COMPOSE_PROJECT_NAME=rnnlm-smoke RNNLM_PORT=$PORT RNNLM_PROXY_PORT=$PROXY_PORT TORCH_WHEELS=1
export DOCKER_CONFIG="$PWD/.cache/docker-config"
# Two replicas share this machine's cores: one torch thread each (replicas x threads <=
# cores, docs/deploy.md), through an override file as a user would set it. CPU jobs may
# wait 3 x RNNLM_MAX_CONCURRENT_SCORING deep: 3 lets one replica alone take all 8 failover
# clients' jobs while the other restarts (sized as bench.soak sizes it), so the run checks
# failover, not the overload answer (503), which has tests of its own.
mkdir -p "$WORK"
env='{RNNLM_TORCH_THREADS: "1", RNNLM_MAX_CONCURRENT_SCORING: "3"}'
printf 'services:\n  api:\n    environment: %s\n  api-2:\n    environment: %s\n' "$env" "$env" \
  >"$WORK/compose.smoke.yml"
compose=(docker compose -f docker-compose.yml -f "$WORK/compose.smoke.yml" --profile train --profile proxy)

skip() { echo "SKIPPED: docker smoke: $*"; exit 0; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
START=$(ms)
say() { echo "== $* (+$(( ($(ms) - START) / 1000 )) s)"; }
secs() { printf '%d.%d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }  # ms -> s, one decimal
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "$@" >/dev/null; }
}

scripts/docker-check.sh  # static checks first; also installs the compose plugin

# --- engine -------------------------------------------------------------------------
DOCKERD=""
teardown() {
  set +e
  "${compose[@]}" down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
  [ -n "$DOCKERD" ] || return 0
  say "teardown: stopping dockerd (pid $DOCKERD) and removing its network rules"
  kill "$DOCKERD" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$DOCKERD" 2>/dev/null || break; sleep 1; done
  kill -0 "$DOCKERD" 2>/dev/null && kill -9 "$DOCKERD"
  for table in filter nat; do iptables -t "$table" -F; iptables -t "$table" -X; done
  iptables-restore <"$WORK/iptables.before"
  iptables -P FORWARD "$(sed -n 's/^:FORWARD \([A-Z]*\).*/\1/p' "$WORK/iptables.before" | head -1)"
  ip link show docker0 >/dev/null 2>&1 && ip link delete docker0
  sysctl -qw net.ipv4.ip_forward="$(cat "$WORK/ip_forward.before")"
  return 0
}

if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || skip "no running engine, and only root may start one"
  command -v dockerd >/dev/null && command -v iptables >/dev/null \
    || apt_install docker.io iptables || skip "cannot install docker.io from apt"
  mkdir -p "$WORK"
  iptables-save >"$WORK/iptables.before" || skip "iptables unusable"
  grep -q '^:FORWARD' "$WORK/iptables.before" || printf '*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n' >>"$WORK/iptables.before"
  sysctl -n net.ipv4.ip_forward >"$WORK/ip_forward.before"
  say "starting dockerd (data in $WORK/engine)"
  dockerd --data-root="$WORK/engine" --exec-root="$WORK/exec" --pidfile="$WORK/dockerd.pid" \
    >"$WORK/dockerd.log" 2>&1 &
  DOCKERD=$!
  trap teardown EXIT
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD" 2>/dev/null || { skip "dockerd exited: $(tail -n 3 "$WORK/dockerd.log")"; }
    sleep 1
  done
  docker info >/dev/null 2>&1 || skip "dockerd did not answer within 60 s"
else
  trap teardown EXIT
fi

# --- base image and torch wheel -------------------------------------------------------
if ! docker image inspect python:3.11-slim >/dev/null 2>&1; then
  BASE=$WORK/python-3.11-slim.tar
  if [ ! -s "$BASE" ]; then
    say "bootstrapping a local python:3.11-slim stand-in (no registry reachable)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
    ln -sf /usr/bin/python3 "$WORK/rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$WORK/rootfs/usr/local/bin/pip"
    rm -f "$WORK"/rootfs/usr/lib/python3.11/EXTERNALLY-MANAGED
    # HTTPS goes through an intercepting proxy here: the build needs its CA certificates.
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$WORK/rootfs" update-ca-certificates >/dev/null
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
    rm -rf "$WORK/rootfs"
  fi
  docker import -c 'CMD ["python3"]' -c 'ENV LANG=C.UTF-8' "$BASE" python:3.11-slim >/dev/null
fi
NGINX=$(sed -n 's/^ *image: \(nginx:.*\)/\1/p' docker-compose.yml)
if ! docker image inspect "$NGINX" >/dev/null 2>&1; then
  say "building a local $NGINX stand-in: Debian's nginx on the python base"
  docker build -q -t "$NGINX" - >/dev/null <<'DOCKERFILE'
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
CMD ["nginx", "-g", "daemon off;"]
DOCKERFILE
fi
if ! ls wheels/torch-"$TORCH_VERSION"*.whl >/dev/null 2>&1; then
  say "copying the torch $TORCH_VERSION wheel into wheels/"
  python3 -m pip download -q --no-deps -d wheels "torch==$TORCH_VERSION"
fi

# --- build, start, measure ------------------------------------------------------------
if [ -n "${RNNLM_DATA_DIR:-}" ] && [ -f "$RNNLM_DATA_DIR/timemachine.txt" ]; then
  export RNNLM_HOST_DATA_DIR=$RNNLM_DATA_DIR
else
  export RNNLM_HOST_DATA_DIR=$WORK/no-data  # no corpus: the plot is of posted text
  mkdir -p "$RNNLM_HOST_DATA_DIR"
fi
"${compose[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true
say "building the api and train images"
t0=$(ms)
"${compose[@]}" build api train
build_s=$(secs $(( $(ms) - t0 )))

say "docker compose up --wait"
t0=$(ms)
"${compose[@]}" up -d api
until curl -fs "$URL/ready" >/dev/null 2>&1; do
  (( $(ms) - t0 < 180000 )) || { "${compose[@]}" logs api; echo "FAIL: not ready in 180 s"; exit 1; }
  sleep 0.1
done
ready_s=$(secs $(( $(ms) - t0 )))
"${compose[@]}" up -d --wait --wait-timeout 120 api
healthy_s=$(secs $(( $(ms) - t0 )))

check() {  # check NAME CURL-ARGS...: the request must succeed; its body goes to $WORK/body
  curl -fsS -o "$WORK/body" "$@" || { echo "FAIL: $1"; "${compose[@]}" logs --tail 50 api; exit 1; }
  echo "ok: ${*: -1} ($(wc -c <"$WORK/body") bytes)"
}
json=(-H 'content-type: application/json')
check "$URL/ready"
python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); assert b["status"]=="ready" and b["bundles"], b' "$WORK/body"
check "${json[@]}" -d '{"prefix": "the time traveller", "max_new_tokens": 40, "seed": 1}' "$URL/v1/generate"
python3 -c 'import json,sys; print("   ", json.load(open(sys.argv[1]))["choices"][0])' "$WORK/body"
check "${json[@]}" -d '{"text": "the time machine by h g wells"}' "$URL/v1/perplexity"
python3 -c 'import json,sys; print("    perplexity", json.load(open(sys.argv[1]))["perplexity"])' "$WORK/body"
if [ -f "$RNNLM_HOST_DATA_DIR/timemachine.txt" ]; then
  check "$URL/v1/ngrams/plot?corpus=timemachine&n=1&n=2&n=3"
else
    check "${json[@]}" -d '{"text": "the time machine by h g wells the time traveller", "n": [1, 2]}' "$URL/v1/ngrams/plot"
fi
head -c 8 "$WORK/body" | grep -q PNG || { echo "FAIL: the plot is not a PNG"; exit 1; }

uid=$("${compose[@]}" exec -T api id -u)
[ "$uid" != 0 ] || { echo "FAIL: the service runs as root"; exit 1; }
echo "ok: the service runs as uid $uid"
"${compose[@]}" exec -T api sh -c '! command -v gcc && ! command -v cc && test ! -e tests && ! python -c "import training" 2>/dev/null' \
  || { echo "FAIL: the runtime image holds a compiler, tests/ or training/"; exit 1; }
echo "ok: no compiler, tests/ or training/ in the runtime image"

if [ -f "$RNNLM_HOST_DATA_DIR/timemachine.txt" ]; then
  say "a tiny train run into the checkpoints volume"
  "${compose[@]}" run --rm train --threads 2 lm --out checkpoints/smoke-gru --num-hiddens 16 \
    --epochs 1 --seed 0 --device cpu >/dev/null
  "${compose[@]}" exec -T api test -f checkpoints/smoke-gru/config.json
  echo "ok: the train profile wrote checkpoints/smoke-gru into the shared volume"
fi

say "two replicas behind nginx: mixed traffic while api-2 is stopped and restarted"
t0=$(ms)
"${compose[@]}" up -d --wait --wait-timeout 120 api-2 proxy
until curl -fs "http://127.0.0.1:$PROXY_PORT/ready" >/dev/null 2>&1; do
  (( $(ms) - t0 < 60000 )) || { "${compose[@]}" logs proxy; echo "FAIL: the proxy does not answer"; exit 1; }
  sleep 0.2
done
[ -x .venv/bin/python ] || make install >/dev/null
proxy_cpu_ns() {  # CPU time the proxy container has used (cgroup v1 or v2), in ns
  "${compose[@]}" exec -T proxy sh -c 'cat /sys/fs/cgroup/cpuacct/cpuacct.usage 2>/dev/null \
    || awk "/^usage_usec/ {print \$2 * 1000}" /sys/fs/cgroup/cpu.stat'
}
cpu0=$(proxy_cpu_ns)
.venv/bin/python -m bench.failover --url "http://127.0.0.1:$PROXY_PORT" \
  --stop "${compose[*]} stop api-2" \
  --start "${compose[*]} up -d --wait --wait-timeout 120 api-2" | tee "$WORK/failover.log" \
  || { "${compose[@]}" logs proxy | grep -v '" 200 \|GET /ready' | tail -n 60
       "${compose[@]}" logs --tail 40 api-2; echo "FAIL: failover"; exit 1; }
# Back in the proxy's rotation: the restarted replica's fresh counters saw /v1 traffic.
served=$("${compose[@]}" exec -T api-2 python -c 'import urllib.request as u
lines = u.urlopen("http://127.0.0.1:8000/metrics").read().decode().splitlines()
print(int(sum(float(l.split()[-1]) for l in lines if l.startswith("rnnlm_http_requests_total{") and "route=\"/v1/" in l)))')
(( served > 0 )) || { echo "FAIL: the restarted api-2 got no traffic through the proxy"; exit 1; }
echo "ok: failover: no failure after the stop, no wrong answer; the restarted api-2 served $served requests"
python3 - "$WORK/failover.log" "$(( ($(proxy_cpu_ns) - cpu0) / 1000000 ))" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readlines()[-1])
proxied = r["requests"] + r["requests_alone_first"]
print(f"RESULT failover: {r['requests']} requests of mixed traffic through nginx, {r['started_after_stop']} "
      f"of them started after 'stop api-2': {r['failed_after_stop']} failed, {r['wrong_answers']} wrong "
      f"answers in all; stop {r['seconds']['stop_command']} s, restart to healthy "
      f"{r['seconds']['start_command_until_healthy']} s; nginx used {sys.argv[2]} ms of CPU for "
      f"{proxied} proxied requests")
PY

mb() { echo $(( $(docker image inspect "$1" --format '{{.Size}}') / 1000000 )); }
echo "RESULT image rnnlm:latest $(mb rnnlm:latest) MB (base python:3.11-slim $(mb python:3.11-slim) MB); build ${build_s} s; ready ${ready_s} s after"\
  "'up' (healthy per compose --wait: ${healthy_s} s); $(nproc) CPUs, $(date -u +%F)"
say "docker compose down"
"${compose[@]}" down --volumes --remove-orphans --timeout 20
echo "docker-smoke: ok"
