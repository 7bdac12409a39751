#!/usr/bin/env bash
# WebSockets over HTTP/2 (RFC 8441) against the same WebSockets as HTTP/1.1 upgrades, through
# the data plane (and HAProxy, the one h2 peer that does RFC 8441), to the same echo backend
# (bench/websocket/ws_echo_server). CONNS x STREAMS WebSockets ping-pong SIZE-byte messages:
#   h2  ws_h2_load --conns CONNS --streams STREAMS   (extended CONNECT streams, h2c with prior
#       knowledge, or TLS with ALPN h2 when TLS=1)
#   h1  ws_load pingpong --conns CONNS*STREAMS       (one TCP connection and upgrade each)
# Every measurement gets a freshly started proxy, so its RSS delta is that run's alone: VmRSS
# of the idle proxy, then VmRSS sampled near the end of the measured phase while every
# WebSocket is open (all CONNS*STREAMS upstream connections established). Rounds interleave
# h2 and h1; the table has medians (by msgs/s) and the h2/h1 ratios.
# Not a test: numbers depend on the machine (client, proxy and backend share the cores).
#
# Usage: bench/h2/ws.sh   (env: CONNS=10 STREAMS=100 SIZE=64 DURATION=3 WARMUP=1 ROUNDS=3
#                          WORKERS=1 TLS=0|1 PEERS="dataplane haproxy" BACKEND_THREADS=1
#                          BUILD=build, JOBS: parallel jobs for the build check, default 1)
# TLS=1: the h2 rows run over TLS (the client does not verify the throwaway certificate);
# ws_load has no TLS, so the h1 rows are skipped and said so.
set -euo pipefail
cd "$(dirname "$0")/../.."

build=${BUILD:-build}
conns=${CONNS:-10}
streams=${STREAMS:-100}
size=${SIZE:-64}
duration=${DURATION:-3}
warmup=${WARMUP:-1}
rounds=${ROUNDS:-3}
workers=${WORKERS:-1}
tls=${TLS:-0}
peers=${PEERS:-dataplane haproxy}
backend_threads=${BACKEND_THREADS:-1}
total=$((conns * streams))
origin=https://bench.onedomain.test
cookie="session=wsbench-0123456789; theme=dark"
case "$tls" in 0|1) ;; *) echo "TLS must be 0 or 1" >&2; exit 2 ;; esac

die() {  # MESSAGE [LOG-FILE]
  echo "$1" >&2
  [ -z "${2:-}" ] || tail -20 "$2" >&2
  exit 1
}
haproxy_bin=$(command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true)
if [[ " $peers " == *" haproxy "* ]] && [ -z "$haproxy_bin" ]; then
  echo "haproxy not installed (scripts/install-deps.sh --with-bench): measuring the data plane only"
  peers=${peers//haproxy/}
fi

ninja -C "$build" -j "${JOBS:-1}" ws_h2_load ws_load ws_echo_server dataplane >/dev/null ||
  die "build failed: ninja -C $build ws_h2_load ws_load ws_echo_server dataplane"
h2_load="$build/bench/h2/ws_h2_load"
h1_load="$build/bench/websocket/ws_load"
echo_server="$build/bench/websocket/ws_echo_server"
dataplane_bin="$build/dataplane/dataplane"

# Two descriptors per proxied HTTP/1.1 WebSocket; everyone gets the hard limit.
ulimit -n "$(ulimit -Hn)"
fd_limit=$(ulimit -n)
[ "$fd_limit" -gt $((2 * total + 200)) ] ||
  die "open-file limit $fd_limit is too low for $total proxied WebSockets"

work=$(mktemp -d /tmp/wsh2bench.XXXXXX)
started=()  # PIDs of every process this script started
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_started() {  # stops and forgets the given PIDs
  local pid keep=() p
  for pid in "$@"; do stop_pid "$pid"; done
  for p in "${started[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done
  started=("${keep[@]}")
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
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Established connections from the proxy to the backend (one per open WebSocket either way).
upstream_conns() { ss -Htn state established "( dport = :$backend_port )" | wc -l; }

if [ "$tls" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"
fi

rm -f "$work/echo.port"
"$echo_server" --threads "$backend_threads" --port-file "$work/echo.port" >"$work/echo.log" 2>&1 &
backend_pid=$!
started+=("$backend_pid")
wait_file "$work/echo.port" "$backend_pid" || die "ws_echo_server did not start:" "$work/echo.log"
backend_port=$(cat "$work/echo.port")

# Each start_* sets port and pid (the proxying process) and logs to $work/$name.log.
start_dataplane() {
  local listener="{name: main, address: 127.0.0.1, port: 0, http2: {prior_knowledge: true}}"
  if [ "$tls" = 1 ]; then  # ALPN h2 and http/1.1 is the default
    listener="{name: main, address: 127.0.0.1, port: 0,
       tls: {cert_file: $work/cert.pem, key_file: $work/key.pem}}"
  fi
  cat >"$work/dataplane.yaml" <<EOF
node: {id: wsh2bench}
admin: {address: 127.0.0.1, port: 0}
workers: $workers
logging: {level: warn}
drain: {delay: 0s, timeout: 5s}
snapshot:
  site:
    origins: ["$origin"]
  listeners:
    - $listener
  clusters:
    - name: echo
      endpoints: ["127.0.0.1:$backend_port"]
  routes:
    - name: ws
      match: {prefix: /}
      cluster: echo
      websocket: true
  websocket_policy: {drain_spread: 1s, drain_grace: 2s}
EOF
  rm -f "$work/dataplane.ports"
  "$dataplane_bin" --config "$work/dataplane.yaml" --port-file "$work/dataplane.ports" \
    >>"$work/dataplane.log" 2>&1 &
  pid=$!
  started+=("$pid")
  wait_file "$work/dataplane.ports" "$pid" || die "dataplane did not start:" "$work/dataplane.log"
  port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listener.main"])' \
    "$work/dataplane.ports")
  wait_port "$port" "$pid" || die "dataplane not listening:" "$work/dataplane.log"
}

# HAProxy 2.6: an h2 frontend accepts RFC 8441 and upgrades to the backend over HTTP/1.1.
# Plain: two binds, `proto h2` (prior knowledge) for h2 and one for HTTP/1.1; TLS: one bind
# with ALPN h2 (HTTP/1.1 rows are skipped under TLS anyway).
start_haproxy() {  # $1: h2 | h1
  port=$(free_port)
  local bind="bind 127.0.0.1:$port"
  if [ "$tls" = 1 ]; then
    bind+=" ssl crt $work/haproxy.pem alpn h2,http/1.1"
  elif [ "$1" = h2 ]; then
    bind+=" proto h2"
  fi
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
  $bind
  default_backend echo
backend echo
  server echo1 127.0.0.1:$backend_port
EOF
  "$haproxy_bin" -db -f "$work/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
  pid=$!
  started+=("$pid")
  wait_port "$port" "$pid" || die "haproxy did not start:" "$work/haproxy.log"
}

# One measurement: a fresh proxy, the client in the background, RSS sampled once every
# WebSocket is open and the measured phase is nearly over. Appends a line to $results.
measure() {  # $1 proxy, $2 h2|h1, $3 round
  local proxy=$1 proto=$2 round=$3 client_pid rc=0 idle end_rss="" cpu0 t_open=""
  if [ "$proxy" = haproxy ]; then start_haproxy "$proto"; else start_dataplane; fi
  local proxy_pid=$pid
  idle=$(rss_kib "$proxy_pid")
  cpu0=$(cpu_ticks "$proxy_pid")
  if [ "$proto" = h2 ]; then
    local tls_flag=()
    [ "$tls" = 1 ] && tls_flag=(--tls)
    "$h2_load" --target "127.0.0.1:$port" --conns "$conns" --streams "$streams" --size "$size" \
      --duration "$duration" --warmup "$warmup" --path /ws/bench --origin "$origin" \
      --cookie "$cookie" "${tls_flag[@]}" >"$work/client.out" 2>&1 &
  else
    "$h1_load" pingpong --target "127.0.0.1:$port" --conns "$total" --size "$size" \
      --duration "$duration" --warmup "$warmup" --path /ws/bench --origin "$origin" \
      --cookie "$cookie" >"$work/client.out" 2>&1 &
  fi
  client_pid=$!
  started+=("$client_pid")
  # Every WebSocket open: the clients start their warm-up then. Bounded by 30 s.
  for _ in $(seq 600); do
    kill -0 "$client_pid" 2>/dev/null || break
    if [ "$(upstream_conns)" -ge "$total" ]; then t_open=$(date +%s.%N); break; fi
    sleep 0.05
  done
  if [ -n "$t_open" ]; then
    # Sample shortly before the window ends (the clients close right after it): one sleep,
    # no polling that would take CPU from the run.
    sleep "$(awk -v t="$t_open" -v n="$(date +%s.%N)" -v w="$warmup" -v d="$duration" \
      'BEGIN { m = d / 4; if (m > 0.5) m = 0.5; s = t + w + d - m - n; printf "%.3f", (s > 0 ? s : 0) }')"
    local open_now sample
    sample=$(rss_kib "$proxy_pid")
    open_now=$(upstream_conns)
    if kill -0 "$client_pid" 2>/dev/null && [ "$open_now" -ge "$total" ]; then
      end_rss=$sample
    else
      echo "$proxy $proto round $round: only $open_now of $total upstream connections open at" \
           "the RSS sample: no RSS figure" >&2
    fi
  else
    echo "$proxy $proto round $round: never had all $total WebSockets open" \
         "($(upstream_conns) upstream connections)" >&2
  fi
  wait "$client_pid" || rc=$?
  stop_started "$client_pid"
  local cpu=$(($(cpu_ticks "$proxy_pid") - cpu0))
  cp "$work/client.out" "$work/client.$proxy.$proto.$round.out"
  local line
  line=$(grep '^result ' "$work/client.out" || true)
  if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
    echo "$proxy $proto round $round: client exit $rc:" >&2
    grep -v '^ws_' "$work/client.out" | head -5 >&2 || true
  fi
  if [ "$proxy" = dataplane ] && [ -s "$work/dataplane.log" ]; then
    echo "$proxy $proto round $round: data plane log (last lines):" >&2
    tail -5 "$work/dataplane.log" >&2
    : >"$work/dataplane.log"
  fi
  stop_started "$proxy_pid"
  [ -n "$line" ] && echo "$proxy $proto $round idle_kib=$idle end_kib=${end_rss:--} cpu_ticks=$cpu" \
    "exit=$rc ${line#result }" >>"$results"
  return 0
}

protos="h2 h1"
[ "$tls" = 1 ] && protos="h2"
results="$work/results"
: >"$results"
echo "WebSockets over HTTP/2 vs HTTP/1.1: $total WebSockets ($conns h2 connections x $streams" \
     "streams, or $total HTTP/1.1 upgrades), $size B ping-pong, $rounds rounds x" \
     "(${warmup}s warm-up + ${duration}s), $workers worker(s), TLS=$tls; $(nproc) cores"
[ "$tls" = 1 ] && echo "TLS=1: no HTTP/1.1 rows (ws_load has no TLS)"
for round in $(seq "$rounds"); do
  for proxy in $peers; do
    order=$protos
    [ $((round % 2)) = 0 ] && [ "$tls" = 0 ] && order="h1 h2"  # alternate who goes first
    for proto in $order; do
      measure "$proxy" "$proto" "$round"
      echo "  round $round/$rounds $proxy $proto done" >&2
    done
  done
done

python3 - "$results" "$total" "$peers" <<'PY'
import os, sys
tick_hz = os.sysconf("SC_CLK_TCK")
total = int(sys.argv[2])
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    kv = dict(p.split("=", 1) for p in parts[3:])
    rows.setdefault((parts[0], parts[1]), []).append(kv)
if not rows:
    sys.exit("bench: no results")

def pick(runs):
    runs = sorted(runs, key=lambda r: float(r["rate"]))
    med = runs[len(runs) // 2]
    errs = sum(int(r["errors"]) + int(r["open_failed"]) + int(r["declined"]) +
               int(r["close_errors"]) + int(r["timed_out"]) for r in runs)
    rss = sorted(int(r["end_kib"]) - int(r["idle_kib"]) for r in runs if r["end_kib"] != "-")
    idle = sorted(int(r["idle_kib"]) for r in runs)[len(runs) // 2]
    end = sorted(int(r["end_kib"]) for r in runs if r["end_kib"] != "-")
    cpu_us = 1e6 * float(med["cpu_ticks"]) / tick_hz / max(1, int(med["all_round_trips"]))
    return {"rate": float(med["rate"]), "p50": float(med["p50_us"]) / 1000,
            "p99": float(med["p99_us"]) / 1000, "errs": errs, "idle": idle / 1024,
            "end": end[len(end) // 2] / 1024 if end else None,
            "delta": rss[len(rss) // 2] if rss else None, "cpu": cpu_us, "n": len(runs)}

print()
print(f"{'proxy':<10} {'proto':<5} {'msgs/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
      f"{'idle MiB':>8} {'RSS MiB':>8} {'delta MiB':>9} {'KiB/WS':>7} {'CPU us/msg':>10}")
picked = {}
for proxy in sys.argv[3].split():
    for proto in ("h2", "h1"):
        if (proxy, proto) not in rows:
            continue
        p = picked[(proxy, proto)] = pick(rows[(proxy, proto)])
        end = f"{p['end']:8.1f}" if p["end"] is not None else f"{'-':>8}"
        delta = f"{p['delta'] / 1024:9.1f}" if p["delta"] is not None else f"{'-':>9}"
        per = f"{p['delta'] / total:7.2f}" if p["delta"] is not None else f"{'-':>7}"
        print(f"{proxy:<10} {proto:<5} {p['rate']:>9.0f} {p['p50']:>7.2f} {p['p99']:>7.2f} "
              f"{p['errs']:>6} {p['idle']:>8.1f} {end} {delta} {per} {p['cpu']:>10.1f}")
print()
for proxy in sys.argv[3].split():
    h2, h1 = picked.get((proxy, "h2")), picked.get((proxy, "h1"))
    if not (h2 and h1):
        continue
    rss = (f"RSS delta {h2['delta'] / h1['delta']:.2f}x" if h2["delta"] and h1["delta"]
           else "RSS delta -")
    print(f"{proxy}: h2/h1 msgs/s {h2['rate'] / h1['rate']:.2f}x, p99 {h2['p99'] / h1['p99']:.2f}x, "
          f"{rss}, CPU/msg {h2['cpu'] / h1['cpu']:.2f}x")
print("(median round by msgs/s; msgs/s = round trips per second over all WebSockets; RSS = "
      "the proxy's VmRSS near the end of the measured phase with all WebSockets open, delta = "
      "minus the freshly started idle proxy, KiB/WS = delta / WebSockets; CPU = the proxy's, "
      "warm-up included, per round trip; errors summed over rounds)")
PY
