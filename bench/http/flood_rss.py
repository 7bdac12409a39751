#!/usr/bin/python3
"""Memory after connection floods: the data plane's VmRSS before, at the peak of, and after
each of F floods of N client connections that each send half a request head (so the node
holds a read buffer per connection), then all close. With malloc_trim after a flood the RSS
returns near its starting point; without it glibc keeps the freed heap (448 MB after six
floods of 18,000 was measured before the fix).

Starts one data plane (one worker, static config, an unreachable upstream: no request
completes) on 127.0.0.1 ephemeral ports; stops only what it started.

Usage: bench/http/flood_rss.py [N] [F]     (default 9000 connections, 6 floods; env BUILD=build)
The node's default connection cap is (RLIMIT_NOFILE - 256) / 2 per worker; N above it
queues in the kernel and is not held by the node.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
FLOODS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
BUILD = os.environ.get("BUILD", "build")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(admin, name):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    sys.exit(f"flood_rss: timed out waiting for {what}")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="flood-rss-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    doc = {"admin": {"address": "127.0.0.1", "port": 0},
           "snapshot": {"listeners": [{"name": "main", "address": "127.0.0.1", "port": 0}],
                        "clusters": [{"name": "c", "endpoints": [{"host": "127.0.0.1",
                                                                   "port": dead_port}]}],
                        "routes": [{"name": "r", "match": {"prefix": "/"}, "cluster": "c"}]}}
    cfg = os.path.join(work, "dp.yaml")
    with open(cfg, "w") as f:
        json.dump(doc, f)
    ports = os.path.join(work, "ports")
    proc = subprocess.Popen([f"{BUILD}/dataplane/dataplane", "--config", cfg, "--workers", "1",
                             "--port-file", ports], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait(lambda: os.path.exists(ports) and "listener.main" in open(ports).read(), 10,
             "the port file")
        p = json.load(open(ports))
        port, admin = p["listener.main"], p["admin"]
        base = rss_mib(proc.pid)
        print(f"start: {base:.1f} MiB")
        for flood in range(1, FLOODS + 1):
            socks = []
            for _ in range(N):
                c = socket.create_connection(("127.0.0.1", port), timeout=10)
                c.sendall(b"GET /x HTTP/1.1\r\nHost: flood\r\nCookie: " + b"c" * 2000)
                socks.append(c)
            wait(lambda: metric(admin, "onedomain_downstream_connections_active") >= min(N, 9000),
                 60, "the node to hold the flood")
            peak = rss_mib(proc.pid)
            for c in socks:
                c.close()
            wait(lambda: metric(admin, "onedomain_downstream_connections_active") == 0, 60,
                 "the flood to be gone")
            # The node's housekeeping runs every 2 s: give it two turns.
            time.sleep(4.5)
            print(f"flood {flood}: peak {peak:.1f} MiB, after {rss_mib(proc.pid):.1f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
