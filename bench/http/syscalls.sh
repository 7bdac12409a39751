#!/usr/bin/env bash
# Where a proxied request's time goes, the data plane next to HAProxy: syscalls, epoll waits
# and context switches per request, counted with `perf stat` (tracepoints: almost no
# overhead, unlike strace, whose slowdown hides the EAGAIN reads of a loaded proxy). One
# worker/thread each, nginx as the backend serving a 12-byte file, `wrk -t1 -c50` for 3 s.
#
# Usage: bench/http/syscalls.sh     (env: BUILD_DIR=build CONNECTIONS=50 DURATION=3)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
connections="${CONNECTIONS:-50}"
duration="${DURATION:-3}"
dataplane="$build/dataplane/dataplane"
export PATH="$PATH:/usr/sbin"
for tool in nginx haproxy wrk perf; do
  command -v "$tool" >/dev/null || { echo "syscalls.sh: $tool is not installed" >&2; exit 1; }
done
[ -x "$dataplane" ] || { echo "syscalls.sh: build $dataplane first" >&2; exit 1; }

. "$repo/bench/http/lib.sh"

mkdir -p "$work/www"
printf 'hello world\n' > "$work/www/small"
bp="$(free_port)"; dp="$(free_port)"; hp="$(free_port)"
cat > "$work/backend.conf" <<CONF
worker_processes 1; daemon off; pid $work/backend.pid; error_log $work/backend.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; default_type application/octet-stream;
  server { listen 127.0.0.1:$bp backlog=4096; root $work/www; } }
CONF
nginx -c "$work/backend.conf" -p "$work" & pids+=($!)
cat > "$work/dp.yaml" <<CONF
workers: 1
admin: { address: 127.0.0.1, port: 0 }
drain: { delay: 0s, timeout: 5s }
snapshot:
  listeners: [{ name: main, address: 127.0.0.1, port: $dp }]
  clusters: [{ name: backend, endpoints: [{ host: 127.0.0.1, port: $bp }], pool: { max_idle: 256 } }]
  routes: [{ name: all, match: { prefix: / }, cluster: backend }]
CONF
"$dataplane" --config "$work/dp.yaml" --log-level warn > "$work/dp.log" 2>&1 & dp_pid=$!; pids+=($dp_pid)
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$hp
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  server s1 127.0.0.1:$bp
CONF
haproxy -f "$work/haproxy.cfg" -q & hp_pid=$!; pids+=($hp_pid)
wait_port "$bp"; wait_port "$dp"; wait_port "$hp"

events=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto
events+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,context-switches
printf '%-10s %9s %9s %9s %11s %10s %9s\n' proxy requests recv/req send/req epoll_wait epoll_ctl ctxsw/req
for name in dataplane haproxy; do
  if [ "$name" = dataplane ]; then port=$dp; pid=$dp_pid; else port=$hp; pid=$hp_pid; fi
  wrk -t1 -c"$connections" -d1s "http://127.0.0.1:$port/small" > /dev/null  # warm-up
  perf stat -x, -e "$events" -p "$pid" -o "$work/$name.stat" &
  perf_pid=$!
  wrk -t1 -c"$connections" -d"${duration}s" "http://127.0.0.1:$port/small" > "$work/$name.wrk"
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  /usr/bin/python3 - "$name" "$work/$name.wrk" "$work/$name.stat" <<'PY'
import re, sys
name, wrk, stat = sys.argv[1:]
n = int(re.search(r"(\d+) requests in", open(wrk).read()).group(1))
c = {}
for line in open(stat):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        c[parts[2].split(":")[-1]] = int(parts[0])
send = c.get("sys_enter_sendmsg", 0) + c.get("sys_enter_sendto", 0)
print(f"{name:<10} {n:>9} {c.get('sys_enter_recvfrom', 0) / n:>9.2f} {send / n:>9.2f} "
      f"{c.get('sys_enter_epoll_wait', 0) / n:>11.3f} {c.get('sys_enter_epoll_ctl', 0) / n:>10.3f} "
      f"{c.get('context-switches', 0) / n:>9.3f}")
PY
done
