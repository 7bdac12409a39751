#!/usr/bin/env bash
# A/B of two data-plane builds: both run side by side (default config, the same backend),
# and interleaved rounds measure each with the same load; prints the median req/s, CPU
# microseconds per request and p99 of each, and B's ratios to A. For telling whether a
# change to the node helps, on a machine whose speed drifts between runs (compare within one
# run only). Not a test.
#
# Usage: A=path/to/old/dataplane B=path/to/new/dataplane bench/http/ab.sh
#   env: PROTO=h1 (wrk on a plain listener) | h2 (h2load -c100 -m10 over TLS), WORKERS=1,
#        SIZES="small 4k" (small, 4k, 64k), ROUNDS=5, DURATION=4 (h1, seconds),
#        CONNECTIONS=50 (h1), REQUESTS=60000 (h2)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$PATH:/usr/sbin"
a_bin="${A:?A=old dataplane binary}"
b_bin="${B:?B=new dataplane binary}"
proto="${PROTO:-h1}"
sizes="${SIZES:-small 4k}"
rounds="${ROUNDS:-5}"
requests="${REQUESTS:-60000}"
# shellcheck source=bench/http/lib.sh
. "$repo/bench/http/lib.sh"

make_cert
start_file_backend

start() {  # $1 binary, $2 name; prints "tls_port plain_port pid"
  local tls plain
  tls="$(free_port)"
  plain="$(free_port)"
  cat > "$work/$2.yaml" <<CONF
workers: ${WORKERS:-1}
admin: { address: 127.0.0.1, port: 0 }
drain: { delay: 0s, timeout: 5s }
snapshot:
  listeners:
    - { name: main, address: 127.0.0.1, port: $tls,
        tls: { cert_file: $work/cert.pem, key_file: $work/key.pem } }
    - { name: plain, address: 127.0.0.1, port: $plain }
  clusters: [{ name: backend, endpoints: [{ host: 127.0.0.1, port: $backend_port }] }]
  routes: [{ name: all, match: { prefix: / }, cluster: backend }]
CONF
  "$1" --config "$work/$2.yaml" --log-level warn > "$work/$2.log" 2>&1 &
  echo "$tls $plain $!"
}
read -r a_tls a_plain a_pid < <(start "$a_bin" a)
pids+=("$a_pid")
read -r b_tls b_plain b_pid < <(start "$b_bin" b)
pids+=("$b_pid")
for p in "$a_tls" "$a_plain" "$b_tls" "$b_plain"; do wait_port "$p"; done

load() {  # $1 tls port, $2 plain port, $3 size
  if [ "$proto" = h2 ]; then
    h2load -c100 -m10 -n"$requests" "https://127.0.0.1:$1/$3" 2>&1
  else
    wrk --latency -t1 -c"${CONNECTIONS:-50}" -d"${DURATION:-4}s" "http://127.0.0.1:$2/$3" 2>&1
  fi
}
for s in $sizes; do  # warm-up: connections pooled, pages touched
  load "$a_tls" "$a_plain" "$s" > /dev/null
  load "$b_tls" "$b_plain" "$s" > /dev/null
done
: > "$work/results"
for r in $(seq 1 "$rounds"); do
  for s in $sizes; do
    order="a b"
    if [ $(((r + ${#s}) % 2)) = 1 ]; then order="b a"; fi
    for x in $order; do
      if [ "$x" = a ]; then tls=$a_tls plain=$a_plain pid=$a_pid; else tls=$b_tls plain=$b_plain pid=$b_pid; fi
      c0="$(cpu_ticks "$pid")"
      out="$(load "$tls" "$plain" "$s")"
      c1="$(cpu_ticks "$pid")"
      if [ "$proto" = h2 ]; then
        rps="$(echo "$out" | sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')"
        reqs="$requests"
        p99=-1  # h2load prints no percentiles (bench/h2/run.sh has them, from its log)
      else
        rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
        reqs="$(echo "$out" | awk '/requests in/ {print $1}')"
        p99="$(echo "$out" | awk '$1 == "99%" {v = $2; m = 1
          if (v ~ /ms$/) { sub("ms", "", v) } else if (v ~ /us$/) { sub("us", "", v); m = 0.001 }
          else if (v ~ /s$/) { sub("s", "", v); m = 1000 }
          print v * m}')"
      fi
      echo "$s $x $rps $(((c1 - c0) * 1000000 / reqs)) $p99" >> "$work/results"
    done
  done
done
echo "$proto, ${WORKERS:-1} worker(s), median of $rounds interleaved rounds; cpu = the node's CPU time per request (clock ticks: coarse)"
/usr/bin/python3 - "$work/results" <<'PY'
import statistics as st
import sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    size, which, rps, cpu, p99 = line.split()
    runs[(size, which)].append((float(rps), int(cpu) / 100, float(p99)))
for size in dict.fromkeys(k[0] for k in runs):
    a, b = runs[(size, "a")], runs[(size, "b")]
    med = lambda xs, i: st.median(x[i] for x in xs)
    p99 = lambda xs: f"{med(xs, 2):.2f} ms" if med(xs, 2) >= 0 else "n/a"
    print(f"{size:>6}: A {med(a, 0):8.0f} req/s {med(a, 1):5.1f} us p99 {p99(a)} | "
          f"B {med(b, 0):8.0f} req/s {med(b, 1):5.1f} us p99 {p99(b)} | "
          f"B/A req/s {med(b, 0) / med(a, 0):.3f} cpu {med(b, 1) / med(a, 1):.3f}")
    print("        req/s A:", [round(x[0]) for x in a], " B:", [round(x[0]) for x in b])
PY
