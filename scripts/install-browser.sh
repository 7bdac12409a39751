#!/usr/bin/env bash
# Installs what the browser test (tests/browser/, ctest label `browser`) needs, idempotently:
# Debian's Chromium, Node.js/npm (if no node is on PATH), and playwright-core from the npm
# registry into $TOOLS_DIR/browser (playwright-core drives /usr/bin/chromium and downloads no
# browser of its own).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${ONEDOMAIN_TOOLS_DIR:-$repo/.tools}/browser"
PLAYWRIGHT_PKG="playwright-core@1.64.1"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# playwright-core 1.64 needs Node.js >= 20; Debian 12's own nodejs is 18.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  if [ "$node_major" -eq 0 ]; then missing+=(nodejs); fi
  PLAYWRIGHT_PKG="playwright-core@1.49.1"  # the newest line that still runs on Node 18
fi
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-browser: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -f "$tools/node_modules/playwright-core/package.json" ]; then
  echo "install-browser: npm install $PLAYWRIGHT_PKG into $tools"
  mkdir -p "$tools"
  (cd "$tools" && [ -f package.json ] || echo '{"name":"onedomain-browser-tools","private":true}' > package.json)
  (cd "$tools" && npm install --no-audit --no-fund --silent "$PLAYWRIGHT_PKG")
fi
echo "install-browser: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), $(cd "$tools" && node -e 'console.log("playwright-core " + require("playwright-core/package.json").version)')"
