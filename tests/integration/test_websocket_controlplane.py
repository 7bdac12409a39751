"""Config changes pushed by the control plane never touch established WebSockets: with 100
sockets open through two managed data planes, an upstream change, a cookie-policy change and
an unrelated new route close none of them; old sockets stay on the old backend, new ones reach
the new backend."""

import asyncio
import json

import cp_support
import fleet_support
import support

SOCKETS = 100


async def open_socket(port, cookie="sess_t=abc"):
    import websockets
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/1", origin="http://127.0.0.1",
                                  extra_headers={"Cookie": cookie}, open_timeout=10,
                                  max_size=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, hello["instance"]


async def echo(ws, text):
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10)


def wait_acked(cp, version, count):
    def done():
        nodes = fleet_support.nodes(cp)["nodes"]
        return sum(1 for n in nodes if n.get("connected") and
                   int(n.get("version_acked", 0)) >= version) == count
    support.wait_for(done, 20, interval=0.05, what=f"{count} nodes acking version {version}")


def test_pushed_changes_close_no_socket(procs, tmp_path):
    a = fleet_support.start_backend(procs, "A")
    b = fleet_support.start_backend(procs, "B")
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=cp_support.seed_yaml(
        agents_endpoints=(f"127.0.0.1:{a.ports['api']}",))).start()
    dps = [fleet_support.start_managed_dataplane(procs, str(tmp_path / f"dp{i}"), cp.address,
                                                 f"node-{i}", workers=2) for i in range(2)]
    ports = [fleet_support.wait_listener(dp) for dp in dps]
    wait_acked(cp, 1, 2)

    async def scenario():
        opened = await asyncio.gather(*[open_socket(ports[i % 2]) for i in range(SOCKETS)])
        sockets = [ws for ws, _ in opened]
        assert {instance for _, instance in opened} == {"A"}

        # 1. Upstream change.
        cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", check=True)
        wait_acked(cp, 2, 2)
        # 2. Cookie-policy change.
        policy = support.write_file(str(tmp_path), "cookies.yaml",
                                    "request_cookies: {mode: strip, names: [sess_*]}\n")
        cp.admin("set-cookie-policy", "-f", policy, check=True)
        wait_acked(cp, 3, 2)
        # 3. An unrelated route added.
        snap = cp_support.dedent(cp_support.seed_yaml(
            agents_endpoints=(f"127.0.0.1:{b.ports['api']}",)))
        snap = snap.replace("routes:\n", "routes:\n  - name: extra\n    match: {prefix: /extra/}\n"
                                         "    cluster: agents\n")
        snap += "cookie_policy:\n  request_cookies: {mode: strip, names: [sess_*]}\n"
        cp.admin("apply", "-f", support.write_file(str(tmp_path), "snap.yaml", snap), check=True)
        wait_acked(cp, 4, 2)

        # Every old socket is open and still talks to A (its echo comes back unchanged).
        replies = await asyncio.gather(*[echo(ws, f"m{i}") for i, ws in enumerate(sockets)])
        assert replies == [f"m{i}" for i in range(SOCKETS)]
        assert all(ws.open for ws in sockets)
        # New sockets reach B, with the new cookie policy applied to their upgrade.
        import websockets
        fresh = await websockets.connect(f"ws://127.0.0.1:{ports[0]}/ws/chat/2",
                                         origin="http://127.0.0.1",
                                         extra_headers={"Cookie": "sess_t=abc"}, open_timeout=10)
        hello = json.loads(await asyncio.wait_for(fresh.recv(), 10))
        assert hello["instance"] == "B"
        assert hello["session"] is None  # sess_* stripped by the pushed policy
        await fresh.close()
        for ws in sockets:
            await ws.close()

    asyncio.run(scenario())
    stats = json.loads(fleet_support.get(a.ports["api"], "/api/v1/stats")[2])
    assert stats["websockets_total"] == SOCKETS
