#!/usr/bin/env bash
# Where a proxied request's time goes, the data plane next to HAProxy: syscalls, epoll waits
# and context switches per request, counted with `perf stat` (tracepoints: almost no
# overhead, unlike strace, whose slowdown hides the EAGAIN reads of a loaded proxy), and the
# CPU time per request of each process on the path (proxy, backend, wrk) with the machine's
# idle time. On a 2-core machine the three share the cores, so a proxy can cost the others
# time (wake-ups, smaller batches) as well as its own. WORKERS workers/threads each, the backend
# as in run.sh (nginx serving a 12-byte file), `wrk -t1 -c50`, ROUNDS alternating runs each.
#
# Usage: bench/http/syscalls.sh     (env: BUILD_DIR=build CONNECTIONS=50 DURATION=3 ROUNDS=2 WORKERS=1)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
connections="${CONNECTIONS:-50}"
duration="${DURATION:-3}"
workers="${WORKERS:-1}"
rounds="${ROUNDS:-2}"
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
write_backend_conf "$work/backend.conf" "$bp"
nginx -c "$work/backend.conf" -p "$work" & backend_pid=$!; pids+=($backend_pid)
write_dp_yaml "$work/dp.yaml" "$workers" "$dp" "$bp"
"$dataplane" --config "$work/dp.yaml" --log-level warn > "$work/dp.log" 2>&1 & dp_pid=$!; pids+=($dp_pid)
write_haproxy_cfg "$work/haproxy.cfg" "$workers" "$hp" "$bp"
haproxy -f "$work/haproxy.cfg" -q & hp_pid=$!; pids+=($hp_pid)
wait_port "$bp"; wait_port "$dp"; wait_port "$hp"

events=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto
events+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,context-switches
idle_ticks() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
for name in dataplane haproxy; do
  if [ "$name" = dataplane ]; then port=$dp; else port=$hp; fi
  wrk -t1 -c"$connections" -d1s "http://127.0.0.1:$port/small" > /dev/null  # warm-up
done
printf '%-10s %7s %8s %8s %10s %9s %8s | %s\n' proxy req/s recv/req send/req epoll_wait \
  epoll_ctl ctxsw/req "CPU us/req: proxy backend wrk idle"
for round in $(seq 1 "$rounds"); do
  order="dataplane haproxy"
  [ $(( round % 2 )) -eq 0 ] && order="haproxy dataplane"
  for name in $order; do
    if [ "$name" = dataplane ]; then port=$dp; pid=$dp_pid; else port=$hp; pid=$hp_pid; fi
    perf stat -x, -e "$events" -p "$pid" -o "$work/$name.stat" &
    perf_pid=$!
    sleep 0.2  # perf attaches
    p0="$(cpu_ticks "$pid")"; b0="$(cpu_ticks "$backend_pid")"; i0="$(idle_ticks)"
    perf stat -x, -e task-clock -o "$work/wrk.cpu" \
      wrk -t1 -c"$connections" -d"${duration}s" "http://127.0.0.1:$port/small" > "$work/$name.wrk"
    p1="$(cpu_ticks "$pid")"; b1="$(cpu_ticks "$backend_pid")"; i1="$(idle_ticks)"
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    /usr/bin/python3 - "$name" "$work/$name.wrk" "$work/$name.stat" "$work/wrk.cpu" \
      "$((p1 - p0))" "$((b1 - b0))" "$((i1 - i0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
name, wrk, stat, wrkcpu = sys.argv[1:5]
proxy_t, backend_t, idle_t, hz = (int(v) for v in sys.argv[5:9])
text = open(wrk).read()
n = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
c = {}
for line in open(stat):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        c[parts[2].split(":")[-1]] = int(parts[0])
wrk_ms = 0.0
for line in open(wrkcpu):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[2].startswith("task-clock"):
        wrk_ms = float(parts[0])
send = c.get("sys_enter_sendmsg", 0) + c.get("sys_enter_sendto", 0)
us = lambda ticks: ticks * 1e6 / hz / n
print(f"{name:<10} {rps:>7.0f} {c.get('sys_enter_recvfrom', 0) / n:>8.2f} {send / n:>8.2f} "
      f"{c.get('sys_enter_epoll_wait', 0) / n:>10.3f} {c.get('sys_enter_epoll_ctl', 0) / n:>9.3f} "
      f"{c.get('context-switches', 0) / n:>8.3f} | {us(proxy_t):5.1f} {us(backend_t):5.1f} "
      f"{wrk_ms * 1e3 / n:5.1f} {us(idle_t):5.1f}")
PY
  done
done
