#!/usr/bin/env bash
# Everything from a fresh Debian 12 machine to the running product: installs the packages,
# builds, then runs the main job in the foreground until Ctrl-C:
#   - the demo backend on :8000 (API, login flow, /ws/chat/{id}) and its frontend page on :8001
#   - the control plane (gRPC :18000, HTTP :9902) with its embedded file store in .run/store
#   - one data plane on :3456 (admin :9901), managed by the control plane
# Open http://localhost:3456/ . An admin token is generated into .run/admin.token and the data
# plane's node token into .run/node.token (both mode 600, both listed in .run/tokens):
#   build/controlplane/controlplane admin --token-file .run/admin.token nodes
# AGENTS_SERVICE_URL=http://host:port scripts/run.sh points the agents cluster elsewhere
# (only when the store is new: afterwards use `controlplane admin set-upstream`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j"$(nproc)" dataplane controlplane demo_backend

state="$repo/.run"
mkdir -p "$state"
chmod 700 "$state"
if [ ! -s "$state/tokens" ]; then
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  umask 077
  printf 'operator admin %s\n' "$token" > "$state/tokens"
  printf '%s\n' "$token" > "$state/admin.token"
fi
if [ ! -s "$state/node.token" ]; then
  # The data plane's credential for the config stream (role node; `*`: any node id).
  node_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  umask 077
  printf '* node %s\n' "$node_token" >> "$state/tokens"
  printf '%s\n' "$node_token" > "$state/node.token"
fi
export ONEDOMAIN_STATE_DIR="$state" ONEDOMAIN_TOKENS_FILE="$state/tokens"
export ONEDOMAIN_NODE_TOKEN_FILE="$state/node.token"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

start() {  # start NAME CMD...: runs CMD in the background, logs to .run/NAME.log
  local name=$1
  shift
  "$@" >"$state/$name.log" 2>&1 &
  pids+=($!)
  echo "run.sh: started $name (pid $!, log .run/$name.log)"
}

start demo build/deploy/demo/demo_backend --address 127.0.0.1 --port 8000 --frontend-port 8001
start controlplane build/controlplane/controlplane serve --config deploy/examples/controlplane.yaml
start dataplane build/dataplane/dataplane --config deploy/examples/dataplane-managed.yaml

sleep 1
for pid in "${pids[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: a process exited at start; its log:" >&2
    tail -n 20 "$state"/*.log >&2
    exit 1
  fi
done
cat <<MSG

onedomain is running:
  site          http://localhost:3456/            (frontend page, /api/v1/*, /ws/*)
  data plane    http://127.0.0.1:9901/metrics     /healthz /readyz /config_dump
  control plane http://127.0.0.1:9902/metrics     gRPC 127.0.0.1:18000
  demo backend  http://127.0.0.1:8000/api/v1/echo
  admin CLI     build/controlplane/controlplane admin --token-file .run/admin.token nodes
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "run.sh: a process exited; stopping the rest (logs in .run/)" >&2
exit 1
