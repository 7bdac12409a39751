#!/usr/bin/env bash
# Control-plane push benchmark: starts a control plane on loopback (ephemeral ports, store in
# a temp dir), then runs cp_push_bench with 100 and 1,000 simulated nodes, 20 applies each.
#   bench/controlplane/run.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ninja -C "$build" controlplane cp_push_bench >/dev/null
work=$(mktemp -d)
trap 'kill "$cp" 2>/dev/null || true; wait "$cp" 2>/dev/null || true; rm -rf "$work"' EXIT
token=bench-token-0123456789abcdef
node_token=bench-node-token-0123456789abcdef
printf 'bench admin %s\nsim-* node %s\n' "$token" "$node_token" > "$work/tokens"
printf '%s\n' "$token" > "$work/token"
printf '%s\n' "$node_token" > "$work/node.token"
cat > "$work/cp.yaml" <<YAML
grpc: {address: 127.0.0.1, port: 0}
http: {address: 127.0.0.1, port: 0}
store: {directory: $work/store}
auth: {tokens_file: $work/tokens}
logging: {level: warn}
seed:
  listeners: [{name: main, port: 0}]
  clusters: [{name: agents, endpoints: ["127.0.0.1:8000"]}]
  routes: [{name: all, match: {prefix: /}, cluster: agents}]
YAML
for n in 100 1000; do
  rm -rf "$work/store" "$work/ports"
  "$build/controlplane/controlplane" serve --config "$work/cp.yaml" --port-file "$work/ports" &
  cp=$!
  for _ in $(seq 100); do [ -s "$work/ports" ] && break; sleep 0.05; done
  port=$(python3 -c "import json,sys; print(json.load(open('$work/ports'))['grpc'])")
  "$build/bench/controlplane/cp_push_bench" --server "127.0.0.1:$port" --token-file "$work/token" \
    --node-token-file "$work/node.token" --nodes "$n" --applies 20 --cp-pid "$cp"
  kill "$cp"; wait "$cp" || true
done
