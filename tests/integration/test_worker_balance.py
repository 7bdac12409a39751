"""Client connections spread evenly over the workers. Each worker listens on its own
SO_REUSEPORT socket and the kernel picks one by a hash of the connection's addresses, not
by load; a worker that accepts a connection while it carries more than one plus a sixteenth
of its load above the least-loaded worker hands it to that worker
(onedomain_downstream_handoffs_total), which serves it as its own."""

import socket

import dp_support as dp

WORKERS = 2
CONNECTIONS = 100


def per_worker(node):
    samples = node.metrics()
    return [dp.metric_value(samples, "onedomain_worker_connections_active", worker=i)
            for i in range(WORKERS)]


def exchange(s):
    """One GET on `s`, its response read whole (head, then Content-Length bytes)."""
    s.sendall(b"GET /api/v1/echo HTTP/1.1\r\nHost: balance.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, body
        body += chunk
    return head.split(b" ", 2)[1]


def margin(load):
    return 1 + int(load) // 16


def test_keep_alive_connections_spread_evenly_over_the_workers(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")])
    node = dp.start_dataplane(procs, doc, workers=WORKERS)
    socks = []
    try:
        for n in range(1, CONNECTIONS + 1):
            s = socket.create_connection((dp.LOOPBACK, node.port), timeout=10)
            socks.append(s)
            # A request answered on it: the connection is open, counted and served by
            # whichever worker holds it.
            assert exchange(s) == b"200", n
            dp.wait_until(lambda: sum(per_worker(node)) == n, timeout=10,
                          what=f"{n} connections counted")
            loads = per_worker(node)
            # The kernel's hash alone drifts like a random walk (100 connections: about
            # +-10 between two workers); handing off keeps it within the margin.
            assert max(loads) - min(loads) <= margin(max(loads)) + 1, (n, loads)
        assert node.counter("onedomain_downstream_handoffs_total") > 0
        # Every connection still works, wherever it ended up.
        for s in socks:
            assert exchange(s) == b"200"
    finally:
        for s in socks:
            s.close()
    dp.wait_until(lambda: sum(per_worker(node)) == 0, timeout=10, what="all closed")
