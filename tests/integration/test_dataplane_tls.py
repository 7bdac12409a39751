"""A TLS listener with a certificate the test generates (openssl CLI): curl and Python's ssl
client both succeed with ALPN http/1.1, plain HTTP to the TLS port gets a clean 400, and a
rotated certificate is picked up without dropping open connections."""

import os
import ssl
import subprocess
import tempfile

import pytest

import dp_support as dp


def make_cert(directory, name, cn):
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_plane(procs):
    workdir = tempfile.mkdtemp(prefix="dp-tls-")
    cert, key = make_cert(workdir, "server", "first")
    # The listener reads fixed paths; rotation replaces the files under them.
    live_cert = os.path.join(workdir, "live.crt")
    live_key = os.path.join(workdir, "live.key")
    os.link(cert, live_cert)
    os.link(key, live_key)
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap(
        [dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")],
        listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                    "tls": {"cert_file": live_cert, "key_file": live_key}},
                   {"name": "strict", "address": dp.LOOPBACK, "port": 0,
                    "tls": {"cert_file": cert, "key_file": key, "min_version": "TLSv1.3"}}])
    plane = dp.start_dataplane(procs, doc, workdir=workdir)
    return plane, workdir, live_cert, live_key


def client_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])  # h2 is the default's first choice (test_http2.py)
    return ctx


def test_curl_over_tls(tls_plane):
    plane, _, cert, _ = tls_plane
    out = subprocess.run(
        ["curl", "-sS", "-v", "--http1.1", "--cacert", cert, "--resolve", f"localhost:{plane.port}:127.0.0.1",
         f"https://localhost:{plane.port}/api/v1/echo", "-H", "Cookie: sess_1=abc"],
        capture_output=True, timeout=30, text=True)
    assert out.returncode == 0, out.stderr
    assert "ALPN: server accepted http/1.1" in out.stderr or \
           "ALPN, server accepted to use http/1.1" in out.stderr, out.stderr
    assert '"x-forwarded-proto"' in out.stdout.lower() or "X-Forwarded-Proto" in out.stdout
    assert '"https"' in out.stdout
    assert "sess_1=abc" in out.stdout


def test_python_ssl_client_with_keep_alive(tls_plane):
    plane, _, cert, _ = tls_plane
    c = dp.Conn(plane.port, tls_context=client_context(cert))
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    for i in range(5):
        r = c.request("POST", "/api/v1/echo", body=b"z" * (1000 * i))
        assert r.status == 200
        assert r.json()["body_bytes"] == 1000 * i
    c.close()


def test_plain_http_to_the_tls_port_is_refused_cleanly(tls_plane):
    plane, _, _, _ = tls_plane
    before = plane.counter("onedomain_http_requests_total", route="none", code="400")
    c = dp.Conn(plane.port)
    r = c.request("GET", "/api/v1/echo")
    assert r.status == 400
    assert b"expects TLS" in r.body
    assert c.closed_by_peer()
    c.close()
    dp.wait_metric(plane, "onedomain_http_requests_total", before + 1, route="none", code="400")


def test_minimum_protocol_version_is_enforced(tls_plane):
    plane, _, cert, _ = tls_plane
    tls12 = client_context(cert)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    c = dp.Conn(plane.port, tls_context=tls12)  # default minimum: TLS 1.2 is fine
    assert c.sock.version() == "TLSv1.2"
    c.close()
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        dp.Conn(plane.listener("strict"), tls_context=tls12)  # min_version: TLSv1.3
    c = dp.Conn(plane.listener("strict"), tls_context=client_context(cert))
    assert c.sock.version() == "TLSv1.3"
    assert c.request("GET", "/api/v1/echo").status == 200
    c.close()


def test_certificate_rotation_without_dropping_connections(tls_plane):
    plane, workdir, live_cert, live_key = tls_plane
    old_cert = open(live_cert).read()
    kept = dp.Conn(plane.port, tls_context=client_context(live_cert))
    assert kept.request("GET", "/api/v1/echo").status == 200

    new_cert, new_key = make_cert(workdir, "rotated", "second")
    # Replace key then certificate, each atomically, as a secret volume update would.
    os.replace(new_key, live_key)
    os.replace(new_cert, live_cert)

    def presents_new_cert():
        try:
            c = dp.Conn(plane.port, tls_context=client_context(live_cert))
        except ssl.SSLError:
            return False  # still the old certificate: not trusted by the new CA file
        subject = dict(x[0] for x in c.sock.getpeercert()["subject"])
        c.close()
        return subject.get("commonName") == "second"
    dp.wait_until(presents_new_cert, 15, "the rotated certificate")
    # The connection opened under the old certificate still works.
    assert kept.request("GET", "/api/v1/echo").status == 200
    kept.close()
    assert open(live_cert).read() != old_cert


def test_large_bodies_both_ways_over_tls(tls_plane):
    """16 MiB up and down one keep-alive TLS connection: partial TLS writes and reads that
    wait on the poller in both directions."""
    import hashlib
    plane, _, cert, _ = tls_plane
    size, block = 16 * 1024 * 1024, bytes(range(256)) * 256  # 64 KiB
    c = dp.Conn(plane.port, tls_context=client_context(cert), timeout=60)
    digest = hashlib.sha256()
    c.send(b"POST /api/v1/upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(size // len(block)):
        c.send(block)
        digest.update(block)
    r = c.response()
    assert r.status == 200, r.body
    assert r.json()["body_bytes"] == size
    assert r.json()["body_sha256"] == digest.hexdigest()

    c.send(b"GET /api/v1/bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
    status, _, headers, _ = c.read_head()
    assert status == 200
    assert int(dict(headers)["Content-Length"]) == size
    assert c.skip(size) == size
    # The connection is still usable afterwards.
    assert c.request("GET", "/api/v1/echo").status == 200
    c.close()
