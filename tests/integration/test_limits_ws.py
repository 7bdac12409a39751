"""Bounded WebSockets (issue 20): websocket_policy.max_lifetime closes a tunnel with Close 1001
at a frame boundary (jittered within drain_spread) and the client reconnects; with
max_buffered_bytes, a slow-reading client while the backend floods never grows the node's
memory (RSS stays under baseline + a cap) and the pause is counted."""

import time

import dp_support as dp
import limits_support as ls


def start(procs, upstream_port, ws_policy):
    routes = [dp.route("ws", "/ws/", "backend", websocket=True), dp.route("api", "/", "backend")]
    doc = dp.bootstrap([dp.cluster("backend", [upstream_port])], routes)
    doc["snapshot"]["site"] = {"origins": ["http://127.0.0.1"]}
    doc["snapshot"]["websocket_policy"] = ws_policy
    return dp.start_dataplane(procs, doc)


def test_max_lifetime_closes_with_1001_and_client_reconnects(procs):
    up = ls.WsUpstream(mode="echo")
    try:
        node = start(procs, up.port, {"max_lifetime": "1.5s", "drain_spread": "0.5s",
                                      "drain_grace": "2s"})
        for attempt in range(2):  # the second is the reconnect
            c = ls.SrcConn(node.direct_port(), timeout=10)
            t0 = time.monotonic()
            assert ls.upgrade(c).status == 101
            c.send(ls.client_frame(1, b"hi"))
            assert ls.read_frame(c) == (1, b"hi")
            # Keep talking; the Close arrives between messages, never inside one.
            while True:
                c.send(ls.client_frame(1, b"x" * 1000))
                op, payload = ls.read_frame(c)
                if op == 8:
                    break
                assert (op, len(payload)) == (1, 1000)
                time.sleep(0.05)
                assert time.monotonic() - t0 < 8, "no Close within max_lifetime"
            elapsed = time.monotonic() - t0
            assert int.from_bytes(payload[:2], "big") == 1001
            assert 0.9 <= elapsed <= 4.0, elapsed  # [max_lifetime - spread, max_lifetime] + slack
            try:  # the node may already have closed (the backend ended its side at once)
                c.send(ls.client_frame(8, (1001).to_bytes(2, "big")))
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert c.closed_by_peer(5.0)
            c.close()
        dp.wait_metric(node, "onedomain_websocket_closes_total", 2, route="ws",
                       initiator="proxy", code="1001")
    finally:
        up.stop()


def test_slow_reader_while_backend_floods_keeps_rss_bounded(procs):
    flood = 256 * 1024 * 1024
    up = ls.WsUpstream(mode="flood", flood_bytes=flood)
    try:
        node = start(procs, up.port, {"max_buffered_bytes": 16384})
        base = node.rss_kib()
        c = ls.SrcConn(node.direct_port(), timeout=30)
        assert ls.upgrade(c).status == 101
        # The client reads nothing: the backend is held back once the kernel buffers fill.
        dp.wait_until(lambda: node.counter("onedomain_websocket_buffer_full_total", route="ws",
                                           direction="to_client") >= 1, 10, "a paused tunnel")
        peak = base
        for _ in range(20):  # 2 s of watching a stalled flood
            peak = max(peak, node.rss_kib())
            time.sleep(0.1)
        sent_while_stalled = up.flood_sent
        assert sent_while_stalled < flood, "the flood was not held back"
        assert peak - base < 16 * 1024, (base, peak)  # well under the 256 MiB offered
        # Now read slowly: bytes still flow, and memory stays bounded.
        got = 0
        deadline = time.monotonic() + 20
        while got < 32 * 1024 * 1024 and time.monotonic() < deadline:
            got += c.skip(min(1 << 20, 32 * 1024 * 1024 - got))
            peak = max(peak, node.rss_kib())
        assert got == 32 * 1024 * 1024
        assert peak - base < 16 * 1024, (base, peak)
        print(f"node RSS {base} KiB at start, peak {peak} KiB while a slow reader faced a flood")
        c.close()
    finally:
        up.stop()
