#!/usr/bin/env bash
# Control-plane push benchmark: time from an Admin change returning to every simulated node
# having received it, and to every node's ACK having gone out, p50/p99 over 20 applies.
#   bench/controlplane/run.sh [build-dir]          file store: 100 and 1,000 nodes, 1 replica
#   bench/controlplane/run.sh [build-dir] --etcd   also etcd (Debian etcd-server on loopback,
#                                                   temp data dir): 1,000 nodes over 3 replicas
# Everything runs on 127.0.0.1 with ephemeral ports and temp dirs; every process started here
# is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build
with_etcd=0
for arg in "$@"; do
  case "$arg" in
    --etcd) with_etcd=1 ;;
    *) build=$arg ;;
  esac
done
ninja -C "$build" controlplane cp_push_bench >/dev/null
work=$(mktemp -d)
pids=()
cleanup() {  # newest first: the replicas before the etcd they use
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
token=bench-token-0123456789abcdef
node_token=bench-node-token-0123456789abcdef
printf 'bench admin %s\nsim-* node %s\n' "$token" "$node_token" > "$work/tokens"
printf '%s\n' "$token" > "$work/token"
printf '%s\n' "$node_token" > "$work/node.token"
seed='seed:
  listeners: [{name: main, port: 0}]
  clusters: [{name: agents, endpoints: ["127.0.0.1:8000"]}]
  routes: [{name: all, match: {prefix: /}, cluster: agents}]'
write_config() {  # write_config FILE STORE_YAML
  cat > "$1" <<YAML
grpc: {address: 127.0.0.1, port: 0}
http: {address: 127.0.0.1, port: 0}
store: $2
auth: {tokens_file: $work/tokens}
logging: {level: warn}
$seed
YAML
}
start_cp() {  # start_cp CONFIG PORTFILE -> echoes the gRPC port; pid appended to pids
  "$build/controlplane/controlplane" serve --config "$1" --port-file "$2" &
  pids+=($!)
  last_cp=$!
  for _ in $(seq 200); do [ -s "$2" ] && break; sleep 0.05; done
  [ -s "$2" ] || { echo "control plane did not start" >&2; exit 1; }
}
port_of() { python3 -c "import json; print(json.load(open('$1'))['grpc'])"; }
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

write_config "$work/cp.yaml" "{directory: $work/store}"
for n in 100 1000; do
  rm -rf "$work/store" "$work/ports"
  start_cp "$work/cp.yaml" "$work/ports"
  echo "file store:"
  "$build/bench/controlplane/cp_push_bench" --server "127.0.0.1:$(port_of "$work/ports")" \
    --token-file "$work/token" --node-token-file "$work/node.token" --nodes "$n" \
    --applies 20 --cp-pid "$last_cp"
  kill "$last_cp"; wait "$last_cp" || true
done

if [ "$with_etcd" = 1 ]; then
  command -v etcd >/dev/null || { echo "etcd not installed: scripts/install-deps.sh" >&2; exit 1; }
  client=$(free_port); peer=$(free_port)
  etcd --name b0 --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$client" \
    --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "b0=http://127.0.0.1:$peer" --logger zap --log-level warn &
  pids+=($!)
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$client/health" >/dev/null && break; sleep 0.05
  done
  write_config "$work/cp-etcd.yaml" "{etcd: {endpoints: [\"http://127.0.0.1:$client\"], prefix: /bench/}}"
  servers=""
  for r in 0 1 2; do
    start_cp "$work/cp-etcd.yaml" "$work/ports-$r"
    servers="$servers${servers:+,}127.0.0.1:$(port_of "$work/ports-$r")"
  done
  echo "etcd store:"
  "$build/bench/controlplane/cp_push_bench" --server "$servers" --token-file "$work/token" \
    --node-token-file "$work/node.token" --nodes 1000 --applies 20
fi
