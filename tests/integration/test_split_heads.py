"""Request and response heads that arrive in pieces, whatever ONEDOMAIN_SEGMENT says: each
test puts segmenting relays (1, 7, 1448 bytes and random) in front of the node and of the
demo backend itself. A head split across any number of reads parses the same as a head in
one read, up to the 64 KiB limit (max_header_bytes, default 65536); a request head over it
gets 431. The pieces are real: the relay sends each segment on its own (TCP_NODELAY) with
small delays between the first ones."""

import pytest

import dp_support as dp
import segment_relay

MODES = ["1", "7", "1448", "random"]


@pytest.fixture(scope="module")
def stacks():
    """A demo backend and a node, started once; relays per test mode."""
    import support
    started = []

    def start(args, **kwargs):
        p = support.Process(args, **kwargs)
        started.append(p)
        return p
    _, api = dp.start_demo_backend(start)
    relays = []
    ports = {}
    for mode in MODES:
        up = segment_relay.SegmentRelay(api, mode)
        relays.append(up)
        doc = dp.bootstrap([{"name": "agents",
                             "endpoints": [{"host": "127.0.0.1", "port": up.port}]}],
                           [dp.route("api", "/", "agents")])
        node = dp.start_dataplane(start, doc)
        front = segment_relay.SegmentRelay(node.direct_port(), mode)
        relays.append(front)
        ports[mode] = (front.port, node)
    yield ports
    for r in relays:
        r.stop()
    for p in started:
        p.stop()


def cookies(total):
    """Cookie header values adding up to about `total` bytes, as several Cookie lines."""
    lines, size, i = [], 0, 0
    while size < total:
        value = "; ".join(f"c{i}_{j}={'v' * 60}" for j in range(50))  # ~3.5 KB per line
        lines.append(("Cookie", value))
        size += len(value) + 10
        i += 1
    return lines


@pytest.mark.parametrize("mode", MODES)
def test_small_and_large_request_heads_in_pieces(stacks, mode):
    port, _ = stacks[mode]
    c = dp.Conn(port, timeout=30)
    try:
        for total in (0, 3000, 16000, 60000):
            headers = cookies(total) if total else []
            r = c.request("POST", f"/api/v1/echo?total={total}", headers=headers,
                          body=b"b" * 100)
            assert r.status == 200, (mode, total, r.status, r.body[:200])
            echo = r.json()
            sent = [v for n, v in echo["headers"] if n.lower() == "cookie"]
            assert sent == [v for _, v in headers], (mode, total)
            assert echo["body_bytes"] == 100
    finally:
        c.close()


@pytest.mark.parametrize("mode", MODES)
def test_request_head_over_64k_is_431(stacks, mode):
    port, node = stacks[mode]
    before = node.counter("onedomain_http_requests_total", code="431")
    c = dp.Conn(port, timeout=30)
    try:
        r = c.request("GET", "/api/v1/echo", headers=cookies(70000))
        assert r.status == 431, (mode, r.status, r.body[:200])
    finally:
        c.close()
    dp.wait_metric(node, "onedomain_http_requests_total", before + 1, code="431")


@pytest.mark.parametrize("mode", MODES)
def test_response_heads_in_pieces(stacks, mode):
    port, _ = stacks[mode]
    c = dp.Conn(port, timeout=30)
    try:
        for n in (1, 40, 400):  # Set-Cookie lines: ~20 bytes to ~8 KB of response head
            r = c.request("GET", f"/api/v1/set-cookies?n={n}")
            assert r.status == 200, (mode, n, r.status, r.body[:200])
            assert r.all("Set-Cookie") == [f"c{i}=v{i}; Path=/" for i in range(1, n + 1)], \
                (mode, n)
        # Chunked and Content-Length bodies behind split heads, on the same connection.
        r = c.request("GET", "/api/v1/bytes?n=5000&chunked=1")
        assert r.status == 200 and r.body == bytes(ord("a") + i % 26 for i in range(5000))
        r = c.request("GET", "/api/v1/bytes?n=70")
        assert r.status == 200 and len(r.body) == 70
    finally:
        c.close()
