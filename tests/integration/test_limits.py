"""Per-client limits (issue 20) from many loopback source addresses (127.0.0.2 ...): one
address over its WebSocket cap gets 429 + Retry-After while the others connect; one session
cookie over its cap gets 429 from any address; an upgrade flood from one address is throttled
while a browser session from another logs in and chats (its latency printed); request rates;
connections over the per-address cap are closed at accept while existing ones carry on; a
route's override counts apart. Refusals never reach the backend and are counted by reason."""

import asyncio
import json
import subprocess
import threading
import time

import dp_support as dp
import limits_support as ls
import ws_support as wss


def start(procs, upstream_port, limits, route_limits=None, ws_policy=None, workers=1):
    routes = [dp.route("ws", "/ws/", "backend", websocket=True,
                       **({"client_limits": route_limits} if route_limits else {})),
              dp.route("api", "/", "backend")]
    doc = dp.bootstrap([dp.cluster("backend", [upstream_port])], routes)
    snap = doc["snapshot"]
    snap["site"] = {"origins": ["http://127.0.0.1"]}
    snap["websocket_policy"] = ws_policy or {"required_cookie": "sess_*"}
    snap["client_limits"] = limits
    return dp.start_dataplane(procs, doc, workers=workers)


def open_ws(port, src, cookie="sess_a=1"):
    c = ls.SrcConn(port, src=src)
    r = ls.upgrade(c, cookie=cookie)
    return c, r


def test_websocket_cap_per_address(procs):
    up = ls.WsUpstream(mode="hold")
    try:
        node = start(procs, up.port, {"max_websockets_per_client": 3}, workers=2)
        port = node.direct_port()
        # Address 0 (127.0.0.2) opens 3, then its 4th and 5th are refused; the 248 other
        # addresses (127.0.0.3 ... 127.0.0.250) all connect.
        mine = [open_ws(port, ls.source(0), cookie=f"sess_a={i}") for i in range(3)]
        assert all(r.status == 101 for _, r in mine)
        upgrades_before = up.upgrades
        for i in range(2):
            c, r = open_ws(port, ls.source(0), cookie=f"sess_a=x{i}")
            assert r.status == 429, r.raw_head
            assert int(r.header("Retry-After")) >= 1
            assert b"too many WebSockets" in r.body
            c.close()
        assert up.upgrades == upgrades_before  # refused before any upstream connection
        others = ls.run_threads(lambda i: open_ws(port, ls.source(i), cookie=f"sess_o={i}"),
                                [(i,) for i in range(1, 249)])
        assert [r.status for _, r in others] == [101] * 248
        assert node.counter("onedomain_limit_rejections_total", route="ws",
                            reason="websockets_per_client") == 2
        # A closed tunnel gives its count back.
        mine[0][0].close()
        dp.wait_until(lambda: open_ws(port, ls.source(0), cookie="sess_a=again")[1].status == 101,
                      10, "a WebSocket slot freed by a close")
        for c, _ in mine[1:] + others:
            c.close()
    finally:
        up.stop()


def test_websocket_cap_per_cookie_from_any_address(procs):
    up = ls.WsUpstream(mode="hold")
    try:
        node = start(procs, up.port, {"max_websockets_per_cookie": 2}, workers=2)
        port = node.direct_port()
        stolen = "sess_x=STOLEN; theme=dark"
        a, ra = open_ws(port, ls.source(10), cookie=stolen)
        b, rb = open_ws(port, ls.source(11), cookie=stolen)
        assert (ra.status, rb.status) == (101, 101)
        for i in range(20, 25):  # from any other address: refused
            c, r = open_ws(port, ls.source(i), cookie=stolen)
            assert r.status == 429, r.raw_head
            assert r.header("Retry-After") is not None
            c.close()
        # Another session from the same addresses is fine.
        c, r = open_ws(port, ls.source(20), cookie="sess_x=OTHER")
        assert r.status == 101
        assert node.counter("onedomain_limit_rejections_total", route="ws",
                            reason="websockets_per_cookie") == 5
        for s in (a, b, c):
            s.close()
    finally:
        up.stop()


def test_upgrade_flood_throttled_while_a_browser_chats(procs):
    _, backend = dp.start_demo_backend(procs)
    node = start(procs, backend, {"upgrade_rate": {"per_second": 2, "burst": 5}},
                 ws_policy={"required_cookie": "sess_*"})
    port = node.direct_port()
    flood_src = ls.source(100)

    def flood():
        statuses = []
        for _ in range(60):
            c = ls.SrcConn(port, src=flood_src)
            r = ls.upgrade(c, path="/ws/chat/flood", cookie="sess_f=1")
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.header("Retry-After")) >= 1
            c.close()
        return statuses

    async def browser():
        """Logs in through the node from another address, then chats."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        c = ls.SrcConn(port, src=ls.source(101))
        r = c.request("GET", "/api/v1/auth/login")
        assert r.status in (302, 303), r.raw_head
        r = c.request("GET", r.header("Location"))
        cookie = r.header("Set-Cookie").split(";")[0]
        c.close()
        login = time.monotonic() - t0
        async with wss.connect(port, path="/ws/chat/browser", cookie=cookie,
                               local_addr=(ls.source(101), 0)) as ws:
            await wss.hello(ws)
            rtts = []
            for i in range(20):
                t = loop.time()
                await ws.send(f"msg {i}")
                assert await asyncio.wait_for(ws.recv(), 10) == f"msg {i}"
                rtts.append(loop.time() - t)
        return login, sorted(rtts)

    result = {}
    flooder = threading.Thread(target=lambda: result.setdefault("f", flood()),
                                             daemon=True)
    flooder.start()
    login, rtts = asyncio.run(browser())
    flooder.join(60)
    assert not flooder.is_alive()
    statuses = result["f"]
    assert statuses.count(101) <= 5 + 2 * 60  # never more than burst + rate × elapsed
    assert statuses.count(429) >= 30, statuses
    print(f"browser during the flood: login {login * 1000:.1f} ms, chat RTT p50 "
          f"{rtts[len(rtts) // 2] * 1000:.2f} ms, max {rtts[-1] * 1000:.2f} ms; flood "
          f"{statuses.count(101)} accepted, {statuses.count(429)} throttled")
    assert node.counter("onedomain_limit_rejections_total", route="ws",
                        reason="upgrade_rate") == statuses.count(429)


def test_request_rate_and_route_override(procs):
    up = ls.WsUpstream()
    try:
        node = start(procs, up.port, {"request_rate": {"per_second": 1, "burst": 3}},
                     route_limits={"request_rate": {"per_second": 1, "burst": 10}})
        port = node.direct_port()
        c = ls.SrcConn(port, src=ls.source(30))
        statuses = [c.request("GET", "/api/x").status for _ in range(6)]
        assert statuses[:3] == [200] * 3 and 429 in statuses[3:], statuses
        r = c.request("GET", "/api/x")
        assert r.status == 429 and int(r.header("Retry-After")) >= 1
        assert r.header("Connection") is None  # keep-alive: the connection stays usable
        # The ws route has its own, larger bucket: unaffected by the api route's.
        c2 = ls.SrcConn(port, src=ls.source(30))
        assert ls.upgrade(c2, cookie="sess_a=1").status == 101
        c2.close()
        # Another address has its own bucket.
        c3 = ls.SrcConn(port, src=ls.source(31))
        assert c3.request("GET", "/api/x").status == 200
        assert node.counter("onedomain_limit_rejections_total", route="api",
                            reason="request_rate") >= 2
        c.close()
        c3.close()
    finally:
        up.stop()


def test_connection_cap_closes_at_accept(procs):
    up = ls.WsUpstream()
    try:
        node = start(procs, up.port, {"max_connections_per_client": 4}, workers=2)
        port = node.direct_port()
        held = [ls.SrcConn(port, src=ls.source(50)) for _ in range(4)]
        for c in held:
            assert c.request("GET", "/api/x").status == 200
        extra = ls.SrcConn(port, src=ls.source(50))
        assert ls.closed_without_answer(extra)
        for c in held:  # existing ones untouched
            assert c.request("GET", "/api/x").status == 200
        other = ls.SrcConn(port, src=ls.source(51))
        assert other.request("GET", "/api/x").status == 200
        assert node.counter("onedomain_limit_rejections_total", route="none",
                            reason="connections") == 1
        held[0].close()

        def served():  # refused (closed at accept) until the node has seen the close
            c = ls.SrcConn(port, src=ls.source(50))
            try:
                return c.request("GET", "/api/x").status == 200
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return False
            finally:
                c.close()
        dp.wait_until(served, 10, "a connection slot freed by a close")
    finally:
        up.stop()


def test_config_dump_and_validation(procs, tmp_path):
    up = ls.WsUpstream()
    try:
        node = start(procs, up.port, {"max_websockets_per_client": 3,
                                      "upgrade_rate": {"per_second": 0.5}})
        status, _, body = dp.support.http_get(f"http://127.0.0.1:{node.admin}/config_dump")
        assert status == 200
        dump = json.loads(body)
        text = json.dumps(dump)
        assert "maxWebsocketsPerClient" in text or "max_websockets_per_client" in text
    finally:
        up.stop()
    # Bad values are refused with file, line and key.
    bad = tmp_path / "bad.yaml"
    bad.write_text("snapshot:\n  listeners:\n    - name: main\n      port: 0\n"
                   "      proxy_protocol: v3\n"
                   "  site:\n    trusted_proxies: [\"10.0.0.0/33\"]\n"
                   "  clusters: [{name: b, endpoints: [{host: 127.0.0.1, port: 1}]}]\n"
                   "  routes:\n    - name: r\n      match: {prefix: /}\n      cluster: b\n"
                   "      client_limits:\n        max_connections_per_client: 3\n"
                   "  client_limits:\n    upgrade_rate:\n      per_second: -1\n")
    r = subprocess.run([dp.support.binary("dataplane"), "--config", str(bad), "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    for want in ("bad.yaml:5", "proxy_protocol", "v3",
                 "bad.yaml:7", "trusted_proxies", "is not a CIDR",
                 "bad.yaml:14", "max_connections_per_client", "snapshot-wide only",
                 "bad.yaml:17", "upgrade_rate.per_second", "must be > 0"):
        assert want in r.stderr, (want, r.stderr)
