# Shared by the HTTP benchmarks (sourced): a work directory whose processes are stopped by
# PID on exit, free loopback ports, waiting for a listener, a process's CPU time, and the
# configs of the backend, the data plane and HAProxy (the same in every benchmark).
# Sets: work (temp dir, readable by nginx workers; removed on exit), pids (append every process
# started).

work="$(mktemp -d /tmp/onedomain-bench.XXXXXX)"
chmod 755 "$work"  # nginx workers run as nobody and must read the files
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  exit 1
}

# The machine's idle and iowait time so far (clock ticks, all cores).
idle_ticks() {
  awk '/^cpu / {print $5 + $6}' /proc/stat
}

# CPU time (clock ticks) used so far by a process and its children (nginx's workers).
cpu_ticks() {  # $1: pid
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    if [ -r "/proc/$pid/stat" ]; then
      # Fields 14 and 15: utime and stime (after the parenthesised command name).
      total=$(( total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ))
    fi
  done
  echo "$total"
}

# A self-signed certificate for 127.0.0.1 and localhost: $work/cert.pem, $work/key.pem.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
}

# Starts the backend (write_backend_conf) serving /small, /4k and /64k and waits for it.
# Sets backend_port and backend_pid (appended to pids).
start_file_backend() {
  mkdir -p "$work/www"
  printf 'hello world\n' > "$work/www/small"
  head -c 4096 /dev/zero | tr '\0' 'a' > "$work/www/4k"
  head -c 65536 /dev/zero | tr '\0' 'b' > "$work/www/64k"
  backend_port="$(free_port)"
  write_backend_conf "$work/backend.conf" "$backend_port"
  nginx -c "$work/backend.conf" -p "$work" &
  backend_pid=$!
  pids+=("$backend_pid")
  wait_port "$backend_port"
}

# The backend: nginx, one worker. BACKEND=return (the default) answers /small, /4k and /64k
# with fixed bodies from its config, as the independent benchmark of issue 21 does ("an
# nginx backend returning a fixed body": 12 us of backend CPU per small request here);
# BACKEND=file serves the same bytes from $work/www with sendfile (open, fstat, sendfile and
# close per request: 22-32 us, so the backend rather than the proxy sets the pace; the bench
# used it until 2026-12-05). Same bodies and Content-Type either way.
write_backend_conf() {  # $1 file, $2 port
  local body=""
  case "${BACKEND:-return}" in
    return)
      # A config token holds at most 4 KiB: the bodies are built from a 1 KiB variable.
      local kib
      kib="$(head -c 1024 /dev/zero | tr '\0' 'a')"
      body="location = /small { return 200 \"hello world\\n\"; }
    location = /4k { set \$k \"$kib\"; return 200 \"\$k\$k\$k\$k\"; }
    location = /64k {
      set \$k \"$(printf '%s' "$kib" | tr a b)\";
      set \$s \"\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\$k\";
      return 200 \"\$s\$s\$s\$s\";
    }"
      ;;
    file) ;;
    *) echo "bench: BACKEND must be return or file, not '$BACKEND'" >&2; exit 2 ;;
  esac
  cat > "$1" <<CONF
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$2 backlog=4096;
    root $work/www;
    $body
  }
}
CONF
}

# The data plane in front of the backend, everything routed to it. $5 = default: the node's
# defaults (the pool follows demand, no cap); tuned: pool.max_idle 256 (what the table used
# before the pool followed demand; now the same up to 256 connections per worker).
write_dp_yaml() {  # $1 file, $2 workers, $3 port, $4 backend port, $5 default|tuned
  local pool=", pool: { max_idle: 256 }"
  [ "${5:-tuned}" = default ] && pool=""
  # DATAPLANE_LIMITS=1 configures every client limit (issue 20) far above what the bench
  # reaches: their cost when none is hit.
  local limits=""
  [ "${DATAPLANE_LIMITS:-0}" = 1 ] && limits="$(client_limits_yaml)"
  cat > "$1" <<CONF
workers: $2
admin: { address: 127.0.0.1, port: 0 }
drain: { delay: 0s, timeout: 5s }
snapshot:
  listeners: [{ name: main, address: 127.0.0.1, port: $3 }]
  clusters: [{ name: backend, endpoints: [{ host: 127.0.0.1, port: $4 }]$pool }]
  routes: [{ name: all, match: { prefix: / }, cluster: backend }]
$limits
CONF
}

# Every client limit, none reachable by a bench (two spaces in: under `snapshot:`).
client_limits_yaml() {
  cat <<CONF
  client_limits:
    max_connections_per_client: 1000000
    max_websockets_per_client: 1000000
    max_websockets_per_cookie: 1000000
    websocket_cookie: sess
    upgrade_rate: { per_second: 1000000, burst: 1000000 }
    request_rate: { per_second: 1000000, burst: 1000000 }
  websocket_policy: { max_lifetime: 86400s, max_buffered_bytes: 65536 }
CONF
}

# HAProxy doing the data plane's work: keep-alive both ways, X-Forwarded-For/-Proto/-Host.
write_haproxy_cfg() {  # $1 file, $2 threads, $3 port, $4 backend port
  cat > "$1" <<CONF
global
  nbthread $2
  maxconn 9000  # the open-file limit here is 20000 per process (two fds per proxied connection)
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$3
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  server s1 127.0.0.1:$4
CONF
}
