#!/usr/bin/env bash
# HTTP proxy benchmark: the data plane against nginx and HAProxy, configured alike (same
# worker/thread count, upstream keep-alive, no access logs, the same X-Forwarded-For/-Proto/
# -Host headers added to each request), in front of the same fast backend (nginx returning
# fixed bodies; BACKEND=file: serving files, see lib.sh). Interleaved rounds of
# `wrk -t1 -c50 -d10s`; prints the median req/s, p50, p99, CPU microseconds per request of
# the proxy, the backend and wrk, the machine's idle CPU during each run, and the data
# plane's ratios to the better peer (of the medians, then round by round for the default
# config). The data plane runs twice side by side: with its default config ("dataplane",
# what users run) and tuned ("dp-tuned", pool.max_idle 256).
# Not a test: numbers depend on the machine (2 shared cores here: load generator, proxy and
# backend compete, so compare side by side, as ratios).
#
# Usage: bench/http/run.sh            (env: DURATION=10 ROUNDS=3 CONNECTIONS=50
#                                       WORKERS="1 2" SIZES="small 4k 64k" BUILD_DIR=...
#                                       TUNED=0 to leave the tuned data plane out,
#                                       EPOLL=1: also "dp-epoll", the default config with
#                                       the epoll event loop (--io epoll),
#                                       HOGS=N: N busy-looping processes for the whole run
#                                       (CPU contention, as on a shared node),
#                                       DATAPLANE_LIMITS=1: every client limit set, none hit,
#                                       BACKEND=return|file: the backend's bodies, lib.sh)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
connections="${CONNECTIONS:-50}"
worker_counts="${WORKERS:-1 2}"
sizes="${SIZES:-small 4k 64k}"
dataplane="$build/dataplane/dataplane"

for tool in nginx haproxy wrk; do
  if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
    "$repo/scripts/install-deps.sh" --with-bench
    break
  fi
done
export PATH="$PATH:/usr/sbin"
if [ ! -x "$dataplane" ]; then
  echo "bench: $dataplane is not built (cmake --build $build --target dataplane)" >&2
  exit 1
fi

. "$repo/bench/http/lib.sh"

# ---- the backend: nginx serving three files ----------------------------------------------
start_file_backend

# ---- the proxies, per worker count -------------------------------------------------------
start_proxies() {  # $1: workers; sets dp_port dpt_port nginx_port haproxy_port and pids
  local w="$1"
  dp_port="$(free_port)"; nginx_port="$(free_port)"; haproxy_port="$(free_port)"
  write_dp_yaml "$work/dp-$w.yaml" "$w" "$dp_port" "$backend_port" default
  "$dataplane" --config "$work/dp-$w.yaml" --log-level warn > "$work/dp-$w.log" 2>&1 &
  dp_pid=$!
  pids+=($dp_pid)
  dpe_port=""; dpe_pid=""
  if [ "${EPOLL:-0}" != 0 ]; then
    dpe_port="$(free_port)"
    write_dp_yaml "$work/dpe-$w.yaml" "$w" "$dpe_port" "$backend_port" default
    "$dataplane" --config "$work/dpe-$w.yaml" --io epoll --log-level warn > "$work/dpe-$w.log" 2>&1 &
    dpe_pid=$!
    pids+=($dpe_pid)
  fi
  dpt_port=""; dpt_pid=""
  if [ "${TUNED:-1}" != 0 ]; then
    dpt_port="$(free_port)"
    write_dp_yaml "$work/dpt-$w.yaml" "$w" "$dpt_port" "$backend_port" tuned
    "$dataplane" --config "$work/dpt-$w.yaml" --log-level warn > "$work/dpt-$w.log" 2>&1 &
    dpt_pid=$!
    pids+=($dpt_pid)
  fi

  cat > "$work/nginx-$w.conf" <<CONF
worker_processes $w;
daemon off;
pid $work/nginx-$w.pid;
error_log $work/nginx-$w.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream backend { server 127.0.0.1:$backend_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # What the data plane adds to every request (and the seed's proxy did): same work.
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
CONF
  nginx -c "$work/nginx-$w.conf" -p "$work" &
  nginx_pid=$!
  pids+=($nginx_pid)

  write_haproxy_cfg "$work/haproxy-$w.cfg" "$w" "$haproxy_port" "$backend_port"
  haproxy -f "$work/haproxy-$w.cfg" -q &
  haproxy_pid=$!
  pids+=($haproxy_pid)
  wait_port "$dp_port"; wait_port "$nginx_port"; wait_port "$haproxy_port"
  [ -z "$dpt_port" ] || wait_port "$dpt_port"
  [ -z "$dpe_port" ] || wait_port "$dpe_port"
}

stop_proxies() {
  kill "$dp_pid" $dpt_pid $dpe_pid "$nginx_pid" "$haproxy_pid" 2>/dev/null || true
  wait "$dp_pid" $dpt_pid $dpe_pid "$nginx_pid" "$haproxy_pid" 2>/dev/null || true
}

# One wrk run: prints "req/s p50_ms p99_ms cpu_us_per_request backend_cpu_us_per_request"
# (CPU of the proxy measured: its own cost per request, which on a shared machine is steadier
# than req/s; and the backend's, which grows when a proxy churns upstream connections).
run_wrk() {  # $1 port, $2 path, $3 pid whose CPU to measure
  local before after bbefore bafter
  before="$(cpu_ticks "$3")"; bbefore="$(cpu_ticks "$backend_pid")"
  local idle_before idle_after
  idle_before="$(idle_ticks)"
  # `times` in the subshell reports its children's CPU: wrk's, the client's cost per request.
  (wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$1/$2" \
    > "$work/wrk.out"; times > "$work/wrk.times")
  after="$(cpu_ticks "$3")"; bafter="$(cpu_ticks "$backend_pid")"; idle_after="$(idle_ticks)"
  /usr/bin/python3 - "$work/wrk.out" "$before" "$after" "$(getconf CLK_TCK)" "$bbefore" "$bafter" \
    "$work/wrk.times" "$idle_before" "$idle_after" "$(nproc)" "$duration" <<'PYWRK'
import re, sys
text = open(sys.argv[1]).read()
ticks = int(sys.argv[3]) - int(sys.argv[2])
hz = int(sys.argv[4])
bticks = int(sys.argv[6]) - int(sys.argv[5])
# The second line of `times`: the children's user and system time, "0m1.234s 0m0.567s".
child = open(sys.argv[7]).read().splitlines()[1].split()
def secs(v):
    m, s = re.match(r"(\d+)m([\d.]+)s", v).groups()
    return int(m) * 60 + float(s)
client_s = secs(child[0]) + secs(child[1])
idle_s = (int(sys.argv[9]) - int(sys.argv[8])) / hz
idle_pct = 100.0 * idle_s / (int(sys.argv[10]) * float(sys.argv[11]))
def ms(v):
    n, unit = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]+", "", v)
    return n * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
if re.search(r"Non-2xx or 3xx responses: (\d+)", text) or "Socket errors" in text:
    sys.stderr.write("bench: wrk reported errors:\n" + text)
    sys.exit(1)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {ticks * 1e6 / hz / max(total, 1):.1f} "
      f"{bticks * 1e6 / hz / max(total, 1):.1f} {client_s * 1e6 / max(total, 1):.1f} "
      f"{idle_pct:.1f}")
PYWRK
}

results="$work/results.txt"
: > "$results"
hogs="${HOGS:-0}"
for _ in $(seq 1 "$hogs"); do  # CPU contention: stopped by PID with everything else
  /bin/sh -c 'while :; do :; done' &
  pids+=($!)
done
for w in $worker_counts; do
  start_proxies "$w"
  for size in $sizes; do  # warm-up: connections, pools, caches
    for port in "$dp_port" $dpt_port $dpe_port "$nginx_port" "$haproxy_port"; do
      wrk -t1 -c"$connections" -d1s "http://127.0.0.1:$port/$size" > /dev/null
    done
  done
  for round in $(seq 1 "$rounds"); do
    for size in $sizes; do
      # Rotate the order each round so no proxy always runs first or last.
      names=(dataplane nginx haproxy direct)
      ports=("$dp_port" "$nginx_port" "$haproxy_port" "$backend_port")
      cpu_pids=("$dp_pid" "$nginx_pid" "$haproxy_pid" "$backend_pid")
      if [ -n "$dpt_port" ]; then
        names+=(dp-tuned); ports+=("$dpt_port"); cpu_pids+=("$dpt_pid")
      fi
      if [ -n "$dpe_port" ]; then
        names+=(dp-epoll); ports+=("$dpe_port"); cpu_pids+=("$dpe_pid")
      fi
      n=${#names[@]}
      for i in $(seq 0 $((n - 1))); do
        j=$(( (i + round) % n ))
        echo "$w $size ${names[$j]} $round $(run_wrk "${ports[$j]}" "$size" "${cpu_pids[$j]}")" >> "$results"
        echo "  round $round/$rounds workers=$w size=$size ${names[$j]} done" >&2
      done
    done
  done
  stop_proxies
done

echo "dataplane: the node's default config; dp-tuned: pool.max_idle 256; dp-epoll: default config, --io epoll"
echo "CPU hogs: $hogs busy-looping processes during the run"
echo "backend: nginx, 1 worker, ${BACKEND:-return} (return: fixed bodies from its config; file: sendfile)"
echo "client limits: ${DATAPLANE_LIMITS:-0} (DATAPLANE_LIMITS=1: every limit configured, none hit)"
BENCH_LIB="$repo/bench/http" PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 - "$results" "$duration" "$connections" <<'PY'
import os, statistics, sys
from collections import defaultdict
sys.path.insert(0, os.environ["BENCH_LIB"])
from round_ratios import round_ratios_line
rows = defaultdict(list)
by_round = defaultdict(dict)  # (workers, size, proxy) -> {round: req/s}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 11:
        continue  # a failed run (reported above)
    w, size, name, rnd = parts[:4]
    rows[(int(w), size, name)].append(tuple(float(x) for x in parts[4:]))
    by_round[(int(w), size, name)][int(rnd)] = float(parts[4])
rounds = max(len(v) for v in rows.values())
print(f"\nwrk -t1 -c{sys.argv[3]} -d{sys.argv[2]}s, median of {rounds} interleaved rounds; "
      "cpu = the proxy's CPU time per request, be cpu = the backend's, wrk cpu = the client's;\n"
      "idle = the machine's idle CPU during the run (all cores)")
print(f"{'workers':>7} {'size':>5} {'proxy':>10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
      f"{'cpu us':>7} {'be cpu':>7} {'wrk cpu':>7} {'idle %':>6}   "
      "vs best peer (req/s ratio, p99, cpu)")
order = ["small", "4k", "64k"]
for (w, size) in sorted({(k[0], k[1]) for k in rows},
                        key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 9)):
    med = {}
    for name in ("dataplane", "dp-tuned", "dp-epoll", "nginx", "haproxy", "direct"):
        vals = rows.get((w, size, name))
        if vals:
            med[name] = tuple(statistics.median(v[i] for v in vals) for i in range(7))
    peers = [n for n in ("nginx", "haproxy") if n in med]
    best = max(peers, key=lambda n: med[n][0]) if peers else None
    for name, (rps, p50, p99, cpu, bcpu, ccpu, idle) in med.items():
        note = ""
        if name in ("dataplane", "dp-tuned", "dp-epoll") and best:
            b = med[best]
            note = (f"   {rps / b[0]:.2f}x {best}, p99 {p99:.2f} vs {b[2]:.2f} ms, "
                    f"cpu {cpu:.1f} vs {b[3]:.1f} us")
        print(f"{w:>7} {size:>5} {name:>10} {rps:>9.0f} {p50:>7.2f} {p99:>7.2f} {cpu:>7.1f} "
              f"{bcpu:>7.1f} {ccpu:>7.1f} {idle:>6.1f}{note}")
    if best and "dataplane" in med:
        line = round_ratios_line(by_round[(w, size, "dataplane")], by_round[(w, size, best)], best)
        if line:
            print(line)
PY
