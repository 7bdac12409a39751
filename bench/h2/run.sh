#!/usr/bin/env bash
# HTTP/2 benchmark (issue 17): h2load against the data plane (ALPN h2 by default), nginx
# (`listen ... ssl http2`) and HAProxy (`alpn h2,http/1.1`), TLS on all three, the same worker
# count, in front of the same backend (nginx serving fixed files over HTTP/1.1 keep-alive).
# Interleaved rounds of `h2load -c CLIENTS -m STREAMS -D DURATION`; prints the median req/s
# and p99 (from h2load's per-request log) per row and the data plane's ratio to the better
# peer. Not a test: numbers depend on the machine (compare side by side, as ratios).
#
# Usage: bench/h2/run.sh   (env: DURATION=10 ROUNDS=3 CLIENTS=100 STREAMS=10 WORKERS=1
#                           SIZES="small 4k" BUILD_DIR=...)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
clients="${CLIENTS:-100}"
streams="${STREAMS:-10}"
workers="${WORKERS:-1}"
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

# ---- certificate, backend ----------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"
chmod 644 "$work"/*.pem
mkdir -p "$work/www"
printf 'hello world\n' > "$work/www/small"
head -c 4096 /dev/zero | tr '\0' 'a' > "$work/www/4k"
backend_port="$(free_port)"
write_backend_conf "$work/backend.conf" "$backend_port"
nginx -c "$work/backend.conf" -p "$work" &
backend_pid=$!
pids+=($backend_pid)
wait_port "$backend_port"

# ---- the three proxies ---------------------------------------------------------------------
dp_port="$(free_port)"; nginx_port="$(free_port)"; haproxy_port="$(free_port)"
cat > "$work/dp.yaml" <<CONF
workers: $workers
admin: { address: 127.0.0.1, port: 0 }
drain: { delay: 0s, timeout: 5s }
snapshot:
  listeners: [{ name: main, address: 127.0.0.1, port: $dp_port,
                tls: { cert_file: $work/cert.pem, key_file: $work/key.pem } }]
  clusters: [{ name: backend, endpoints: [{ host: 127.0.0.1, port: $backend_port }],
               pool: { max_idle: 256 } }]
  routes: [{ name: all, match: { prefix: / }, cluster: backend }]
CONF
"$dataplane" --config "$work/dp.yaml" --log-level warn > "$work/dp.log" 2>&1 &
dp_pid=$!
pids+=($dp_pid)

cat > "$work/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
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
nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
pids+=($nginx_pid)

write_haproxy_cfg "$work/haproxy.cfg" "$workers" "$haproxy_port" "$backend_port"
sed -i "s|  bind 127.0.0.1:$haproxy_port|  bind 127.0.0.1:$haproxy_port ssl crt $work/haproxy.pem alpn h2,http/1.1|" \
  "$work/haproxy.cfg"
sed -i "s|X-Forwarded-Proto http$|X-Forwarded-Proto https|" "$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -q &
haproxy_pid=$!
pids+=($haproxy_pid)
wait_port "$dp_port"; wait_port "$nginx_port"; wait_port "$haproxy_port"

# One h2load run: prints "req/s p99_ms" (p99 from the per-request log).
run_h2load() {  # $1 port, $2 path
  rm -f "$work/h2load.log"
  h2load -c "$clients" -m "$streams" -D "$duration" --log-file="$work/h2load.log" \
    "https://127.0.0.1:$1/$2" > "$work/h2load.out"
  /usr/bin/python3 - "$work/h2load.out" "$work/h2load.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
if "Application protocol: h2" not in text:
    sys.exit("bench: not h2:\n" + text)
m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", text)
if not m or int(m.group(3)) > 0:
    sys.exit("bench: h2load reported failures:\n" + text)
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
lat = sorted(int(l.split("\t")[2]) for l in open(sys.argv[2]) if l.count("\t") >= 2)
p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else float("nan")
print(f"{rps:.0f} {p99:.3f}")
PY
}

results="$work/results.txt"
: > "$results"
for size in $sizes; do  # warm-up
  for port in "$dp_port" "$nginx_port" "$haproxy_port"; do
    h2load -c 10 -m 10 -n 1000 "https://127.0.0.1:$port/$size" > /dev/null
  done
done
for round in $(seq 1 "$rounds"); do
  for size in $sizes; do
    names=(dataplane nginx haproxy)
    ports=("$dp_port" "$nginx_port" "$haproxy_port")
    for i in 0 1 2; do
      j=$(( (i + round) % 3 ))
      echo "$size ${names[$j]} $(run_h2load "${ports[$j]}" "$size")" >> "$results"
      echo "  round $round/$rounds size=$size ${names[$j]} done" >&2
    done
  done
done

/usr/bin/python3 - "$results" "$duration" "$clients" "$streams" "$workers" <<'PY'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 4:
        rows[(parts[0], parts[1])].append((float(parts[2]), float(parts[3])))
print(f"\nh2load -c{sys.argv[3]} -m{sys.argv[4]} -D{sys.argv[2]}, TLS, workers {sys.argv[5]}, "
      f"median of {max(len(v) for v in rows.values())} interleaved rounds")
print(f"{'size':>5} {'proxy':>10} {'req/s':>9} {'p99 ms':>8}   vs best peer")
for size in sorted({k[0] for k in rows}, key=lambda s: ["small", "4k"].index(s) if s in ["small", "4k"] else 9):
    med = {n: (statistics.median(v[0] for v in rows[(size, n)]),
               statistics.median(v[1] for v in rows[(size, n)]))
           for n in ("dataplane", "nginx", "haproxy") if (size, n) in rows}
    peers = [n for n in ("nginx", "haproxy") if n in med]
    best = max(peers, key=lambda n: med[n][0]) if peers else None
    for name, (rps, p99) in med.items():
        note = ""
        if name == "dataplane" and best:
            note = f"   {rps / med[best][0]:.2f}x {best}, p99 {p99:.2f} vs {med[best][1]:.2f} ms"
        print(f"{size:>5} {name:>10} {rps:>9.0f} {p99:>8.2f}{note}")
PY
