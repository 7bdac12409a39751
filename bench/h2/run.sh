#!/usr/bin/env bash
# HTTP/2 proxy benchmark: the data plane against nginx (`http2`) and HAProxy (`alpn h2`), TLS
# on all three, configured alike (same worker/thread count, upstream HTTP/1.1 keep-alive, no
# access logs, X-Forwarded-For/-Proto/-Host added), in front of the same backend (nginx
# returning fixed bodies; BACKEND=file: serving files, see bench/http/lib.sh). Interleaved
# rounds of h2load (CLIENTS connections x STREAMS concurrent streams, DURATION seconds each,
# or REQUESTS requests when that is set); prints the median req/s, p50 and p99 (from
# h2load's per-request log) and CPU microseconds per request of the proxy per row, with the
# data plane's ratios to the better peer (of the medians, then round by round). The data
# plane runs its default config.
# Not a test: numbers depend on the machine (2 shared cores here: load generator, proxy and
# backend compete, so compare side by side, as ratios).
#
# Usage: bench/h2/run.sh   (env: DURATION=10 ROUNDS=3 CLIENTS=100 STREAMS=10
#                           WORKERS="1 2" SIZES="small 4k" BUILD_DIR=...;
#                           REQUESTS=N: rounds of N requests instead of DURATION seconds)
# Rounds of a fixed length (as bench/http's wrk rounds), not of a fixed count: a count of
# 100,000 ended each round in about 3 s, and ratios moved by a tenth from round to round.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
requests="${REQUESTS:-}"
duration="${DURATION:-10}"
if [ -n "$requests" ]; then
  amount=(-n "$requests"); warm=(-n $((requests / 10))); amount_text="-n$requests"
else
  amount=(-D "$duration"); warm=(-D 2); amount_text="-D${duration}s"
fi
rounds="${ROUNDS:-3}"
clients="${CLIENTS:-100}"
streams="${STREAMS:-10}"
worker_counts="${WORKERS:-1 2}"
sizes="${SIZES:-small 4k}"
dataplane="$build/dataplane/dataplane"

for tool in nginx haproxy h2load; do
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

# ---- a self-signed certificate for all three proxies --------------------------------------
make_cert
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"

# ---- the backend: nginx serving the files -------------------------------------------------
start_file_backend

start_proxies() {  # $1: workers; sets dp_port nginx_port haproxy_port and their pids
  local w="$1"
  dp_port="$(free_port)"; nginx_port="$(free_port)"; haproxy_port="$(free_port)"
  cat > "$work/dp-$w.yaml" <<CONF
workers: $w
admin: { address: 127.0.0.1, port: 0 }
drain: { delay: 0s, timeout: 5s }
snapshot:
  listeners:
    - name: main
      address: 127.0.0.1
      port: $dp_port
      tls: { cert_file: $work/cert.pem, key_file: $work/key.pem }
  clusters: [{ name: backend, endpoints: [{ host: 127.0.0.1, port: $backend_port }] }]
  routes: [{ name: all, match: { prefix: / }, cluster: backend }]
CONF
  "$dataplane" --config "$work/dp-$w.yaml" --log-level warn > "$work/dp-$w.log" 2>&1 &
  dp_pid=$!
  pids+=($dp_pid)

  cat > "$work/nginx-$w.conf" <<CONF
worker_processes $w;
daemon off;
pid $work/nginx-$w.pid;
error_log $work/nginx-$w.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  http2_max_requests 10000000;
  upstream backend { server 127.0.0.1:$backend_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port ssl http2 reuseport backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
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
  sed -i "s|  bind 127.0.0.1:$haproxy_port|  bind 127.0.0.1:$haproxy_port ssl crt $work/haproxy.pem alpn h2,http/1.1|; s|X-Forwarded-Proto http|X-Forwarded-Proto https|" \
    "$work/haproxy-$w.cfg"
  haproxy -f "$work/haproxy-$w.cfg" -q &
  haproxy_pid=$!
  pids+=($haproxy_pid)
  wait_port "$dp_port"; wait_port "$nginx_port"; wait_port "$haproxy_port"
}

stop_proxies() {
  kill "$dp_pid" "$nginx_pid" "$haproxy_pid" 2>/dev/null || true
  wait "$dp_pid" "$nginx_pid" "$haproxy_pid" 2>/dev/null || true
}

# One h2load run: prints "req/s p50_ms p99_ms cpu_us_per_request", or nothing when the proxy
# did not negotiate h2 (reported on stderr).
run_h2load() {  # $1 port, $2 path, $3 pid whose CPU to measure
  local before after
  before="$(cpu_ticks "$3")"
  if ! h2load -c "$clients" -m "$streams" "${amount[@]}" -T 30 --log-file "$work/h2load.log" \
      "https://127.0.0.1:$1/$2" > "$work/h2load.out" 2>&1; then
    echo "bench: h2load failed against port $1:" >&2; tail -5 "$work/h2load.out" >&2
    return 0
  fi
  after="$(cpu_ticks "$3")"
  /usr/bin/python3 - "$work/h2load.out" "$work/h2load.log" "$before" "$after" \
      "$(getconf CLK_TCK)" <<'PYH2'
import re, sys
text = open(sys.argv[1]).read()
if "h2" not in re.findall(r"Application protocol: (\S+)", text):
    sys.stderr.write("bench: no h2 negotiated:\n" + text[-400:])
    sys.exit(0)
m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
              r"(\d+) errored", text)
if not m or int(m.group(3)) or int(m.group(4)):
    sys.stderr.write("bench: h2load reported failures:\n" + text[-600:])
    sys.exit(0)
ok = int(m.group(2))
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
# --log-file: start time (us since epoch), status, duration (us) per request.
lat = sorted(int(line.split()[2]) for line in open(sys.argv[2]) if line.strip())
def q(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] / 1000.0
ticks = int(sys.argv[4]) - int(sys.argv[3])
print(f"{rps:.0f} {q(0.50):.3f} {q(0.99):.3f} {ticks * 1e6 / int(sys.argv[5]) / max(ok, 1):.1f}")
PYH2
}

results="$work/results.txt"
: > "$results"
for w in $worker_counts; do
  start_proxies "$w"
  for size in $sizes; do  # warm-up: TLS sessions, pools, caches
    for port in "$dp_port" "$nginx_port" "$haproxy_port"; do
      h2load -c "$clients" -m "$streams" "${warm[@]}" "https://127.0.0.1:$port/$size" \
        > /dev/null 2>&1 || true
    done
  done
  for round in $(seq 1 "$rounds"); do
    for size in $sizes; do
      names=(dataplane nginx haproxy)
      ports=("$dp_port" "$nginx_port" "$haproxy_port")
      cpu_pids=("$dp_pid" "$nginx_pid" "$haproxy_pid")
      for i in 0 1 2; do  # rotate the order each round
        j=$(( (i + round) % 3 ))
        line="$(run_h2load "${ports[$j]}" "$size" "${cpu_pids[$j]}")"
        [ -n "$line" ] && echo "$w $size ${names[$j]} $round $line" >> "$results"
        echo "  round $round/$rounds workers=$w size=$size ${names[$j]} done" >&2
      done
    done
  done
  stop_proxies
done

BENCH_LIB="$repo/bench/http" PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 - "$results" "$amount_text" "$clients" "$streams" <<'PY'
import os, statistics, sys
from collections import defaultdict
sys.path.insert(0, os.environ["BENCH_LIB"])
from round_ratios import round_ratios_line
rows = defaultdict(list)
by_round = defaultdict(dict)  # (workers, size, proxy) -> {round: req/s}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 8:
        continue
    w, size, name, rnd, rps, p50, p99, cpu = parts
    rows[(int(w), size, name)].append((float(rps), float(p50), float(p99), float(cpu)))
    by_round[(int(w), size, name)][int(rnd)] = float(rps)
if not rows:
    sys.exit("bench: no results")
rounds = max(len(v) for v in rows.values())
print(f"\nh2load -c{sys.argv[3]} -m{sys.argv[4]} {sys.argv[2]} over TLS (h2), median of "
      f"{rounds} interleaved rounds; cpu = the proxy's CPU time per request")
print(f"{'workers':>7} {'size':>5} {'proxy':>10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
      f"{'cpu us':>7}   vs best peer (req/s ratio, p99, cpu)")
order = ["small", "4k", "64k"]
for (w, size) in sorted({(k[0], k[1]) for k in rows},
                        key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 9)):
    med = {}
    for name in ("dataplane", "nginx", "haproxy"):
        vals = rows.get((w, size, name))
        if vals:
            med[name] = tuple(statistics.median(v[i] for v in vals) for i in range(4))
    peers = [n for n in ("nginx", "haproxy") if n in med]
    best = max(peers, key=lambda n: med[n][0]) if peers else None
    for name, (rps, p50, p99, cpu) in med.items():
        note = ""
        if name == "dataplane" and best:
            b = med[best]
            note = (f"   {rps / b[0]:.2f}x {best}, p99 {p99:.2f} vs {b[2]:.2f} ms, "
                    f"cpu {cpu:.1f} vs {b[3]:.1f} us")
        print(f"{w:>7} {size:>5} {name:>10} {rps:>9.0f} {p50:>7.2f} {p99:>7.2f} {cpu:>7.1f}{note}")
    if best and "dataplane" in med:
        line = round_ratios_line(by_round[(w, size, "dataplane")], by_round[(w, size, best)], best)
        if line:
            print(line)
PY
