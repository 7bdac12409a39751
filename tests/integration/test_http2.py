"""HTTP/2 to clients (RFC 9113) on the same exchange as HTTP/1.1, with real clients: nghttp
and h2load (nghttp2-client) for bodies both ways (sha256 checked by the backend) and 100
concurrent streams on one connection; python3-h2 for what a client sends field by field
(:authority as Host, split cookies joined, several Set-Cookie back as several fields); the
HTTP/2 preface on a plain HTTP/1.1 listener (a clean 400) and prior-knowledge h2c."""

import hashlib
import json
import os
import socket
import ssl
import subprocess
import tempfile

import h2.config
import h2.connection
import h2.events
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
    ]
    doc = dp.bootstrap([dp.cluster("agents", [api])],
                       [dp.route("api", "/api/v1/", "agents")], listeners=listeners)
    plane = dp.start_dataplane(procs, doc)
    return plane, workdir, cert


def run(args, timeout=120, **kwargs):
    return subprocess.run(args, capture_output=True, timeout=timeout, **kwargs)


class H2Client:
    """A python3-h2 client connection (TLS with ALPN h2, or prior-knowledge h2c)."""

    def __init__(self, port, cafile=None):
        raw = socket.create_connection((dp.LOOPBACK, port), timeout=10)
        if cafile is not None:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"
        else:
            self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, headers, body=None):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def response(self, sid, limit=200):
        """(status, [(name, value)], body, reset_code) of stream `sid`."""
        headers, body, reset = None, b"", None
        for _ in range(limit):
            data = self.sock.recv(65536)
            if not data:
                break
            done = False
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    headers = [(k.decode(), v.decode()) for k, v in ev.headers]
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    reset = ev.error_code
                    done = True
            self.flush()
            if done:
                break
        status = int(dict(headers)[":status"]) if headers else None
        return status, headers, body, reset

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
