# Shared by the HTTP benchmarks (sourced): a work directory whose processes are stopped by
# PID on exit, free loopback ports, waiting for a listener, and a process's CPU time.
# Sets: work (temp dir, readable by nginx workers), pids (append every process started).

work="$(mktemp -d /tmp/onedomain-bench.XXXXXX)"
chmod 755 "$work"  # nginx workers run as nobody and must read the files
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
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
