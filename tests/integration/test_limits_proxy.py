"""The real client address (issue 20): PROXY protocol v1 and v2 from a raw client (the backend
sees the carried address in X-Forwarded-For; a bad, missing or late header closes the
connection and is counted; a plain client on a PROXY listener is refused), and
site.trusted_proxies with forged X-Forwarded-For from trusted and untrusted peers."""

import json
import os
import tempfile

import dp_support as dp
import limits_support as ls


def start(procs, upstream, proxy_protocol=None, trusted=None, client_limits=None, extra=None,
          **listener):
    lst = {"name": "main", "address": dp.LOOPBACK, "port": 0, **listener}
    if proxy_protocol:
        lst["proxy_protocol"] = proxy_protocol
    doc = dp.bootstrap([dp.cluster("backend", [upstream.port])],
                       [dp.route("api", "/", "backend")], listeners=[lst], **(extra or {}))
    if trusted is not None:
        doc["snapshot"]["site"] = {"trusted_proxies": trusted}
    if client_limits:
        doc["snapshot"]["client_limits"] = client_limits
    return dp.start_dataplane(procs, doc)


def seen_xff(conn):
    r = conn.request("GET", "/who")
    assert r.status == 200, r.raw_head
    return r.header("X-Seen-XFF")


def test_proxy_v1_and_v2_carry_the_client_address(procs):
    up = ls.WsUpstream()
    try:
        node = start(procs, up, proxy_protocol="any")
        port = node.direct_port()
        c = ls.SrcConn(port, prefix=ls.proxy_v1("203.0.113.9"))
        # A forged X-Forwarded-For from the client is dropped: upstream sees the PROXY source.
        assert c.request("GET", "/a", headers=[("X-Forwarded-For", "6.6.6.6")]) \
            .header("X-Seen-XFF") == "203.0.113.9"
        assert seen_xff(c) == "203.0.113.9"  # keep-alive: decided once per connection
        c.close()
        tlvs = b"\x02\x00\x0bexample.com" + b"\x04\x00\x03abc"  # authority + noop: skipped
        c = ls.SrcConn(port, prefix=ls.proxy_v2("198.51.100.77", tlvs=tlvs))
        assert seen_xff(c) == "198.51.100.77"
        c.close()
        c = ls.SrcConn(port, prefix=ls.proxy_v2("2001:db8::42"))
        assert seen_xff(c) == "2001:db8::42"
        c.close()
        # LOCAL (a balancer's health check) keeps the socket peer.
        c = ls.SrcConn(port, src="127.0.0.9", prefix=ls.proxy_v2("", command=0))
        assert seen_xff(c) == "127.0.0.9"
        c.close()
        assert node.counter("onedomain_limit_rejections_total", reason="proxy_header") == 0
    finally:
        up.stop()


def test_bad_missing_or_late_proxy_header_closes(procs):
    up = ls.WsUpstream()
    try:
        node = start(procs, up, proxy_protocol="v2", proxy_header_timeout="1s")
        port = node.direct_port()
        refused = 0
        # A plain HTTP client on a PROXY listener: closed without an answer.
        c = ls.SrcConn(port)
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ls.closed_without_answer(c)
        refused += 1
        # v1 on a v2-only listener.
        c = ls.SrcConn(port, prefix=ls.proxy_v1("203.0.113.9") + b"GET / HTTP/1.1\r\n\r\n")
        assert ls.closed_without_answer(c)
        refused += 1
        # A v2 header with a broken version nibble.
        bad = bytearray(ls.proxy_v2("203.0.113.9"))
        bad[12] = 0x31
        c = ls.SrcConn(port, prefix=bytes(bad))
        assert ls.closed_without_answer(c)
        refused += 1
        # Half a header, then silence: closed at proxy_header_timeout.
        c = ls.SrcConn(port, prefix=ls.proxy_v2("203.0.113.9")[:20])
        assert ls.closed_without_answer(c)
        refused += 1
        dp.wait_metric(node, "onedomain_limit_rejections_total", refused, route="none",
                       reason="proxy_header")
        # A good client still gets through afterwards.
        c = ls.SrcConn(port, prefix=ls.proxy_v2("192.0.2.1"))
        assert seen_xff(c) == "192.0.2.1"
        c.close()
        assert up.accepts >= 1
    finally:
        up.stop()


def test_proxy_header_split_byte_by_byte(procs):
    """The header may come in pieces: nothing past it is consumed, the request still parses."""
    up = ls.WsUpstream()
    try:
        node = start(procs, up, proxy_protocol="any")
        for header in (ls.proxy_v1("203.0.113.5"), ls.proxy_v2("203.0.113.6", tlvs=b"\x04\x00\x01z")):
            c = ls.SrcConn(node.direct_port())
            data = header + b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
            for i in range(len(header) + 3):
                c.send(data[i:i + 1])
            c.send(data[len(header) + 3:])
            r = c.response()
            assert r.status == 200
            assert r.header("X-Seen-XFF") == ("203.0.113.5" if b"PROXY" in header else "203.0.113.6")
            c.close()
    finally:
        up.stop()


def test_trusted_and_untrusted_peers_with_forged_xff(procs):
    up = ls.WsUpstream()
    try:
        # 127.0.0.1 is the trusted balancer; 127.0.0.66 is an ordinary client.
        node = start(procs, up, trusted=["127.0.0.1/32", "10.0.0.0/8"],
                     client_limits={"max_connections_per_client": 1})
        port = node.direct_port()
        lb = ls.SrcConn(port, src="127.0.0.1")
        r = lb.request("GET", "/x", headers=[("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.1.1.1")])
        assert r.header("X-Seen-XFF") == "203.0.113.9"  # right to left past trusted hops
        # Decided once per connection: a later XFF on the same connection changes nothing.
        r = lb.request("GET", "/x", headers=[("X-Forwarded-For", "198.51.100.1")])
        assert r.header("X-Seen-XFF") == "203.0.113.9"
        # Untrusted peer: its forged X-Forwarded-For is not believed nor forwarded.
        evil = ls.SrcConn(port, src="127.0.0.66")
        r = evil.request("GET", "/x", headers=[("X-Forwarded-For", "203.0.113.9")])
        assert r.header("X-Seen-XFF") == "127.0.0.66"
        # The connection cap applies to the decided address: a second balancer connection
        # for the same client 203.0.113.9 is closed (the first is untouched) ...
        lb2 = ls.SrcConn(port, src="127.0.0.1")
        lb2.send(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
        assert ls.closed_without_answer(lb2)
        assert lb.request("GET", "/x").status == 200
        # ... while one for another client is served.
        lb3 = ls.SrcConn(port, src="127.0.0.1")
        r = lb3.request("GET", "/x", headers=[("X-Forwarded-For", "203.0.113.10")])
        assert r.header("X-Seen-XFF") == "203.0.113.10"
        assert node.counter("onedomain_limit_rejections_total", route="none",
                            reason="connections") == 1
        for c in (lb, lb3, evil):
            c.close()
    finally:
        up.stop()


def test_no_trust_configured_keeps_forwarded_hops(procs):
    """The default (no trusted_proxies, no PROXY): the client's hops, then the peer, as before."""
    up = ls.WsUpstream()
    try:
        node = start(procs, up)
        c = ls.SrcConn(node.direct_port(), src="127.0.0.7")
        r = c.request("GET", "/x", headers=[("X-Forwarded-For", "203.0.113.9")])
        assert r.header("X-Seen-XFF") == "203.0.113.9, 127.0.0.7"
        c.close()
    finally:
        up.stop()


def test_access_log_and_limits_use_the_decided_address(procs):
    """One address for everything: the access log's client, the request-rate bucket (a PROXY
    source throttled whatever socket it comes from) and X-Forwarded-For."""
    up = ls.WsUpstream()
    try:
        log_path = os.path.join(tempfile.mkdtemp(prefix="dp-limits-"), "access.log")
        node = start(procs, up, proxy_protocol="v1",
                     client_limits={"request_rate": {"per_second": 0.1, "burst": 2}},
                     extra={"access_log": {"enabled": True, "format": "json",
                                           "path": log_path}})
        port = node.direct_port()
        statuses = []
        for src in (ls.source(0), ls.source(1), ls.source(2)):  # three sockets, one client
            c = ls.SrcConn(port, src=src, prefix=ls.proxy_v1("203.0.113.50"))
            statuses.append(c.request("GET", "/x").status)
            c.close()
        assert statuses == [200, 200, 429], statuses
        c = ls.SrcConn(port, src=ls.source(0), prefix=ls.proxy_v1("203.0.113.51"))
        assert c.request("GET", "/x").status == 200  # another client, its own bucket
        c.close()

        def lines():
            try:
                with open(log_path) as f:
                    return [json.loads(line) for line in f if line.strip()]
            except FileNotFoundError:
                return []
        dp.wait_until(lambda: len(lines()) >= 4, 5, "four access log lines")
        assert [(x["client"], x["status"]) for x in lines()[:4]] == [
            ("203.0.113.50", 200), ("203.0.113.50", 200), ("203.0.113.50", 429),
            ("203.0.113.51", 200)]
        assert lines()[2]["error"] == "rate_limited"
    finally:
        up.stop()


def test_proxy_header_then_tls(procs, tmp_path):
    """On a TLS listener the PROXY header comes first, in clear; exactly its bytes are taken,
    so the ClientHello after it is untouched and the handshake succeeds."""
    import ssl

    from test_dataplane_tls import make_cert
    cert, key = make_cert(str(tmp_path), "server", "pp")
    up = ls.WsUpstream()
    try:
        node = start(procs, up, proxy_protocol="v2",
                     tls={"cert_file": cert, "key_file": key})
        ctx = ssl.create_default_context(cafile=cert)
        raw = ls.socket.create_connection((dp.LOOPBACK, node.direct_port()), timeout=10)
        raw.sendall(ls.proxy_v2("203.0.113.77"))
        conn = dp.Conn.__new__(dp.Conn)
        conn.sock, conn.buf = ctx.wrap_socket(raw, server_hostname="localhost"), b""
        r = conn.request("GET", "/x")
        assert r.status == 200
        assert r.header("X-Seen-XFF") == "203.0.113.77"
        conn.close()
    finally:
        up.stop()
