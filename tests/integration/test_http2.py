"""HTTP/2 to clients (RFC 9113) on the same exchange as HTTP/1.1, with real clients: nghttp
and h2load (nghttp2-client) for bodies both ways (sha256 checked by the backend) and 100
concurrent streams on one connection; python3-h2 for what a client sends field by field
(:authority as Host, split cookies joined, several Set-Cookie back as several fields); the
HTTP/2 preface on a plain HTTP/1.1 listener (a clean 400) and prior-knowledge h2c."""

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest

import dp_support as dp
from test_dataplane_tls import make_cert

BIG = 8 * 1024 * 1024


@pytest.fixture
def plane(procs):
    workdir = tempfile.mkdtemp(prefix="dp-h2-")
    cert, key = make_cert(workdir, "server", "localhost")
    _, api = dp.start_demo_backend(procs)
    listeners = [
        {"name": "main", "address": dp.LOOPBACK, "port": 0,
         "tls": {"cert_file": cert, "key_file": key, "alpn": ["h2", "http/1.1"]}},
        {"name": "h2c", "address": dp.LOOPBACK, "port": 0, "http2": {"prior_knowledge": True}},
        {"name": "plain", "address": dp.LOOPBACK, "port": 0},
        {"name": "defaults", "address": dp.LOOPBACK, "port": 0,
         "tls": {"cert_file": cert, "key_file": key}},
        {"name": "tight", "address": dp.LOOPBACK, "port": 0, "limits": {"idle_timeout": "1s"},
         "http2": {"max_concurrent_streams": 7},
         "tls": {"cert_file": cert, "key_file": key, "alpn": ["h2"]}},
    ]
    doc = dp.bootstrap([dp.cluster("agents", [api])],
                       [dp.route("api", "/api/v1/", "agents")], listeners=listeners)
    plane = dp.start_dataplane(procs, doc)
    return plane, workdir, cert


def run(args, timeout=120, **kwargs):
    return subprocess.run(args, capture_output=True, timeout=timeout, **kwargs)


class H2Client:
    """A python3-h2 client connection (TLS with ALPN h2, or prior-knowledge h2c) that keeps
    the events of every stream."""

    def __init__(self, port, cafile=None):
        raw = socket.create_connection((dp.LOOPBACK, port), timeout=10)
        if cafile is not None:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"
        else:
            self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.settings = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def stream(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "data": bytearray(),
                                             "ended": False, "reset": None, "interim": []})

    def request(self, headers, body=None, end_stream=None):
        sid = self.conn.get_next_available_stream_id()
        self.stream(sid)
        self.conn.send_headers(sid, headers, end_stream=body is None if end_stream is None
                               else end_stream)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def pump(self, done, timeout=10):
        """Reads until done() or the connection ends; bounded by `timeout`."""
        self.sock.settimeout(timeout)
        deadline = dp.monotonic() + timeout
        while not done() and not self.closed and dp.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.stream(ev.stream_id)["headers"] = [(k.decode(), v.decode())
                                                            for k, v in ev.headers]
                elif isinstance(ev, h2.events.DataReceived):
                    self.stream(ev.stream_id)["data"] += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.InformationalResponseReceived):
                    self.stream(ev.stream_id)["interim"].append(
                        [(k.decode(), v.decode()) for k, v in ev.headers])
                elif isinstance(ev, h2.events.StreamEnded):
                    self.stream(ev.stream_id)["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    self.stream(ev.stream_id)["reset"] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev.error_code
                elif isinstance(ev, h2.events.RemoteSettingsChanged):
                    for k, v in ev.changed_settings.items():
                        self.settings[int(k)] = v.new_value
            try:
                self.flush()
            except OSError:
                self.closed = True
        return done()

    def response(self, sid, timeout=10):
        """(status, [(name, value)], body, reset_code) of stream `sid`."""
        st = self.stream(sid)
        self.pump(lambda: st["ended"] or st["reset"] is not None, timeout)
        status = int(dict(st["headers"])[":status"]) if st["headers"] else None
        return status, st["headers"], bytes(st["data"]), st["reset"]

    def close(self):
        self.sock.close()


def base_headers(port, path, method="GET", authority=None):
    return [(":method", method), (":scheme", "https"),
            (":authority", authority or f"localhost:{port}"), (":path", path)]


def test_get_and_fields_over_h2(plane):
    p, _, cert = plane
    c = H2Client(p.port, cert)
    sid = c.request(base_headers(p.port, "/api/v1/echo?x=1") +
                    [("cookie", "a=1"), ("cookie", "b=2"), ("x-test", "yes")])
    status, headers, body, reset = c.response(sid)
    assert reset is None and status == 200, (status, headers, body)
    echo = json.loads(body)
    sent = {k.lower(): v for k, v in echo["headers"]}
    # :authority became Host; the split cookie fields reached the backend as one, "; "-joined.
    assert sent["host"] == f"localhost:{p.port}"
    assert [v for k, v in echo["headers"] if k.lower() == "cookie"] == ["a=1; b=2"]
    assert echo["cookies"] == {"a": "1", "b": "2"}
    assert sent["x-test"] == "yes"
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    # No connection-specific field goes to an HTTP/2 client.
    names = [k for k, _ in headers]
    assert "connection" not in names and "transfer-encoding" not in names
    # Several Set-Cookie come back as several fields.
    sid = c.request(base_headers(p.port, "/api/v1/set-cookies?n=3"))
    status, headers, body, reset = c.response(sid)
    assert status == 200
    assert [v for k, v in headers if k == "set-cookie"] == \
        [f"c{i}=v{i}; Path=/" for i in range(1, 4)]
    # No route: the HTTP/1.1 local reply, as a stream response.
    sid = c.request(base_headers(p.port, "/nowhere"))
    status, _, body, _ = c.response(sid)
    assert status == 404 and b"no route" in body
    c.close()


def test_large_bodies_both_ways_with_nghttp(plane):
    p, workdir, _ = plane
    payload = os.urandom(BIG)
    path = os.path.join(workdir, "upload.bin")
    with open(path, "wb") as f:
        f.write(payload)
    url = f"https://127.0.0.1:{p.port}/api/v1/upload"
    r = run(["nghttp", "-d", path, url])
    assert r.returncode == 0, r.stderr
    echo = json.loads(r.stdout)
    assert echo["body_bytes"] == BIG
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    for chunked in ("", "&chunked=1"):
        r = run(["nghttp", f"https://127.0.0.1:{p.port}/api/v1/bytes?n={BIG}{chunked}"])
        assert r.returncode == 0, r.stderr
        assert len(r.stdout) == BIG


def test_expect_100_continue_and_early_hints(plane, procs):
    """Expect: 100-continue is answered on the stream (a 100 HEADERS frame) before the client
    sends its body, and is not forwarded; a backend's 103 Early Hints reaches the client as an
    interim HEADERS frame before the response."""
    p, _, cert = plane
    c = H2Client(p.port, cert)
    body = b"x" * 5000
    sid = c.request(base_headers(p.port, "/api/v1/echo", method="POST") +
                    [("content-length", str(len(body))), ("expect", "100-continue")],
                    end_stream=False)
    st = c.stream(sid)
    assert c.pump(lambda: st["interim"] or st["headers"] or st["reset"] is not None)
    assert [h for h in st["interim"]] == [[(":status", "100")]], st
    c.conn.send_data(sid, body, end_stream=True)
    c.flush()
    status, _, got, reset = c.response(sid)
    assert reset is None and status == 200
    echo = json.loads(got)
    assert echo["body_bytes"] == len(body)
    assert "expect" not in {k.lower() for k, _ in echo["headers"]}
    c.close()

    hints = dp.PyUpstream(lambda *a: b"HTTP/1.1 103 Early Hints\r\n"
                          b"Link: </app.css>; rel=preload; as=style\r\n\r\n" +
                          dp.ok_response(b"page"))
    try:
        doc = dp.bootstrap([dp.cluster("hints", [hints.port])], [dp.route("all", "/", "hints")],
                           listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                                       "http2": {"prior_knowledge": True}}])
        q = dp.start_dataplane(procs, doc)
        c = H2Client(q.port)
        sid = c.request(base_headers(q.port, "/"))
        status, _, got, reset = c.response(sid)
        assert reset is None and status == 200 and got == b"page"
        assert c.stream(sid)["interim"] == [[(":status", "103"),
                                             ("link", "</app.css>; rel=preload; as=style")]]
        c.close()
    finally:
        hints.stop()


def upstream_send_queue(backend_port):
    """Bytes queued in the node's socket to `backend_port` that the backend has not taken
    (tx_queue in /proc/net/tcp), or None when there is no such connection."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == backend_port:
                return int(fields[4].split(":")[0], 16)
    return None


def test_body_end_arriving_while_the_upstream_write_waits(procs):
    """END_STREAM that arrives while the node's write to a slow upstream is pending must not
    be taken for the end of what was relayed: the bytes that came with it still go up (the
    node once reset such a stream with INTERNAL_ERROR and relayed a truncated body). And the
    bytes the waiting write points at must stay put while more arrive: the node once appended
    DATA to the very buffer the write was sending from, which moved it, and the write went on
    from freed memory. On the io_uring loop the test lets the node return its freed memory to
    the system while the write waits (traffic is quiet), so such a read shows up as zeros in
    what the backend got."""
    go = threading.Event()
    got = {}
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    listener.bind((dp.LOOPBACK, 0))
    listener.listen(1)
    backend_port = listener.getsockname()[1]

    def backend():
        s, _ = listener.accept()
        s.settimeout(30)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, buf = buf.split(b"\r\n\r\n", 1)
        got["head"] = head.decode("latin-1")
        go.wait(30)
        while not buf.endswith(b"\r\n0\r\n\r\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        got["body"] = buf
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        s.close()

    t = threading.Thread(target=backend, daemon=True)
    t.start()
    # No segmenting relay in front of this backend (the test watches the node's own socket).
    slow = {"name": "slow", "endpoints": [{"host": dp.LOOPBACK, "port": backend_port}]}
    doc = dp.bootstrap([slow], [dp.route("all", "/", "slow")],
                       listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                                   "http2": {"prior_knowledge": True}}])
    p = dp.start_dataplane(procs, doc, extra_args=("--log-level", "debug"))
    c = H2Client(p.direct_port())
    sid = c.request(base_headers(p.direct_port(), "/upload", method="POST"), end_stream=False)
    sent = bytearray()
    block = bytes(range(256)) * 64  # 16 KiB
    # Returns from here on happen while the body flows (not quiet: none) or while the write
    # waits. Counted after the stall was seen, a return made in the quiet half second that
    # detects it (its receive buffers' pages then gone, none held again) would leave none to
    # wait for.
    returns = p.proc.output().count("traffic went quiet")
    deadline = dp.monotonic() + 30
    # Send while the window allows; the node relays it all to the backend, which reads
    # nothing, until the node's write waits: then the window it gives back after each write
    # stops coming. A quiet half second with the upstream queue standing still is taken for
    # that; if the node was only slow, the test passes without proving anything, never fails.
    while dp.monotonic() < deadline:
        window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if window > 0:
            c.conn.send_data(sid, block[:window])
            sent += block[:window]
            c.flush()
            continue
        queued = upstream_send_queue(backend_port)
        try:
            c.pump(lambda: c.conn.local_flow_control_window(sid) > 0, timeout=0.5)
        except TimeoutError:
            if queued and upstream_send_queue(backend_port) == queued:
                break
    assert c.conn.local_flow_control_window(sid) == 0, "the node never stopped taking the body"
    c.conn.end_stream(sid)  # an empty DATA frame: allowed at a zero window
    c.flush()
    # The node has read it all (nothing left in its receive queue), then the backend reads.
    dp.wait_until(lambda: client_receive_queue(p.direct_port()) == 0, what="node read the end")
    if p.counter("onedomain_worker_io_backend", backend="io_uring") == 1:
        # Its receive buffers' pages make the next quiet pass return memory (on epoll, a
        # return needs more free heap than this test leaves).
        dp.wait_until(lambda: p.proc.output().count("traffic went quiet") > returns, 10,
                      "the node to return its freed memory while the write waits")
    go.set()
    status, _, body, reset = c.response(sid, timeout=30)
    t.join(30)
    assert reset is None and status == 200 and body == b"ok"
    body_in = got["body"]
    data = bytearray()
    while True:  # de-chunk what the backend got
        line, _, rest = body_in.partition(b"\r\n")
        n = int(line, 16)
        if n == 0:
            break
        data += rest[:n]
        body_in = rest[n + 2:]
    assert len(data) == len(sent) and bytes(data) == bytes(sent)
    listener.close()


def client_receive_queue(port):
    """What the node has not yet read of its client connection on listener `port`."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                return int(fields[4].split(":")[1], 16)
    return None


def test_hundred_concurrent_streams_on_one_connection(plane):
    p, _, _ = plane
    r = run(["h2load", "-n", "1000", "-c", "1", "-m", "100",
             f"https://127.0.0.1:{p.port}/api/v1/echo"])
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "1000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 1000 2xx" in out, out
    assert "Application protocol: h2" in out, out


def test_prior_knowledge_h2c_and_http1_on_the_same_listener(plane):
    p, _, _ = plane
    port = p.listener("h2c")
    r = run(["nghttp", f"http://127.0.0.1:{port}/api/v1/echo"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["method"] == "GET"
    # HTTP/1.1 still works there.
    assert dp.request(port, "GET", "/api/v1/echo").status == 200


def test_preface_on_a_plain_http1_listener_gets_a_clean_400(plane):
    p, _, _ = plane
    c = dp.Conn(p.listener("plain"))
    c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    r = c.response()
    assert r.status == 400
    c.close()


# ---- WebSockets over HTTP/2 (RFC 8441) -------------------------------------------------------

SITE_ORIGIN = "http://127.0.0.1"


def ws_frame(payload, opcode=1):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_messages(buf):
    """[(opcode, payload)] of the complete messages (fragments joined) from unmasked server
    frames at the start of `buf`."""
    out, i, partial = [], 0, None
    while len(buf) - i >= 2:
        fin, opcode, n = buf[i] & 0x80, buf[i] & 0x0F, buf[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if len(buf) - j < 2:
                break
            n, j = int.from_bytes(buf[j:j + 2], "big"), j + 2
        elif n == 127:
            if len(buf) - j < 8:
                break
            n, j = int.from_bytes(buf[j:j + 8], "big"), j + 8
        if len(buf) - j < n:
            break
        payload = bytes(buf[j:j + n])
        i = j + n
        if opcode >= 8:
            out.append((opcode, payload))  # control frames may sit between fragments
            continue
        partial = (opcode, payload) if partial is None else (partial[0], partial[1] + payload)
        if fin:
            out.append(partial)
            partial = None
    return out


def ws_headers(port, path="/ws/chat/1", origin=SITE_ORIGIN, cookie="sess_abc=tok123",
               protocol="websocket"):
    h = [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "https"),
         (":authority", f"localhost:{port}"), (":path", path), ("sec-websocket-version", "13"),
         ("origin", origin)]
    if cookie:
        h.append(("cookie", cookie))
    return h


@pytest.fixture
def ws_plane(procs):
    workdir = tempfile.mkdtemp(prefix="dp-h2ws-")
    cert, key = make_cert(workdir, "server", "localhost")
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("backend", [api])],
                       [dp.route("ws", "/ws/", "backend", websocket=True),
                        dp.route("api", "/", "backend")],
                       listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                                   "tls": {"cert_file": cert, "key_file": key,
                                           "alpn": ["h2", "http/1.1"]}}])
    doc["snapshot"]["site"] = {"origins": [SITE_ORIGIN]}
    doc["snapshot"]["websocket_policy"] = {"required_cookie": "sess_*"}
    return dp.start_dataplane(procs, doc), cert


def test_many_websockets_over_one_h2_connection(ws_plane):
    p, cert = ws_plane
    c = H2Client(p.port, cert)
    c.pump(lambda: 8 in c.settings)
    assert c.settings.get(8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    sids = [c.request(ws_headers(p.port, path=f"/ws/chat/{i}"), end_stream=False)
            for i in range(5)]
    # A plain request shares the connection with the tunnels.
    api = c.request(base_headers(p.port, "/api/v1/echo"))
    assert c.pump(lambda: all(c.streams[s]["headers"] and ws_messages(c.streams[s]["data"])
                              for s in sids) and c.streams[api]["ended"])
    for s in sids:
        st = c.streams[s]
        assert dict(st["headers"])[":status"] == "200", st
        assert "sec-websocket-accept" not in dict(st["headers"])
        hello = json.loads(ws_messages(st["data"])[0][1])
        assert hello["type"] == "hello" and hello["session"] == "tok123", hello
        assert hello["origin"] == SITE_ORIGIN
        st["data"].clear()
        c.conn.send_data(s, ws_frame(b"ping %d" % s))
    c.flush()
    assert c.pump(lambda: all(ws_messages(c.streams[s]["data"]) for s in sids))
    for s in sids:
        assert ws_messages(c.streams[s]["data"])[0] == (1, b"ping %d" % s)
    assert json.loads(c.streams[api]["data"])["method"] == "GET"
    # A large message both ways keeps its bytes (flow control in both directions).
    big = os.urandom(100 * 1024)  # within the initial window
    c.streams[sids[0]]["data"].clear()
    frame = ws_frame(big, opcode=2)
    for i in range(0, len(frame), 16384):
        c.conn.send_data(sids[0], frame[i:i + 16384])
    c.flush()
    assert c.pump(lambda: ws_messages(c.streams[sids[0]]["data"]), timeout=30)
    assert ws_messages(c.streams[sids[0]]["data"])[0] == (2, big)
    dp.wait_metric(p, "onedomain_websocket_upgrades_total", 5, route="ws", result="accepted",
                   protocol="http2")
    assert p.counter("onedomain_websocket_connections_active", route="ws") == 5
    assert p.counter("onedomain_http_requests_total", route="api", protocol="http2") >= 1
    # The client closes one: its Close comes back and the stream ends.
    c.conn.send_data(sids[1], ws_frame(b"\x03\xe8", opcode=8), end_stream=False)
    c.flush()
    c.streams[sids[1]]["data"].clear()
    assert c.pump(lambda: any(op == 8 for op, _ in ws_messages(c.streams[sids[1]]["data"])))
    c.close()
    dp.wait_until(lambda: p.counter("onedomain_websocket_connections_active", route="ws") == 0,
                 what="tunnels closed after the connection went")


def test_websocket_refusals_are_stream_responses(ws_plane):
    p, cert = ws_plane
    c = H2Client(p.port, cert)
    refused = c.request(ws_headers(p.port, origin="https://evil.example"), end_stream=False)
    no_cookie = c.request(ws_headers(p.port, cookie=None), end_stream=False)
    other = c.request(ws_headers(p.port, protocol="chat"), end_stream=False)
    not_ws_route = c.request(ws_headers(p.port, path="/api/v1/x"), end_stream=False)
    assert c.response(refused)[0] == 403
    assert c.response(no_cookie)[0] == 401
    assert c.response(other)[0] == 501
    assert c.response(not_ws_route)[0] == 403
    # The connection goes on serving.
    assert c.response(c.request(base_headers(p.port, "/api/v1/echo")))[0] == 200
    c.close()
    assert p.counter("onedomain_websocket_upgrades_total", route="ws", result="origin_refused",
                     protocol="http2") == 1
    assert p.counter("onedomain_websocket_upgrades_total", route="ws", result="cookie_refused",
                     protocol="http2") == 1


# ---- defences -------------------------------------------------------------------------------

def still_serving(p, cert):
    c = H2Client(p.port, cert)
    status = c.response(c.request(base_headers(p.port, "/api/v1/echo")))[0]
    c.close()
    return status == 200


def test_rapid_reset_gets_goaway_enhance_your_calm(plane):
    p, _, cert = plane
    c = H2Client(p.port, cert)
    try:
        for _ in range(400):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, base_headers(p.port, "/api/v1/echo"), end_stream=True)
            c.conn.reset_stream(sid)
            c.flush()
    except OSError:
        pass  # the node closed after its GOAWAY while we were still sending
    c.pump(lambda: c.goaway is not None)
    assert c.goaway == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    c.close()
    assert p.counter("onedomain_http2_protocol_errors_total", reason="rapid_reset") == 1
    assert p.counter("onedomain_http2_goaways_total", reason="enhance_your_calm") == 1
    assert still_serving(p, cert)


def test_empty_data_frame_flood_gets_goaway(plane):
    p, _, cert = plane
    c = H2Client(p.port, cert)
    sid = c.request(base_headers(p.port, "/api/v1/upload", method="POST"), end_stream=False)
    for _ in range(200):
        c.conn.send_data(sid, b"")
    c.flush()
    c.pump(lambda: c.goaway is not None)
    assert c.goaway == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    c.close()
    assert p.counter("onedomain_http2_protocol_errors_total", reason="empty_frames") == 1
    assert still_serving(p, cert)


def test_header_list_over_the_limit_gets_431_on_the_stream(plane):
    p, _, cert = plane
    c = H2Client(p.port, cert)
    # Advertised: what the node decodes at most (4x the 64 KiB limit; larger is a reset).
    assert c.pump(lambda: 6 in c.settings)
    assert c.settings[6] == 4 * 64 * 1024  # SETTINGS_MAX_HEADER_LIST_SIZE
    big = [(f"x-filler-{i}", "v" * 1000) for i in range(80)]  # 80 KB > 64 KiB
    sid = c.request(base_headers(p.port, "/api/v1/echo") + big)
    status, _, body, _ = c.response(sid)
    assert status == 431, body
    # The same connection serves the next request.
    assert c.response(c.request(base_headers(p.port, "/api/v1/echo")))[0] == 200
    c.close()
    assert p.counter("onedomain_http2_protocol_errors_total",
                     reason="header_list_too_large") == 1


def test_connection_specific_field_is_a_stream_error(plane):
    p, _, cert = plane
    c = H2Client(p.port, cert)
    sid = c.request(base_headers(p.port, "/api/v1/echo") + [("connection", "keep-alive")])
    _, _, _, reset = c.response(sid)
    assert reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    sid = c.request(base_headers(p.port, "/api/v1/echo") + [("te", "gzip")])
    assert c.response(sid)[3] == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert c.response(c.request(base_headers(p.port, "/api/v1/echo") +
                                [("te", "trailers")]))[0] == 200
    c.close()


def test_continuation_without_end_closes_the_connection(plane):
    p, _, cert = plane
    raw = socket.create_connection((dp.LOOPBACK, p.port), timeout=10)
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    # Preface, empty SETTINGS, then HEADERS without END_HEADERS and CONTINUATION frames that
    # never end the block.
    frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    block = b"\x82\x87\x84"  # :method GET, :scheme https, :path /
    frames += len(block).to_bytes(3, "big") + b"\x01\x01\x00\x00\x00\x01" + block
    cont = b"\x40\x01a\x01b"  # a literal field a: b
    for _ in range(50):
        frames += len(cont).to_bytes(3, "big") + b"\x09\x00\x00\x00\x00\x01" + cont
    sock.sendall(frames)
    got = b""
    deadline = dp.monotonic() + 10
    while dp.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not d:
            break
        got += d
    sock.close()
    assert p.counter("onedomain_http2_protocol_errors_total", reason="flood") == 1
    # Our SETTINGS (and its ack), then the GOAWAY that says why: ENHANCE_YOUR_CALM (0xb).
    goaways = [f for f in parse_frames(got)[0] if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert [g.error_code for g in goaways] == [0xb], goaways
    assert p.counter("onedomain_http2_goaways_total", reason="enhance_your_calm") >= 1
    assert still_serving(p, cert)


def parse_frames(data, frames=None):
    """The whole frames at the start of `data` (hyperframe), appended to `frames`; returns
    them and the bytes of an incomplete frame left over."""
    frames = [] if frames is None else frames
    while len(data) >= 9:
        f, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        f.parse_body(memoryview(data[9:9 + length]))
        frames.append(f)
        data = data[9 + length:]
    return frames, data


def read_frames(sock, until, timeout=15):
    """Raw frames (hyperframe) from `sock` until until(frames) or the end: python-h2 refuses
    DATA after a GOAWAY, which RFC 9113 6.8 allows on streams up to its last stream id."""
    frames, buf = [], b""
    sock.settimeout(timeout)
    deadline = dp.monotonic() + timeout
    while not until(frames) and dp.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, socket.timeout):
            d = b""
        if not d:
            return frames, True
        _, buf = parse_frames(buf + d, frames)
    return frames, False


def test_sigterm_sends_goaway_and_close_1001_on_websocket_streams(ws_plane):
    p, cert = ws_plane
    c = H2Client(p.port, cert)
    sids = [c.request(ws_headers(p.port, path=f"/ws/chat/{i}"), end_stream=False)
            for i in range(3)]
    assert c.pump(lambda: all(ws_messages(c.streams[s]["data"]) for s in sids))
    p.proc.signal(signal.SIGTERM)

    def data_of(frames, sid):
        return b"".join(f.data for f in frames
                        if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == sid)

    def closed_1001(frames, sid):
        return any(op == 8 and payload[:2] == (1001).to_bytes(2, "big")
                   for op, payload in ws_messages(data_of(frames, sid)))

    def goaways(frames):
        return [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    frames, _ = read_frames(c.sock, lambda fs: goaways(fs) and
                            all(closed_1001(fs, s) for s in sids))
    assert goaways(frames) and all(g.error_code == 0 for g in goaways(frames)), frames
    assert all(closed_1001(frames, s) for s in sids), frames
    # Answer the Close frames, as a browser does; the node then finishes and exits cleanly.
    for s in sids:
        close = hyperframe.frame.DataFrame(s, ws_frame((1001).to_bytes(2, "big"), opcode=8),
                                           flags=["END_STREAM"])
        c.sock.sendall(close.serialize())
    _, ended = read_frames(c.sock, lambda fs: False, timeout=10)
    assert ended
    assert p.proc.wait_exit(timeout=15) == 0, p.proc.output()[-2000:]


def test_ping_and_settings_flood_without_reading_is_bounded(plane):
    """A client that sends PINGs and SETTINGS faster than acks can go out: nghttp2's limit on
    queued acks ends the connection (counted as a flood); the node's memory stays flat and
    other clients are served."""
    p, _, cert = plane
    assert still_serving(p, cert)
    before = p.rss_kib("VmRSS")
    raw = socket.create_connection((dp.LOOPBACK, p.port), timeout=10)
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    burst = (ping + settings) * 1000
    # The kernel buffers some of the flood whatever the node does: our send buffer (it grows
    # up to tcp_wmem's maximum) and the node's receive buffer (it grows, up to tcp_rmem's
    # maximum, while the node reads at full speed). Send twice what both can hold, so only a
    # node that stops reading us (or ends the flood) stops us.
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max = int(f.read().split()[2])
    with open("/proc/sys/net/ipv4/tcp_rmem") as f:
        rmem_max = int(f.read().split()[2])
    bursts = 2 * (wmem_max + rmem_max) // len(burst) + 1
    sock.settimeout(0.5)
    sent = 0
    deadline = dp.monotonic() + 10
    while sent < bursts and dp.monotonic() < deadline:
        try:
            sock.sendall(burst)
            sent += 1
        except (socket.timeout, ssl.SSLError, OSError):
            break  # the node stopped reading us: back-pressure
    growth = p.rss_kib("VmHWM") - before
    assert still_serving(p, cert)
    sock.close()
    print(f"flood bursts sent: {sent} (of {bursts}), RSS growth {growth} KiB")
    assert sent < bursts  # the node stopped taking them
    assert growth < 20 * 1024, growth
    dp.wait_until(lambda: p.counter("onedomain_http2_protocol_errors_total", reason="flood") == 1,
                  what="the flood counted")


def test_zero_window_held_past_the_idle_timeout_loses_the_stream(plane):
    p, _, cert = plane
    c = H2Client(p.listener("tight"), cert)
    c.pump(lambda: 3 in c.settings)
    assert c.settings[3] == 7  # http2.max_concurrent_streams
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.flush()
    sid = c.request(base_headers(p.port, "/api/v1/bytes?n=200000"))
    st = c.stream(sid)
    # Never acknowledged: the window stays shut; the node gives up after idle_timeout (1s).
    assert c.pump(lambda: st["reset"] is not None, timeout=10), st
    assert st["headers"] and dict(st["headers"])[":status"] == "200"
    c.close()
    assert p.counter("onedomain_http2_protocol_errors_total", reason="zero_window") == 1
    assert still_serving(p, cert)


def test_tls_listeners_offer_h2_by_default(plane):
    p, _, cert = plane
    port = p.listener("defaults")
    r = run(["curl", "-sS", "-v", "--cacert", cert, "--resolve", f"localhost:{port}:127.0.0.1",
             f"https://localhost:{port}/api/v1/echo"], text=True)
    assert r.returncode == 0, r.stderr
    assert "ALPN: server accepted h2" in r.stderr or \
           "ALPN, server accepted to use h2" in r.stderr, r.stderr
    assert json.loads(r.stdout)["method"] == "GET"
    # HTTP/1.1 clients still get HTTP/1.1 there.
    r = run(["curl", "-sS", "-v", "--http1.1", "--cacert", cert, "--resolve",
             f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/api/v1/echo"], text=True)
    assert r.returncode == 0 and ("accepted http/1.1" in r.stderr or
                                  "accepted to use http/1.1" in r.stderr), r.stderr


def test_upstream_101_with_the_wrong_accept_gets_502(procs):
    """The node sends its own Sec-WebSocket-Key upstream: a 101 that does not answer it is no
    handshake, and the HTTP/2 client gets a 502, not a tunnel."""
    import base64
    import hashlib as _hashlib
    keys = []

    def upgrade(_index, _method, _path, headers, _body, _sock):
        key = dict((k.lower(), v) for k, v in headers)["sec-websocket-key"]
        keys.append(key)
        right = base64.b64encode(_hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        accept = right if len(keys) == 1 else "d3JvbmcgYWNjZXB0IHZhbHVlIQ=="
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n")
    up = dp.PyUpstream(upgrade)
    workdir = tempfile.mkdtemp(prefix="dp-h2acc-")
    cert, key = make_cert(workdir, "server", "localhost")
    doc = dp.bootstrap([dp.cluster("backend", [up.port])],
                       [dp.route("ws", "/ws/", "backend", websocket=True)],
                       listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                                   "tls": {"cert_file": cert, "key_file": key}}])
    doc["snapshot"]["site"] = {"origins": [SITE_ORIGIN]}
    p = dp.start_dataplane(procs, doc)
    try:
        c = H2Client(p.port, cert)
        good = c.request(ws_headers(p.port, cookie=None), end_stream=False)
        c.pump(lambda: c.streams[good]["headers"] is not None)
        assert dict(c.streams[good]["headers"])[":status"] == "200"
        bad = c.request(ws_headers(p.port, cookie=None), end_stream=False)
        status, _, body, _ = c.response(bad)
        assert status == 502, body
        assert b"Sec-WebSocket-Accept" in body
        c.close()
        # Fresh, valid keys (16 random bytes), a different one per upgrade.
        assert len(keys) == 2 and keys[0] != keys[1]
        assert all(len(base64.b64decode(k)) == 16 for k in keys)
    finally:
        up.stop()


def test_hpack_bomb_stops_decoding_and_resets_the_stream(plane):
    """A 4 KB field in the HPACK table referenced a hundred times: a few hundred bytes on the
    wire, 400 KB decoded. Past 4x the header limit decoding stops with a stream reset (no
    431: nothing is kept to answer from), and the connection goes on."""
    p, _, cert = plane
    c = H2Client(p.port, cert)
    bomb = [("x-bomb", "b" * 4000)] * 100
    sid = c.request(base_headers(p.port, "/api/v1/echo") + bomb)
    _, _, _, reset = c.response(sid)
    assert reset == h2.errors.ErrorCodes.INTERNAL_ERROR, reset
    assert c.response(c.request(base_headers(p.port, "/api/v1/echo")))[0] == 200
    c.close()
    assert p.counter("onedomain_http2_protocol_errors_total",
                     reason="header_list_too_large") == 1


def test_upload_without_content_length_through_the_windows(plane):
    """A body of unknown length (no content-length) larger than the stream's window: it goes
    upstream chunked, and the client can only finish because the node gives the window back
    as the upstream takes the bytes (manual window updates)."""
    p, _, cert = plane
    c = H2Client(p.port, cert)
    body = os.urandom(600 * 1024)
    sid = c.request(base_headers(p.port, "/api/v1/upload", method="POST"), end_stream=False)
    sent = 0
    deadline = dp.monotonic() + 30
    while sent < len(body) and dp.monotonic() < deadline:
        window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if window == 0:
            before = c.conn.local_flow_control_window(sid)
            c.pump(lambda: c.conn.local_flow_control_window(sid) > before, timeout=10)
            continue
        c.conn.send_data(sid, body[sent:sent + window])
        sent += min(window, len(body) - sent)
        c.flush()
    c.conn.end_stream(sid)
    c.flush()
    status, _, answer, reset = c.response(sid, timeout=30)
    assert status == 200 and reset is None, (status, answer)
    echo = json.loads(answer)
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert any(k.lower() == "transfer-encoding" and v == "chunked" for k, v in echo["headers"])
    c.close()
