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
command -v node >/dev/null || missing+=(nodejs)
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
