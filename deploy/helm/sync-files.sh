#!/usr/bin/env bash
# Copies the alert rules and the Grafana dashboard into the chart, whose templates can only read
# files inside the chart directory (.Files). Run it after editing either original:
#   deploy/prometheus/alerts.yaml        -> deploy/helm/onedomain/files/alerts.yaml
#   deploy/grafana/onedomain-fleet.json  -> deploy/helm/onedomain/files/onedomain-fleet.json
# tests/deploy checks that the copies are identical (`sync-files.sh --check` does the same).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="$(dirname "$here")"
pairs=(
  "$deploy/prometheus/alerts.yaml:$here/onedomain/files/alerts.yaml"
  "$deploy/grafana/onedomain-fleet.json:$here/onedomain/files/onedomain-fleet.json"
)
status=0
for pair in "${pairs[@]}"; do
  src="${pair%%:*}" dst="${pair#*:}"
  if [ "${1:-}" = "--check" ]; then
    if ! cmp -s "$src" "$dst"; then
      echo "out of date: $dst (run deploy/helm/sync-files.sh)" >&2
      status=1
    fi
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
    echo "copied $src -> $dst"
  fi
done
exit $status
