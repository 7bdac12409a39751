"""Config changes never touch established tunnels: with 100 sockets open, a SIGHUP reload that
changes the upstream, the cookie policy and adds an unrelated route closes none of them; they
keep talking to the old backend while new sockets reach the new one. A removed route drains
its tunnels with Close 1001."""

import asyncio
import signal

import websockets

import dp_support as dp
import support
import ws_support as wss

N = 100


async def open_many(port, n):
    socks = []
    for i in range(n):
        ws = await wss.connect(port, path=f"/ws/chat/{i}", compression=None)
        socks.append((ws, await wss.hello(ws)))
    return socks


async def echo_all(socks):
    for i, (ws, _) in enumerate(socks):
        await ws.send(f"m{i}")
        assert await asyncio.wait_for(ws.recv(), 10) == f"m{i}"




def test_reload_keeps_tunnels_on_old_upstream(procs):
    _, backend_a = dp.start_demo_backend(procs, instance="A")
    _, backend_b = dp.start_demo_backend(procs, instance="B")
    doc = wss.ws_bootstrap([backend_a])
    node = dp.start_dataplane(procs, doc, workers=2)

    async def run():
        socks = await open_many(node.port, N)
        assert {h["instance"] for _, h in socks} == {"A"}
        changed = wss.ws_bootstrap(
            [backend_b],
            cookie_policy={"request_cookies": {"mode": "MODE_ALLOW_LIST", "names": ["sess_*"]}},
            extra_routes=[dp.route("extra", "/extra/", "backend")])
        dp.write_bootstrap(node.config_path.rsplit("/", 1)[0], changed)
        node.proc.signal(signal.SIGHUP)

        async def new_instance():
            ws = await wss.connect(node.port)
            h = await wss.hello(ws)
            await ws.close()
            return h["instance"]

        deadline = asyncio.get_running_loop().time() + 10
        while await new_instance() != "B":
            assert asyncio.get_running_loop().time() < deadline, "reload never applied"
            await asyncio.sleep(0.05)
        # New sockets see the new cookie policy (theme=dark filtered out); old ones are open.
        ws = await wss.connect(node.port)
        assert "theme" not in (await wss.hello(ws))["cookie_header"]
        await ws.close()
        await echo_all(socks)
        assert all(ws.open for ws, _ in socks)
        for ws, _ in socks:
            await ws.close()

    asyncio.run(run())
    assert node.counter("onedomain_websocket_closes_total", initiator="proxy") == 0


def test_removed_route_drains_its_tunnels(procs):
    _, backend = dp.start_demo_backend(procs)
    doc = wss.ws_bootstrap([backend], ws_policy={"required_cookie": "sess_*",
                                                  "drain_spread": "0.2s", "drain_grace": "3s"})
    node = dp.start_dataplane(procs, doc)

    async def run():
        socks = await open_many(node.port, 5)
        gone = wss.ws_bootstrap([backend], ws_policy={"drain_spread": "0.2s"})
        gone["snapshot"]["routes"] = [r for r in gone["snapshot"]["routes"] if r["name"] != "ws"]
        dp.write_bootstrap(node.config_path.rsplit("/", 1)[0], gone)
        node.proc.signal(signal.SIGHUP)
        for ws, _ in socks:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed:
                pass
            assert ws.close_code == 1001

    asyncio.run(run())
    support.wait_for(lambda: node.counter("onedomain_websocket_drain_remaining") == 0, 10)
