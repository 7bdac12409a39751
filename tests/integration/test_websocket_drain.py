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
COUNT = 4                 # big messages asked for on each of those
STARTED = 64 * 1024       # more bytes than anything but a big message brings
SPREAD = 2.0


class CountingClient(websockets.WebSocketClientProtocol):
    """Counts the bytes that reach the socket, whether or not a message is complete yet."""

    bytes_received = 0

    def data_received(self, data):
        self.bytes_received += len(data)
        super().data_received(data)


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
            ws = await wss.connect(node.port, path=f"/ws/chat/{i}", compression=None,
                                   create_protocol=CountingClient)
            await wss.hello(ws)
            socks.append(ws)
        dp.wait_metric(node, "onedomain_websocket_connections_active", N, route="ws")
        mid = socks[:MID_MESSAGE]
        before = [ws.bytes_received for ws in mid]
        for ws in mid:
            await ws.send(json.dumps({"cmd": "send", "n": COUNT, "size": BIG}))
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

        def received():
            return [ws.bytes_received - b for ws, b in zip(mid, before)]

        # Wait until each of those has started receiving its first big message.
        deadline = time.monotonic() + 10
        for _ in range(10_000):
            if min(received()) >= STARTED or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.001)
        assert min(received()) >= STARTED, f"big messages not under way: {received()}"
        at_signal = received()
        t0 = time.monotonic()
        node.proc.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return t0, results, at_signal

    t0, results, at_signal = asyncio.run(run())
    # Some socket was part-way through its messages when the signal landed (all of them
    # take more than COUNT * BIG bytes on the wire).
    assert min(at_signal) < COUNT * BIG, at_signal
    assert node.proc.wait_exit(timeout=25) == 0
    codes = sorted({code for code, _, _ in results.values()})
    assert codes == [1001], codes
    for i, (_, _, sizes) in results.items():
        # The messages under way when the signal landed were delivered (whole, below).
        assert i >= MID_MESSAGE or sizes, f"socket {i} got no big message"
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
