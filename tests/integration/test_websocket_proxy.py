"""WebSocket upgrades through the data plane to the demo backend, with python3-websockets:
the cookie reaches the backend, every kind of message passes, permessage-deflate and the
subprotocol negotiate end to end, close codes propagate both ways, and the policy refuses
foreign Origins (403), missing cookies (401) and upgrades on routes without WebSockets (403)
before any upstream connection."""

import asyncio
import json
import os

import websockets

import dp_support as dp
import ws_support as wss


def start(procs, **kwargs):
    _, backend = dp.start_demo_backend(procs)
    node = dp.start_dataplane(procs, wss.ws_bootstrap([backend], **kwargs))
    return node, backend


def test_cookie_messages_and_close_codes(procs):
    node, backend = start(procs)

    async def run():
        async with wss.connect(node.port, compression=None) as ws:
            hi = await wss.hello(ws)
            assert hi["session"] == "tok123"
            assert "sess_abc=tok123" in hi["cookie_header"]
            assert hi["origin"] == wss.SITE_ORIGIN
            await ws.send("hello text")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello text"
            blob = bytes(range(256)) * 4
            await ws.send(blob)
            assert await asyncio.wait_for(ws.recv(), 10) == blob
            # Fragmented: the backend sees one message.
            await ws.send(iter(["frag-", "men", "ted"]))
            assert await asyncio.wait_for(ws.recv(), 10) == "frag-mented"
            pong = await ws.ping(b"p1")
            await asyncio.wait_for(pong, 10)
            big = os.urandom(16 * 1024 * 1024)
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 60) == big
            # Server-initiated close code reaches the client.
            await ws.send(json.dumps({"cmd": "close", "code": 4001}))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed:
                pass
            assert ws.close_code == 4001
        # Client-initiated close code reaches the backend and comes back.
        ws = await wss.connect(node.port)
        await wss.hello(ws)
        await ws.close(code=4002, reason="bye")
        assert ws.close_code == 4002

    asyncio.run(run())
    dp.wait_metric(node, "onedomain_websocket_closes_total", 1, route="ws",
                   initiator="upstream", code="other")
    dp.wait_metric(node, "onedomain_websocket_closes_total", 1, route="ws",
                   initiator="client", code="other")
    assert node.counter("onedomain_websocket_upgrades_total", route="ws", result="accepted") == 2
    assert node.counter("onedomain_websocket_bytes_total", route="ws",
                        direction="client_to_upstream") > 16 * 1024 * 1024
    dp.wait_metric(node, "onedomain_websocket_connection_duration_seconds_count", 2, route="ws")
    dp.support.wait_for(
        lambda: node.counter("onedomain_websocket_connections_active", route="ws") == 0,
        10, what="no tunnel left")


def test_permessage_deflate_and_subprotocol(procs):
    node, _ = start(procs)

    async def run():
        async with wss.connect(node.port, subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
            assert "permessage-deflate" in ext
            await wss.hello(ws)
            text = "compress me " * 1000
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 10) == text
            await ws.send(json.dumps({"cmd": "send", "n": 20, "size": 1000}))
            for _ in range(20):
                await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(run())


def test_policy_refusals_never_reach_backend(procs):
    node, backend = start(procs)
    before = wss.backend_stats(backend)["websockets_total"]

    async def run():
        return (await wss.status_of(node.port, origin="http://evil.example"),
                await wss.status_of(node.port, cookie="theme=dark"),
                await wss.status_of(node.port, cookie=None),
                await wss.status_of(node.port, path="/other/ws"),
                await wss.status_of(node.port))

    assert asyncio.run(run()) == (403, 401, 401, 403, 101)
    assert wss.backend_stats(backend)["websockets_total"] == before + 1
    assert node.counter("onedomain_websocket_upgrades_total", route="ws",
                        result="origin_refused") == 1
    assert node.counter("onedomain_websocket_upgrades_total", route="ws",
                        result="cookie_refused") == 2
    assert node.counter("onedomain_websocket_upgrades_total", route="api",
                        result="not_allowed") == 1


def test_upstream_refusal_and_failure(procs):
    # The backend answers 404 to an unknown WebSocket path: relayed as is, counted.
    node, _ = start(procs)

    async def run():
        return await wss.status_of(node.port, path="/ws/nope")

    status = asyncio.run(run())
    assert status != 101
    assert node.counter("onedomain_websocket_upgrades_total", route="ws",
                        result="upstream_refused") == 1

    dead = dp.free_port()
    node2 = dp.start_dataplane(procs, wss.ws_bootstrap([dead]))
    assert asyncio.run(wss.status_of(node2.port)) == 502
    assert node2.counter("onedomain_websocket_upgrades_total", route="ws",
                         result="upstream_failed") == 1
