#!/usr/bin/env bash
# User-space instructions per proxied request, counted rather than timed: the data plane (one
# worker, epoll loop, default config) runs under callgrind in front of an nginx backend, a
# warm-up is discarded, then h2load sends N small GETs and the node's instruction count is
# divided by N. Counts do not move with the machine's load the way req/s does, so this is how
# a change to the request path is measured before the timed benches (bench/h2, bench/http).
#
#   bench/http/instructions.sh [h2 | h1] [N]
#
#   h2  (default) HTTP/2 over TLS: h2load -c10 -m10 (the 10 TLS handshakes are included)
#   h1  HTTP/1.1 keep-alive over plain TCP: h2load --h1 -c10
#   N   requests counted (default 5000)
#
# Environment: BUILD_DIR (default build), SIZE (small | 4k, default small), OUT (also keep
# the callgrind profile at this path, for callgrind_annotate). Needs valgrind, nginx and
# h2load (scripts/install-deps.sh --with-bench). Prints "instructions per request: X".
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
mode="${1:-h2}"
n="${2:-5000}"
size="${SIZE:-small}"
build="${BUILD_DIR:-$repo/build}"
dataplane="$build/dataplane/dataplane"
case "$mode" in h1|h2) ;; *) echo "usage: $0 [h2 | h1] [N]" >&2; exit 2 ;; esac
for tool in valgrind callgrind_control callgrind_annotate nginx h2load; do
  command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null || {
    echo "bench: $tool is not installed (scripts/install-deps.sh --with-bench)" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin"
[ -x "$dataplane" ] || { echo "bench: $dataplane is not built" >&2; exit 1; }
. "$repo/bench/http/lib.sh"

mkdir -p "$work/www"
printf 'hello world\n' > "$work/www/small"
head -c 4096 /dev/zero | tr '\0' 'a' > "$work/www/4k"
bp="$(free_port)"
write_backend_conf "$work/backend.conf" "$bp"
nginx -c "$work/backend.conf" -p "$work" & pids+=($!)
wait_port "$bp"

dp="$(free_port)"
tls=""
scheme=http
if [ "$mode" = h2 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  tls=", tls: { cert_file: $work/cert.pem, key_file: $work/key.pem }"
  scheme=https
fi
cat > "$work/dp.yaml" <<CONF
workers: 1
admin: { address: 127.0.0.1, port: 0 }
drain: { delay: 0s, timeout: 5s }
snapshot:
  listeners:
    - { name: main, address: 127.0.0.1, port: $dp $tls }
  clusters: [{ name: backend, endpoints: [{ host: 127.0.0.1, port: $bp }] }]
  routes: [{ name: all, match: { prefix: / }, cluster: backend }]
CONF
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
  "$dataplane" --config "$work/dp.yaml" --log-level warn --io epoll > "$work/dp.log" 2>&1 &
vg=$!
pids+=($vg)
# Under valgrind the node takes seconds to start.
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$dp") 2>/dev/null && break
  kill -0 "$vg" 2>/dev/null || { echo "bench: the data plane exited:"; cat "$work/dp.log"; exit 1; } >&2
  sleep 0.1
done

url="$scheme://127.0.0.1:$dp/$size"
args=(-c10 -m10)
[ "$mode" = h1 ] && args=(--h1 -c10)
run() {  # $1: requests; fails unless every one succeeded
  local out
  out=$(h2load "${args[@]}" -n"$1" "$url")
  grep -q "requests: $1 total, $1 started, $1 done, $1 succeeded" <<<"$out" || {
    echo "bench: h2load did not get $1 answers:"; grep "requests:" <<<"$out"; exit 1; } >&2
}
run 1000                           # warm-up: pools, caches, first allocations
callgrind_control -z "$vg" >/dev/null 2>&1
run "$n"
callgrind_control -d "$vg" >/dev/null 2>&1
# The dump is written as cg.out.<pid>.1 (or cg.out.1): wait until it is complete.
dump=""
for _ in $(seq 1 300); do
  dump=$(ls "$work"/cg.out*.1 2>/dev/null | head -1 || true)
  [ -n "$dump" ] && grep -q '^totals:' "$dump" 2>/dev/null && break
  sleep 0.1
done
[ -n "$dump" ] || { echo "bench: callgrind wrote no dump" >&2; exit 1; }
total=$(awk '/^totals:/{print $2; exit}' "$dump")
[ -n "${OUT:-}" ] && cp "$dump" "$OUT"
echo "$mode $size, $n requests: $total instructions in the data plane"
echo "instructions per request: $(( total / n ))"
