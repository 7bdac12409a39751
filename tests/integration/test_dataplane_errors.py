"""Every answer the proxy makes itself: each status provoked on a real process, with a clear
body, the right connection handling, and its onedomain_http_requests_total increment."""

import socket
import threading
import time

import pytest

import dp_support as dp


def never_answer(index, method, path, headers, body, sock):
    time.sleep(5)  # longer than the cluster's response_timeout
    return None


def reset_before_answer(index, method, path, headers, body, sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return None  # closing with linger 0 sends RST


def half_then_close(index, method, path, headers, body, sock):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
    return None


@pytest.fixture
def plane(procs):
    slow = dp.PyUpstream(never_answer)
    reset = dp.PyUpstream(reset_before_answer)
    partial = dp.PyUpstream(half_then_close)
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap(
        [dp.cluster("agents", [api]),
         dp.cluster("refused", [dp.free_port()], outlier_detection={"consecutive_failures": 0}),
         dp.cluster("slow", [slow.port], response_timeout="500ms"),
         dp.cluster("reset", [reset.port], outlier_detection={"consecutive_failures": 0}),
         dp.cluster("partial", [partial.port]),
         dp.cluster("unresolvable", [80]),
         # The panic threshold (default 50 %) never ejects a cluster's only endpoint; 0 turns
         # it off, so this one can be ejected and answer 503.
         dp.cluster("ejects", [dp.free_port()],
                    outlier_detection={"consecutive_failures": 1, "ejection_time": "60s",
                                       "panic_threshold_percent": 0})],
        [dp.route("small", "/small/", "agents", max_body_bytes=1000),
         dp.route("refused", "/refused/", "refused"),
         dp.route("slow", "/slow/", "slow"),
         dp.route("reset", "/reset/", "reset"),
         dp.route("partial", "/partial/", "partial"),
         dp.route("nohost", "/nohost/", "unresolvable"),
         dp.route("ejects", "/ejects/", "ejects"),
         dp.route("api", "/api/v1/", "agents")],
        listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                    "limits": {"header_timeout": "1s", "max_header_bytes": 2048}}])
    doc["snapshot"]["clusters"][5]["endpoints"] = [{"host": "nonexistent.invalid", "port": 80}]
    yield dp.start_dataplane(procs, doc)
    for u in (slow, reset, partial):
        u.stop()


def assert_counted(plane, before, route, code):
    dp.wait_metric(plane, "onedomain_http_requests_total", before + 1, route=route, code=code)


def count(plane, route, code):
    return plane.counter("onedomain_http_requests_total", route=route, code=code)


SMUGGLING = [
    ("cl-and-te", b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-and-cl", b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 4\r\n\r\n0\r\n\r\n"),
    ("two-lengths", b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                    b"Content-Length: 5\r\n\r\nabcde"),
    ("te-gzip", b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("obs-fold", b"GET /api/v1/echo HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"),
    ("bad-name", b"GET /api/v1/echo HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n"),
    ("no-host", b"GET /api/v1/echo HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    ("bad-chunk", b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"zz\r\n"),
]


@pytest.mark.parametrize("name,raw", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_400_for_malformed_and_ambiguous_requests(plane, name, raw):
    route = "api" if name == "bad-chunk" else "none"
    before = count(plane, route, "400")
    c = dp.Conn(plane.port)
    c.send(raw)
    r = c.response()
    assert r.status == 400, (name, r.body)
    assert r.body.startswith(b"400 Bad Request: "), r.body
    assert r.header("Connection") == "close"
    assert c.closed_by_peer()
    c.close()
    assert_counted(plane, before, route, "400")


def test_404_without_route_keeps_the_connection(procs):
    _, api = dp.start_demo_backend(procs)
    plane = dp.start_dataplane(procs, dp.bootstrap([dp.cluster("agents", [api])],
                                                   [dp.route("api", "/api/v1/", "agents")]))
    before = count(plane, "none", "404")
    c = dp.Conn(plane.port)
    r = c.request("GET", "/nothing/here")
    assert r.status == 404
    assert b"no route matches this request" in r.body
    assert c.request("GET", "/api/v1/echo").status == 200  # same connection
    c.close()
    assert_counted(plane, before, "none", "404")


def test_408_on_a_slow_header(plane):
    before = count(plane, "none", "408")
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/echo HTTP/1.1\r\nHost: t\r\n")  # never finished
    start = time.monotonic()
    r = c.response()
    assert r.status == 408
    assert b"not received in time" in r.body
    assert 0.8 <= time.monotonic() - start < 5
    assert c.closed_by_peer()
    c.close()
    assert_counted(plane, before, "none", "408")


def test_413_for_declared_and_chunked_bodies(plane):
    before = count(plane, "small", "413")
    c = dp.Conn(plane.port)
    c.send(b"POST /small/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
    r = c.response()
    assert r.status == 413
    assert b"too large" in r.body
    c.close()
    c = dp.Conn(plane.port)
    c.send(b"POST /small/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(b"400\r\n" + b"a" * 1024 + b"\r\n")  # 1024 > 1000
    r = c.response()
    assert r.status == 413
    c.close()
    assert_counted(plane, before + 1, "small", "413")


def test_431_for_oversized_headers(plane):
    before = count(plane, "none", "431")
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 4000 + b"\r\n\r\n")
    r = c.response()
    assert r.status == 431
    assert b"too large" in r.body
    c.close()
    assert_counted(plane, before, "none", "431")


def test_502_when_the_upstream_refuses(plane):
    before = count(plane, "refused", "502")
    r = dp.request(plane.port, "GET", "/refused/x")
    assert r.status == 502
    assert b"upstream refused the connection" in r.body
    assert_counted(plane, before, "refused", "502")
    assert plane.counter("onedomain_upstream_connect_failures_total", cluster="refused") >= 1


def test_502_when_the_upstream_resets(plane):
    before = count(plane, "reset", "502")
    r = dp.request(plane.port, "GET", "/reset/x")
    assert r.status == 502
    assert b"closed the connection before answering" in r.body
    assert_counted(plane, before, "reset", "502")


def test_truncated_upstream_body_closes_the_client(plane):
    c = dp.Conn(plane.port)
    c.send(b"GET /partial/x HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, headers, _ = c.read_head()
    assert status == 200  # the head was relayed before the upstream died
    data = c.read_to_eof()  # then the connection closes: the client sees a short body
    assert data == b"only-part"
    c.close()


def test_503_without_a_healthy_endpoint(plane):
    before = count(plane, "nohost", "503")
    r = dp.request(plane.port, "GET", "/nohost/x")
    assert r.status == 503
    assert b"no healthy upstream endpoint" in r.body
    assert_counted(plane, before, "nohost", "503")
    # An endpoint ejected by outlier detection: first a 502, then 503 while ejected.
    assert dp.request(plane.port, "GET", "/ejects/x").status == 502
    assert dp.request(plane.port, "GET", "/ejects/x").status == 503
    assert plane.counter("onedomain_upstream_ejections_total", cluster="ejects") >= 1


def test_504_when_the_upstream_does_not_answer(plane):
    before = count(plane, "slow", "504")
    start = time.monotonic()
    r = dp.request(plane.port, "GET", "/slow/x")
    assert r.status == 504
    assert b"did not answer in time" in r.body
    assert 0.4 <= time.monotonic() - start < 3
    assert_counted(plane, before, "slow", "504")


def test_plain_errors_never_leak_request_data(plane):
    r = dp.request(plane.port, "GET", "/nope-<script>")
    assert r.status == 404
    assert b"<script>" not in r.body
    assert r.header("Content-Type").startswith("text/plain")


def test_concurrent_errors_do_not_disturb_good_requests(plane):
    results = []

    def worker():
        for _ in range(20):
            results.append(dp.request(plane.port, "GET", "/api/v1/echo").status)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(10):
        assert dp.request(plane.port, "GET", "/refused/x").status == 502
    for t in threads:
        t.join(timeout=30)
    assert results == [200] * 80
