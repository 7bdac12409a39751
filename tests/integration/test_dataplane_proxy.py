"""The data plane as an HTTP/1.1 reverse proxy in front of the demo backend: methods, bodies
both ways (Content-Length and chunked), cookies byte for byte, X-Forwarded-*, hop-by-hop
stripping, connection reuse, Expect: 100-continue, HTTP/1.0 clients, pipelining."""

import json

import pytest

import dp_support as dp


@pytest.fixture
def stack(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])],
                       [dp.route("api", "/api/v1/", "agents"), dp.route("root", "/", "agents")])
    return dp.start_dataplane(procs, doc), api


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_reach_the_backend(stack, method):
    plane, _ = stack
    body = b"payload-" + method.encode() if method in ("POST", "PUT", "PATCH") else b""
    r = dp.request(plane.port, method, "/api/v1/echo?x=1", body=body)
    assert r.status == 200, r.body
    echo = r.json()
    assert echo["method"] == method
    assert echo["target"] == "/api/v1/echo?x=1"
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == dp.sha256(body)


def test_head_has_no_body_but_keeps_content_length(stack):
    plane, _ = stack
    c = dp.Conn(plane.port)
    r = c.request("HEAD", "/api/v1/bytes?n=1000")
    assert r.status == 200
    assert r.header("Content-Length") == "1000"
    assert r.body == b""
    # The connection is still in sync: the next response is the next request's.
    r2 = c.request("GET", "/api/v1/bytes?n=10")
    assert r2.body == b"abcdefghij"
    c.close()


def test_chunked_download_and_upload(stack):
    plane, _ = stack
    c = dp.Conn(plane.port)
    r = c.request("GET", "/api/v1/bytes?n=300000&chunked=1")
    assert r.status == 200
    assert r.header("Transfer-Encoding") == "chunked"
    expected = bytes(ord("a") + i % 26 for i in range(300000))
    assert r.body == expected
    chunks = [b"x" * 7000, b"y" * 100000, b"z"]
    payload = b"".join(b"%x\r\n%s\r\n" % (len(ch), ch) for ch in chunks) + b"0\r\n\r\n"
    c.send(b"POST /api/v1/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(payload)
    r = c.response()
    assert r.status == 200
    echo = r.json()
    assert echo["body_bytes"] == sum(map(len, chunks))
    assert echo["body_sha256"] == dp.sha256(b"".join(chunks))
    c.close()


def test_cookies_and_set_cookies_byte_for_byte_in_order(stack):
    plane, api = stack
    cookie_a = 'sess_0123=abcdef; theme="dark mode"; x=1'
    cookie_b = "later=2;y=3"
    r = dp.request(plane.port, "GET", "/api/v1/echo",
                   headers=[("Cookie", cookie_a), ("Accept", "*/*"), ("Cookie", cookie_b)])
    sent = [v for n, v in r.json()["headers"] if n.lower() == "cookie"]
    assert sent == [cookie_a, cookie_b]
    direct = dp.request(api, "GET", "/api/v1/set-cookies?n=40")
    proxied = dp.request(plane.port, "GET", "/api/v1/set-cookies?n=40")
    assert len(direct.all("Set-Cookie")) == 40
    assert proxied.all("Set-Cookie") == direct.all("Set-Cookie")
    # Byte for byte on the wire, in order: the Set-Cookie lines are identical.
    def lines(r):
        return [l for l in r.raw_head.split(b"\r\n") if l.lower().startswith(b"set-cookie:")]
    assert lines(proxied) == lines(direct)


def test_forwarded_headers_and_hop_by_hop(stack):
    plane, _ = stack
    r = dp.request(plane.port, "GET", "/api/v1/echo", host="amir.hirecj.ai", headers=[
        ("Connection", "keep-alive, X-Private"),
        ("Keep-Alive", "timeout=5"),
        ("X-Private", "secret"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "ftp"),
        ("X-Forwarded-Host", "evil.example"),
    ])
    headers = r.json()["headers"]
    names = [n.lower() for n, _ in headers]
    for gone in ("connection", "keep-alive", "x-private", "proxy-authorization", "te", "upgrade"):
        assert gone not in names, headers
    values = {n.lower(): v for n, v in headers}
    assert values["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert values["x-forwarded-proto"] == "http"
    assert values["x-forwarded-host"] == "amir.hirecj.ai"
    assert values["host"] == "amir.hirecj.ai"
    assert names.count("x-forwarded-for") == 1


def test_upstream_connections_are_reused(stack):
    plane, api = stack
    before = json.loads(dp.request(api, "GET", "/api/v1/stats").body)["accepts"]
    for _ in range(3):
        c = dp.Conn(plane.port)
        for _ in range(20):
            assert c.request("GET", "/api/v1/echo").status == 200
        c.close()
    after = json.loads(dp.request(api, "GET", "/api/v1/stats").body)["accepts"]
    # 60 proxied requests over one pooled upstream connection (+1 for our stats call).
    assert after - before <= 2, (before, after)
    assert plane.counter("onedomain_upstream_connections_active", cluster="agents") >= 1


def test_expect_100_continue(stack):
    plane, _ = stack
    c = dp.Conn(plane.port)
    body = b"q" * 5000
    c.send(b"PUT /api/v1/upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
           b"Content-Length: 5000\r\n\r\n")
    status, _, _, _ = c.read_head()
    assert status == 100
    c.send(body)
    r = c.response()
    assert r.status == 200
    assert r.json()["body_sha256"] == dp.sha256(body)
    assert "expect" not in [n.lower() for n, _ in r.json()["headers"]]
    c.close()


def test_http10_client_gets_a_dechunked_body_and_close(stack):
    plane, _ = stack
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/bytes?n=70000&chunked=1 HTTP/1.0\r\n\r\n")
    status, _, headers, _ = c.read_head()
    assert status == 200
    names = [n.lower() for n, _ in headers]
    assert "transfer-encoding" not in names
    body = c.read_to_eof()
    assert body == bytes(ord("a") + i % 26 for i in range(70000))
    c.close()


def test_pipelined_requests_are_answered_in_order(stack):
    plane, _ = stack
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/bytes?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
           b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
           b"GET /api/v1/bytes?n=5 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert c.response().body == b"abc"
    assert c.response().json()["body_bytes"] == 2
    assert c.response().body == b"abcde"
    c.close()


def test_success_is_counted_per_route(stack):
    plane, _ = stack
    before = plane.counter("onedomain_http_requests_total", route="api", code="200")
    assert dp.request(plane.port, "GET", "/api/v1/echo").status == 200
    dp.wait_metric(plane, "onedomain_http_requests_total", before + 1, route="api", code="200")
    assert plane.counter("onedomain_http_request_duration_seconds_count", route="api") >= 1
    assert plane.counter("onedomain_downstream_connections_total") >= 1
