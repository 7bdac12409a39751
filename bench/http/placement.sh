#!/usr/bin/env bash
# Which core each task runs on: the data plane next to HAProxy, one worker/thread each, with
# the backend of run.sh and `wrk -t1 -c50`. On a 2-core machine the proxy, the backend's
# worker and wrk share the cores; while two of them share one core the other core can idle,
# and how often the kernel moves a task decides how much. Each round samples the three
# tasks' state and last CPU (/proc/PID/task/TID/stat) every 0.5 ms for 2 s of a 4 s wrk run
# and prints req/s, the share of samples in which each pair of tasks had last run on the same
# core, how often two were runnable on one core, and each task's moves between cores per second.
#
# Usage: bench/http/placement.sh   (env: BUILD_DIR=build ROUNDS=3 SIZE=small|4k|64k)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
rounds="${ROUNDS:-3}"
size="${SIZE:-small}"
dataplane="$build/dataplane/dataplane"
export PATH="$PATH:/usr/sbin"
for tool in nginx haproxy wrk; do
  command -v "$tool" >/dev/null || { echo "placement.sh: $tool is not installed" >&2; exit 1; }
done
[ -x "$dataplane" ] || { echo "placement.sh: build $dataplane first" >&2; exit 1; }

. "$repo/bench/http/lib.sh"

start_file_backend
dport=$(free_port)
write_dp_yaml "$work/dp.yaml" 1 "$dport" "$backend_port" default
"$dataplane" --config "$work/dp.yaml" --log-level warn >"$work/dp.log" 2>&1 &
dpid=$!
pids+=("$dpid")
wait_port "$dport"
hport=$(free_port)
write_haproxy_cfg "$work/haproxy.cfg" 1 "$hport" "$backend_port"
haproxy -f "$work/haproxy.cfg" -q &
hpid=$!
pids+=("$hpid")
wait_port "$hport"

# The proxying thread: the data plane's worker-0, HAProxy's one thread.
thread_of() {  # PID NAME
  local t
  for t in /proc/"$1"/task/*; do
    [ "$2" = "" ] && { echo "${t##*/}"; return; }
    [ "$(cat "$t/comm")" = "$2" ] && { echo "${t##*/}"; return; }
  done
  echo "placement.sh: no thread $2 in $1" >&2
  exit 1
}
dthread=$(thread_of "$dpid" worker-0)
hthread=$(thread_of "$hpid" "")
[ -n "$dthread" ] && [ -n "$hthread" ] || exit 1
backend_worker=$(pgrep -P "$backend_pid" -x nginx | head -1)  # nginx's one worker process
[ -n "$backend_worker" ] || { echo "placement.sh: the backend has no worker" >&2; exit 1; }

cat >"$work/place.py" <<'PY'
import collections, sys, time
dur, paths = float(sys.argv[1]), sys.argv[2:]
names = ["proxy", "backend", "wrk"]
files = [open(p, "rb", buffering=0) for p in paths]
n, moves, last = 0, [0, 0, 0], [None, None, None]
pairing, same = collections.Counter(), 0
start = time.monotonic()
end = start + dur
while time.monotonic() < end:
    st = []
    for i, f in enumerate(files):
        f.seek(0)
        try:
            d = f.read().decode()
        except ProcessLookupError:  # wrk ended first (a loaded machine starts python late)
            end = 0
            break
        r = d[d.rindex(")") + 2:].split()
        st.append((r[0], int(r[36])))  # state, last CPU
    if len(st) < 3:
        break
    n += 1
    for i, (_, cpu) in enumerate(st):
        moves[i] += last[i] is not None and last[i] != cpu
        last[i] = cpu
    p, b, w = (cpu for _, cpu in st)
    pairing["all three" if p == b == w else "backend+wrk" if b == w else
            "proxy+backend" if p == b else "proxy+wrk"] += 1
    running = [cpu for s, cpu in st if s == "R"]
    same += len(running) == 2 and running[0] == running[1]
    time.sleep(0.0005)
dur = time.monotonic() - start
n = max(n, 1)
shares = " ".join(f"{k} {v / n * 100:.0f}%" for k, v in pairing.most_common())
print(f"{n} samples; share one core: {shares}; two runnable on one core "
      f"{same / n * 100:.0f}%; moves/s "
      + " ".join(f"{names[i]} {moves[i] / dur:.0f}" for i in range(3)))
PY

echo "placement: 1 worker each, wrk -t1 -c50 -d4s /$size, $rounds rounds," \
  "node and HAProxy alternating"
for port in "$dport" "$hport"; do  # warm-up: upstream connections open, caches warm
  wrk -t1 -c50 -d1s "http://127.0.0.1:$port/$size" >/dev/null
done
for round in $(seq "$rounds"); do
  for spec in "node:$dport:$dpid:$dthread" "haproxy:$hport:$hpid:$hthread"; do
    IFS=: read -r name port pid tid <<<"$spec"
    wrk -t1 -c50 -d4s "http://127.0.0.1:$port/$size" >"$work/wrk.out" &
    wpid=$!
    sleep 0.5  # wrk under way; the sample window is 2 s of its 4
    wthread=$(ls "/proc/$wpid/task" | grep -vx "$wpid" | head -1)  # wrk's one worker thread
    line=$(python3 "$work/place.py" 2 "/proc/$pid/task/$tid/stat" "/proc/$backend_worker/stat" \
      "/proc/$wpid/task/$wthread/stat")
    wait "$wpid"
    rps=$(grep -o 'Requests/sec: *[0-9.]*' "$work/wrk.out" | grep -o '[0-9.]*$')
    printf '%s %-8s %9.0f req/s  %s\n' "$round" "$name" "$rps" "$line"
  done
done
