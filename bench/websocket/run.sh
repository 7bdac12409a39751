#!/usr/bin/env bash
# WebSocket proxying: the onedomain data plane vs nginx vs HAProxy, side by side on loopback.
# All three proxy to the same echo backend (ws_echo_server), with WORKERS workers/threads
# each and no idle timeout that could cut a test; configs are generated into a temp dir, ports
# on 127.0.0.1 are picked free, and every process started here is stopped by its PID at the
# end.
#
#   bench/websocket/run.sh [pingpong]   100 connections ping-ponging 64 B and 16 KiB messages
#                                       through each proxy and direct, rounds interleaved;
#                                       prints msgs/s, p50, p99, max, CPU per round trip of
#                                       the proxy, the backend and the client, the machine's
#                                       idle CPU, and ratios vs the best peer
#   bench/websocket/run.sh idle [N]     N idle proxied connections (default 9000) through each
#                                       proxy in turn (each freshly started): the proxy's
#                                       VmRSS growth per connection, then every one must echo
#
# Environment: BUILD (build dir, default "build"); DATAPLANE (data-plane binary; default
# $BUILD/dataplane/dataplane, built first with JOBS parallel jobs, default nproc); PROXIES
# (default "nginx haproxy dataplane"); WORKERS (1: each proxy's workers, nginx's worker
# processes, HAProxy's threads; idle runs 1); ROUNDS (3), DURATION (3 s), WARMUP (1 s),
# CONNS (100), SIZES ("64 16384"), CLIENT_THREADS (1), CLIENT_PROCS (1: client processes,
# CONNS split over them; rates and round trips summed, p50 the mean, p99 and max the worst),
# BACKEND_THREADS (1); CLIENT (cpp: the C++ ws_load; node: bench/websocket/ws_load.js, Node.js
# with the npm `ws` package as issue 21's independent benchmark ran it, one thread per process,
# installed on first use by scripts/install-bench-node.sh; pingpong only); BACKEND (cpp: the
# C++ ws_echo_server; node: bench/websocket/ws_echo.js, a Node.js `ws` echo server, one thread;
# pingpong only);
# DATAPLANE_LIMITS=1 sets every client limit (issue 20) far above what the bench reaches.
# The data plane runs with its default config. Each measured phase lasts
# WARMUP + DURATION (keep it <= 10 s).
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:-pingpong}
idle_conns=${2:-9000}
case "$mode" in
  pingpong|idle) ;;
  *) echo "usage: $0 [pingpong | idle [N]]" >&2; exit 2 ;;
esac
build=${BUILD:-build}
proxies=${PROXIES:-nginx haproxy dataplane}
rounds=${ROUNDS:-3}
duration=${DURATION:-3}
warmup=${WARMUP:-1}
conns=${CONNS:-100}
sizes=${SIZES:-64 16384}
client_threads=${CLIENT_THREADS:-1}
client_procs=${CLIENT_PROCS:-1}
backend_threads=${BACKEND_THREADS:-1}
workers=${WORKERS:-1}
client=${CLIENT:-cpp}
case "$client" in
  cpp|node) ;;
  *) echo "CLIENT must be cpp or node, got '$client'" >&2; exit 2 ;;
esac
backend=${BACKEND:-cpp}
case "$backend" in
  cpp|node) ;;
  *) echo "BACKEND must be cpp or node, got '$backend'" >&2; exit 2 ;;
esac
if [ "$mode" = idle ] && [ "$client$backend" != cppcpp ]; then
  echo "CLIENT=node and BACKEND=node run pingpong only" >&2
  exit 2
fi
[ "$mode" = idle ] && workers=1  # RSS is read from one process: nginx's one worker
origin=https://bench.onedomain.test
cookie="session=wsbench-0123456789; theme=dark"

find_tool() {  # nginx and haproxy live in /usr/sbin, which may not be on PATH
  command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true
}
die() {  # MESSAGE [LOG-FILE]
  echo "$1" >&2
  [ -z "${2:-}" ] || cat "$2" >&2
  exit 1
}
if [ -z "$(find_tool nginx)" ] || [ -z "$(find_tool haproxy)" ]; then
  scripts/install-deps.sh --with-bench
fi
nginx_bin=$(find_tool nginx)
haproxy_bin=$(find_tool haproxy)

ninja -C "$build" ws_load ws_echo_server >/dev/null
load="$build/bench/websocket/ws_load"
if [ "$client" = node ] || [ "$backend" = node ]; then
  node_tools="${ONEDOMAIN_TOOLS_DIR:-$PWD/.tools}/bench-node"
  [ -f "$node_tools/node_modules/ws/package.json" ] || scripts/install-bench-node.sh
fi
echo_server="$build/bench/websocket/ws_echo_server"

# The data plane: a given binary as is, else built here. Not available -> its rows say why.
dataplane_bin=${DATAPLANE:-}
dataplane_missing=""
if [[ " $proxies " == *" dataplane "* ]]; then
  if [ -z "$dataplane_bin" ]; then
    dataplane_bin="$build/dataplane/dataplane"
    build_log="${TMPDIR:-/tmp}/wsbench-dataplane-build.log"
    if ! ninja -C "$build" -j "${JOBS:-$(nproc)}" dataplane >"$build_log" 2>&1; then
      dataplane_missing="build failed (see $build_log)"
    fi
  fi
  if [ -z "$dataplane_missing" ] && [ ! -x "$dataplane_bin" ]; then
    dataplane_missing="no binary at $dataplane_bin"
  fi
fi

# A proxied connection takes two descriptors in the proxy; everyone gets the hard limit.
ulimit -n "$(ulimit -Hn)"
fd_limit=$(ulimit -n)

work=$(mktemp -d /tmp/wsbench.XXXXXX)
chmod 755 "$work"  # nginx workers may run as another user
started=()         # PIDs of every process this script started
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${started[@]}"; do stop_pid "$pid"; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {  # PORT PID: until something accepts on 127.0.0.1:PORT (5 s)
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
wait_file() {  # FILE PID: until FILE is non-empty (5 s)
  for _ in $(seq 100); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# The machine's idle and iowait time so far (clock ticks, all cores).
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
# The children's CPU seconds (user + system) from the output of `times`: "0m1.234s 0m0.567s".
client_seconds() {
  sed -n 2p "$1" | awk '{
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
    printf "%.3f", t
  }'
}
# User + system CPU of processes (all their threads), in clock ticks, summed.
cpu_ticks() {
  local p t=0
  for p in "$@"; do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done
  echo "$t"
}

# Each start_* sets: port (proxy listener), pid (the process that proxies: nginx's worker) and
# cpu_pids (those whose CPU is counted: all of nginx's workers).
backend_port="" backend_pid=""
start_backend() {
  rm -f "$work/echo.port"
  if [ "$backend" = node ]; then
    ONEDOMAIN_NODE_TOOLS="$node_tools" node bench/websocket/ws_echo.js \
      --port-file "$work/echo.port" >"$work/echo.log" 2>&1 &
  else
    "$echo_server" --threads "$backend_threads" --port-file "$work/echo.port" \
      >"$work/echo.log" 2>&1 &
  fi
  backend_pid=$!
  started+=("$backend_pid")
  wait_file "$work/echo.port" "$backend_pid" ||
    die "the echo backend did not start:" "$work/echo.log"
  backend_port=$(cat "$work/echo.port")
}

start_nginx() {
  port=$(free_port)
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $workers;
worker_rlimit_nofile $fd_limit;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections $((fd_limit - 100)); }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream echo { server 127.0.0.1:$backend_port; }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_read_timeout 1d;
      proxy_send_timeout 1d;
    }
  }
}
EOF
  "$nginx_bin" -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
  local master=$!
  started+=("$master")
  wait_port "$port" "$master" || die "nginx did not start:" "$work/nginx/error.log"
  local _
  for _ in $(seq 100); do
    cpu_pids=$(ps -o pid= --ppid "$master" | awk '{printf "%s%s", sep, $1; sep = " "}')
    [ "$(wc -w <<<"$cpu_pids")" -ge "$workers" ] && break
    sleep 0.05
  done
  pid=${cpu_pids%% *}
  [ -n "$pid" ] || { echo "nginx: no worker process" >&2; exit 1; }
}

start_haproxy() {
  port=$(free_port)
  local maxconn=$(((fd_limit - 200) / 2))
  cat >"$work/haproxy.cfg" <<EOF
global
  nbthread $workers
  maxconn $maxconn
defaults
  mode http
  maxconn $maxconn
  option forwardfor
  timeout connect 5s
  timeout client 1d
  timeout server 1d
  timeout tunnel 1d
frontend ws
  bind 127.0.0.1:$port
  default_backend echo
backend echo
  server echo1 127.0.0.1:$backend_port
EOF
  "$haproxy_bin" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  pid=$!
  started+=("$pid")
  wait_port "$port" "$pid" || die "haproxy did not start:" "$work/haproxy.log"
  cpu_pids=$pid
}

start_dataplane() {
  # DATAPLANE_LIMITS=1: every client limit (issue 20) configured, none reachable here.
  local limits="" ws_limits=""
  if [ "${DATAPLANE_LIMITS:-0}" = 1 ]; then
    limits="  client_limits: {max_connections_per_client: 1000000, max_websockets_per_client: 1000000,
    max_websockets_per_cookie: 1000000, websocket_cookie: sess,
    upgrade_rate: {per_second: 1000000, burst: 1000000},
    request_rate: {per_second: 1000000, burst: 1000000}}"
    ws_limits=", max_lifetime: 86400s, max_buffered_bytes: 65536"
  fi
  cat >"$work/dataplane.yaml" <<EOF
node: {id: wsbench}
admin: {address: 127.0.0.1, port: 0}
workers: $workers
logging: {level: warn}
drain: {delay: 0s, timeout: 5s}
snapshot:
  site:
    origins: ["$origin"]
  listeners:
    - name: main
      address: 127.0.0.1
      port: 0
  clusters:
    - name: echo
      endpoints: ["127.0.0.1:$backend_port"]
  routes:
    - name: ws
      match: {prefix: /}
      cluster: echo
      websocket: true
  websocket_policy: {drain_spread: 1s, drain_grace: 2s$ws_limits}
$limits
EOF
  rm -f "$work/dataplane.ports"
  "$dataplane_bin" --config "$work/dataplane.yaml" --workers "$workers" \
    --port-file "$work/dataplane.ports" >"$work/dataplane.log" 2>&1 &
  pid=$!
  started+=("$pid")
  wait_file "$work/dataplane.ports" "$pid" || die "dataplane did not start:" "$work/dataplane.log"
  port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listener.main"])' \
    "$work/dataplane.ports")
  wait_port "$port" "$pid" || die "dataplane not listening:" "$work/dataplane.log"
  cpu_pids=$pid
}

stop_started() {  # stops and forgets the given PIDs
  local pid keep=() p
  for pid in "$@"; do stop_pid "$pid"; done
  for p in "${started[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done
  started=("${keep[@]}")
}

unsupported_line() {  # NAME OUTPUT-OF-ws_load: why a target has no numbers (ws_load exit 3)
  local status
  status=$(sed -n 's/^declined http_status=\([0-9]*\).*/\1/p' <<<"$2")
  if [ "$status" = 501 ]; then
    echo "$1: WebSocket upgrade not supported yet (got HTTP 501)"
  else
    echo "$1: WebSocket upgrade declined (got HTTP ${status:-?}): check the generated config"
  fi
}

nginx_version=$("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///')
haproxy_version=$("$haproxy_bin" -v | awk 'NR == 1 {print $3}')  # no head: SIGPIPE
echo "onedomain WebSocket bench: $(nproc) cores, open-file limit $fd_limit," \
     "nginx $nginx_version, haproxy $haproxy_version"
[ -n "$dataplane_missing" ] && echo "dataplane: not measured: $dataplane_missing"

# One ping-pong measurement through 127.0.0.1:$1 with $2-byte messages: CLIENT_PROCS ws_load
# processes at once, CONNS split over them, their result lines merged into one. Exit status:
# the worst of theirs (3: the target declined upgrades).
run_load() {  # $1 port, $2 size
  local i rc=0 r per=$((conns / client_procs)) lpids=()
  for i in $(seq "$client_procs"); do
    if [ "$client" = node ]; then
      ONEDOMAIN_NODE_TOOLS="$node_tools" node bench/websocket/ws_load.js --target "127.0.0.1:$1" \
        --conns "$per" --size "$2" --duration "$duration" --warmup "$warmup" --path /ws/bench \
        --origin "$origin" --cookie "$cookie" >"$work/load.$i" 2>&1 &
    else
      "$load" pingpong --target "127.0.0.1:$1" --conns "$per" --size "$2" --duration "$duration" \
        --warmup "$warmup" --threads "$client_threads" --path /ws/bench --origin "$origin" \
        --cookie "$cookie" >"$work/load.$i" 2>&1 &
    fi
    lpids+=($!)
  done
  for i in "${!lpids[@]}"; do
    r=0; wait "${lpids[$i]}" || r=$?
    [ "$r" -gt "$rc" ] && rc=$r
  done
  times >"$work/client.times"  # second line: the clients' user and system CPU
  [ "$client_procs" -eq 1 ] && { cat "$work/load.1"; return "$rc"; }
  grep -hv '^result ' "$work"/load.* || true
  python3 - "$work"/load.* <<'PYMERGE'
import sys
runs = []
for path in sys.argv[1:]:
    for line in open(path):
        if line.startswith("result "):
            runs.append(dict(p.split("=", 1) for p in line.split()[1:]))
if len(runs) == len(sys.argv) - 1:
    out = {}
    for k in runs[0]:
        vals = [float(r[k]) for r in runs]
        if k == "p50_us":
            out[k] = sum(vals) / len(vals)
        elif k in ("p99_us", "max_us"):
            out[k] = max(vals)
        else:
            out[k] = sum(vals)
    print("result " + " ".join(f"{k}={v:.1f}" if k.endswith("_us") else f"{k}={v:.0f}"
                               for k, v in out.items()))
PYMERGE
  rm -f "$work"/load.*
  return "$rc"
}

# ---------------------------------------------------------------------------------------------
if [ "$mode" = pingpong ]; then
  start_backend
  declare -A target_port=([direct]=$backend_port) target_pids=([direct]=$backend_pid)
  targets="direct"
  for p in $proxies; do
    [ "$p" = dataplane ] && [ -n "$dataplane_missing" ] && continue
    "start_$p"
    target_port[$p]=$port
    target_pids[$p]=$cpu_pids
    targets+=" $p"
  done
  echo "ping-pong: $conns connections, $rounds rounds x (${warmup}s warm-up + ${duration}s)," \
       "rounds interleaved; client ($client) $client_procs process(es)" \
       "x $([ "$client" = node ] && echo 1 || echo "$client_threads") thread(s)," \
       "backend ($backend) $backend_threads," \
       "each proxy $workers worker(s)"
  results="$work/results"
  : >"$results"
  for size in $sizes; do
    for round in $(seq "$rounds"); do
      for t in $targets; do
        [ -e "$work/declined.$t" ] && continue
        rc=0
        # shellcheck disable=SC2086  # a list of PIDs
        cpu_before=$(cpu_ticks ${target_pids[$t]})
        backend_before=$(cpu_ticks "$backend_pid")
        idle_before=$(idle_ticks)
        start_ns=$(date +%s%N)
        out=$(run_load "${target_port[$t]}" "$size") || rc=$?
        elapsed_ns=$(( $(date +%s%N) - start_ns ))
        idle=$(( $(idle_ticks) - idle_before ))
        backend_cpu=$(( $(cpu_ticks "$backend_pid") - backend_before ))
        if [ "$rc" -eq 3 ]; then
          unsupported_line "$t" "$out" >"$work/declined.$t"
          continue
        fi
        line=$(grep '^result ' <<<"$out" || true)
        if [ -z "$line" ]; then
          echo "$t: ws_load failed (exit $rc):" >&2
          echo "$out" >&2
          continue
        fi
        if [ "$rc" -ne 0 ]; then
          echo "$t size=$size round=$round: exit $rc: $(grep '^first_error' <<<"$out")" >&2
        fi
        # shellcheck disable=SC2086
        cpu=$(($(cpu_ticks ${target_pids[$t]}) - cpu_before))
        client_s=$(client_seconds "$work/client.times")
        echo "$size $t $round $line cpu_ticks=$cpu backend_ticks=$backend_cpu" \
          "client_s=$client_s idle_ticks=$idle elapsed_ns=$elapsed_ns" >>"$results"
      done
    done
  done
  cat "$work"/declined.* 2>/dev/null || true
  python3 - "$results" "$targets" <<'EOF'
import os, sys
tick_hz = os.sysconf("SC_CLK_TCK")
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    size, target = int(parts[0]), parts[1]
    kv = dict(p.split("=", 1) for p in parts[4:])
    rows.setdefault((size, target), []).append(kv)
targets = sys.argv[2].split()
proxies = [t for t in targets if t != "direct"]

def pick(runs):
    # The median round by rate; errors are summed over all rounds.
    runs = sorted(runs, key=lambda r: float(r["rate"]))
    med = runs[len(runs) // 2]
    errs = sum(int(r["errors"]) + int(r["open_failed"]) + int(r["close_errors"]) +
               int(r["timed_out"]) for r in runs)
    # CPU of the proxying process (direct: the backend), of the backend and of the client
    # per round trip, warm-up included; the machine's idle CPU during the round.
    trips = max(1, int(med["all_round_trips"]))
    cpu_us = 1e6 * float(med["cpu_ticks"]) / tick_hz / trips
    be_us = 1e6 * float(med["backend_ticks"]) / tick_hz / trips
    client_us = 1e6 * float(med["client_s"]) / trips
    idle_pct = 100.0 * float(med["idle_ticks"]) / tick_hz / (
        os.cpu_count() * max(1e-9, int(med["elapsed_ns"]) / 1e9))
    return (float(med["rate"]), float(med["p50_us"]), float(med["p99_us"]), float(med["max_us"]),
            errs, cpu_us, be_us, client_us, idle_pct)

print()
print(f"{'size':>7} {'target':<10} {'msgs/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
      f"{'errors':>6} {'CPU us/msg':>10} {'be cpu':>6} {'client':>6} {'idle %':>6}  "
      f"{'msgs/s vs best peer':>19}  {'p99 vs best peer':>16}")
for size in sorted({k[0] for k in rows}):
    picked = {t: pick(rows[(size, t)]) for t in targets if (size, t) in rows}
    label = f"{size} B" if size < 1024 else f"{size // 1024} KiB"
    for t in targets:
        if t not in picked:
            continue
        rate, p50, p99, mx, errs, cpu_us, be_us, client_us, idle_pct = picked[t]
        peers = [picked[p] for p in proxies if p != t and p in picked]
        if t != "direct" and peers:
            best_rate = max(p[0] for p in peers)
            best_p99 = min(p[2] for p in peers)
            ratio = f"{rate / best_rate:.2f}x"
            pratio = f"{p99 / best_p99:.2f}x"
        else:
            ratio = pratio = "-"
        print(f"{label:>7} {t:<10} {rate:>9.0f} {p50 / 1000:>7.2f} {p99 / 1000:>7.2f} "
              f"{mx / 1000:>7.2f} {errs:>6} {cpu_us:>10.1f} {be_us:>6.1f} {client_us:>6.1f} "
              f"{idle_pct:>6.1f}  {ratio:>19}  {pratio:>16}")
# Per round: each proxy's msgs/s over the best other proxy's in the same round (rounds are
# interleaved, so a round's ratio shares its minute of machine noise).
for size in sorted({k[0] for k in rows}):
    label = f"{size} B" if size < 1024 else f"{size // 1024} KiB"
    for t in proxies:
        peers = [p for p in proxies if p != t and (size, p) in rows]
        if (size, t) not in rows or not peers:
            continue
        n = min(len(rows[(size, x)]) for x in [t] + peers)
        ratios = [float(rows[(size, t)][i]["rate"]) /
                  max(1e-9, max(float(rows[(size, p)][i]["rate"]) for p in peers))
                  for i in range(n)]
        med = sorted(ratios)[len(ratios) // 2]
        print(f"{label:>7} {t:<10} per-round msgs/s vs best peer: "
              + " ".join(f"{r:.2f}" for r in ratios) + f"  (median {med:.2f})")
print("(median round by msgs/s; msgs/s = round trips (one message out, its echo back) per second;\n"
      " CPU us/msg = CPU time of the proxy process (direct: the backend) per round trip;\n"
      " be cpu, client = the backend's and the load client's per round trip;\n"
      " idle % = the machine's idle CPU during the round (all cores);\n"
      " ratios compare each proxy with the best other proxy: msgs/s higher is better, p99 lower)")
EOF
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# idle: one proxy at a time, each freshly started with a fresh backend.
n=$idle_conns
if [ "$n" -gt $(((fd_limit - 200) / 2)) ]; then
  echo "idle: $n connections need $((2 * n)) descriptors in the proxy; the limit is $fd_limit" >&2
  exit 2
fi
sources=$(((n + 4999) / 5000 + 1))
echo "idle: $n connections from 127.0.0.1..127.0.0.$sources through each proxy (1 worker);" \
     "VmRSS of the proxying process (nginx: its worker) before and after"
printf '%-10s %7s %12s %12s %11s %9s %13s  %s\n' proxy open "RSS before" "RSS after" "bytes/conn" \
  "KiB/conn" "backend/conn" "echo after idle"
failed_any=0
for p in $proxies; do
  if [ "$p" = dataplane ] && [ -n "$dataplane_missing" ]; then
    echo "dataplane: not measured: $dataplane_missing"
    continue
  fi
  start_backend
  "start_$p"
  # Warm the proxy (lazily built pools, first allocations) so they are not charged to the
  # idle connections; detect a proxy that declines upgrades.
  rc=0
  out=$("$load" pingpong --target "127.0.0.1:$port" --conns 10 --size 64 --duration 0.5 --warmup 0 \
    --origin "$origin" --cookie "$cookie" 2>&1) || rc=$?
  if [ "$rc" -eq 3 ]; then
    unsupported_line "$p" "$out"
    stop_started "${started[@]}"
    continue
  fi
  sleep 0.5
  before=$(rss_kib "$pid")
  backend_before=$(rss_kib "$backend_pid")
  "$load" idle --target "127.0.0.1:$port" --conns "$n" --sources "$sources" --hold 300 \
    --origin "$origin" --cookie "$cookie" >"$work/idle.$p" 2>&1 &
  load_pid=$!
  started+=("$load_pid")
  for _ in $(seq 1200); do  # up to 120 s to open them all
    grep -q '^READY' "$work/idle.$p" && break
    kill -0 "$load_pid" 2>/dev/null || break
    sleep 0.1
  done
  ready=$(sed -n 's/^READY \([0-9]*\)/\1/p' "$work/idle.$p")
  if [ -z "$ready" ]; then
    echo "$p: the idle client did not get ready:"; cat "$work/idle.$p"
    stop_started "$load_pid"
    failed_any=1
  else
    sleep 1  # let the proxy finish bookkeeping of the last handshakes
    after=$(rss_kib "$pid")
    backend_after=$(rss_kib "$backend_pid")
    kill -USR1 "$load_pid" 2>/dev/null || true  # it may have given up already
    rc=0
    wait "$load_pid" || rc=$?
    stop_started "$load_pid"
    if [ "$rc" -eq 3 ]; then
      unsupported_line "$p" "$(cat "$work/idle.$p")"
    else
      echo_line=$(sed -n 's/^ECHO //p' "$work/idle.$p")
      [ "$rc" -eq 0 ] || failed_any=1
      # Per connection actually open (READY n), should some have failed to open.
      awk -v p="$p" -v r="$ready" -v b="$before" -v a="$after" -v bb="$backend_before" \
          -v ba="$backend_after" -v e="${echo_line:-none (exit $rc)}" 'BEGIN {
        per = r > 0 ? (a - b) * 1024 / r : 0
        bper = r > 0 ? (ba - bb) / r : 0
        printf "%-10s %7d %8.1f MiB %8.1f MiB %11.0f %9.2f %9.2f KiB  %s\n",
               p, r, b / 1024, a / 1024, per, per / 1024, bper, e }'
      [ "$rc" -eq 0 ] || grep -E '^(OPEN_FAILED|first_error)' "$work/idle.$p" || true
    fi
  fi
  stop_started "${started[@]}"  # the proxy (nginx: its master) and the backend
done
echo "(per conn = the proxy's VmRSS growth / connections open, 1 KiB = 1024 bytes;" \
     "backend/conn = the echo server's growth / connections open)"
exit "$failed_any"
