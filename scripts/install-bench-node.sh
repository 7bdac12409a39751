#!/usr/bin/env bash
# Installs what `CLIENT=node` and `BACKEND=node bench/websocket/run.sh` run (a Node.js client,
# a Node.js echo backend), idempotently: Debian's nodejs and npm if no node is on PATH, and the
# `ws` package from the npm registry into $ONEDOMAIN_TOOLS_DIR/bench-node (default
# .tools/bench-node).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${ONEDOMAIN_TOOLS_DIR:-$repo/.tools}/bench-node"
WS_PKG="ws@8.18.3"

# A node already on PATH (Debian's or another build) is used as it is.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  "$repo/scripts/install-deps.sh" --with-node
fi
if [ ! -f "$tools/node_modules/ws/package.json" ]; then
  echo "install-bench-node: npm install $WS_PKG into $tools"
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] ||
    echo '{"name":"onedomain-bench-node","private":true}' >"$tools/package.json"
  (cd "$tools" && npm install --no-audit --no-fund --silent "$WS_PKG")
fi
ws_version=$(node -p "require('$tools/node_modules/ws/package.json').version")
echo "install-bench-node: node $(node --version), ws $ws_version"
