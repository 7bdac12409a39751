"""Client limits hold on HTTP/2 exactly as on HTTP/1.1: every stream is a request for the
request-rate bucket, and every extended CONNECT (RFC 8441) a WebSocket for the per-client
cap, counted per stream (many tunnels share one connection) and released when its stream
ends; refusals are 429 stream responses with Retry-After, and the connection keeps serving."""

import tempfile

import pytest

import dp_support as dp
from test_dataplane_tls import make_cert
from test_http2 import SITE_ORIGIN, H2Client, base_headers, ws_headers, ws_messages


@pytest.fixture
def plane(procs):
    workdir = tempfile.mkdtemp(prefix="dp-h2lim-")
    cert, key = make_cert(workdir, "server", "localhost")
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("backend", [api])],
                       [dp.route("ws", "/ws/", "backend", websocket=True),
                        dp.route("api", "/api/", "backend",
                                 client_limits={"request_rate": {"per_second": 0.2,
                                                                 "burst": 3}})],
                       listeners=[{"name": "main", "address": dp.LOOPBACK, "port": 0,
                                   "tls": {"cert_file": cert, "key_file": key}}])
    doc["snapshot"]["site"] = {"origins": [SITE_ORIGIN]}
    doc["snapshot"]["websocket_policy"] = {"required_cookie": "sess_*"}
    doc["snapshot"]["client_limits"] = {"max_websockets_per_client": 2}
    return dp.start_dataplane(procs, doc), cert


def test_websocket_cap_counts_each_stream_and_releases_it(plane):
    p, cert = plane
    c = H2Client(p.port, cert)
    first = [c.request(ws_headers(p.port, path=f"/ws/chat/{i}"), end_stream=False)
             for i in range(2)]
    assert c.pump(lambda: all(c.streams[s]["headers"] for s in first))
    assert [dict(c.streams[s]["headers"])[":status"] for s in first] == ["200", "200"]
    third = c.request(ws_headers(p.port, path="/ws/chat/3"), end_stream=False)
    status, headers, _, _ = c.response(third)
    assert status == 429 and dict(headers).get("retry-after") == "5", headers
    assert p.counter("onedomain_limit_rejections_total", route="ws",
                     reason="websockets_per_client") == 1
    # The tunnels already open are untouched and still echo.
    assert c.pump(lambda: all(ws_messages(c.streams[s]["data"]) for s in first))
    # One tunnel ends (the client resets its stream): its count goes back.
    c.conn.reset_stream(first[0])
    c.flush()
    dp.wait_until(lambda: p.counter("onedomain_websocket_connections_active", route="ws") == 1,
                  what="the reset tunnel to close")
    again = c.request(ws_headers(p.port, path="/ws/chat/4"), end_stream=False)
    assert c.pump(lambda: c.streams[again]["headers"] is not None)
    assert dict(c.streams[again]["headers"])[":status"] == "200"
    c.close()


def test_request_rate_counts_every_stream(plane):
    p, cert = plane
    c = H2Client(p.port, cert)
    sids = [c.request(base_headers(p.port, f"/api/v1/echo?i={i}")) for i in range(6)]
    answers = [c.response(s) for s in sids]
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200, 200, 200, 429, 429, 429], statuses
    for status, headers, _, _ in answers:
        if status == 429:
            assert int(dict(headers)["retry-after"]) >= 1, headers
    assert p.counter("onedomain_limit_rejections_total", route="api", reason="request_rate") == 3
    # The connection keeps serving routes without the limit.
    assert c.response(c.request(ws_headers(p.port, origin="https://evil.example"),
                                end_stream=False))[0] == 403
    c.close()
