"""Real networks, real backends and hostile peers (issue #15): heads split across reads,
upstream heads over 16 KiB, 5xx answers that must not eject the only endpoint, pooled
connections the backend closed or wrote into while idle, prompt TLS closes, bytes and trailers
a strict parser refuses, dot-segments, invalid Host, absolute-form targets, invalid chunked
responses, endless 100 Continue, slow request bodies, a second node on the same port, the
malformed-upgrade label, TLS cipher defaults and running out of descriptors."""

import os
import resource
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

import dp_support as dp
import support


def plane_for(procs, ports, **cluster_extra):
    return dp.start_dataplane(procs, dp.bootstrap(
        [dp.cluster("agents", ports, **cluster_extra)],
        [dp.route("ws", "/ws/", "agents", websocket=True),
         dp.route("api", "/api/v1/", "agents"),
         {"name": "other", "match": {"prefix": "/", "host": "other.example"},
          "cluster": "agents"}]))


def echo_upstream():
    """Answers every request with its method and path, and remembers it."""
    return dp.PyUpstream(lambda i, method, path, headers, body, sock:
                         dp.ok_response(f"{method} {path}".encode()))


# ---- 1. heads in more than one read -------------------------------------------------------

def test_request_head_split_by_a_pause_is_parsed(procs):
    up = echo_upstream()
    plane = plane_for(procs, [up.port])
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/echo HTTP/1.1\r\n")
    # Wait until the node has read the first piece (it sits in its buffer), then the rest.
    dp.wait_until(lambda: plane.counter("onedomain_downstream_connections_total") >= 1, 5,
                  "the node to accept the connection")
    time.sleep(0.1)  # the reproduction: a 100 ms pause between two segments
    c.send(b"Host: x\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == b"GET /api/v1/echo"
    c.close()
    up.stop()


def test_browser_like_head_in_two_segments_100_times(procs):
    up = echo_upstream()
    plane = plane_for(procs, [up.port])
    head = (b"GET /api/v1/me HTTP/1.1\r\nHost: amir.hirecj.ai\r\nUser-Agent: Mozilla/5.0\r\n"
            b"Accept: */*\r\nCookie: sess=" + b"s" * 3000 + b"\r\n\r\n")
    c = dp.Conn(plane.port)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(100):
        c.send(head[:1448])
        c.send(head[1448:2896])
        c.send(head[2896:])
        r = c.response()
        assert r.status == 200, r.raw_head
    c.close()
    up.stop()


def test_heads_up_to_64_kib_pass_and_larger_get_431(procs):
    up = echo_upstream()
    plane = plane_for(procs, [up.port])
    big = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(300))  # ~33 KiB
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/big HTTP/1.1\r\nHost: h\r\n" + big + b"\r\n")
    assert c.response().status == 200
    c.close()
    huge = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(700))  # ~77 KiB
    c = dp.Conn(plane.port)
    c.send(b"GET /api/v1/huge HTTP/1.1\r\nHost: h\r\n" + huge + b"\r\n")
    assert c.response().status == 431
    c.close()
    assert [p for _, p, *_ in up.requests] == ["/api/v1/big"]
    up.stop()


def test_upstream_head_in_pieces_and_over_16_kib(procs):
    cookies = "".join(f"Set-Cookie: c{i}={'v' * 200}; Path=/\r\n" for i in range(100))

    def behaviour(index, method, path, headers, body, sock):
        if path.endswith("/split"):
            sock.sendall(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.05)  # status line and fields arrive apart
            sock.sendall(b"Content-Length: 2\r\n\r\nok")
            return b""
        return (f"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{cookies}\r\n").encode() + b"ok"

    up = dp.PyUpstream(behaviour)
    plane = plane_for(procs, [up.port])
    r = dp.request(plane.port, "GET", "/api/v1/split")
    assert r.status == 200 and r.body == b"ok"
    r = dp.request(plane.port, "GET", "/api/v1/cookies")
    assert r.status == 200 and len(r.all("Set-Cookie")) == 100
    up.stop()


# ---- 2. 5xx answers do not take the site down ---------------------------------------------

def test_500_answers_never_eject_the_only_endpoint(procs):
    def behaviour(index, method, path, headers, body, sock):
        if path.endswith("/fail"):
            return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail"
        return dp.ok_response()

    up = dp.PyUpstream(behaviour)
    plane = plane_for(procs, [up.port])
    for _ in range(10):
        assert dp.request(plane.port, "GET", "/api/v1/fail").status == 500
    assert dp.request(plane.port, "GET", "/api/v1/fine").status == 200
    assert plane.counter("onedomain_upstream_ejections_total", cluster="agents") == 0
    up.stop()


def test_connect_failures_do_not_eject_the_only_endpoint_below_the_panic_threshold(procs):
    port = dp.free_port()
    plane = plane_for(procs, [port], outlier_detection={"consecutive_failures": 2})
    for _ in range(4):
        assert dp.request(plane.port, "GET", "/api/v1/x").status == 502
    # Ejected, but the only endpoint: the panic threshold keeps trying it (no 503), and it
    # serves as soon as it is back.
    try:
        up = ShortKeepAliveUpstream(idle=5, port=port)
    except OSError:
        pytest.skip("the endpoint's freed port was taken by another process meanwhile")
    assert dp.request(plane.port, "GET", "/api/v1/x").status == 200
    up.stop()


# ---- 3. pooled connections are looked at before reuse -------------------------------------

class ShortKeepAliveUpstream:
    """Keep-alive like gunicorn: after each response it waits `idle` seconds for the next
    request on the connection, then closes it."""

    def __init__(self, idle=0.3, stray=b"", port=0):
        self.idle = idle
        self.stray = stray  # bytes sent after each response (a stray response, a HEAD body)
        self.accepts = 0
        self.closed = 0
        self.lock = threading.Lock()
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind((dp.LOOPBACK, port))
        self.s.listen(64)
        self.port = self.s.getsockname()[1]
        self.stop_flag = False
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        self.s.settimeout(0.2)
        while not self.stop_flag:
            try:
                c, _ = self.s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepts += 1
                n = self.accepts
            threading.Thread(target=self.serve, args=(c, n), daemon=True).start()

    def serve(self, c, n):
        buf = b""
        try:
            while True:
                c.settimeout(self.idle if not buf else 5)
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    c.settimeout(5)
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += c.recv(65536)
                body, buf = buf[:length], buf[length:]
                out = b"conn-%d:%s" % (n, body)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s"
                          % (len(out), out, self.stray))
        except (socket.timeout, OSError):
            pass
        finally:
            c.close()
            with self.lock:
                self.closed += 1

    def stop(self):
        self.stop_flag = True
        self.s.close()


def test_posts_after_the_backend_closed_idle_connections_all_succeed(procs):
    up = ShortKeepAliveUpstream(idle=0.3)
    plane = plane_for(procs, [up.port])
    for round_ in range(5):
        for i in range(5):
            r = dp.request(plane.port, "POST", "/api/v1/echo", body=b"r%d-%d" % (round_, i))
            assert r.status == 200, (round_, i, r.status)
            assert r.body.endswith(b":r%d-%d" % (round_, i))
        opened = up.accepts
        # Every pooled connection dies: wait until the backend closed all it opened.
        dp.wait_until(lambda: up.closed >= opened, 5, "the backend to close idle connections")
    assert plane.counter("onedomain_upstream_pool_stale_total", cluster="agents") >= 4
    up.stop()


def test_stray_bytes_after_a_response_never_reach_the_next_client(procs):
    up = ShortKeepAliveUpstream(idle=5, stray=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
    plane = plane_for(procs, [up.port])
    first = dp.request(plane.port, "GET", "/api/v1/a")
    assert first.status == 200
    for i in range(5):
        r = dp.request(plane.port, "GET", f"/api/v1/b{i}")
        assert r.status == 200 and b"EVIL" not in r.body and r.body.startswith(b"conn-")
    # Each connection carried stray bytes after its response: none was used twice.
    assert up.accepts == 6
    up.stop()


# ---- 6. TLS closes at once ------------------------------------------------------------------

def make_cert(directory):
    cert = os.path.join(directory, "s.crt")
    key = os.path.join(directory, "s.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert, key


def make_rsa_cert(directory):
    cert = os.path.join(directory, "r.crt")
    key = os.path.join(directory, "r.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_tls_connection_end_is_seen_at_once(procs):
    # An EOF-delimited response: the client only knows it is complete when the node closes.
    def behaviour(index, method, path, headers, body, sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
        return None

    up = dp.PyUpstream(behaviour)
    workdir = tempfile.mkdtemp(prefix="dp-tls-close-")
    cert, key = make_cert(workdir)
    plane = dp.start_dataplane(procs, dp.bootstrap(
        [dp.cluster("agents", [up.port])], [dp.route("all", "/", "agents")],
        listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                    "tls": {"cert_file": cert, "key_file": key}}]))
    ctx = ssl.create_default_context(cafile=cert)
    started = time.monotonic()
    c = dp.Conn(plane.port, tls_context=ctx)
    c.send(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status = c.read_head()[0]
    assert status == 200
    assert c.read_to_eof() == b"until-eof"
    elapsed = time.monotonic() - started
    c.close()
    # The linger after a close lasts 2 s; the client must not wait for it (0.003 s on plain).
    assert elapsed < 1.0, elapsed
    up.stop()


def test_tls12_refuses_static_rsa_and_cbc_suites_by_default(procs):
    workdir = tempfile.mkdtemp(prefix="dp-tls-ciphers-")
    cert, key = make_rsa_cert(workdir)
    up = echo_upstream()
    plane = dp.start_dataplane(procs, dp.bootstrap(
        [dp.cluster("agents", [up.port])], [dp.route("all", "/", "agents")],
        listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                    "tls": {"cert_file": cert, "key_file": key}},
                   {"name": "legacy", "address": dp.LOOPBACK, "port": 0,
                    "tls": {"cert_file": cert, "key_file": key,
                            "cipher_list": "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA"}}]))

    def handshake(port, ciphers):
        ctx = ssl.create_default_context(cafile=cert)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
        try:
            with socket.create_connection((dp.LOOPBACK, port), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    return t.cipher()[0]
        except ssl.SSLError:
            return None

    assert handshake(plane.port, "AES128-SHA") is None            # static RSA, CBC
    assert handshake(plane.port, "ECDHE-RSA-AES128-SHA") is None  # CBC
    assert handshake(plane.port, "ECDHE-RSA-AES128-GCM-SHA256") == "ECDHE-RSA-AES128-GCM-SHA256"
    # cipher_list is configurable.
    assert handshake(plane.listener("legacy"), "AES128-SHA") == "AES128-SHA"
    up.stop()


# ---- 7 and normalisation: what a strict parser refuses is never forwarded ------------------

@pytest.mark.parametrize("raw", [
    b"GET /api/v1/\xff HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n",
    b"POST /api/v1/t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nhi\r\n0\r\nno-colon-trailer\r\n\r\n",
])
def test_requests_a_strict_parser_refuses_get_400_and_reach_no_upstream(procs, raw):
    up = echo_upstream()
    plane = plane_for(procs, [up.port])
    c = dp.Conn(plane.port)
    c.send(raw)
    assert c.response().status == 400
    c.close()
    assert up.requests == []
    up.stop()


def test_dot_segments_are_removed_before_routing_and_forwarding(procs):
    up = echo_upstream()
    plane = dp.start_dataplane(procs, dp.bootstrap(
        [dp.cluster("agents", [up.port])],
        [dp.route("ws", "/ws/", "agents", websocket=True),
         dp.route("api", "/api/v1/", "agents")]))
    for target in ["/ws/../api/v1/echo", "/ws/%2e%2e/api/v1/echo", "/ws/%2E%2e/api/v1/./echo"]:
        before = plane.counter("onedomain_http_requests_total", route="api", code="200")
        r = dp.request(plane.port, "GET", target)
        assert r.status == 200 and r.body == b"GET /api/v1/echo", (target, r.body)
        # Counted once the request finishes, just after the answer went out.
        dp.wait_until(lambda: plane.counter("onedomain_http_requests_total", route="api",
                                            code="200") == before + 1, 5, "the api route count")
    up.stop()


def test_absolute_form_authority_wins_over_host(procs):
    up = dp.PyUpstream(lambda i, method, path, headers, body, sock: dp.ok_response(
        dict(headers).get("Host", "").encode()))
    plane = dp.start_dataplane(procs, dp.bootstrap(
        [dp.cluster("agents", [up.port])],
        [{"name": "other", "match": {"prefix": "/", "host": "other.example"},
          "cluster": "agents"}]))
    c = dp.Conn(plane.port)
    c.send(b"GET http://other.example/x HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == b"other.example"
    c.close()
    up.stop()


# ---- upstream edge cases --------------------------------------------------------------------

def test_invalid_chunked_response_is_a_502_when_nothing_was_sent(procs):
    up = dp.PyUpstream(lambda i, method, path, headers, body, sock: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n"))
    plane = plane_for(procs, [up.port])
    r = dp.request(plane.port, "GET", "/api/v1/x")
    assert r.status == 502
    up.stop()


def test_endless_100_continue_ends_at_response_timeout(procs):
    stop = threading.Event()

    def behaviour(index, method, path, headers, body, sock):
        for _ in range(400):  # bounded: 20 s at most
            if stop.is_set():
                break
            try:
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                break
            stop.wait(0.05)
        return None

    up = dp.PyUpstream(behaviour)
    plane = plane_for(procs, [up.port], response_timeout="1s")
    started = time.monotonic()
    c = dp.Conn(plane.port, timeout=15)
    c.send(b"GET /api/v1/x HTTP/1.1\r\nHost: h\r\n\r\n")
    final = c.response()
    while final.status == 100:
        final = c.response()
    assert final.status == 504
    assert time.monotonic() - started < 10
    stop.set()
    c.close()
    up.stop()


# ---- slow request bodies -------------------------------------------------------------------

def test_slow_request_bodies_hold_no_upstream_connection(procs):
    up = ShortKeepAliveUpstream(idle=5)
    plane = dp.start_dataplane(procs, dp.bootstrap(
        [dp.cluster("agents", [up.port])], [dp.route("api", "/api/v1/", "agents")],
        listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                    "limits": {"body_timeout": "2s"}}]))
    slow = []
    for i in range(50):
        c = dp.Conn(plane.port)
        c.send(b"POST /api/v1/up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        slow.append(c)
    dp.wait_until(lambda: plane.counter("onedomain_downstream_connections_total") >= 50, 5,
                  "the node to accept the slow uploads")
    assert up.accepts == 0  # bodies not complete yet: no backend connection taken
    # One finishes its body: it is served.
    slow[0].send(b"defghij")
    r = slow[0].response()
    assert r.status == 200 and r.body.endswith(b":abcdefghij")
    # The others never finish: 408 after body_timeout, still without a backend connection.
    r = slow[1].response()
    assert r.status == 408
    assert up.accepts == 1
    for c in slow:
        c.close()
    up.stop()


# ---- one node per port ---------------------------------------------------------------------

def test_a_second_node_on_the_same_port_is_refused(procs):
    up = echo_upstream()
    first = plane_for(procs, [up.port])
    doc = dp.bootstrap([dp.cluster("agents", [up.port])], [dp.route("all", "/", "agents")],
                       listeners=[{"name": "main", "address": dp.LOOPBACK, "port": first.port}])
    workdir = tempfile.mkdtemp(prefix="dp-second-")
    path = dp.write_bootstrap(workdir, doc)
    second = subprocess.run([support.binary("dataplane"), "--config", path, "--workers", "1"],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "already in use by another process" in second.stderr + second.stdout
    # Sharing on purpose is allowed.
    doc["share_listen_ports"] = True
    path = dp.write_bootstrap(workdir, doc)
    shared = dp.Dataplane(procs([support.binary("dataplane"), "--config", path, "--workers",
                                 "1"], name="dataplane-shared"), path)
    assert shared.port == first.port
    up.stop()


# ---- metric label of malformed upgrades -----------------------------------------------------

def test_malformed_upgrades_have_their_own_label(procs):
    up = echo_upstream()
    plane = plane_for(procs, [up.port])
    c = dp.Conn(plane.port)
    c.send(b"GET /ws/chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n\r\n")
    assert c.response().status == 400
    c.close()
    dp.wait_until(lambda: plane.counter("onedomain_websocket_upgrades_total", route="ws",
                                        result="malformed") == 1, 5, "the malformed count")
    assert plane.counter("onedomain_websocket_upgrades_total", route="ws",
                         result="not_allowed") == 0
    up.stop()


# ---- running out of descriptors --------------------------------------------------------------

def test_descriptor_exhaustion_keeps_the_admin_port_answering(procs):
    up = echo_upstream()
    workdir = tempfile.mkdtemp(prefix="dp-fd-")
    doc = dp.bootstrap([dp.cluster("agents", [up.port])], [dp.route("all", "/", "agents")])
    path = dp.write_bootstrap(workdir, doc)
    # 600 descriptors: the default cap is (600 - 256) / 2 = 172 client connections.
    limited = ["prlimit", "--nofile=600:600", support.binary("dataplane"), "--config", path,
               "--workers", "1"]
    plane = dp.Dataplane(procs(limited, name="dataplane-fd"), path)
    held = []
    try:
        for _ in range(400):  # bounded flood, more than the process could hold
            s = socket.create_connection((dp.LOOPBACK, plane.port), timeout=5)
            held.append(s)
        dp.wait_until(lambda: plane.counter("onedomain_downstream_connections_active") >= 150,
                      10, "the node to take connections up to its cap")
        assert plane.counter("onedomain_downstream_connections_active") <= 172
        # The admin port still answers (liveness probes must not restart the pod).
        status, _, _ = support.http_get(f"http://{dp.LOOPBACK}:{plane.admin}/healthz")
        assert status == 200
    finally:
        for s in held:
            s.close()
    # Once they are gone, requests are served again.
    dp.wait_until(lambda: plane.counter("onedomain_downstream_connections_active") == 0, 10,
                  "the flood to be closed")
    assert dp.request(plane.port, "GET", "/x").status == 200
    up.stop()
