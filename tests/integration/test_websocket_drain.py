"""Drain with open WebSockets: SIGTERM gives every client a clean Close 1001 (never a reset),
messages the backend started before the close arrive whole, the closes are spread over the
configured window, and the process exits 0 within the grace."""

import asyncio
import json
import signal
import time

import websockets

import dp_support as dp
import support
import ws_support as wss

N = 100
MID_MESSAGE = 10          # sockets receiving large (fragmented) messages when SIGTERM lands
BIG = 2 * 1024 * 1024
SPREAD = 2.0


def test_sigterm_closes_every_socket_with_1001(procs):
    _, backend = dp.start_demo_backend(procs)
    doc = wss.ws_bootstrap([backend],
                           ws_policy={"required_cookie": "sess_*", "drain_spread": f"{SPREAD}s",
                                      "drain_grace": "5s"},
                           drain={"delay": "0s", "timeout": "20s"})
    node = dp.start_dataplane(procs, doc, workers=2)

    async def run():
        socks = []
        for i in range(N):
            ws = await wss.connect(node.port, path=f"/ws/chat/{i}", compression=None)
            await wss.hello(ws)
            socks.append(ws)
        dp.wait_metric(node, "onedomain_websocket_connections_active", N, route="ws")
        for ws in socks[:MID_MESSAGE]:
            await ws.send(json.dumps({"cmd": "send", "n": 4, "size": BIG}))
        # Wait until each of those has started receiving its first big message.
        results = {}

        async def reader(i, ws):
            sizes = []
            try:
                while True:
                    msg = await ws.recv()
                    sizes.append(len(msg))
            except websockets.exceptions.ConnectionClosed:
                pass
            results[i] = (ws.close_code, time.monotonic(), sizes)

        tasks = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(socks)]
        await asyncio.sleep(0)  # let the readers start before the signal
        t0 = time.monotonic()
        node.proc.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return t0, results

    t0, results = asyncio.run(run())
    assert node.proc.wait_exit(timeout=25) == 0
    codes = sorted({code for code, _, _ in results.values()})
    assert codes == [1001], codes
    for i, (_, _, sizes) in results.items():
        for s in sizes:
            # Every message delivered is whole; the big ones were whole too.
            assert i < MID_MESSAGE or s < BIG
            if i < MID_MESSAGE:
                assert s == BIG
    times = sorted(t - t0 for _, t, _ in results.values())
    assert times[-1] <= SPREAD + 5.0
    assert times[-1] - times[0] >= SPREAD * 0.4, times  # spread, not all at once
    out = node.proc.output()
    assert "drain timeout" not in out
