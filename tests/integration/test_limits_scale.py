"""A million distinct client addresses through PROXY v2 headers (issue 20): every connection
carries a new spoofed source, takes a connection count and a request-rate bucket, and the
node's RSS stays under a fixed ceiling — it must not grow with the number of addresses seen.
Slow by nature (a million TCP connections on loopback; several minutes on a busy machine):
ONEDOMAIN_LIMITS_ADDRESSES sets the count (default 1000000); the test fails if it cannot
finish within its time bound."""

import os
import selectors
import socket
import struct
import time

import dp_support as dp
import limits_support as ls

ADDRESSES = int(os.environ.get("ONEDOMAIN_LIMITS_ADDRESSES", "1000000"))
PARALLEL = 128
TIME_BOUND = 540.0  # seconds; ctest gives the file 600
# The node's memory may grow by at most this much over its warmed-up size while the addresses
# churn through its tables (the bucket table is 1.5 MiB per worker; the count table's pages
# are bounded by live connections, here at most PARALLEL).
CEILING_KIB = 48 * 1024
LINGER_RST = struct.pack("ii", 1, 0)


def v2_header(i):
    src = socket.inet_aton(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
    body = src + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 1024 + i % 60000, 443)
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(body)) + body


def drive(port, first, count, deadline):
    """Opens `count` connections (addresses first..first+count-1), PARALLEL at a time: PROXY v2
    header + one request, waits for the answer's first bytes, closes with RST (no TIME_WAIT)."""
    sel = selectors.DefaultSelector()
    next_i, done, answered = first, 0, 0
    end = first + count
    live = 0

    def open_one(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        s.bind((ls.source(i % 249), 0))
        s.setblocking(False)
        s.connect_ex((dp.LOOPBACK, port))
        sel.register(s, selectors.EVENT_WRITE, [i, False])

    while done < count:
        assert time.monotonic() < deadline, f"only {done} of {count} connections in time"
        while live < PARALLEL and next_i < end:
            open_one(next_i)
            next_i += 1
            live += 1
        for key, _ in sel.select(timeout=5):
            s, state = key.fileobj, key.data
            if not state[1]:
                try:
                    s.send(v2_header(state[0]) + b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
                except OSError:
                    pass
                state[1] = True
                sel.modify(s, selectors.EVENT_READ, state)
                continue
            try:
                if s.recv(4096).startswith(b"HTTP/1.1 "):
                    answered += 1
            except OSError:
                pass
            sel.unregister(s)
            s.close()
            live -= 1
            done += 1
    sel.close()
    return answered


def test_million_spoofed_addresses_keep_rss_bounded(procs):
    dead = dp.free_port()  # the request's upstream refuses at once: no backend process needed
    lst = {"name": "main", "address": dp.LOOPBACK, "port": 0, "proxy_protocol": "v2"}
    doc = dp.bootstrap([dp.cluster("backend", [dead])], [dp.route("api", "/", "backend")],
                       listeners=[lst])
    doc["snapshot"]["client_limits"] = {"max_connections_per_client": 2,
                                        "request_rate": {"per_second": 1, "burst": 2},
                                        "table_entries": 65536}
    node = dp.start_dataplane(procs, doc, workers=2)
    port = node.direct_port()
    deadline = time.monotonic() + TIME_BOUND
    t0 = time.monotonic()
    warm = min(50000, ADDRESSES)
    assert drive(port, 0, warm, deadline) == warm
    base = node.rss_kib()
    peak, done, step = base, warm, 50000
    while done < ADDRESSES:
        n = min(step, ADDRESSES - done)
        assert drive(port, done, n, deadline) == n
        done += n
        peak = max(peak, node.rss_kib())
        assert peak - base < CEILING_KIB, (done, base, peak)
    elapsed = time.monotonic() - t0
    print(f"{done} distinct addresses via PROXY v2 in {elapsed:.0f} s "
          f"({done / elapsed:.0f}/s): node RSS {base} KiB after {warm}, peak {peak} KiB")
    assert node.counter("onedomain_limit_rejections_total", reason="proxy_header") == 0
    assert node.counter("onedomain_limit_rejections_total", reason="connections") == 0
